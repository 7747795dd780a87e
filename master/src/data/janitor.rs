//! The janitor's deletions, each a small batch in its own short statement, so
//! a pass never holds the database's write lock long enough to hold up a
//! running build's writes: at most [`CHUNK_BATCH`] log chunks, [`BUILD_BATCH`]
//! builds or [`CHANGE_BATCH`] changes per statement. Only finished builds are
//! touched. Foreign keys cascade the rest (a build's steps, logs and
//! properties; a change's files and properties).
//!
//! Each pass is a `janitor_passes` row: what it deleted and how long its
//! longest write statement took, for the status page and `/api/v2/janitor_passes`.

use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError, now};
use crate::db::entities::{
    builds, change_hook_deliveries, changes, janitor_passes, logchunks, logs, steps,
};
use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    Order, QueryFilter, QueryTrait, StatementBuilder, TransactionTrait,
};
use serde_json::{Value, json};
use std::time::Instant;

/// Log chunks deleted per statement.
pub const CHUNK_BATCH: u64 = 1000;
/// Builds deleted (after their chunks), or whose logs are expired, per batch.
pub const BUILD_BATCH: u64 = 20;
/// Changes deleted per statement.
pub const CHANGE_BATCH: u64 = 200;
/// Webhook delivery ids forgotten per statement (one short row each).
pub const DELIVERY_BATCH: u64 = 1000;

/// What one batch did, and its longest write statement (how long it may
/// have held the database's write lock).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BatchTally {
    pub logs: u64,
    pub chunks: u64,
    pub builds: u64,
    pub changes: u64,
    pub longest_write_ms: f64,
}

/// A write statement longer than this is logged, with what it did.
const SLOW_WRITE_MS: f64 = 50.0;

impl BatchTally {
    fn wrote(&mut self, started: Instant, what: &str) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if ms > SLOW_WRITE_MS {
            tracing::warn!("janitor: {what} held the database for {ms:.0} ms in one statement");
        }
        self.longest_write_ms = self.longest_write_ms.max(ms);
    }
}

/// What one pass did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct JanitorTally {
    pub logs_expired: u64,
    pub chunks_deleted: u64,
    pub builds_deleted: u64,
    pub changes_deleted: u64,
    /// The longest write statement of the pass.
    pub longest_batch_ms: f64,
}

impl JanitorTally {
    /// Count a batch in.
    pub fn add(&mut self, batch: &BatchTally) {
        self.logs_expired += batch.logs;
        self.chunks_deleted += batch.chunks;
        self.builds_deleted += batch.builds;
        self.changes_deleted += batch.changes;
        self.longest_batch_ms = self.longest_batch_ms.max(batch.longest_write_ms);
    }
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

    /// One batch of log expiry: the content of the logs of the next
    /// [`BUILD_BATCH`] builds after build id `after` that completed before
    /// `before`, but not before `builds_go_before` (those builds are deleted
    /// whole). Their chunks go ([`CHUNK_BATCH`] a statement), then the logs are
    /// marked expired. The cursor keeps a pass from reading the same builds
    /// again. Returns the tally and the cursor for the next batch, `None` when
    /// there are no more such builds.
    pub async fn expire_log_batch(
        &self,
        before: f64,
        builds_go_before: Option<f64>,
        after: i64,
    ) -> Result<Option<(BatchTally, i64)>, DataError> {
        // Only builds with a log left to expire: a pass over history expired
        // long ago reads each build once, without a batch (and its pause) for it.
        let unexpired = Query::select()
            .expr(Expr::val(1))
            .from(steps::Entity)
            .inner_join(
                logs::Entity,
                Expr::col((logs::Entity, logs::Column::Stepid))
                    .equals((steps::Entity, steps::Column::Id)),
            )
            .and_where(
                Expr::col((steps::Entity, steps::Column::Buildid))
                    .equals((builds::Entity, builds::Column::Id)),
            )
            .and_where(Expr::col((logs::Entity, logs::Column::ContentExpiredAt)).is_null())
            .to_owned();
        let mut builds = Query::select();
        builds
            .column((builds::Entity, builds::Column::Id))
            .from(builds::Entity)
            .and_where(Expr::col((builds::Entity, builds::Column::Id)).gt(after))
            .and_where(Expr::col((builds::Entity, builds::Column::CompleteAt)).lt(before))
            .and_where(Expr::exists(unexpired));
        if let Some(not_before) = builds_go_before {
            builds
                .and_where(Expr::col((builds::Entity, builds::Column::CompleteAt)).gte(not_before));
        }
        let build_ids = self
            .ids(
                builds
                    .order_by((builds::Entity, builds::Column::Id), Order::Asc)
                    .limit(BUILD_BATCH)
                    .to_owned(),
            )
            .await?;
        let Some(&cursor) = build_ids.last() else {
            return Ok(None);
        };
        let mut logs_of = logs_of_builds(&build_ids);
        logs_of.and_where(Expr::col((logs::Entity, logs::Column::ContentExpiredAt)).is_null());
        let log_ids = self.ids(logs_of).await?;
        let mut tally = BatchTally::default();
        if log_ids.is_empty() {
            return Ok(Some((tally, cursor)));
        }
        self.delete_all_chunks_of(&log_ids, &mut tally).await?;
        let started = Instant::now();
        let expire = logs::Entity::update_many()
            .col_expr(logs::Column::ContentExpiredAt, Expr::value(now()))
            .filter(logs::Column::Id.is_in(log_ids))
            .into_query();
        tally.logs = self.unhurried_write(&expire).await?;
        tally.wrote(started, "expiring logs");
        Ok(Some((tally, cursor)))
    }

