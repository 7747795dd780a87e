//! The janitor service (`janitor = {…}` in master.lua): every `every`, a pass
//! that expires the content of old logs, deletes old builds and old changes,
//! in small batches (see [`crate::data::janitor`]) with a pause between them so
//! running builds' writes get the database in between, and then, on SQLite,
//! returns the freed pages to the file system.
//!
//! A reload that changes the horizons or the interval reconfigures it in
//! place: the next pass uses the new horizons, and the interval still counts
//! from the last pass. A stop ends a pass between two batches.

use crate::config::JanitorConfig;
use crate::data::janitor::{BatchTally, JanitorTally};
use crate::data::{Data, DataError, now};
use crate::services::{Service, ServiceConfig, Stopping};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// Rest between two batches, so other writers get the database.
const BATCH_PAUSE: Duration = Duration::from_millis(5);
/// Passes of this master kept in `janitor_passes`.
const PASSES_KEPT: u64 = 100;
/// How often a long pass writes its progress to its `janitor_passes` row.
const PROGRESS_EVERY: u32 = 50;

/// The running janitor: its task, its settings, and how to stop it.
pub struct Janitor {
    settings: watch::Sender<JanitorConfig>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Janitor {
    pub fn start(data: Data, config: JanitorConfig) -> Janitor {
        let (settings, settings_rx) = watch::channel(config);
        let (shutdown, shutdown_rx) = watch::channel(false);
        Janitor {
            settings,
            shutdown,
            task: tokio::spawn(run(data, settings_rx, shutdown_rx)),
        }
    }
}

impl Service for Janitor {
    fn reconfigure(&mut self, config: &ServiceConfig) {
        if let ServiceConfig::Janitor(config) = config {
            self.settings.send_replace(config.clone());
        }
    }

