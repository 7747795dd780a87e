//! The `changesources` collection: one row per change source name the
//! configuration has listed (the API's `/changesources`).

use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError};
use crate::db::entities::changesources;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, Order, QueryFilter};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn fields(name: &str) -> Option<FieldKind<changesources::Column>> {
    use changesources::Column as C;
    Some(match name {
        "changesourceid" => FieldKind::Int(C::Id),
        "name" => FieldKind::Text(C::Name),
        _ => return None,
    })
}

impl Data {
    /// Make sure every configured change source has a row; name → id.
    pub async fn sync_changesources(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, i64>, DataError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        changesources::Entity::insert_many(names.iter().map(|name| changesources::ActiveModel {
            name: Set(name.to_string()),
            ..Default::default()
        }))
        .on_conflict(
            OnConflict::column(changesources::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(changesources::Entity::find()
            .filter(changesources::Column::Name.is_in(names.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| (s.name, s.id))
            .collect())
    }

    /// Change sources in Buildbot's shape; `master` is this master for the
    /// ones the running configuration lists (`running`), null for others.
    pub async fn list_changesources(
        &self,
        q: &ListQuery,
        running: &[&str],
    ) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(changesources::Entity::find(), q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (changesources::Column::Id, Order::Asc)).await?;
        let master = self.this_master_json().await?;
        Ok((
            rows.into_iter()
                .map(|s| {
                    let runs = running.contains(&s.name.as_str());
                    json!({
                        "changesourceid": s.id,
                        "name": s.name,
                        "master": if runs { master.clone() } else { Value::Null },
                    })
                })
                .collect(),
            total,
        ))
    }
}
