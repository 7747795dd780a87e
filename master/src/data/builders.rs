//! The `builders` collection: one row per builder name ever configured, so
//! build history and pending requests survive a builder being removed and re-added.

use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError};
use crate::config::BuilderConfig;
use crate::db::entities::builders;
use crate::mq::Topic;
use crate::mq::topic::BuilderEvent;
use sea_orm::Order;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn fields(name: &str) -> Option<FieldKind<builders::Column>> {
    use builders::Column as C;
    Some(match name {
        "builderid" => FieldKind::Int(C::Id),
        "name" => FieldKind::Text(C::Name),
        _ => return None,
    })
}

impl Data {
    /// Make sure every configured builder has a row with its current description
    /// and tags; returns name → builderid. One read of the table and one
    /// transaction for the rows that differ, so a reload of hundreds of builders
    /// costs a few milliseconds.
    pub async fn sync_builders(
        &self,
        configured: &[BuilderConfig],
    ) -> Result<BTreeMap<String, i64>, DataError> {
        let existing: BTreeMap<String, builders::Model> = builders::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.name.clone(), row))
            .collect();
        let mut ids = BTreeMap::new();
        let mut created = Vec::new();
        let txn = self.db.begin().await?;
        for b in configured {
            let tags = serde_json::to_string(&b.tags).unwrap_or_else(|_| "[]".into());
            let id = match existing.get(&b.name) {
                Some(row) if row.description == b.description && row.tags == tags => row.id,
                Some(row) => {
                    let mut active: builders::ActiveModel = row.clone().into();
                    active.description = Set(b.description.clone());
                    active.tags = Set(tags);
                    active.update(&txn).await?.id
                }
                None => {
                    let row = builders::ActiveModel {
                        name: Set(b.name.clone()),
                        description: Set(b.description.clone()),
                        tags: Set(tags),
                        ..Default::default()
                    }
                    .insert(&txn)
                    .await?;
                    let id = row.id;
                    created.push(row);
                    id
                }
            };
            ids.insert(b.name.clone(), id);
        }
        txn.commit().await?;
        for row in created {
            self.bus.publish(
                Topic::Builder {
                    id: row.id,
                    event: BuilderEvent::New,
                },
                self.builder_json(&row),
            );
        }
        Ok(ids)
    }

    fn builder_json(&self, row: &builders::Model) -> Value {
        let tags: Value = serde_json::from_str(&row.tags).unwrap_or_else(|_| json!([]));
        json!({
            "builderid": row.id,
            "name": row.name,
            "description": row.description,
            "description_format": null,
            "description_html": null,
            "projectid": null,
            "tags": tags,
            "masterids": [self.masterid],
        })
    }

    /// Builders, in the API's shape; `configured` limits them to the running config.
    pub async fn list_builders(
        &self,
        q: &ListQuery,
        configured: &BTreeMap<String, i64>,
    ) -> Result<(Vec<Value>, u64), DataError> {
        let ids: Vec<i64> = configured.values().copied().collect();
        let select = builders::Entity::find().filter(builders::Column::Id.is_in(ids));
        let select = apply(select, q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (builders::Column::Id, Order::Asc)).await?;
        Ok((rows.iter().map(|r| self.builder_json(r)).collect(), total))
    }
}
