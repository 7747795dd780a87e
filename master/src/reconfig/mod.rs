//! Live reconfiguration: load → compile → validate → diff → apply, one reload at
//! a time, and start-up is the same path (a diff from nothing).
//!
//! Everything that can fail happens before "apply": Lua errors, compile and
//! reference errors, and settings the running master cannot change (database,
//! listening addresses). Any of them leaves the running configuration exactly as
//! it was. Applying is then small and cannot leave a half-applied state that
//! matters: the builder and worker rows are synced in the database, and the new
//! [`RunningConfig`] replaces the old one in a single swap. Then the services
//! ([`crate::services`]) get the new configuration: each unchanged one keeps
//! its state, a changed one adjusts in place, a removed one stops.
//!
//! Nothing running is touched. A build holds its own copy of its builder's
//! definition and of the Lua generation its functions live in, so it finishes as
//! it started; the next build takes the new definition. Connected workers keep
//! their connections. A removed worker gets no new builds (no builder names it
//! any more) and is told to go once its running builds end; the listener refuses
//! it afterwards. Pending requests of a removed builder stay in the database and
//! run when the builder comes back.
//!
//! Every outcome, failed or not, is stored through the data layer
//! (`config_reloads`), where the API, the status page and `moonbot reconfig`
//! read it.

pub mod watch;

use crate::config::diff::{self, ConfigDiff};
use crate::config::{self, ConfigError, LoadedConfig, MasterConfig};
use crate::data::config_reloads::ReloadRecord;
use crate::data::reports::ReportEvents;
use crate::data::{Data, DataError, now};
use crate::services;
use crate::shared::{RunningConfig, Shared};
use crate::worker_registry::ConnectedWorker;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    /// master.lua or a file it requires was saved.
    File,
    /// `SIGHUP`.
    Signal,
    /// `POST /api/v2/config` (`moonbot reconfig`).
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::File => "file",
            Trigger::Signal => "signal",
            Trigger::Api => "api",
        }
    }
}

/// Load and check the configuration in `dir` against `running` (none at
/// start-up) without applying anything: the dry run, and the first half of a
/// reload.
pub async fn prepare(
    dir: &Path,
    running: Option<&MasterConfig>,
) -> Result<(LoadedConfig, ConfigDiff), Vec<ConfigError>> {
    let dir = dir.to_path_buf();
    // Loading runs Lua on its own thread and waits for it: keep it off the
    // async workers.
    let loaded = tokio::task::spawn_blocking(move || config::load(&dir))
        .await
        .map_err(|e| vec![ConfigError::whole_file(format!("loading stopped: {e}"))])?
        .map_err(|e| e.0)?;
    if let Some(old) = running {
        let refused = diff::fixed_setting_errors(old, &loaded.config);
        if !refused.is_empty() {
            return Err(refused);
        }
    }
    let changes = diff::diff(running, &loaded.config);
    Ok((loaded, changes))
}

/// Give every configured builder and worker its database row; the result is
/// ready to be put in force.
pub async fn sync_rows(data: &Data, loaded: LoadedConfig) -> Result<RunningConfig, DataError> {
    let cfg = &loaded.config;
    let builder_ids = data.sync_builders(&cfg.builders).await?;
    let worker_names: Vec<String> = cfg.workers.iter().map(|w| w.name.clone()).collect();
    let worker_ids = data.sync_workers(&worker_names).await?;
    let scheduler_names: Vec<&str> = cfg.schedulers.iter().map(|s| s.name()).collect();
    let scheduler_ids = data.sync_schedulers(&scheduler_names).await?;
    let mut by_changes = Vec::new();
    let mut by_buildsets = Vec::new();
    for s in &cfg.schedulers {
        match s {
            crate::config::SchedulerConfig::Changes(_)
            | crate::config::SchedulerConfig::Timed(_) => by_changes.push(s.name()),
            crate::config::SchedulerConfig::Dependent { .. } => by_buildsets.push(s.name()),
            crate::config::SchedulerConfig::Force { .. }
            | crate::config::SchedulerConfig::Triggerable { .. } => {}
        }
    }
    data.start_positions(&by_changes, &by_buildsets).await?;
    let source_names: Vec<&str> = cfg.change_sources.iter().map(|s| s.name()).collect();
    data.sync_changesources(&source_names).await?;
    // Only the kinds of event that some configured reporter takes are
    // recorded (none without reporters).
    data.set_reported_events(
        cfg.reporters
            .iter()
            .map(crate::reporters::generators::events_taken)
            .fold(Default::default(), ReportEvents::union),
    );
    Ok(RunningConfig {
        loaded,
        builder_ids,
        worker_ids,
        scheduler_ids,
    })
}

