//! `objects` and `object_state`: small named JSON values that a long-lived
//! part keeps across restarts (a scheduler's last change seen, a poller's
//! last revision per branch, a nightly scheduler's last run), Buildbot's
//! `getState` / `setState`. An object is known by (name, class), so two
//! kinds of service may use the same name.

use super::batch::Batch;
use super::{Data, DataError};
use crate::db::entities::{object_state, objects};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

impl Data {
    /// The id of the object (name, class), made on first use.
    pub async fn object_id(&self, name: &str, class_name: &str) -> Result<i64, DataError> {
        objects::Entity::insert(objects::ActiveModel {
            name: Set(name.to_string()),
            class_name: Set(class_name.to_string()),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([objects::Column::Name, objects::Column::ClassName])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        objects::Entity::find()
            .filter(objects::Column::Name.eq(name))
            .filter(objects::Column::ClassName.eq(class_name))
            .one(&self.db)
            .await?
            .map(|o| o.id)
            .ok_or(DataError::Unexpected("lost an object row it had just made"))
    }

    /// One value of an object's state, if it was ever set.
    pub async fn object_state(&self, objectid: i64, key: &str) -> Result<Option<Value>, DataError> {
        Ok(object_state::Entity::find()
            .filter(object_state::Column::Objectid.eq(objectid))
            .filter(object_state::Column::Name.eq(key))
            .one(&self.db)
            .await?
            .and_then(|row| serde_json::from_str(&row.value_json).ok()))
    }

    /// Set one value of an object's state.
    pub async fn set_object_state(
        &self,
        objectid: i64,
        key: &str,
        value: &Value,
    ) -> Result<(), DataError> {
        let mut batch = Batch::new(self);
        push_set_state(&mut batch, objectid, key, value)?;
        self.run_batch(batch).await?;
        Ok(())
    }
}

/// Push "set this state value" onto a batch, so it commits with the writes
/// it stands for (a scheduler's position with the buildsets it made).
pub(crate) fn push_set_state(
    batch: &mut Batch,
    objectid: i64,
    key: &str,
    value: &Value,
) -> Result<(), DataError> {
    use object_state::Column as C;
    batch.push(
        Query::insert()
            .into_table(object_state::Entity)
            .columns([C::Objectid, C::Name, C::ValueJson])
            .values([objectid.into(), key.into(), value.to_string().into()])?
            .on_conflict(
                OnConflict::columns([C::Objectid, C::Name])
                    .update_column(C::ValueJson)
                    .to_owned(),
            ),
    );
    Ok(())
}
