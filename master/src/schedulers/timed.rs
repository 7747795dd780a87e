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
//!
//! The loop that sleeps until a run is due (`follow_schedule`) reads the
//! wall clock, the last run and the timing through a [`TimedHost`], so its
//! tests run it over days of tokio's paused, virtual time.

use super::buildset;
use super::classify::{Verdict, classify};
use crate::config::{SchedulerConfig, TimedSchedulerConfig, Timing};
use crate::data::buildsets::NewBuildset;
use crate::data::changes::NewChange;
use crate::data::schedulers::{LAST_CHANGE_SEEN, SchedulerStep};
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
    // Changes from before the scheduler existed do not count.
    let (objectid, _) = shared
        .data
        .scheduler_position(name, LAST_CHANGE_SEEN)
        .await?;
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
    let host = ServiceHost {
        shared,
        name: name.clone(),
        ids,
    };
    follow_schedule(&host, &name, &mut settings, &mut shutdown).await;
}

/// What the schedule loop needs from the master: the wall clock, the
/// scheduler's timing, its last run and a run. The service's is the
/// database's ([`ServiceHost`]); the tests' is in memory, on tokio's paused
/// clock.
trait TimedHost {
    /// Seconds since 1970.
    fn now(&self) -> f64;
    /// The scheduler's timing; `None` once it is gone from the configuration.
    fn timing(&self) -> Option<Timing>;
    /// When the last run was (seconds since 1970), if there was one.
    async fn last_run(&self) -> Result<Option<f64>, DataError>;
    /// Run now: the buildset and the time of the run, together.
    async fn fire(&self) -> Result<(), DataError>;
}

/// When the next run is due: after the last run, as its timing says; a new
/// `periodic` at once (as in Buildbot), a new `nightly` at its next time. A
/// run missed while the master was down is due at once, once.
fn next_due(timing: &Timing, last: Option<f64>, now: f64) -> Option<f64> {
    match (last, timing) {
        (Some(last), timing) => timing.next_after(last),
        (None, Timing::Every(_)) => Some(now),
        (None, timing) => timing.next_after(now),
    }
}

