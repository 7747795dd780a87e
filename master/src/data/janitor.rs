//! The janitor's deletions, each a small batch in its own short statement, so
//! a pass never holds the database's write lock long enough to hold up a
//! running build's writes: at most [`CHUNK_BATCH`] log chunks, [`BUILD_BATCH`]
//! builds or [`CHANGE_BATCH`] changes per statement. Only finished builds are
//! touched. Foreign keys cascade the rest (a build's steps, logs and
//! properties; a change's files and properties).
//!
//! Each pass is a `janitor_passes` row: what it deleted and how long its
//! longest batch took, for the status page and `/api/v2/janitor_passes`.

use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError, now};
use crate::db::entities::{builds, changes, janitor_passes, logchunks, logs, steps};
use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    Order, QueryFilter,
};
use serde_json::{Value, json};

/// Log chunks deleted per statement.
pub const CHUNK_BATCH: u64 = 1000;
/// Logs whose content is expired per batch.
pub const LOG_BATCH: u64 = 50;
/// Builds deleted per statement (after their chunks).
pub const BUILD_BATCH: u64 = 20;
/// Changes deleted per statement.
pub const CHANGE_BATCH: u64 = 200;

/// What one pass did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct JanitorTally {
    pub logs_expired: u64,
    pub chunks_deleted: u64,
    pub builds_deleted: u64,
    pub changes_deleted: u64,
    pub longest_batch_ms: f64,
}

