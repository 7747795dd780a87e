//! The `steps` collection.

use super::batch::Batch;
use super::logs::{ClosedLog, LogWriter, push_log_finished, push_new_log};
use super::query::{FieldKind, ListQuery, apply, cut_long_text, fetch_page, mark_cut};
use super::{Data, DataError, now};
use crate::db::entities::steps;
use crate::mq::Topic;
use crate::mq::topic::StepEvent;
use sea_orm::EntityTrait;
use sea_orm::Order;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use serde_json::{Value, json};

fn fields(name: &str) -> Option<FieldKind<steps::Column>> {
    use steps::Column as C;
    Some(match name {
        "stepid" => FieldKind::Int(C::Id),
        "number" => FieldKind::Int(C::Number),
        "name" => FieldKind::Text(C::Name),
        "buildid" => FieldKind::Int(C::Buildid),
        "started_at" => FieldKind::Float(C::StartedAt),
        "complete_at" => FieldKind::Float(C::CompleteAt),
        "complete" => FieldKind::NotNull(C::CompleteAt),
        "results" => FieldKind::Int(C::Results),
        "hidden" => FieldKind::Bool(C::Hidden),
        _ => return None,
    })
}

fn step_json(s: &steps::Model) -> Value {
    let urls: Value = serde_json::from_str(&s.urls_json).unwrap_or_else(|_| json!([]));
    json!({
        "stepid": s.id,
        "number": s.number,
        "name": s.name,
        "buildid": s.buildid,
        "started_at": s.started_at,
        // A step's row is written once its locks are held (a step without
        // locks holds them at once), so this is when it started.
        "locks_acquired_at": s.started_at,
        "complete_at": s.complete_at,
        "complete": s.complete_at.is_some(),
        "results": s.results,
        "state_string": s.state_string,
        "urls": urls,
        "hidden": s.hidden,
    })
}

impl Data {
    /// A step of `buildid` starts now, with its stdio log `log_name` (one
    /// trip). Returns its id and the log's writer.
    pub async fn start_step(
        &self,
        buildid: i64,
        number: i32,
        name: &str,
        state: &str,
        log_name: &str,
    ) -> Result<(i64, LogWriter), DataError> {
        use steps::Column as C;
        let mut batch = Batch::new(self);
        let step = batch.push(
            Query::insert()
                .into_table(steps::Entity)
                .columns([
                    C::Number,
                    C::Name,
                    C::Buildid,
                    C::StartedAt,
                    C::StateString,
                    C::UrlsJson,
                    C::Hidden,
                ])
                .values([
                    number.into(),
                    name.into(),
                    buildid.into(),
                    now().into(),
                    state.into(),
                    "[]".into(),
                    false.into(),
                ])?
                .returning_all(),
        );
        let stepid = batch.last_id("steps");
        let log = push_new_log(&mut batch, stepid, log_name);
        let mut rows = self.run_batch(batch).await?;
        let row: steps::Model = rows.one(step, "returned no new step row")?;
        self.bus.publish(
            Topic::Step {
                id: row.id,
                event: StepEvent::Started,
            },
            step_json(&row),
        );
        let writer = self.open_log(rows.one(log, "returned no new log row")?)?;
        Ok((row.id, writer))
    }

    /// Another log of a running step (`stdio` is made with the step).
    pub async fn add_log(&self, stepid: i64, name: &str) -> Result<LogWriter, DataError> {
        let mut batch = Batch::new(self);
        let log = push_new_log(&mut batch, Expr::val(stepid), name);
        let mut rows = self.run_batch(batch).await?;
        self.open_log(rows.one(log, "returned no new log row")?)
    }

    /// The step is over, and its logs (closed) complete: one trip.
    pub async fn finish_step(
        &self,
        stepid: i64,
        results: i32,
        state: &str,
        hidden: bool,
        logs: &[ClosedLog],
    ) -> Result<(), DataError> {
        let mut batch = Batch::new(self);
        let logs_finished: Vec<_> = logs
            .iter()
            .map(|log| push_log_finished(&mut batch, log))
            .collect();
        let finished = batch.push(
            Query::update()
                .table(steps::Entity)
                .values([
                    (steps::Column::CompleteAt, now().into()),
                    (steps::Column::Results, results.into()),
                    (steps::Column::StateString, state.into()),
                    (steps::Column::Hidden, hidden.into()),
                ])
                .and_where(Expr::col(steps::Column::Id).eq(stepid))
                .returning_all(),
        );
        let mut rows = self.run_batch(batch).await?;
        for finished in logs_finished {
            self.publish_log_finished(&mut rows, finished)?;
        }
        for s in rows.models::<steps::Model>(finished)? {
            self.bus.publish(
                Topic::Step {
                    id: stepid,
                    event: StepEvent::Finished,
                },
                step_json(&s),
            );
        }
        Ok(())
    }

    pub async fn list_steps(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(steps::Entity::find(), q, &fields)?;
        let select = cut_long_text(select, &[steps::Column::StateString], q);
        let (rows, total) =
            fetch_page(&self.db, select, q, (steps::Column::Number, Order::Asc)).await?;
        let mut out: Vec<Value> = rows.iter().map(step_json).collect();
        mark_cut(&mut out, &["state_string"], q);
        Ok((out, total))
    }
}
