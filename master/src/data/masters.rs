//! The `masters` collection: this master's row, its heartbeat, and cleaning up
//! after a previous run of the same master that did not stop cleanly.

use super::{Data, DataError, now};
use crate::db::entities::{buildrequest_claims, builds, connected_workers, masters};
use crate::results::RETRY;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

/// Find or create the row for `name` and mark it active; returns its id.
pub async fn register(db: &sea_orm::DatabaseConnection, name: &str) -> Result<i64, DataError> {
    if let Some(m) = masters::Entity::find()
        .filter(masters::Column::Name.eq(name))
        .one(db)
        .await?
    {
        masters::Entity::update_many()
            .col_expr(masters::Column::Active, Expr::value(true))
            .col_expr(masters::Column::LastActive, Expr::value(now()))
            .filter(masters::Column::Id.eq(m.id))
            .exec(db)
            .await?;
        return Ok(m.id);
    }
    let row = masters::ActiveModel {
        name: Set(name.to_string()),
        active: Set(true),
        last_active: Set(now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

impl Data {
    /// Record that this master is alive.
    pub async fn heartbeat(&self) -> Result<(), DataError> {
        masters::Entity::update_many()
            .col_expr(masters::Column::LastActive, Expr::value(now()))
            .filter(masters::Column::Id.eq(self.masterid))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Mark this master inactive (clean stop).
    pub async fn master_stopped(&self) -> Result<(), DataError> {
        masters::Entity::update_many()
            .col_expr(masters::Column::Active, Expr::value(false))
            .filter(masters::Column::Id.eq(self.masterid))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// After a crash (SIGKILL, power loss): end the builds this master left
    /// running as RETRY and release its claims, so their requests run again.
    /// Returns how many builds were ended.
    pub async fn reap_unfinished(&self) -> Result<usize, DataError> {
        let orphans = builds::Entity::find()
            .filter(builds::Column::Masterid.eq(self.masterid))
            .filter(builds::Column::CompleteAt.is_null())
            .all(&self.db)
            .await?;
        for b in &orphans {
            self.finish_build(
                b.id,
                RETRY,
                "retry: the master stopped during this build",
                None,
            )
            .await?;
        }
        // Connections of the previous run are gone with its process.
        connected_workers::Entity::delete_many()
            .filter(connected_workers::Column::Masterid.eq(self.masterid))
            .exec(&self.db)
            .await?;
        buildrequest_claims::Entity::delete_many()
            .filter(buildrequest_claims::Column::Masterid.eq(self.masterid))
            .exec(&self.db)
            .await?;
        Ok(orphans.len())
    }

    /// The API shape of a master.
    pub async fn masters_json(&self) -> Result<Vec<serde_json::Value>, DataError> {
        let rows = masters::Entity::find().all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "masterid": m.id, "name": m.name, "active": m.active,
                    "last_active": m.last_active,
                })
            })
            .collect())
    }

    /// This master in the API's shape (what a scheduler's `master` shows).
    pub async fn this_master_json(&self) -> Result<serde_json::Value, DataError> {
        Ok(self
            .masters_json()
            .await?
            .into_iter()
            .find(|m| m["masterid"].as_i64() == Some(self.masterid))
            .unwrap_or(serde_json::Value::Null))
    }
}