    /// One batch of build deletion: up to [`BUILD_BATCH`] builds that completed
    /// before `before`, their log chunks first ([`CHUNK_BATCH`] a statement),
    /// then the builds, whose steps, logs and properties go with them.
    pub async fn delete_build_batch(&self, before: f64) -> Result<BatchTally, DataError> {
        let build_ids = self
            .ids(oldest(
                builds::Entity,
                builds::Column::Id,
                builds::Column::CompleteAt,
                before,
                BUILD_BATCH,
            ))
            .await?;
        let mut tally = BatchTally::default();
        if build_ids.is_empty() {
            return Ok(tally);
        }
        let log_ids = self.ids(logs_of_builds(&build_ids)).await?;
        self.delete_all_chunks_of(&log_ids, &mut tally).await?;
        let started = Instant::now();
        let delete = builds::Entity::delete_many()
            .filter(builds::Column::Id.is_in(build_ids))
            .into_query();
        tally.builds = self.unhurried_write(&delete).await?;
        tally.wrote(started, "deleting builds");
        Ok(tally)
    }

    /// Delete every chunk of these logs, [`CHUNK_BATCH`] a statement.
    async fn delete_all_chunks_of(
        &self,
        log_ids: &[i64],
        tally: &mut BatchTally,
    ) -> Result<(), DataError> {
        if log_ids.is_empty() {
            return Ok(());
        }
        loop {
            let started = Instant::now();
            let n = self.delete_chunks_of(log_ids).await?;
            tally.wrote(started, "deleting log chunks");
            tally.chunks += n;
            if n < CHUNK_BATCH {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    /// One batch of change deletion: up to [`CHANGE_BATCH`] changes older than
    /// `before`, with their files and properties.
    pub async fn delete_change_batch(&self, before: f64) -> Result<BatchTally, DataError> {
        let ids = self
            .ids(oldest(
                changes::Entity,
                changes::Column::Id,
                changes::Column::WhenTimestamp,
                before,
                CHANGE_BATCH,
            ))
            .await?;
        let mut tally = BatchTally::default();
        if ids.is_empty() {
            return Ok(tally);
        }
        let started = Instant::now();
        let delete = changes::Entity::delete_many()
            .filter(changes::Column::Id.is_in(ids))
            .into_query();
        tally.changes = self.unhurried_write(&delete).await?;
        tally.wrote(started, "deleting changes");
        Ok(tally)
    }

    /// One batch of forgetting webhook delivery ids received before
    /// `before` (the change horizon: a forge does not redeliver so old an
    /// event); returns how many were forgotten.
    pub async fn forget_hook_delivery_batch(&self, before: f64) -> Result<u64, DataError> {
        use change_hook_deliveries::Column as D;
        let ids = self
            .ids(oldest(
                change_hook_deliveries::Entity,
                D::Id,
                D::ReceivedAt,
                before,
                DELIVERY_BATCH,
            ))
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let delete = change_hook_deliveries::Entity::delete_many()
            .filter(D::Id.is_in(ids))
            .into_query();
        self.unhurried_write(&delete).await
    }

    /// One batch of the reporters' record from before `before` (the build
    /// horizon): events, and deliveries that are done (delivered, given up
    /// or dropped; a pending one stays whatever its age). Returns how many
    /// rows went.
    pub async fn forget_report_batch(&self, before: f64) -> Result<u64, DataError> {
        use crate::db::entities::{report_deliveries, report_events};
        let events = self
            .ids(oldest(
                report_events::Entity,
                report_events::Column::Id,
                report_events::Column::At,
                before,
                DELIVERY_BATCH,
            ))
            .await?;
        let done = self
            .ids(
                oldest(
                    report_deliveries::Entity,
                    report_deliveries::Column::Id,
                    report_deliveries::Column::CreatedAt,
                    before,
                    DELIVERY_BATCH,
                )
                .and_where(Expr::col(report_deliveries::Column::State).ne("pending"))
                .to_owned(),
            )
            .await?;
        let mut gone = 0;
        if !events.is_empty() {
            let delete = report_events::Entity::delete_many()
                .filter(report_events::Column::Id.is_in(events))
                .into_query();
            gone += self.unhurried_write(&delete).await?;
        }
        if !done.is_empty() {
            let delete = report_deliveries::Entity::delete_many()
                .filter(report_deliveries::Column::Id.is_in(done))
                .into_query();
            gone += self.unhurried_write(&delete).await?;
        }
        Ok(gone)
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

    /// Forget this master's passes but the newest `keep`: the janitor's own
    /// history must not grow forever either.
    pub async fn prune_janitor_passes(&self, keep: u64) -> Result<u64, DataError> {
        let cutoff = Query::select()
            .column(janitor_passes::Column::Id)
            .from(janitor_passes::Entity)
            .and_where(Expr::col(janitor_passes::Column::Masterid).eq(self.masterid))
            .order_by(janitor_passes::Column::Id, Order::Desc)
            .offset(keep.saturating_sub(1))
            .limit(1)
            .to_owned();
        let Some(&oldest_kept) = self.ids(cutoff).await?.first() else {
            return Ok(0);
        };
        Ok(janitor_passes::Entity::delete_many()
            .filter(janitor_passes::Column::Masterid.eq(self.masterid))
            .filter(janitor_passes::Column::Id.lt(oldest_kept))
            .exec(&self.db)
            .await?
            .rows_affected)
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
        let delete = logchunks::Entity::delete_many()
            .filter(logchunks::Column::Id.in_subquery(some_chunks))
            .into_query();
        self.unhurried_write(&delete).await
    }

    /// One of the janitor's writes, in a transaction of its own; returns the
    /// rows it touched. On PostgreSQL the commit does not wait for the WAL to
    /// reach the disk (`synchronous_commit = off` for this transaction only):
    /// a deletion lost in a crash is done again by the next pass, and the
    /// janitor's commits no longer queue for the disk with a running build's.
    /// That wait was the janitor's longest write at a million builds (187 ms).
    async fn unhurried_write<S: StatementBuilder>(&self, statement: &S) -> Result<u64, DataError> {
        let backend = self.db.get_database_backend();
        let statement = backend.build(statement);
        if backend != DbBackend::Postgres {
            return Ok(self.db.execute_raw(statement).await?.rows_affected());
        }
        let txn = self.db.begin().await?;
        txn.execute_unprepared("SET LOCAL synchronous_commit = off")
            .await?;
        let touched = txn.execute_raw(statement).await?.rows_affected();
        txn.commit().await?;
        Ok(touched)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mq::Bus;

    #[tokio::test]
    async fn only_the_newest_passes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::connect("sqlite:state.sqlite", dir.path())
            .await
            .unwrap();
        let masterid = crate::data::masters::register(&db, "test:master")
            .await
            .unwrap();
        let data = Data::new(db, Bus::new(), masterid);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(data.start_janitor_pass().await.unwrap());
        }
        assert_eq!(data.prune_janitor_passes(2).await.unwrap(), 3);
        let (left, total) = data
            .list_janitor_passes(&ListQuery::default())
            .await
            .unwrap();
        assert_eq!(total, 2);
        let left: Vec<i64> = left.iter().map(|p| p["passid"].as_i64().unwrap()).collect();
        assert_eq!(left, vec![ids[4], ids[3]]);
        // Nothing more to forget.
        assert_eq!(data.prune_janitor_passes(2).await.unwrap(), 0);
    }
}
