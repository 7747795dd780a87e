//! The `workers` collection: configured workers, what they told us in their hello,
//! and which master they are connected to.

use super::batch::Batch;
use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError, now};
use crate::db::entities::{connected_workers, workers};
use crate::mq::Topic;
use crate::mq::topic::WorkerEvent;
use moonbot_worker::protocol::WorkerInfo;
use sea_orm::Order;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryTrait,
    TransactionTrait,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn fields(name: &str) -> Option<FieldKind<workers::Column>> {
    use workers::Column as C;
    Some(match name {
        "workerid" => FieldKind::Int(C::Id),
        "name" => FieldKind::Text(C::Name),
        "paused" => FieldKind::Bool(C::Paused),
        _ => return None,
    })
}

impl Data {
    /// Make sure every configured worker has a row; returns name → workerid.
    pub async fn sync_workers(&self, names: &[String]) -> Result<BTreeMap<String, i64>, DataError> {
        let existing: BTreeMap<String, i64> = workers::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.name, row.id))
            .collect();
        let mut ids = BTreeMap::new();
        let txn = self.db.begin().await?;
        for name in names {
            let id = match existing.get(name) {
                Some(id) => *id,
                None => {
                    workers::ActiveModel {
                        name: Set(name.clone()),
                        info: Set("{}".into()),
                        paused: Set(false),
                        ..Default::default()
                    }
                    .insert(&txn)
                    .await?
                    .id
                }
            };
            ids.insert(name.clone(), id);
        }
        txn.commit().await?;
        Ok(ids)
    }

    /// A worker completed its hello on this master.
    pub async fn worker_connected(
        &self,
        workerid: i64,
        info: &WorkerInfo,
    ) -> Result<(), DataError> {
        use connected_workers::Column as C;
        let info_json = serde_json::to_string(info).unwrap_or_else(|_| "{}".into());
        // One batch (one trip on SQLite): thousands of workers may connect at
        // once after a master restart.
        let mut batch = Batch::new(self);
        let worker = batch.push(
            Query::update()
                .table(workers::Entity)
                .values([(workers::Column::Info, info_json.into())])
                .and_where(Expr::col(workers::Column::Id).eq(workerid))
                .returning_all(),
        );
        batch.push(
            Query::delete()
                .from_table(connected_workers::Entity)
                .and_where(Expr::col(C::Workerid).eq(workerid))
                .and_where(Expr::col(C::Masterid).eq(self.masterid)),
        );
        batch.push(
            Query::insert()
                .into_table(connected_workers::Entity)
                .columns([C::Masterid, C::Workerid, C::ConnectedAt, C::Graceful])
                .values_panic([
                    self.masterid.into(),
                    workerid.into(),
                    now().into(),
                    false.into(),
                ]),
        );
        let connections = batch.push(
            &connected_workers::Entity::find()
                .filter(C::Workerid.eq(workerid))
                .into_query(),
        );
        let mut rows = self.run_batch(batch).await?;
        let conns: Vec<connected_workers::Model> = rows.models(connections)?;
        for row in rows.models::<workers::Model>(worker)? {
            self.bus.publish(
                Topic::Worker {
                    id: workerid,
                    event: WorkerEvent::Connected,
                },
                worker_with_connections(&row, &conns),
            );
        }
        Ok(())
    }

    /// The worker's connection to this master ended.
    pub async fn worker_disconnected(&self, workerid: i64) -> Result<(), DataError> {
        connected_workers::Entity::delete_many()
            .filter(self.own_connection(workerid))
            .exec(&self.db)
            .await?;
        self.publish_worker(workerid, WorkerEvent::Disconnected)
            .await?;
        Ok(())
    }

    /// The row of `workerid`'s connection to this master.
    fn own_connection(&self, workerid: i64) -> sea_orm::Condition {
        sea_orm::Condition::all()
            .add(connected_workers::Column::Workerid.eq(workerid))
            .add(connected_workers::Column::Masterid.eq(self.masterid))
    }

    /// Publish `workers/N/EVENT` with the worker as the API shows it.
    async fn publish_worker(
        &self,
        workerid: i64,
        event: WorkerEvent,
    ) -> Result<Option<Value>, DataError> {
        let worker = self.worker_json(workerid).await?;
        if let Some(w) = &worker {
            self.bus.publish(
                Topic::Worker {
                    id: workerid,
                    event,
                },
                w.clone(),
            );
        }
        Ok(worker)
    }

    /// Pause or unpause a worker: a paused worker gets no new builds (running
    /// ones go on). Kept across restarts. Returns the worker as the API shows it.
    pub async fn set_worker_paused(
        &self,
        workerid: i64,
        paused: bool,
    ) -> Result<Option<Value>, DataError> {
        workers::Entity::update_many()
            .col_expr(workers::Column::Paused, Expr::value(paused))
            .filter(workers::Column::Id.eq(workerid))
            .exec(&self.db)
            .await?;
        self.publish_worker(workerid, WorkerEvent::StateUpdated)
            .await
    }

    /// Is this worker paused?
    pub async fn worker_paused(&self, workerid: i64) -> Result<bool, DataError> {
        Ok(workers::Entity::find_by_id(workerid)
            .one(&self.db)
            .await?
            .is_some_and(|w| w.paused))
    }

    /// The worker's connection to this master is stopping gracefully: no new
    /// builds, and it goes once the running ones are done.
    pub async fn worker_graceful(&self, workerid: i64) -> Result<(), DataError> {
        connected_workers::Entity::update_many()
            .col_expr(connected_workers::Column::Graceful, Expr::value(true))
            .filter(self.own_connection(workerid))
            .exec(&self.db)
            .await?;
        self.publish_worker(workerid, WorkerEvent::StateUpdated)
            .await?;
        Ok(())
    }

    pub(crate) async fn worker_json(&self, workerid: i64) -> Result<Option<Value>, DataError> {
        let Some(row) = workers::Entity::find_by_id(workerid).one(&self.db).await? else {
            return Ok(None);
        };
        Ok(Some(self.worker_row_json(&row).await?))
    }

    async fn worker_row_json(&self, row: &workers::Model) -> Result<Value, DataError> {
        let conns = connected_workers::Entity::find()
            .filter(connected_workers::Column::Workerid.eq(row.id))
            .all(&self.db)
            .await?;
        Ok(worker_with_connections(row, &conns))
    }

    /// Workers in the API's shape; `configured` limits them to the running config.
    pub async fn list_workers(
        &self,
        q: &ListQuery,
        configured: &BTreeMap<String, i64>,
    ) -> Result<(Vec<Value>, u64), DataError> {
        let ids: Vec<i64> = configured.values().copied().collect();
        let select = workers::Entity::find().filter(workers::Column::Id.is_in(ids));
        let select = apply(select, q, &fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (workers::Column::Id, Order::Asc)).await?;
        // The connections of the whole page in one query, not one per worker.
        let conns = connected_workers::Entity::find()
            .filter(connected_workers::Column::Workerid.is_in(rows.iter().map(|r| r.id)))
            .all(&self.db)
            .await?;
        let mut by_worker: BTreeMap<i64, Vec<connected_workers::Model>> = BTreeMap::new();
        for c in conns {
            by_worker.entry(c.workerid).or_default().push(c);
        }
        let out = rows
            .iter()
            .map(|r| worker_with_connections(r, by_worker.get(&r.id).map_or(&[], |v| v)))
            .collect();
        Ok((out, total))
    }
}

/// A worker in the API's shape, with where it is connected.
fn worker_with_connections(row: &workers::Model, conns: &[connected_workers::Model]) -> Value {
    let info: Value = serde_json::from_str(&row.info).unwrap_or_else(|_| json!({}));
    json!({
        "workerid": row.id,
        "name": row.name,
        "workerinfo": info,
        "paused": row.paused,
        // moonbot's pause takes no reason.
        "pause_reason": null,
        // The builders each master runs it for: the API fills this in from
        // the running configuration.
        "configured_on": [],
        "graceful": conns.iter().any(|c| c.graceful),
        "connected_to": conns
            .iter()
            .map(|c| json!({"masterid": c.masterid, "connected_at": c.connected_at}))
            .collect::<Vec<_>>(),
    })
}