    fn stop(self: Box<Self>) -> Stopping {
        Box::pin(async move {
            let _ = self.shutdown.send(true);
            let _ = self.task.await;
        })
    }
}

async fn run(
    data: Data,
    mut settings: watch::Receiver<JanitorConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = Instant::now();
    loop {
        let every = Duration::from_secs(settings.borrow().every_s);
        tokio::select! {
            _ = tokio::time::sleep_until((last + every).into()) => {}
            // New settings: wait again, from the same last pass.
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = shutdown.changed() => return,
        }
        last = Instant::now();
        let config = settings.borrow().clone();
        pass(&data, &config, &shutdown).await;
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One pass, recorded in `janitor_passes`.
async fn pass(data: &Data, config: &JanitorConfig, shutdown: &watch::Receiver<bool>) {
    let id = match data.start_janitor_pass().await {
        Ok(id) => id,
        Err(e) => {
            warn!("janitor: could not record a pass, skipping it: {e}");
            return;
        }
    };
    let started = Instant::now();
    let mut tally = JanitorTally::default();
    let outcome = sweep(data, config, shutdown, id, &mut tally).await;
    let error = outcome.as_ref().err().map(|e| e.to_string());
    if let Err(e) = data
        .update_janitor_pass(id, &tally, Some(error.as_deref()))
        .await
    {
        warn!("janitor: could not record the end of pass {id}: {e}");
    }
    if let Err(e) = data.prune_janitor_passes(PASSES_KEPT).await {
        warn!("janitor: could not forget old passes: {e}");
    }
    match outcome {
        Ok(returned) => info!(
            pass = id,
            "janitor: {} log(s) expired ({} chunk(s)), {} build(s) and {} change(s) deleted in {:.1} s; longest write {:.1} ms{}",
            tally.logs_expired,
            tally.chunks_deleted,
            tally.builds_deleted,
            tally.changes_deleted,
            started.elapsed().as_secs_f64(),
            tally.longest_batch_ms,
            returned.map_or(String::new(), |p| format!("; {p} free page(s) returned"))
        ),
        Err(e) => warn!(pass = id, "janitor: pass stopped: {e}"),
    }
}

/// Expire logs, delete builds, delete changes, return free space; returns the
/// pages returned (SQLite).
/// Forget records kept only until a horizon, a `batch` at a time (it says
/// how many went) until none is left or the janitor stops, and log how many
/// (`what`) went.
async fn forget<F, Fut>(
    stopping: &impl Fn() -> bool,
    mut batch: F,
    what: &str,
) -> Result<(), DataError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, DataError>>,
{
    let mut forgotten = 0;
    while !stopping() {
        let n = batch().await?;
        if n == 0 {
            break;
        }
        forgotten += n;
    }
    if forgotten > 0 {
        info!(forgotten, "janitor: {what} forgotten");
    }
    Ok(())
}

async fn sweep(
    data: &Data,
    config: &JanitorConfig,
    shutdown: &watch::Receiver<bool>,
    id: i64,
    tally: &mut JanitorTally,
) -> Result<Option<u64>, DataError> {
    let mut batches = 0u32;
    let stopping = || *shutdown.borrow();
    let mut counted =
        async |tally: &mut JanitorTally, batch: BatchTally| -> Result<(), DataError> {
            tally.add(&batch);
            batches += 1;
            if batches.is_multiple_of(PROGRESS_EVERY) {
                data.update_janitor_pass(id, tally, None).await?;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
            Ok(())
        };
    let started = now();
    // Builds past their horizon go whole: their logs are not expired first.
    let builds_go_before = config.build_horizon_s.map(|h| started - h as f64);
    if let Some(horizon) = config.log_horizon_s {
        let before = started - horizon as f64;
        let mut cursor = 0;
        while !stopping() {
            let Some((batch, next)) = data
                .expire_log_batch(before, builds_go_before, cursor)
                .await?
            else {
                break;
            };
            cursor = next;
            counted(tally, batch).await?;
        }
    }
    if let Some(before) = builds_go_before {
        while !stopping() {
            let batch = data.delete_build_batch(before).await?;
            if batch.builds == 0 {
                break;
            }
            counted(tally, batch).await?;
        }
        // What reporters did with builds that old.
        forget(
            &stopping,
            || data.forget_report_batch(before),
            "reporters' records past the build horizon",
        )
        .await?;
    }
    if let Some(horizon) = config.change_horizon_s {
        let before = started - horizon as f64;
        while !stopping() {
            let batch = data.delete_change_batch(before).await?;
            if batch.changes == 0 {
                break;
            }
            counted(tally, batch).await?;
        }
        // The delivery ids of hooks that old: no forge redelivers them.
        forget(
            &stopping,
            || data.forget_hook_delivery_batch(before),
            "webhook delivery ids past the change horizon",
        )
        .await?;
    }
    if stopping() {
        return Ok(None);
    }
    data.return_free_space().await
}

/// How often expired artifacts are looked for (and once at start).
const ARTIFACT_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Artifacts removed per batch.
const ARTIFACT_BATCH: u64 = 200;

/// The service that removes artifacts past their `keep_days` (files first,
/// then their rows), whatever the `janitor` section says: artifacts always
/// have a retention period.
pub fn expire_artifacts(
    shared: std::sync::Arc<crate::shared::Shared>,
) -> crate::services::TaskService {
    crate::services::TaskService::spawn(
        "artifact_expiry",
        "artifacts",
        move |(_settings, mut shutdown)| async move {
            loop {
                let store = (shared.running_config().loaded.config.artifacts).store(&shared.dir);
                if let Err(e) = sweep_artifacts(&shared.data, &store).await {
                    warn!("artifacts: could not remove expired artifacts: {e}");
                }
                if let Err(e) = sweep_orphans(&shared.data, &store).await {
                    warn!("artifacts: could not remove the files of deleted builds: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(ARTIFACT_SWEEP_EVERY) => {}
                    _ = shutdown.changed() => return,
                }
            }
        },
    )
}

/// Remove the artifact directories of builds that no longer exist (the
/// janitor's `build_horizon` deleted them, and their artifact rows with
/// them). A build that exists, running or not, keeps its directory.
pub async fn sweep_orphans(
    data: &Data,
    store: &crate::artifacts::ArtifactStore,
) -> Result<u64, DataError> {
    let dirs = store.build_dirs();
    let mut removed = 0;
    for chunk in dirs.chunks(ARTIFACT_BATCH as usize) {
        let existing = data.existing_builds(chunk).await?;
        for buildid in chunk.iter().filter(|id| !existing.contains(id)) {
            match store.remove(&buildid.to_string()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    warn!("artifacts: could not remove those of deleted build {buildid}: {e}")
                }
            }
        }
    }
    if removed > 0 {
        info!("artifacts: the files of {removed} deleted build(s) removed");
    }
    Ok(removed)
}

/// Remove every expired artifact, a batch at a time.
pub async fn sweep_artifacts(
    data: &Data,
    store: &crate::artifacts::ArtifactStore,
) -> Result<u64, DataError> {
    let mut removed = 0;
    loop {
        let expired = data.expired_artifacts(ARTIFACT_BATCH).await?;
        if expired.is_empty() {
            return Ok(removed);
        }
        let mut ids = Vec::with_capacity(expired.len());
        for artifact in &expired {
            match store.remove(&artifact.path) {
                Ok(()) => ids.push(artifact.id),
                Err(e) => warn!(
                    artifact = artifact.id,
                    "artifacts: could not remove {}: {e}", artifact.path
                ),
            }
        }
        if ids.is_empty() {
            return Ok(removed);
        }
        data.delete_artifacts(&ids).await?;
        removed += ids.len() as u64;
        info!("artifacts: {} expired artifact(s) removed", ids.len());
    }
}
