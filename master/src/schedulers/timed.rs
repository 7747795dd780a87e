//! `periodic` and `nightly`: schedulers that build on a schedule, as
//! Buildbot's `Periodic` and `Nightly`.
//!
//! The last run is kept in the scheduler's object state (`last_build`) and
//! written in the transaction of the buildset it made, so a restart neither
//! fires a run twice nor skips one: the next run is worked out from the last
//! (`Timing::next_after`), and one that fell while the master was down
//! fires as soon as it is back (once, however many were missed). A new
//! `periodic` scheduler builds at once, as Buildbot's does; a new `nightly`
//! one at its next time.
//!
//! With `only_if_changed`, a run builds only when a change (on `branch`,
//! taken by `change_filter` and `file_is_important`) came since the last
//! run; it reads them after its position, as the change schedulers do.

use super::buildset;
use super::classify::{Verdict, classify};
use crate::config::{SchedulerConfig, TimedSchedulerConfig};
use crate::data::buildsets::NewBuildset;
use crate::data::changes::NewChange;
use crate::data::schedulers::{LAST_CHANGE_SEEN, SCHEDULER_STATE, SchedulerStep};
use crate::data::{DataError, now};
use crate::services::TaskService;
use crate::shared::{RunningConfig, Shared};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// The state key of the time of the last run (Buildbot's name).
pub const LAST_BUILD: &str = "last_build";
/// Longest single sleep, so a change of the wall clock is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);
/// Wait this long after a failed run before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Start the timed scheduler `config.name` (a [`TaskService`]).
pub fn start(shared: Arc<Shared>, config: &TimedSchedulerConfig) -> TaskService {
    let name = config.name.clone();
    TaskService::spawn(
        "timed scheduler",
        &config.name,
        move |(settings, shutdown)| run(shared, name, settings, shutdown),
    )
}

fn settings_of(shared: &Shared, name: &str) -> Option<(Arc<RunningConfig>, TimedSchedulerConfig)> {
    let running = shared.running_config();
    let config = match running.loaded.config.scheduler(name) {
        Some(SchedulerConfig::Timed(t)) => (**t).clone(),
        _ => return None,
    };
    Some((running, config))
}

/// The ids a timed scheduler keeps its state under.
struct Ids {
    schedulerid: i64,
    objectid: i64,
}

async fn ids(shared: &Shared, name: &str) -> Result<Ids, DataError> {
    let schedulerid = match shared.running_config().scheduler_ids.get(name) {
        Some(&id) => id,
        None => shared.data.sync_schedulers(&[name]).await?[name],
    };
    let objectid = shared.data.object_id(name, SCHEDULER_STATE).await?;
    // Changes from before the scheduler existed do not count.
    if shared
        .data
        .object_state(objectid, LAST_CHANGE_SEEN)
        .await?
        .is_none()
    {
        let last = shared.data.last_changeid().await?;
        shared
            .data
            .set_object_state(objectid, LAST_CHANGE_SEEN, &json!(last))
            .await?;
    }
    Ok(Ids {
        schedulerid,
        objectid,
    })
}

async fn run(
    shared: Arc<Shared>,
    name: String,
    mut settings: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ids = loop {
        match ids(&shared, &name).await {
            Ok(ids) => break ids,
            Err(e) => {
                warn!(scheduler = %name, "cannot read the scheduler's state, trying again: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    loop {
        let Some((_, config)) = settings_of(&shared, &name) else {
            return;
        };
        let due = match next_run(&shared, &ids, &config).await {
            Ok(due) => due,
            Err(e) => {
                warn!(scheduler = %name, "cannot read the last run, trying again: {e}");
                Some(now() + RETRY_AFTER.as_secs_f64())
            }
        };
        let wait = due.map_or(LONGEST_SLEEP, |due| {
            Duration::from_secs_f64((due - now()).max(0.0)).min(LONGEST_SLEEP)
        });
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = settings.changed() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        if due.is_some_and(|due| now() >= due)
            && let Err(e) = fire(&shared, &ids, &name).await
        {
            warn!(scheduler = %name, "the scheduled run failed, trying again: {e}");
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
}

/// When the next run is due (seconds since 1970).
async fn next_run(
    shared: &Shared,
    ids: &Ids,
    config: &TimedSchedulerConfig,
) -> Result<Option<f64>, DataError> {
    let last = shared
        .data
        .object_state(ids.objectid, LAST_BUILD)
        .await?
        .and_then(|v| v.as_f64());
    Ok(match (last, &config.timing) {
        (Some(last), timing) => timing.next_after(last),
        // A new periodic scheduler builds at once, as in Buildbot.
        (None, crate::config::Timing::Every(_)) => Some(now()),
        (None, timing) => timing.next_after(now()),
    })
}

/// One run: the buildset (unless `only_if_changed` finds nothing new), the
/// time of the run and the position, in one transaction.
async fn fire(shared: &Shared, ids: &Ids, name: &str) -> Result<(), DataError> {
    let Some((running, config)) = settings_of(shared, name) else {
        return Ok(());
    };
    let data = &shared.data;
    let mut step = SchedulerStep {
        schedulerid: ids.schedulerid,
        ..SchedulerStep::default()
    };
    step.state.push((ids.objectid, LAST_BUILD, json!(now())));
    let mut taken = Vec::new();
    if config.only_if_changed {
        let mut position = data
            .object_state(ids.objectid, LAST_CHANGE_SEEN)
            .await?
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let mut important = false;
        loop {
            let changes = data.changes_after(position, &[], 1000).await?;
            let Some(last) = changes.last().and_then(|c| c["changeid"].as_i64()) else {
                break;
            };
            position = last;
            for change in changes {
                if config
                    .branch
                    .as_deref()
                    .is_some_and(|b| change["branch"].as_str() != Some(b))
                {
                    continue;
                }
                match classify((&config).into(), &running.loaded.lua, &change).await {
                    Verdict::Ignored => {}
                    Verdict::Unimportant => taken.push(change),
                    Verdict::Important => {
                        important = true;
                        taken.push(change);
                    }
                }
            }
        }
        step.state
            .push((ids.objectid, LAST_CHANGE_SEEN, json!(position)));
        if !important {
            info!(scheduler = %name, "no change since the last run: nothing to build");
            data.schedule(step).await?;
            return Ok(());
        }
    }
    let sourcestampid = match taken.last().and_then(|c| c["sourcestampid"].as_i64()) {
        Some(ssid) => ssid,
        None => {
            data.sourcestamp_id(&NewChange {
                branch: config.branch.clone(),
                ..NewChange::default()
            })
            .await?
        }
    };
    step.buildsets.push(NewBuildset {
        reason: config
            .reason
            .clone()
            .unwrap_or_else(|| buildset::default_reason(config.timing.class_name(), name)),
        builderids: buildset::builder_ids(&running, &config.builders),
        properties: buildset::properties(name, &config.properties, &taken),
        sourcestampids: vec![sourcestampid],
        priority: config.priority,
        consumes: None,
        external_idstring: None,
        changeids: taken
            .iter()
            .filter_map(|c| c["changeid"].as_i64())
            .collect(),
    });
    let added = data.schedule(step).await?;
    info!(scheduler = %name, buildsets = ?added.iter().map(|(bsid, _)| *bsid).collect::<Vec<_>>(), "scheduled run");
    Ok(())
}
