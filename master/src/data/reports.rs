//! The reporters' outbox (see migration 13).
//!
//! - [`Batch::push_report_event`] adds a `report_events` row to the batch
//!   that stores the event itself (a buildset's requests, a build's start or
//!   end), so the two commit together: an event a reporter must see is never
//!   lost to a crash between them. Only the kinds of event that some
//!   configured reporter's generators take are added
//!   ([`Data::set_reported_events`]): a master without reporters writes
//!   nothing more, and one whose reporters report only builds writes no
//!   buildset rows.
//! - A reporter reads the events after its position
//!   ([`Data::report_events_after`]) and stores the requests it made of
//!   them with its new position in one batch ([`Data::record_turn`]; with
//!   an empty queue, once they are sent, with how each went): a restart
//!   skips no event. It delivers what is due
//!   ([`Data::due_deliveries`]: pending, its time come, and no earlier
//!   pending delivery with the same order key waiting for its retry, so one
//!   commit's statuses go out in order) and stores how each attempt ended
//!   in one more (a turn is one write, or two, however much it carried).

use super::batch::Batch;
use super::state::push_set_state;
use super::{Data, DataError, now};
use crate::db::entities::{report_deliveries, report_events};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::sea_query::{SelectStatement, SimpleExpr};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// What happened, as a reporter reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportEvent {
    /// A buildset's build requests were queued (`objectid`: the buildset).
    BuildsetNew,
    BuildStarted,
    BuildFinished,
    /// A buildset's last request completed (`objectid`: the buildset).
    BuildsetComplete,
    /// A worker stayed away longer than its `missing_timeout` (`objectid`:
    /// the worker).
    WorkerMissing,
}

impl ReportEvent {
    pub const ALL: [ReportEvent; 5] = [
        ReportEvent::BuildsetNew,
        ReportEvent::BuildStarted,
        ReportEvent::BuildFinished,
        ReportEvent::BuildsetComplete,
        ReportEvent::WorkerMissing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReportEvent::BuildsetNew => "buildset_new",
            ReportEvent::BuildStarted => "build_started",
            ReportEvent::BuildFinished => "build_finished",
            ReportEvent::BuildsetComplete => "buildset_complete",
            ReportEvent::WorkerMissing => "worker_missing",
        }
    }

    pub fn parse(name: &str) -> Option<ReportEvent> {
        ReportEvent::ALL.into_iter().find(|e| e.name() == name)
    }

    fn bit(self) -> u8 {
        1 << ReportEvent::ALL
            .iter()
            .position(|e| *e == self)
            .unwrap_or(0)
    }
}

/// A set of kinds of event: those a reporter's generators take, or those
/// any configured reporter takes (what the master records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportEvents(u8);

impl ReportEvents {
    pub fn with(self, event: ReportEvent) -> ReportEvents {
        ReportEvents(self.0 | event.bit())
    }

    pub fn union(self, other: ReportEvents) -> ReportEvents {
        ReportEvents(self.0 | other.0)
    }

    pub fn contains(self, event: ReportEvent) -> bool {
        self.0 & event.bit() != 0
    }
}

impl FromIterator<ReportEvent> for ReportEvents {
    fn from_iter<I: IntoIterator<Item = ReportEvent>>(events: I) -> ReportEvents {
        events
            .into_iter()
            .fold(ReportEvents::default(), ReportEvents::with)
    }
}

/// A request a reporter made of an event, to be queued.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub eventid: i64,
    pub order_key: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// How one attempt at a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Try again at `retry_at` (a 5xx, a 429, a timeout, no connection).
    Retry {
        status: Option<u16>,
        error: String,
        retry_at: f64,
    },
    /// Given up: refused (a 4xx), or out of attempts.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// The object state key of a reporter's position in `report_events`.
pub const LAST_EVENT_SEEN: &str = "last_eventid";
/// The object class reporters' state is kept under.
pub const REPORTER_STATE: &str = "reporter";

impl Batch {
    /// Add the reporters' record of an event (`objectid`: the buildset's or
    /// build's id, or an expression of it) to the batch that stores the
    /// event; nothing while no configured reporter takes this kind.
    pub(crate) fn push_report_event(
        &mut self,
        event: ReportEvent,
        objectid: impl Into<SimpleExpr>,
    ) {
        if !self.reported.contains(event) {
            return;
        }
        use report_events::Column as C;
        let insert = Query::insert()
            .into_table(report_events::Entity)
            .columns([C::Kind, C::Objectid, C::At])
            .values_panic([event.name().into(), objectid.into(), now().into()])
            .to_owned();
        self.push(&insert);
        self.stores_report_event = true;
    }

