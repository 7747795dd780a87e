//! Reporters: telling people and systems what builds did, without a build
//! ever waiting for them and without losing a message.
//!
//! A reporter is a service (one task per reporter of master.lua). Each
//! turn it reads the `report_events` that builds, buildsets and workers
//! stored with their own rows, in order from its position (on PostgreSQL
//! an id may commit after a higher one: a reporter reads up to the first
//! missing id, and passes it only after [`GAP_WAIT`], as a rolled-back
//! one); asks its generators ([`generators`]) which to report and renders
//! each into requests (its transport: [`http_push`] …), stored with its new
//! position in one write; then delivers what is due ([`delivery`]),
//! retrying with backoff on 5xx answers, timeouts and 429 (honouring
//! `Retry-After`), giving up on a 4xx or after `max_attempts`, and stores
//! the attempts in one write. Under a stream of builds a
//! busy reporter gathers events (up to [`GATHER`]) between turns, so its
//! cost is a few statements per turn, not per build.
//! A restart resumes from the stored position and the stored queue; a
//! removed reporter's queue is dropped, with a log line saying how much.

pub mod chat;
pub mod commit_status;
pub mod delivery;
pub mod format;
pub mod generators;
pub mod github_comment;
pub mod http_push;
pub mod mail;

use crate::config::ReporterConfig;
use crate::config::reporters::ReporterKind;
use crate::data::DataError;
use crate::data::reports::{self, LAST_EVENT_SEEN, NewDelivery, REPORTER_STATE, ReportEvent};
use crate::db::entities::{report_deliveries, report_events};
use crate::services::{TaskService, TaskSignals};
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tracing::{info, warn};

/// Events read per turn.
const EVENTS_PER_TURN: u64 = 500;
/// Deliveries attempted per turn.
const DELIVERIES_PER_TURN: u64 = 200;
/// How long a busy reporter gathers events before its next turn, at most:
/// under a stream of builds a turn takes many events at once (each turn is
/// a few reads and one write, whatever it carries). It waits 1 ms for each
/// event and message its last turn carried, between [`MIN_GATHER`] and
/// this, so a trickle is reported at once. An idle reporter turns at once
/// when an event comes.
const GATHER: Duration = Duration::from_millis(100);
const MIN_GATHER: Duration = Duration::from_millis(5);
/// The longest wait between turns (a safety net; events wake it sooner).
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// How long a missing event id is waited for before it counts as rolled back.
const GAP_WAIT: Duration = Duration::from_secs(5);
/// How soon a reporter waiting on a missing event id looks again.
const GAP_RECHECK: Duration = Duration::from_millis(50);

pub fn start(shared: Arc<Shared>, config: &ReporterConfig) -> TaskService {
    let name = config.name.clone();
    TaskService::spawn("reporter", &config.name, move |signals| {
        run(shared, name, signals)
    })
}

fn config_of(shared: &Shared, name: &str) -> Option<ReporterConfig> {
    let running = shared.running_config();
    running
        .loaded
        .config
        .reporters
        .iter()
        .find(|r| r.name == name)
        .cloned()
}