/// Store the outcome of a load and log it; returns its API shape.
pub async fn record(
    data: &Data,
    trigger: Trigger,
    started: (f64, Instant),
    errors: Vec<ConfigError>,
    changes: ConfigDiff,
    summary: String,
) -> Result<Value, DataError> {
    let duration_ms = started.1.elapsed().as_secs_f64() * 1000.0;
    if errors.is_empty() {
        info!(
            "configuration loaded ({}) in {duration_ms:.1} ms: {}; {summary}",
            trigger.as_str(),
            changes.counts()
        );
        for line in changes.lines() {
            info!("  {line}");
        }
    } else {
        warn!(
            "reconfig ({}) failed; the running configuration is unchanged:",
            trigger.as_str()
        );
        for e in &errors {
            warn!("  {e}");
        }
    }
    data.record_reload(&ReloadRecord {
        started_at: started.0,
        duration_ms,
        trigger: trigger.as_str(),
        errors,
        changes,
        summary,
    })
    .await
}

/// Reload master.lua into the running master. Returns the stored outcome
/// (`success`, `errors`, `changes` …); only a database failure while
/// recording it is an `Err`.
pub async fn reload(shared: &Arc<Shared>, trigger: Trigger) -> Result<Value, DataError> {
    let _one_at_a_time = shared.reloading.lock().await;
    let started = (now(), Instant::now());
    let old = shared.running_config();
    let (errors, changes) = match prepare(&shared.dir, Some(&old.loaded.config)).await {
        Err(errors) => (errors, ConfigDiff::default()),
        Ok((loaded, changes)) => match apply(shared, loaded, &changes).await {
            Ok(()) => (Vec::new(), changes),
            Err(e) => (
                vec![ConfigError::whole_file(format!(
                    "could not apply the configuration: {e}"
                ))],
                ConfigDiff::default(),
            ),
        },
    };
    let summary = shared.running_config().loaded.config.summary();
    record(&shared.data, trigger, started, errors, changes, summary).await
}

/// Put a prepared configuration in force.
async fn apply(
    shared: &Arc<Shared>,
    loaded: LoadedConfig,
    changes: &ConfigDiff,
) -> Result<(), DataError> {
    let running = sync_rows(&shared.data, loaded).await?;
    let wanted = services::wanted(&running.loaded.config);
    shared.set_running_config(running);
    // Each service gets its section's diff: unchanged ones keep their state.
    shared.services.lock().await.reconfigure(wanted).await;
    for name in &changes.workers.removed {
        if let Some(worker) = shared.workers.get(name) {
            tokio::spawn(retire_when_idle(shared.clone(), worker));
        }
    }
    Ok(())
}

/// Disconnect a removed worker once its running builds have ended, unless a
/// later reload brought it back.
async fn retire_when_idle(shared: Arc<Shared>, worker: ConnectedWorker) {
    // A reload may bring it back; a build ending may leave it idle.
    let mut reloads = shared.data.bus.subscribe();
    let mut freed = shared.workers.slots_freed();
    loop {
        if shared
            .running_config()
            .loaded
            .config
            .worker(&worker.name)
            .is_some()
        {
            return;
        }
        if worker.running() == 0 {
            info!(worker = %worker.name, "removed worker is idle; disconnecting it");
            worker.retire();
            return;
        }
        tokio::select! {
            _ = reloads.recv() => {}
            _ = freed.changed() => {}
        }
    }
}