/// Sleep until each run is due and run it, until told to stop or the
/// scheduler leaves the configuration; a reconfigure works the next run out
/// again.
async fn follow_schedule<H: TimedHost>(
    host: &H,
    name: &str,
    settings: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
) {
    loop {
        let Some(timing) = host.timing() else {
            return;
        };
        let due = match host.last_run().await {
            Ok(last) => next_due(&timing, last, host.now()),
            Err(e) => {
                warn!(scheduler = %name, "cannot read the last run, trying again: {e}");
                Some(host.now() + RETRY_AFTER.as_secs_f64())
            }
        };
        let wait = due.map_or(LONGEST_SLEEP, |due| {
            Duration::from_secs_f64((due - host.now()).max(0.0)).min(LONGEST_SLEEP)
        });
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = settings.changed() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        if due.is_some_and(|due| host.now() >= due)
            && let Err(e) = host.fire().await
        {
            warn!(scheduler = %name, "the scheduled run failed, trying again: {e}");
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
}

/// The running master as a [`TimedHost`].
struct ServiceHost {
    shared: Arc<Shared>,
    name: String,
    ids: Ids,
}

impl TimedHost for ServiceHost {
    fn now(&self) -> f64 {
        now()
    }

    fn timing(&self) -> Option<Timing> {
        settings_of(&self.shared, &self.name).map(|(_, config)| config.timing)
    }

    async fn last_run(&self) -> Result<Option<f64>, DataError> {
        Ok(self
            .shared
            .data
            .object_state(self.ids.objectid, LAST_BUILD)
            .await?
            .and_then(|v| v.as_f64()))
    }

    async fn fire(&self) -> Result<(), DataError> {
        fire(&self.shared, &self.ids, &self.name).await
    }
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
        parent: None,
    });
    let added = data.schedule(step).await?;
    info!(scheduler = %name, buildsets = ?added.iter().map(|(bsid, _)| *bsid).collect::<Vec<_>>(), "scheduled run");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The schedule loop in virtual time: tokio's clock is paused, so days
    //! of waiting take no time, and the wall clock the loop reads is
    //! tokio's, counted from a chosen date.
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// A host in memory: its wall clock follows tokio's.
    struct FakeHost {
        timing: Timing,
        wall_at_start: f64,
        start: Instant,
        last: Mutex<Option<f64>>,
        runs: Mutex<Vec<f64>>,
    }

    impl FakeHost {
        fn new(timing: Timing, wall_at_start: f64) -> Arc<FakeHost> {
            Arc::new(FakeHost {
                timing,
                wall_at_start,
                start: Instant::now(),
                last: Mutex::new(None),
                runs: Mutex::new(Vec::new()),
            })
        }

        fn runs(&self) -> Vec<String> {
            self.runs
                .lock()
                .unwrap()
                .iter()
                .map(|t| rfc3339(*t))
                .collect()
        }
    }

    impl TimedHost for FakeHost {
        fn now(&self) -> f64 {
            self.wall_at_start + (Instant::now() - self.start).as_secs_f64()
        }
        fn timing(&self) -> Option<Timing> {
            Some(self.timing.clone())
        }
        async fn last_run(&self) -> Result<Option<f64>, DataError> {
            Ok(*self.last.lock().unwrap())
        }
        async fn fire(&self) -> Result<(), DataError> {
            let now = self.now();
            *self.last.lock().unwrap() = Some(now);
            self.runs.lock().unwrap().push(now);
            Ok(())
        }
    }

    fn wall(text: &str) -> f64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp() as f64
    }

    /// To the second: a run wakes within tokio's millisecond tick of its time.
    fn rfc3339(t: f64) -> String {
        chrono::DateTime::from_timestamp(t.floor() as i64, 0)
            .unwrap()
            .to_rfc3339()
    }

    /// Run the schedule loop of `host` for `how_long` of virtual time, then
    /// stop it (a master going down).
    async fn run_for(host: &Arc<FakeHost>, how_long: Duration) {
        let (_settings_tx, mut settings) = watch::channel(0);
        let (shutdown_tx, mut shutdown) = watch::channel(false);
        let looping = host.clone();
        let task = tokio::spawn(async move {
            follow_schedule(&*looping, "test", &mut settings, &mut shutdown).await;
        });
        tokio::time::sleep(how_long).await;
        shutdown_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn nightly_runs_at_its_local_time_across_a_dst_change() {
        // 03:00 in Paris: 01:00 UTC in summer time, 02:00 after the clocks
        // go back on Sunday 25 October 2026.
        let timing = Timing::Cron {
            pattern: "0 3 * * *".into(),
            timezone: "Europe/Paris".into(),
        };
        let host = FakeHost::new(timing, wall("2026-10-23T12:00:00Z"));
        run_for(&host, Duration::from_secs(4 * 86_400)).await;
        assert_eq!(
            host.runs(),
            [
                "2026-10-24T01:00:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-26T02:00:00+00:00",
                "2026-10-27T02:00:00+00:00",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_neither_repeats_nor_piles_up_missed_runs() {
        let host = FakeHost::new(Timing::Every(3600), wall("2026-12-06T00:00:00Z"));
        // A new periodic scheduler runs at once, then every hour.
        run_for(&host, Duration::from_secs(3 * 3600 + 1800)).await;
        assert_eq!(
            host.runs(),
            [
                "2026-12-06T00:00:00+00:00",
                "2026-12-06T01:00:00+00:00",
                "2026-12-06T02:00:00+00:00",
                "2026-12-06T03:00:00+00:00",
            ]
        );
        // Down for five hours: four runs were missed.
        tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
        run_for(&host, Duration::from_secs(1800)).await;
        let runs = host.runs();
        assert_eq!(
            runs.len(),
            5,
            "the missed runs make one run, at once: {runs:?}"
        );
        assert_eq!(runs[4], "2026-12-06T08:30:00+00:00");
        // A restart between two runs does not run again; the next comes an
        // hour after the last.
        run_for(&host, Duration::from_secs(1200)).await;
        assert_eq!(host.runs().len(), 5, "{:?}", host.runs());
        run_for(&host, Duration::from_secs(3600)).await;
        assert_eq!(host.runs().len(), 6);
        assert_eq!(host.runs()[5], "2026-12-06T09:30:00+00:00");
    }
}
