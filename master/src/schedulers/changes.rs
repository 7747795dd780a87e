//! `single_branch` and `any_branch`: the schedulers that turn changes into
//! buildsets, as Buildbot's `SingleBranchScheduler` and `AnyBranchScheduler`.
//!
//! The scheduler reads the changes from the database, not from the events'
//! payloads: an event only wakes it. It keeps its position (the last change
//! id read) in its object state, and commits each step (the changes it
//! accepted, the buildsets it made, its new position) in one transaction
//! ([`Data::schedule`]), so after a crash or restart it reads on from where
//! its last step ended: nothing is built twice and nothing is skipped. On
//! PostgreSQL two changes can commit out of id order; an id skipped over is
//! looked for again for a minute ([`GAP_WAIT`]).
//!
//! With a `tree_stable_timer`, accepted changes wait in `scheduler_changes`
//! and each group (everything for `single_branch`; each codebase, project,
//! repository and branch for `any_branch`) builds when no important change
//! has come for that long. The deadline is worked out from the stored
//! `classified_at`, so it survives a reload and a restart. Unlike Buildbot,
//! firing one branch's timer consumes only that branch's changes.

use super::buildset;
use super::classify::{Verdict, classify};
use super::tree_stable::TreeStableTimers;
use crate::config::{ChangeSchedulerConfig, Grouping, SchedulerConfig};
use crate::data::buildsets::NewBuildset;
use crate::data::changes::NewChange;
use crate::data::schedulers::{Classified, LAST_CHANGE_SEEN, SchedulerStep};
use crate::data::{DataError, now};
use crate::mq::Topic;
use crate::services::TaskService;
use crate::shared::{RunningConfig, Shared};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{info, warn};

/// How long an id skipped over is looked for again (a transaction that took
/// an id earlier and committed later, on PostgreSQL).
const GAP_WAIT: Duration = Duration::from_secs(60);
/// Changes read per step.
const STEP_CHANGES: u64 = 1000;
/// Wait this long after a failed step before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Start the change scheduler `config.name` (a [`TaskService`]).
pub fn start(shared: Arc<Shared>, config: &ChangeSchedulerConfig) -> TaskService {
    // Subscribed before the task reads its position, so no change
    // committed in between goes unnoticed.
    let events = shared.data.bus.subscribe();
    let name = config.name.clone();
    TaskService::spawn(
        "change scheduler",
        &config.name,
        move |(settings, shutdown)| run(shared, name, events, settings, shutdown),
    )
}

/// What the task keeps between steps.
struct State {
    shared: Arc<Shared>,
    name: String,
    schedulerid: i64,
    objectid: i64,
    /// The last change id read.
    position: i64,
    /// Ids skipped over, looked for until the instant given.
    gaps: BTreeMap<i64, Instant>,
    /// Group → when it builds (only groups with an important change).
    timers: TreeStableTimers,
}