    /// Like [`Batch::push_report_event`], stored only if `when` (a query)
    /// finds a row as the batch runs: an event that an earlier statement of
    /// the batch may or may not cause (a buildset's completion).
    pub(crate) fn push_report_event_when(
        &mut self,
        event: ReportEvent,
        objectid: i64,
        when: SelectStatement,
    ) {
        if !self.reported.contains(event) {
            return;
        }
        use report_events::Column as C;
        let select = Query::select()
            .expr(Expr::val(event.name()))
            .expr(Expr::val(objectid))
            .expr(Expr::val(now()))
            .and_where(Expr::exists(when))
            .to_owned();
        let mut insert = Query::insert();
        insert
            .into_table(report_events::Entity)
            .columns([C::Kind, C::Objectid, C::At]);
        if insert.select_from(select).is_ok() {
            self.push(&insert);
            self.stores_report_event = true;
        }
    }
}

impl Data {
    /// Store that worker `workerid` is missing, for the reporters, and say
    /// so on the bus (`workers/N/missing`).
    pub async fn worker_missing(&self, workerid: i64) -> Result<(), DataError> {
        let mut batch = Batch::new(self);
        batch.push_report_event(ReportEvent::WorkerMissing, workerid);
        self.run_batch(batch).await?;
        if let Some(worker) = self.worker_json(workerid).await? {
            self.bus.publish(
                crate::mq::Topic::Worker {
                    id: workerid,
                    event: crate::mq::topic::WorkerEvent::Missing,
                },
                worker,
            );
        }
        Ok(())
    }

    /// Which kinds of event are written for reporters (those the
    /// configured reporters' generators take).
    pub fn set_reported_events(&self, events: ReportEvents) {
        self.reported_events.store(events.0, Ordering::Relaxed);
    }

    pub(super) fn reported_events(&self) -> ReportEvents {
        ReportEvents(self.reported_events.load(Ordering::Relaxed))
    }

    /// Says that a batch storing report events committed.
    pub(super) fn report_events_stored(&self) {
        self.report_events_stored
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes each time report events are stored: what wakes an idle
    /// reporter (it needs no other event, so it does not follow the bus).
    pub fn watch_report_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.report_events_stored.subscribe()
    }