async fn run(shared: Arc<Shared>, name: String, (mut settings, mut shutdown): TaskSignals) {
    // Events stored from now on are this reporter's (see `start_position`).
    let started = crate::data::now();
    let mut events = shared.data.bus.subscribe();
    // One HTTP agent for the reporter's life: its connections are reused.
    let agent = ureq::AgentBuilder::new().build();
    // The last state queued per commit and context (GitLab refuses some
    // repeats); what the queue holds is read once at start.
    let gitlab = config_of(&shared, &name).is_some_and(|c| {
        matches!(&c.kind, ReporterKind::CommitStatus(s) if s.forge == crate::config::reporters::Forge::GitLab)
    });
    let read = if gitlab {
        shared.data.last_states(&name).await
    } else {
        Ok(HashMap::new())
    };
    let mut last_states = match read {
        Ok(states) => states,
        Err(e) => {
            warn!(reporter = %name, "could not read the statuses already queued: {e}");
            Default::default()
        }
    };
    // The first missing event id after the position, and since when.
    let mut gap: Option<(i64, std::time::Instant)> = None;
    let mut position = loop {
        match start_position(&shared, &name, started).await {
            Ok(p) => break p,
            Err(e) => {
                warn!(reporter = %name, "could not read where the reporter stopped: {e}; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    // When the earliest retry in the queue is due: read once, then known
    // from the turns' own attempts.
    let mut next_retry = shared.data.next_delivery_at(&name).await.ok().flatten();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(config) = config_of(&shared, &name) else {
            break;
        };
        let now = crate::data::now();
        if next_retry.is_some_and(|at| at <= now) {
            next_retry = None;
        }
        let busy = match turn(
            &agent,
            &shared,
            &config,
            &mut position,
            &mut last_states,
            &mut gap,
        )
        .await
        {
            Ok(done) => {
                if let Some(at) = done.retry_at {
                    next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                }
                done.more
                    .then(|| Duration::from_millis(done.carried as u64).clamp(MIN_GATHER, GATHER))
            }
            Err(e) => {
                // What the turn tried stays pending: look again soon.
                next_retry = Some(crate::data::now() + 1.0);
                warn!(reporter = %name, "reporting failed: {e}; trying again");
                None
            }
        };
        let mut wait = match next_retry {
            Some(at) => Duration::from_secs_f64(
                (at - crate::data::now()).clamp(0.0, IDLE_WAIT.as_secs_f64()),
            ),
            None => IDLE_WAIT,
        };
        if let Some(gather) = busy {
            wait = wait.min(gather);
        }
        // A gap in the events: look again soon.
        if gap.is_some() {
            wait = wait.min(GAP_RECHECK);
        }
        // Only what stores a report event wakes it early (a build's start or
        // end, a new buildset, a missing worker), and only an idle reporter:
        // a busy one gathers a burst into its next turn.
        let idle = busy.is_none();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = next_report_event(&mut events), if idle => {}
            _ = settings.changed() => {}
            _ = shutdown.changed() => break,
        }
        while !matches!(
            events.try_recv(),
            Err(TryRecvError::Empty | TryRecvError::Closed)
        ) {}
    }
    // Removed from master.lua (not the master stopping): its queue goes.
    if config_of(&shared, &name).is_none() {
        match shared.data.drop_deliveries(&name).await {
            Ok(0) => info!(reporter = %name, "reporter removed"),
            Ok(n) => {
                warn!(reporter = %name, dropped = n, "reporter removed: its {n} undelivered message(s) are dropped")
            }
            Err(e) => warn!(reporter = %name, "reporter removed; could not drop its queue: {e}"),
        }
    }
}

/// The requests a reporter's transport makes of `report` (the `index`th
/// of event `eventid`), each with the commit status state it sets, if any.
async fn render(
    shared: &Shared,
    config: &ReporterConfig,
    report: &generators::Report,
    eventid: i64,
    index: usize,
    last_states: &HashMap<String, String>,
) -> Result<Vec<(NewDelivery, Option<String>)>, String> {
    let unstated = |r: Option<NewDelivery>| r.into_iter().map(|d| (d, None)).collect();
    Ok(match &config.kind {
        ReporterKind::HttpPush(push) => unstated(Some(
            http_push::request(shared, push, report, eventid).await?,
        )),
        ReporterKind::GitHubComment(c) => {
            unstated(github_comment::request(shared, c, report, eventid).await?)
        }
        ReporterKind::Mail(mail) => unstated(mail::request(shared, mail, report, eventid).await?),
        ReporterKind::Chat(chat) => unstated(Some(
            chat::request(shared, chat, report, eventid, index).await?,
        )),
        ReporterKind::CommitStatus(status) => {
            commit_status::requests(status, report, eventid, last_states)
                .into_iter()
                .map(|(d, state)| (d, Some(state)))
                .collect()
        }
    })
}

/// The next bus event whose row stored a report event (or a lag: some
/// may have been missed); never, once the bus is closed.
async fn next_report_event(events: &mut tokio::sync::broadcast::Receiver<crate::mq::Event>) {
    loop {
        match events.recv().await {
            Ok(e) if stores_report_event(&e.key) => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// Whether an event's topic is one whose row stored a report event.
fn stores_report_event(key: &str) -> bool {
    (key.starts_with("builds/") && (key.ends_with("/new") || key.ends_with("/finished")))
        || (key.starts_with("buildsets/") && (key.ends_with("/new") || key.ends_with("/complete")))
        || (key.starts_with("workers/") && key.ends_with("/missing"))
}

/// Where the reporter reads from: its stored position, or (a new reporter,
/// whose task started at `started`) the newest event before it started, so
/// it reports what comes after it, not the history, even when its first
/// reads come after builds that began with it.
async fn start_position(
    shared: &Shared,
    name: &str,
    started: f64,
) -> Result<(i64, i64), DataError> {
    let data = &shared.data;
    let objectid = data.object_id(name, REPORTER_STATE).await?;
    let position = match data.object_state(objectid, LAST_EVENT_SEEN).await? {
        Some(v) => v.as_i64().unwrap_or(0),
        None => {
            let newest = data.newest_report_event(started).await?;
            data.set_object_state(objectid, LAST_EVENT_SEEN, &newest.into())
                .await?;
            newest
        }
    };
    Ok((objectid, position))
}

/// What a turn did, for when the next one comes.
struct TurnDone {
    /// It had work (events read, requests sent or queued): there may be
    /// more, soon (a build's end waits for its start to be delivered).
    more: bool,
    /// The earliest retry it scheduled.
    retry_at: Option<f64>,
    /// Events read and messages sent or queued.
    carried: usize,
}

/// One turn: make requests of the new events and store them with the new
/// position (one write), then deliver what is due, those included, and
/// store how each attempt ended (one write).
async fn turn(
    agent: &ureq::Agent,
    shared: &Shared,
    config: &ReporterConfig,
    (objectid, position): &mut (i64, i64),
    last_states: &mut HashMap<String, String>,
    gap: &mut Option<(i64, std::time::Instant)>,
) -> Result<TurnDone, DataError> {
    let mut events = shared
        .data
        .report_events_after(*position, EVENTS_PER_TURN)
        .await?;
    let read = events.len() as u64;
    events.truncate(up_to_gap(&events, *position, gap));
    let mut queued = Vec::new();
    generators::read_builds(shared, config, &events).await?;
    for event in &events {
        let Some(kind) = ReportEvent::parse(&event.kind) else {
            continue;
        };
        for report in generators::reports(
            shared,
            config,
            kind,
            event.objectid,
            config.kind.usage(),
            config.kind.reads_sources(),
        )
        .await?
        {
            match render(shared, config, &report, event.id, queued.len(), last_states).await {
                Ok(requests) => {
                    for (request, state) in requests {
                        if let Some(state) = state {
                            last_states.insert(request.order_key.clone(), state);
                        }
                        queued.push(request);
                    }
                }
                Err(e) => warn!(reporter = %config.name, "could not render a report: {e}"),
            }
        }
    }
    // The requests and the new position first, so what the events called
    // for goes out in this turn.
    let new_position = events.last().map(|e| e.id);
    let made = queued.len();
    if new_position.is_some() {
        shared
            .data
            .record_turn(&config.name, *objectid, new_position, queued, &[])
            .await?;
    }
    if let Some(p) = new_position {
        *position = p;
    }
    let due = shared
        .data
        .due_deliveries(&config.name, DELIVERIES_PER_TURN)
        .await?;
    let full = due.len() as u64 == DELIVERIES_PER_TURN;
    let tried = due.len();
    let attempts = deliver(agent, config, due).await;
    let untried = attempts.len() < tried;
    let mut retry_at: Option<f64> = None;
    let attempts: Vec<(i64, _)> = attempts
        .into_iter()
        .map(|(d, attempt)| {
            delivery::log(&config.name, &d, &attempt);
            if let reports::Attempt::Retry { retry_at: at, .. } = &attempt {
                retry_at = Some(retry_at.map_or(*at, |r: f64| r.min(*at)));
            }
            (d.id, attempt)
        })
        .collect();
    let carried = events.len() + made + attempts.len();
    let more = full || untried || made > 0 || !attempts.is_empty() || read > 0;
    if !attempts.is_empty() {
        shared
            .data
            .record_turn(&config.name, *objectid, None, Vec::new(), &attempts)
            .await?;
    }
    Ok(TurnDone {
        more,
        retry_at,
        carried,
    })
}

/// How many of `events` (read after `position`) may be reported now: those
/// up to the first gap in the ids. On PostgreSQL a transaction that took
/// its id earlier may commit later; a gap still open after [`GAP_WAIT`] was
/// a rolled-back id, and is passed. `gap`: the first missing id, and since
/// when.
fn up_to_gap(
    events: &[report_events::Model],
    position: i64,
    gap: &mut Option<(i64, std::time::Instant)>,
) -> usize {
    let mut expect = position + 1;
    for (i, e) in events.iter().enumerate() {
        if e.id != expect {
            match gap {
                Some((id, since)) if *id == expect && since.elapsed() >= GAP_WAIT => {
                    *gap = None;
                }
                Some((id, _)) if *id == expect => return i,
                _ => {
                    *gap = Some((expect, std::time::Instant::now()));
                    return i;
                }
            }
        }
        expect = e.id + 1;
    }
    *gap = None;
    events.len()
}

/// Send `due` (in order; a later delivery of an order key waits when an
/// earlier one was not delivered) and say how each went; those not tried
/// are not in the answer.
async fn deliver(
    agent: &ureq::Agent,
    config: &ReporterConfig,
    due: Vec<report_deliveries::Model>,
) -> Vec<(report_deliveries::Model, reports::Attempt)> {
    let (max_attempts, timeout) = config.kind.delivery_limits();
    let timeout = Duration::from_secs(timeout);
    match &config.kind {
        ReporterKind::Mail(m) => {
            let mut attempts = Vec::with_capacity(due.len());
            let mut held = delivery::Held::default();
            for d in due {
                if held.holds(&d) {
                    continue;
                }
                let attempt = mail::send(m, &d, max_attempts).await;
                if !matches!(attempt, reports::Attempt::Delivered { .. }) {
                    held.hold(&d);
                }
                attempts.push((d, attempt));
            }
            attempts
        }
        kind => {
            let outgoing = due
                .into_iter()
                .map(|d| {
                    // Secrets (credentials, a webhook's URL) are added now,
                    // never stored.
                    let (url, extra) = match kind {
                        ReporterKind::HttpPush(p) => (d.url.clone(), http_push::secret_headers(p)),
                        ReporterKind::CommitStatus(s) => {
                            (d.url.clone(), commit_status::secret_headers(s))
                        }
                        ReporterKind::Chat(c) => chat::secret_parts(c, &d.url),
                        ReporterKind::GitHubComment(c) => {
                            (d.url.clone(), github_comment::secret_headers(c))
                        }
                        ReporterKind::Mail(_) => (d.url.clone(), Vec::new()),
                    };
                    delivery::Outgoing {
                        delivery: d,
                        url,
                        extra,
                    }
                })
                .collect();
            delivery::attempt_all(agent, outgoing, max_attempts, timeout).await
        }
    }
}