impl Data {
    /// Record that a pass starts; returns its id.
    pub async fn start_janitor_pass(&self) -> Result<i64, DataError> {
        let row = janitor_passes::ActiveModel {
            masterid: Set(self.masterid),
            started_at: Set(now()),
            finished_at: Set(None),
            logs_expired: Set(0),
            chunks_deleted: Set(0),
            builds_deleted: Set(0),
            changes_deleted: Set(0),
            longest_batch_ms: Set(0.0),
            error: Set(None),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(row.id)
    }

    /// Record what a pass did (also while it runs, so a long pass shows its
    /// progress), and, once it has ended, when and how.
    pub async fn update_janitor_pass(
        &self,
        id: i64,
        tally: &JanitorTally,
        ended: Option<Option<&str>>,
    ) -> Result<(), DataError> {
        let mut row = janitor_passes::ActiveModel {
            id: Set(id),
            logs_expired: Set(tally.logs_expired as i64),
            chunks_deleted: Set(tally.chunks_deleted as i64),
            builds_deleted: Set(tally.builds_deleted as i64),
            changes_deleted: Set(tally.changes_deleted as i64),
            longest_batch_ms: Set(tally.longest_batch_ms),
            ..Default::default()
        };
        if let Some(error) = ended {
            row.finished_at = Set(Some(now()));
            row.error = Set(error.map(str::to_string));
        }
        row.update(&self.db).await?;
        Ok(())
    }

    /// One batch of log expiry: the content of logs of builds that completed
    /// before `before`, but not before `builds_go_before` (those builds are
    /// deleted whole). Deletes at most [`CHUNK_BATCH`] chunks of up to
    /// [`LOG_BATCH`] such logs and marks the logs with nothing left as
    /// expired. Returns (logs expired, chunks deleted); (0, 0) when done.
    pub async fn expire_log_batch(
        &self,
        before: f64,
        builds_go_before: Option<f64>,
    ) -> Result<(u64, u64), DataError> {
        let ids = self
            .ids(logs_of_builds_before(before, builds_go_before))
            .await?;
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let deleted = self.delete_chunks_of(&ids).await?;
        if deleted == CHUNK_BATCH {
            // More chunks of these logs remain: the next batch goes on.
            return Ok((0, deleted));
        }
        let expired = logs::Entity::update_many()
            .col_expr(logs::Column::ContentExpiredAt, Expr::value(now()))
            .filter(logs::Column::Id.is_in(ids))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok((expired, deleted))
    }

    /// One batch of build deletion: up to [`BUILD_BATCH`] builds that completed
    /// before `before`, their log chunks first ([`CHUNK_BATCH`] a statement),
    /// then the builds, whose steps, logs and properties go with them. Returns
    /// (builds deleted, chunks deleted, longest statement in ms).
    pub async fn delete_build_batch(&self, before: f64) -> Result<(u64, u64, f64), DataError> {
        let build_ids = self
            .ids(oldest(
                builds::Entity,
                builds::Column::Id,
                builds::Column::CompleteAt,
                before,
                BUILD_BATCH,
            ))
            .await?;
        if build_ids.is_empty() {
            return Ok((0, 0, 0.0));
        }
        let mut chunks = 0;
        let mut longest: f64 = 0.0;
        let log_ids = self.ids(logs_of_builds(&build_ids)).await?;
        if !log_ids.is_empty() {
            loop {
                let started = std::time::Instant::now();
                let n = self.delete_chunks_of(&log_ids).await?;
                longest = longest.max(started.elapsed().as_secs_f64() * 1000.0);
                chunks += n;
                if n < CHUNK_BATCH {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let started = std::time::Instant::now();
        let deleted = builds::Entity::delete_many()
            .filter(builds::Column::Id.is_in(build_ids))
            .exec(&self.db)
            .await?
            .rows_affected;
        longest = longest.max(started.elapsed().as_secs_f64() * 1000.0);
        Ok((deleted, chunks, longest))
    }

    /// One batch of change deletion: up to [`CHANGE_BATCH`] changes older than
    /// `before`, with their files and properties. Returns how many.
    pub async fn delete_change_batch(&self, before: f64) -> Result<u64, DataError> {
        let ids = self
            .ids(oldest(
                changes::Entity,
                changes::Column::Id,
                changes::Column::WhenTimestamp,
                before,
                CHANGE_BATCH,
            ))
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(changes::Entity::delete_many()
            .filter(changes::Column::Id.is_in(ids))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// SQLite: hand the pages freed by deletions back to the file system
    /// (`PRAGMA incremental_vacuum`, a few MiB at a time), for a database
    /// created with `auto_vacuum = INCREMENTAL` (every database moonbot creates).
    /// Returns the pages given back; `None` on PostgreSQL, whose autovacuum
    /// reuses the space itself, or for an older SQLite file without it.
    pub async fn return_free_space(&self) -> Result<Option<u64>, DataError> {
        if self.db.get_database_backend() != DbBackend::Sqlite {
            return Ok(None);
        }
        let mode = self.pragma("auto_vacuum").await?;
        if mode != 2 {
            return Ok(None);
        }
        let mut returned = 0;
        loop {
            let free = self.pragma("freelist_count").await?;
            if free == 0 {
                break;
            }
            // 1,000 pages (4 MiB) a statement keeps each one short.
            self.db
                .execute_unprepared("PRAGMA incremental_vacuum(1000)")
                .await?;
            let after = self.pragma("freelist_count").await?;
            returned += free.saturating_sub(after) as u64;
            if after >= free {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(Some(returned))
    }

    /// Passes of the janitor, newest first unless ordered otherwise.
    pub async fn list_janitor_passes(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(janitor_passes::Entity::find(), q, &janitor_fields)?;
        let (rows, total) = fetch_page(
            &self.db,
            select,
            q,
            (janitor_passes::Column::Id, Order::Desc),
        )
        .await?;
        Ok((rows.iter().map(pass_json).collect(), total))
    }

    async fn ids(&self, select: SelectStatement) -> Result<Vec<i64>, DataError> {
        let statement = self.db.get_database_backend().build(&select);
        let rows = self.db.query_all_raw(statement).await?;
        rows.iter()
            .map(|r| r.try_get_by_index::<i64>(0).map_err(DataError::from))
            .collect()
    }

    async fn delete_chunks_of(&self, log_ids: &[i64]) -> Result<u64, DataError> {
        let some_chunks = Query::select()
            .column(logchunks::Column::Id)
            .from(logchunks::Entity)
            .and_where(Expr::col(logchunks::Column::Logid).is_in(log_ids.iter().copied()))
            .limit(CHUNK_BATCH)
            .to_owned();
        Ok(logchunks::Entity::delete_many()
            .filter(logchunks::Column::Id.in_subquery(some_chunks))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    async fn pragma(&self, name: &str) -> Result<i64, DataError> {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                format!("PRAGMA {name}"),
            ))
            .await?
            .ok_or(DataError::Unexpected("answered a PRAGMA with no row"))?;
        Ok(row.try_get_by_index::<i64>(0)?)
    }
}

/// The ids of up to `limit` rows of `table` whose `time` is before `before`,
/// oldest ids first.
fn oldest<T, C>(table: T, id: C, time: C, before: f64, limit: u64) -> SelectStatement
where
    T: sea_orm::sea_query::IntoIden,
    C: sea_orm::sea_query::IntoIden + Copy,
{
    Query::select()
        .column(id)
        .from(table)
        .and_where(Expr::col(time).lt(before))
        .order_by(id, Order::Asc)
        .limit(limit)
        .to_owned()
}

/// Up to [`LOG_BATCH`] logs, with content, of builds that completed before
/// `before` (and not before `not_before`).
fn logs_of_builds_before(before: f64, not_before: Option<f64>) -> SelectStatement {
    let mut select = Query::select();
    if let Some(not_before) = not_before {
        select.and_where(Expr::col((builds::Entity, builds::Column::CompleteAt)).gte(not_before));
    }
    select
        .column((logs::Entity, logs::Column::Id))
        .from(logs::Entity)
        .inner_join(
            steps::Entity,
            Expr::col((steps::Entity, steps::Column::Id))
                .equals((logs::Entity, logs::Column::Stepid)),
        )
        .inner_join(
            builds::Entity,
            Expr::col((builds::Entity, builds::Column::Id))
                .equals((steps::Entity, steps::Column::Buildid)),
        )
        .and_where(Expr::col((builds::Entity, builds::Column::CompleteAt)).lt(before))
        .and_where(Expr::col((logs::Entity, logs::Column::ContentExpiredAt)).is_null())
        .limit(LOG_BATCH)
        .to_owned()
}

/// Every log of these builds.
fn logs_of_builds(build_ids: &[i64]) -> SelectStatement {
    Query::select()
        .column((logs::Entity, logs::Column::Id))
        .from(logs::Entity)
        .inner_join(
            steps::Entity,
            Expr::col((steps::Entity, steps::Column::Id))
                .equals((logs::Entity, logs::Column::Stepid)),
        )
        .and_where(
            Expr::col((steps::Entity, steps::Column::Buildid)).is_in(build_ids.iter().copied()),
        )
        .to_owned()
}

fn janitor_fields(name: &str) -> Option<FieldKind<janitor_passes::Column>> {
    use janitor_passes::Column as C;
    Some(match name {
        "passid" => FieldKind::Int(C::Id),
        "masterid" => FieldKind::Int(C::Masterid),
        "started_at" => FieldKind::Float(C::StartedAt),
        "complete" => FieldKind::NotNull(C::FinishedAt),
        _ => return None,
    })
}

fn pass_json(p: &janitor_passes::Model) -> Value {
    json!({
        "passid": p.id,
        "masterid": p.masterid,
        "started_at": p.started_at,
        "finished_at": p.finished_at,
        "complete": p.finished_at.is_some(),
        "logs_expired": p.logs_expired,
        "chunks_deleted": p.chunks_deleted,
        "builds_deleted": p.builds_deleted,
        "changes_deleted": p.changes_deleted,
        "longest_batch_ms": p.longest_batch_ms,
        "error": p.error,
    })
}