    /// The id of the newest event stored before `before` (0 when none):
    /// where a new reporter started at `before` begins.
    pub async fn newest_report_event(&self, before: f64) -> Result<i64, DataError> {
        Ok(report_events::Entity::find()
            .filter(report_events::Column::At.lt(before))
            .order_by_desc(report_events::Column::Id)
            .one(&self.db)
            .await?
            .map_or(0, |e| e.id))
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn report_events_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<report_events::Model>, DataError> {
        Ok(report_events::Entity::find()
            .filter(report_events::Column::Id.gt(after))
            .order_by_asc(report_events::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// What a reporter's turn did, in one transaction: how its attempts at
    /// queued deliveries ended (delivery id, attempt), the requests it made
    /// of new events (each with how its first attempt ended, when it was
    /// sent before being stored; `None`: queued untried), and its new
    /// position in the events (`None`: unchanged).
    pub async fn record_turn(
        &self,
        reporter: &str,
        objectid: i64,
        position: Option<i64>,
        deliveries: Vec<(NewDelivery, Option<Attempt>)>,
        attempts: &[(i64, Attempt)],
    ) -> Result<(), DataError> {
        use report_deliveries::Column as C;
        let mut batch = Batch::new(self);
        // Attempts that ended alike (most often: all delivered, 200) are
        // one statement.
        let mut alike: Vec<(&Attempt, Vec<i64>)> = Vec::new();
        for (id, attempt) in attempts {
            match alike.iter_mut().find(|(a, _)| *a == attempt) {
                Some((_, ids)) => ids.push(*id),
                None => alike.push((attempt, vec![*id])),
            }
        }
        for (attempt, ids) in alike {
            let o = Outcome::of(attempt);
            let mut update = Query::update();
            update
                .table(report_deliveries::Entity)
                .value(C::State, o.state)
                .value(C::Attempts, Expr::col(C::Attempts).add(1))
                .value(C::NextAttemptAt, o.next_attempt_at)
                .value(C::LastStatus, o.status)
                .value(C::DoneAt, o.done_at)
                .and_where(Expr::col(C::Id).is_in(ids));
            if let Some(error) = o.error {
                update.value(C::LastError, error);
            }
            batch.push(&update);
        }
        if !deliveries.is_empty() {
            let at = now();
            let mut insert = Query::insert();
            insert.into_table(report_deliveries::Entity).columns([
                C::Reporter,
                C::Eventid,
                C::OrderKey,
                C::Method,
                C::Url,
                C::HeadersJson,
                C::Body,
                C::State,
                C::Attempts,
                C::NextAttemptAt,
                C::LastStatus,
                C::LastError,
                C::CreatedAt,
                C::DoneAt,
            ]);
            for (d, attempt) in deliveries {
                let headers = serde_json::to_string(&d.headers).unwrap_or_else(|_| "[]".into());
                let o = attempt
                    .as_ref()
                    .map_or_else(|| Outcome::queued(at), Outcome::of);
                insert.values([
                    reporter.into(),
                    d.eventid.into(),
                    d.order_key.into(),
                    d.method.into(),
                    d.url.into(),
                    headers.into(),
                    d.body.into(),
                    o.state.into(),
                    i32::from(attempt.is_some()).into(),
                    o.next_attempt_at.into(),
                    o.status.into(),
                    o.error.into(),
                    at.into(),
                    o.done_at.into(),
                ])?;
            }
            batch.push(&insert);
        }
        if let Some(position) = position {
            push_set_state(&mut batch, objectid, LAST_EVENT_SEEN, &json!(position))?;
        }
        self.run_batch(batch).await?;
        Ok(())
    }

    /// The reporter's deliveries that may go now, oldest first: pending,
    /// due, and not behind an earlier pending one with the same order key
    /// that waits for its retry. Several of one key may come, in order: the
    /// caller sends a later one only if the earlier ones were delivered.
    pub async fn due_deliveries(
        &self,
        reporter: &str,
        limit: u64,
    ) -> Result<Vec<report_deliveries::Model>, DataError> {
        use report_deliveries::Column as C;
        let at = now();
        let earlier = Alias::new("earlier");
        let blocked = Query::select()
            .expr(Expr::val(1))
            .from_as(report_deliveries::Entity, earlier.clone())
            .and_where(Expr::col((earlier.clone(), C::Reporter)).eq(reporter))
            .and_where(Expr::col((earlier.clone(), C::State)).eq("pending"))
            .and_where(
                Expr::col((earlier.clone(), C::OrderKey))
                    .equals((report_deliveries::Entity, C::OrderKey)),
            )
            .and_where(
                Expr::col((earlier.clone(), C::Id))
                    .lt(Expr::col((report_deliveries::Entity, C::Id))),
            )
            // An earlier one that is due itself comes first in this answer
            // (the caller stops a key at its first failure).
            .and_where(Expr::col((earlier, C::NextAttemptAt)).gt(at))
            .to_owned();
        let select = report_deliveries::Entity::find()
            .filter(C::Reporter.eq(reporter))
            .filter(C::State.eq("pending"))
            .filter(C::NextAttemptAt.lte(at))
            .filter(Expr::exists(blocked).not())
            .order_by_asc(C::Id)
            .limit(limit);
        Ok(select.all(&self.db).await?)
    }

    /// When the reporter's next retry is due: the earliest pending delivery
    /// already tried (one never tried is either due now or waits behind an
    /// earlier one of its order key that was tried), if any.
    pub async fn next_retry_at(&self, reporter: &str) -> Result<Option<f64>, DataError> {
        use report_deliveries::Column as C;
        #[derive(FromQueryResult)]
        struct Next {
            at: Option<f64>,
        }
        let next = report_deliveries::Entity::find()
            .select_only()
            .column_as(C::NextAttemptAt.min(), "at")
            .filter(C::Reporter.eq(reporter))
            .filter(C::State.eq("pending"))
            .filter(C::Attempts.gt(0))
            .into_model::<Next>()
            .one(&self.db)
            .await?;
        Ok(next.and_then(|n| n.at))
    }

    /// A removed reporter's queue: its pending deliveries become `dropped`.
    /// Returns how many.
    pub async fn drop_deliveries(&self, reporter: &str) -> Result<u64, DataError> {
        use report_deliveries::Column as C;
        let done = report_deliveries::Entity::update_many()
            .col_expr(C::State, Expr::value("dropped"))
            .col_expr(C::DoneAt, Expr::value(now()))
            .filter(C::Reporter.eq(reporter))
            .filter(C::State.eq("pending"))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected)
    }

    /// What `/api/v2/reporters` shows of each reporter: its queue, its last
    /// success and its last error.
    pub async fn reporter_record(&self, reporter: &str) -> Result<Value, DataError> {
        use report_deliveries::Column as C;
        // How many in each state, in one query.
        let counts: Vec<(String, i64)> = report_deliveries::Entity::find()
            .select_only()
            .column(C::State)
            .column_as(C::Id.count(), "n")
            .filter(C::Reporter.eq(reporter))
            .group_by(C::State)
            .into_tuple()
            .all(&self.db)
            .await?;
        let count = |state: &str| {
            counts
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n)
        };
        let (queued, delivered, failed, dropped) = (
            count("pending"),
            count("delivered"),
            count("failed"),
            count("dropped"),
        );
        let last_success = report_deliveries::Entity::find()
            .filter(C::Reporter.eq(reporter))
            .filter(C::State.eq("delivered"))
            .order_by_desc(C::Id)
            .one(&self.db)
            .await?;
        let last_error = report_deliveries::Entity::find()
            .filter(C::Reporter.eq(reporter))
            .filter(C::LastError.is_not_null())
            .order_by_desc(C::Id)
            .one(&self.db)
            .await?;
        Ok(json!({
            "queued": queued,
            "delivered": delivered,
            "failed": failed,
            "dropped": dropped,
            "last_success_at": last_success.and_then(|d| d.done_at),
            "last_error": last_error.map(|d| json!({
                "deliveryid": d.id,
                "status": d.last_status,
                "error": d.last_error,
                "state": d.state,
                "attempts": d.attempts,
            })),
        }))
    }

    /// The `state` of the last delivery of each order key (commit statuses'
    /// last state per commit and context), from the reporter's last 1,000.
    pub async fn last_states(
        &self,
        reporter: &str,
    ) -> Result<std::collections::HashMap<String, String>, DataError> {
        let mut out = std::collections::HashMap::new();
        for d in self
            .reporter_deliveries(reporter, 1000)
            .await?
            .into_iter()
            .rev()
        {
            let state = serde_json::from_str::<Value>(&d.body)
                .ok()
                .and_then(|b| b["state"].as_str().map(str::to_string));
            if let Some(state) = state {
                out.insert(d.order_key, state);
            }
        }
        Ok(out)
    }

    /// A reporter's deliveries, newest first (its page).
    pub async fn reporter_deliveries(
        &self,
        reporter: &str,
        limit: u64,
    ) -> Result<Vec<report_deliveries::Model>, DataError> {
        Ok(report_deliveries::Entity::find()
            .filter(report_deliveries::Column::Reporter.eq(reporter))
            .order_by_desc(report_deliveries::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}

/// A delivery's columns after an attempt (or queued, untried).
struct Outcome {
    state: &'static str,
    status: Option<i32>,
    error: Option<String>,
    next_attempt_at: f64,
    done_at: Option<f64>,
}

impl Outcome {
    /// Queued at `at`, not tried yet: due at once.
    fn queued(at: f64) -> Outcome {
        Outcome {
            state: "pending",
            status: None,
            error: None,
            next_attempt_at: at,
            done_at: None,
        }
    }

    fn of(attempt: &Attempt) -> Outcome {
        let at = now();
        let (state, status, error, next_attempt_at, done_at) = match attempt {
            Attempt::Delivered { status } => ("delivered", Some(*status), None, at, Some(at)),
            Attempt::Retry {
                status,
                error,
                retry_at,
            } => ("pending", *status, Some(error.clone()), *retry_at, None),
            Attempt::Failed { status, error } => {
                ("failed", *status, Some(error.clone()), at, Some(at))
            }
        };
        Outcome {
            state,
            status: status.map(i32::from),
            error,
            next_attempt_at,
            done_at,
        }
    }
}