async fn run(
    shared: Arc<Shared>,
    name: String,
    mut events: broadcast::Receiver<crate::mq::Event>,
    mut settings: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = loop {
        match State::open(shared.clone(), &name).await {
            Ok(state) => break state,
            Err(e) => {
                warn!(scheduler = %name, "cannot read the scheduler's state, trying again: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let mut pending = true;
    loop {
        if pending {
            pending = match state.read_new_changes().await {
                Ok(()) => false,
                Err(e) => {
                    warn!(scheduler = %name, "reading new changes failed, trying again: {e}");
                    true
                }
            };
        }
        if let Err(e) = state.fire_due().await {
            warn!(scheduler = %name, "building waiting changes failed, trying again: {e}");
        }
        let next = state
            .timers
            .next()
            .into_iter()
            .chain(state.gaps.values().copied())
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let next = if pending {
            next.min(Instant::now() + RETRY_AFTER)
        } else {
            next
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = settings.changed() => {
                if let Err(e) = state.recompute_deadlines().await {
                    warn!(scheduler = %name, "re-reading waiting changes failed: {e}");
                }
                pending = true;
            }
            event = events.recv() => {
                // Take every event already queued too: one read of the
                // database serves a whole burst of changes.
                let mut next = event;
                loop {
                    match next {
                        Ok(event) => {
                            if matches!(event.topic, Topic::Change { .. }) {
                                pending = true;
                            }
                        }
                        // Missed events: read from the database anyway.
                        Err(broadcast::error::RecvError::Lagged(_)) => pending = true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    next = match events.try_recv() {
                        Ok(event) => Ok(event),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Err(broadcast::error::RecvError::Lagged(n))
                        }
                        Err(broadcast::error::TryRecvError::Closed) => {
                            Err(broadcast::error::RecvError::Closed)
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                    };
                }
            }
            _ = tokio::time::sleep_until(next) => {
                // A gap looked for long enough is given up.
                let now = Instant::now();
                state.gaps.retain(|_, until| *until > now);
                pending = pending || !state.gaps.is_empty();
            }
        }
    }
}

impl State {
    /// The scheduler's row, state object and position (a new scheduler
    /// starts at the newest change: it builds what comes after it, as in
    /// Buildbot), and the deadlines of what waits.
    async fn open(shared: Arc<Shared>, name: &str) -> Result<State, DataError> {
        let data = &shared.data;
        let schedulerid = match shared.running_config().scheduler_ids.get(name) {
            Some(&id) => id,
            None => data.sync_schedulers(&[name]).await?[name],
        };
        let (objectid, position) = data.scheduler_position(name, LAST_CHANGE_SEEN).await?;
        let mut state = State {
            shared,
            name: name.to_string(),
            schedulerid,
            objectid,
            position,
            gaps: BTreeMap::new(),
            timers: TreeStableTimers::default(),
        };
        state.recompute_deadlines().await?;
        Ok(state)
    }

    /// This scheduler's settings in the running configuration, with it.
    fn config(&self) -> Option<(Arc<RunningConfig>, ChangeSchedulerConfig)> {
        let running = self.shared.running_config();
        let config = match running.loaded.config.scheduler(&self.name) {
            Some(SchedulerConfig::Changes(c)) => (**c).clone(),
            _ => return None,
        };
        Some((running, config))
    }

    /// Read the changes after the position (and the gaps), classify them,
    /// and commit what that makes, a step of at most [`STEP_CHANGES`] at a
    /// time.
    async fn read_new_changes(&mut self) -> Result<(), DataError> {
        loop {
            let Some((running, config)) = self.config() else {
                return Ok(());
            };
            let gaps: Vec<i64> = self.gaps.keys().copied().collect();
            let changes = self
                .shared
                .data
                .changes_after(self.position, &gaps, STEP_CHANGES)
                .await?;
            if changes.is_empty() {
                return Ok(());
            }
            let mut position = self.position;
            let mut gaps = self.gaps.clone();
            let mut step = SchedulerStep {
                schedulerid: self.schedulerid,
                ..SchedulerStep::default()
            };
            let mut timers = self.timers.clone();
            let classified_at = now();
            for change in &changes {
                let Some(id) = change["changeid"].as_i64() else {
                    continue;
                };
                gaps.remove(&id);
                if id > position {
                    // Ids between are not committed yet, or never will be.
                    for missing in (position + 1..id).rev().take(1000) {
                        gaps.insert(missing, Instant::now() + GAP_WAIT);
                    }
                    position = id;
                }
                let verdict = classify((&config).into(), &running.loaded.lua, change).await;
                let important = match verdict {
                    Verdict::Ignored => continue,
                    Verdict::Unimportant if config.only_important => continue,
                    Verdict::Unimportant => false,
                    Verdict::Important => true,
                };
                match config.tree_stable_timer {
                    // No timer: each important change builds now, alone;
                    // unimportant ones are dropped (Buildbot's behaviour).
                    None if important => {
                        let set = self
                            .buildset(&running, &config, std::slice::from_ref(change), None)
                            .await?;
                        step.buildsets.push(set);
                    }
                    None => {}
                    Some(wait) => {
                        step.classify.push(Classified {
                            changeid: id,
                            important,
                            classified_at,
                        });
                        let group = group_of(config.grouping, change);
                        timers.taken(group, important, Duration::from_secs(wait));
                    }
                }
            }
            step.state
                .push((self.objectid, LAST_CHANGE_SEEN, json!(position)));
            self.commit(step, &config, "changes scheduled").await?;
            self.position = position;
            self.gaps = gaps;
            self.timers = timers;
            if (changes.len() as u64) < STEP_CHANGES {
                return Ok(());
            }
        }
    }

    /// Commit a step, log what it made, and cancel what it supersedes.
    async fn commit(
        &self,
        step: SchedulerStep,
        config: &ChangeSchedulerConfig,
        what: &'static str,
    ) -> Result<(), DataError> {
        let stamps: Vec<Vec<i64>> = step
            .buildsets
            .iter()
            .map(|b| b.sourcestampids.clone())
            .collect();
        let added = self.shared.data.schedule(step).await?;
        if !added.is_empty() {
            let bsids: Vec<i64> = added.iter().map(|(bsid, _)| *bsid).collect();
            info!(scheduler = %self.name, buildsets = ?bsids, "{what}");
        }
        if config.cancel_superseded {
            self.cancel_superseded(&added, &stamps).await?;
        }
        Ok(())
    }

    /// `cancel_superseded`: the older requests of this scheduler on the
    /// branches of the new buildsets are cancelled if pending, and their
    /// builds stopped (CANCELLED) if running.
    async fn cancel_superseded(
        &self,
        added: &[crate::data::buildsets::BuildsetIds],
        stamps: &[Vec<i64>],
    ) -> Result<(), DataError> {
        for ((bsid, _), ssids) in added.iter().zip(stamps) {
            crate::process::supersede::cancel_superseded(
                &self.shared,
                crate::data::buildsets::Superseded::Scheduler(&self.name),
                *bsid,
                ssids,
                &self.name,
            )
            .await?;
        }
        Ok(())
    }

    /// Work the deadlines out again from what waits in the database (at
    /// start, and after a reconfigure changed the timer or the grouping).
    async fn recompute_deadlines(&mut self) -> Result<(), DataError> {
        self.timers.clear();
        let Some((_, config)) = self.config() else {
            return Ok(());
        };
        let waiting = self
            .shared
            .data
            .classified_changes(self.schedulerid)
            .await?;
        if waiting.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = waiting.iter().map(|c| c.changeid).collect();
        let changes = self.shared.data.changes_by_ids(&ids).await?;
        let wait = config.tree_stable_timer.unwrap_or(0) as f64;
        let wall = now();
        let by_id: BTreeMap<i64, &Value> = changes
            .iter()
            .filter_map(|c| Some((c["changeid"].as_i64()?, c)))
            .collect();
        for classified in waiting.iter().filter(|c| c.important) {
            let Some(change) = by_id.get(&classified.changeid) else {
                continue;
            };
            let group = group_of(config.grouping, change);
            self.timers
                .restore(group, classified.classified_at, wall, wait);
        }
        Ok(())
    }

    /// Build every group whose timer has run out.
    async fn fire_due(&mut self) -> Result<(), DataError> {
        let due = self.timers.due();
        if due.is_empty() {
            return Ok(());
        }
        let Some((running, config)) = self.config() else {
            return Ok(());
        };
        let waiting = self
            .shared
            .data
            .classified_changes(self.schedulerid)
            .await?;
        let ids: Vec<i64> = waiting.iter().map(|c| c.changeid).collect();
        let changes = self.shared.data.changes_by_ids(&ids).await?;
        let mut step = SchedulerStep {
            schedulerid: self.schedulerid,
            ..SchedulerStep::default()
        };
        for group in &due {
            let members: Vec<Value> = changes
                .iter()
                .filter(|c| &group_of(config.grouping, c) == group)
                .cloned()
                .collect();
            let consumed: Vec<i64> = members
                .iter()
                .filter_map(|c| c["changeid"].as_i64())
                .collect();
            let important: BTreeSet<i64> = waiting
                .iter()
                .filter(|c| c.important)
                .map(|c| c.changeid)
                .collect();
            let wanted: Vec<Value> = if config.only_important {
                members
                    .into_iter()
                    .filter(|c| {
                        c["changeid"]
                            .as_i64()
                            .is_some_and(|id| important.contains(&id))
                    })
                    .collect()
            } else {
                members
            };
            if consumed.iter().any(|id| important.contains(id)) {
                step.buildsets.push(
                    self.buildset(&running, &config, &wanted, Some(consumed))
                        .await?,
                );
            }
        }
        self.commit(step, &config, "tree stable: changes scheduled")
            .await?;
        for group in due {
            self.timers.remove(&group);
        }
        Ok(())
    }

    /// The buildset for `changes` (oldest first): for each of the
    /// scheduler's codebases, the newest change's source stamp (or the
    /// codebase's defaults); the scheduler's properties, then the changes'
    /// (a later change's value wins), and `scheduler`.
    async fn buildset(
        &self,
        running: &RunningConfig,
        config: &ChangeSchedulerConfig,
        changes: &[Value],
        consumes: Option<Vec<i64>>,
    ) -> Result<NewBuildset, DataError> {
        let builderids = buildset::builder_ids(running, &config.builders);
        let mut sourcestampids = Vec::new();
        for (codebase, defaults) in &config.codebases {
            let newest = changes
                .iter()
                .rev()
                .find(|c| c["codebase"].as_str().unwrap_or("") == codebase);
            match newest.and_then(|c| c["sourcestampid"].as_i64()) {
                Some(ssid) => sourcestampids.push(ssid),
                None => {
                    let stamp = NewChange {
                        codebase: codebase.clone(),
                        repository: defaults.repository.clone().unwrap_or_default(),
                        branch: defaults.branch.clone(),
                        revision: defaults.revision.clone(),
                        ..NewChange::default()
                    };
                    sourcestampids.push(self.shared.data.sourcestamp_id(&stamp).await?);
                }
            }
        }
        let properties = buildset::properties(&config.name, &config.properties, changes);
        let reason = config.reason.clone().unwrap_or_else(|| {
            buildset::default_reason(config.grouping.class_name(), &config.name)
        });
        if builderids.is_empty() {
            warn!(scheduler = %config.name, "none of the scheduler's builders exists; nothing is built");
        }
        Ok(NewBuildset {
            reason,
            builderids,
            properties,
            sourcestampids,
            priority: config.priority,
            consumes: consumes.map(|ids| (self.schedulerid, ids)),
            external_idstring: None,
            changeids: changes
                .iter()
                .filter_map(|c| c["changeid"].as_i64())
                .collect(),
            parent: None,
        })
    }
}

/// The timer group of a change: one for `single_branch`, one per
/// (codebase, project, repository, branch) for `any_branch`.
fn group_of(grouping: Grouping, change: &Value) -> String {
    match grouping {
        Grouping::SingleBranch => String::new(),
        Grouping::AnyBranch => json!([
            change["codebase"],
            change["project"],
            change["repository"],
            change["branch"]
        ])
        .to_string(),
    }
}
