//! Reporters: telling people and systems what builds did, without a build
//! ever waiting for them and without losing a message.
//!
//! A reporter is a service (one task per reporter of master.lua). Each
//! turn it reads the `report_events` that builds, buildsets and workers
//! stored with their own rows, in order from its position (on PostgreSQL
//! an id may commit after a higher one: a reporter reads up to the first
//! missing id, and passes it only after [`GAP_WAIT`], as a rolled-back
//! one); asks its generators ([`generators`]) which to report and renders
//! each into requests (its transport: [`http_push`] …). With nothing
//! pending in its queue (most turns) it sends them, then stores them with
//! how each went and its new position in one write: a crash between the
//! two sends them again after the restart (at least once, as a crash
//! between any send and its record would), and a message is never lost.
//! Otherwise it stores them with its new position, then delivers what is
//! due ([`delivery`]) in order behind what was pending, and stores the
//! attempts. It retries with backoff on 5xx answers, timeouts and 429
//! (honouring `Retry-After`), and gives up on a 4xx or after
//! `max_attempts`. Under a stream of builds a busy reporter gathers events
//! (up to [`GATHER`]) between turns, so its cost is a few statements per
//! turn, not per build. An idle one is woken when a batch stores a report
//! event (it does not follow the bus).
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
use tracing::{info, warn};

/// Events read per turn.
const EVENTS_PER_TURN: u64 = 500;
/// Deliveries attempted per turn.
const DELIVERIES_PER_TURN: u64 = 200;
/// How long a busy reporter gathers events before its next turn, at most:
/// under a stream of builds a turn takes many events at once (each turn is
/// a few reads and one write, whatever it carries). It waits
/// [`GATHER_PER_ITEM`] for each event and message its last turn carried,
/// between [`MIN_GATHER`] and this, so a trickle is reported at once. An
/// idle reporter turns at once when an event comes.
const GATHER: Duration = Duration::from_millis(100);
/// 4 ms: under a stream of a build's 1 to 2 events and messages a
/// millisecond (250 builds/s), turns settle at the longest gathering, not
/// at one every 25 ms; each turn's reads cost the same whatever it carries.
const GATHER_PER_ITEM: Duration = Duration::from_millis(4);
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
    // Changes when a batch storing report events commits.
    let mut stored = shared.data.watch_report_events();
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
    let (objectid, position) = loop {
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
    // The first turn reads the queue a restart left.
    let mut progress = Progress {
        objectid,
        position,
        gap: None,
        backlog: true,
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(config) = config_of(&shared, &name) else {
            break;
        };
        // Seen before the turn reads: one stored while it runs wakes the next.
        stored.borrow_and_update();
        // Whether it is busy (how long to gather), and when the earliest
        // pending delivery is due.
        let (busy, next_retry) =
            match turn(&agent, &shared, &config, &mut progress, &mut last_states).await {
                Ok(done) => (
                    done.more
                        .then(|| (GATHER_PER_ITEM * done.carried as u32).clamp(MIN_GATHER, GATHER)),
                    done.retry_at,
                ),
                Err(e) => {
                    // What the turn tried stays pending (or, not stored, is
                    // made again): look again soon, reading the queue.
                    progress.backlog = true;
                    warn!(reporter = %name, "reporting failed: {e}; trying again");
                    (None, Some(crate::data::now() + 1.0))
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
        if progress.gap.is_some() {
            wait = wait.min(GAP_RECHECK);
        }
        // Only a stored report event wakes it early (a build's start or end,
        // a new or finished buildset, a missing worker), and only an idle
        // reporter: a busy one gathers a burst into its next turn.
        let idle = busy.is_none();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Ok(()) = stored.changed(), if idle => {}
            _ = settings.changed() => {}
            _ = shutdown.changed() => break,
        }
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
    /// When the earliest delivery left pending is due (a retry's time).
    retry_at: Option<f64>,
    /// Events read and messages sent or queued.
    carried: usize,
}

/// A reporter's place in the events and what it knows of its queue.
struct Progress {
    /// The reporter's object id (its state's key) and its position.
    objectid: i64,
    position: i64,
    /// The first missing event id after the position, and since when.
    gap: Option<(i64, std::time::Instant)>,
    /// Some delivery may be pending (a retry, a held or untried one, or not
    /// known yet: a turn after a start reads the queue). While none is,
    /// what a turn makes goes out before it is stored.
    backlog: bool,
}

/// One turn: make requests of the new events. With nothing pending in the
/// queue (most turns), send them, then store them, how each went and the
/// new position in one write; a restart between the two sends them again
/// (at least once, as a crash between a send and its record would).
/// Otherwise store them with the position (one write), deliver what is
/// due, those included behind any earlier ones of their order key, and
/// store how each attempt ended (one more).
async fn turn(
    agent: &ureq::Agent,
    shared: &Shared,
    config: &ReporterConfig,
    progress: &mut Progress,
    last_states: &mut HashMap<String, String>,
) -> Result<TurnDone, DataError> {
    let mut events = shared
        .data
        .report_events_after(progress.position, EVENTS_PER_TURN)
        .await?;
    let read = events.len();
    events.truncate(up_to_gap(&events, progress.position, &mut progress.gap));
    let mut made = Vec::new();
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
            match render(shared, config, &report, event.id, made.len(), last_states).await {
                Ok(requests) => {
                    for (request, state) in requests {
                        if let Some(state) = state {
                            last_states.insert(request.order_key.clone(), state);
                        }
                        made.push(request);
                    }
                }
                Err(e) => warn!(reporter = %config.name, "could not render a report: {e}"),
            }
        }
    }
    let new_position = events.last().map(|e| e.id);
    let carried = events.len() + made.len();
    let more = read > 0 || !made.is_empty();
    if !progress.backlog && made.len() <= DELIVERIES_PER_TURN as usize {
        let retry_at = send_then_store(agent, shared, config, progress, new_position, made).await?;
        return Ok(TurnDone {
            more,
            retry_at,
            carried,
        });
    }
    // The requests and the new position first, so what the events called
    // for goes out in this turn, behind what was pending.
    if new_position.is_some() {
        let queued = made.into_iter().map(|d| (d, None)).collect();
        shared
            .data
            .record_turn(&config.name, progress.objectid, new_position, queued, &[])
            .await?;
    }
    if let Some(p) = new_position {
        progress.position = p;
    }
    let due = shared
        .data
        .due_deliveries(&config.name, DELIVERIES_PER_TURN)
        .await?;
    let full = due.len() as u64 == DELIVERIES_PER_TURN;
    let tried = due.len();
    let attempts = deliver(agent, config, due).await;
    let untried = attempts.len() < tried;
    let attempts: Vec<(i64, _)> = attempts
        .into_iter()
        .map(|(d, attempt)| {
            delivery::log(&config.name, &d, &attempt);
            (d.id, attempt)
        })
        .collect();
    if !attempts.is_empty() {
        shared
            .data
            .record_turn(&config.name, progress.objectid, None, Vec::new(), &attempts)
            .await?;
    }
    // What is left pending: more now (a full turn, or some not tried), or
    // retries, and behind them, those of their order keys (every other
    // pending one was due, so tried). None: the next turn may send before
    // it stores.
    let retry_at = if full || untried {
        Some(crate::data::now())
    } else {
        shared.data.next_retry_at(&config.name).await?
    };
    progress.backlog = retry_at.is_some();
    Ok(TurnDone {
        more: more || full || untried || !attempts.is_empty(),
        retry_at,
        carried: carried + attempts.len(),
    })
}

/// The turn with an empty queue: send what it made, then store it with how
/// each went and the new position, in one write. Returns when the earliest
/// one left pending is due (a retry, or one not tried: now).
async fn send_then_store(
    agent: &ureq::Agent,
    shared: &Shared,
    config: &ReporterConfig,
    progress: &mut Progress,
    new_position: Option<i64>,
    made: Vec<NewDelivery>,
) -> Result<Option<f64>, DataError> {
    let Some(p) = new_position else {
        return Ok(None);
    };
    let now = crate::data::now();
    // Not stored yet: a request's id here is its index in `made`.
    let unsent = made
        .iter()
        .enumerate()
        .map(|(i, d)| report_deliveries::Model {
            id: i as i64,
            reporter: config.name.clone(),
            eventid: d.eventid,
            order_key: d.order_key.clone(),
            method: d.method.clone(),
            url: d.url.clone(),
            headers_json: serde_json::to_string(&d.headers).unwrap_or_else(|_| "[]".into()),
            body: d.body.clone(),
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: now,
            last_status: None,
            last_error: None,
            created_at: now,
            done_at: None,
        })
        .collect();
    let mut outcomes: Vec<Option<reports::Attempt>> = vec![None; made.len()];
    for (d, attempt) in deliver(agent, config, unsent).await {
        delivery::log(&config.name, &d, &attempt);
        if let Some(slot) = outcomes.get_mut(d.id as usize) {
            *slot = Some(attempt);
        }
    }
    let retry_at = outcomes
        .iter()
        .filter_map(|o| match o {
            Some(reports::Attempt::Delivered { .. } | reports::Attempt::Failed { .. }) => None,
            Some(reports::Attempt::Retry { retry_at, .. }) => Some(*retry_at),
            None => Some(now),
        })
        .min_by(f64::total_cmp);
    progress.backlog = retry_at.is_some();
    shared
        .data
        .record_turn(
            &config.name,
            progress.objectid,
            Some(p),
            made.into_iter().zip(outcomes).collect(),
            &[],
        )
        .await?;
    progress.position = p;
    Ok(retry_at)
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
