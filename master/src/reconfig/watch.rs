//! Reload when master.lua, or a Lua file it `require`s, is saved.
//!
//! Editors save by writing a temporary file and renaming it over the old one,
//! so the watch is on directories (the master directory and those of required
//! files), not on files, and any change to a `.lua` file in them counts. Events
//! are debounced: the reload starts once the directory has been quiet for
//! `reconfig.debounce_ms`, so a save-dance of several events reloads once.
//! After every reload the watched directories follow the configuration in
//! force, and `reconfig = { watch = false }` drops the watch altogether.
//!
//! notify calls back on its own thread; events cross into tokio over a channel.

use super::Trigger;
use crate::mq::{Event, Topic};
use crate::shared::Shared;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, warn};

type FileEvent = notify::Result<notify::Event>;

/// The directories holding the files of the configuration in force.
fn directories(shared: &Shared) -> BTreeSet<PathBuf> {
    let running = shared.running_config();
    let mut dirs: BTreeSet<PathBuf> = running
        .loaded
        .lua
        .files
        .iter()
        .filter_map(|f| f.parent().map(PathBuf::from))
        .collect();
    dirs.insert(shared.dir.clone());
    dirs
}

/// Does this event touch a Lua file?
fn touches_lua(event: &FileEvent) -> bool {
    match event {
        Ok(e) => {
            matches!(
                e.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            ) && e
                .paths
                .iter()
                .any(|p| p.extension().is_some_and(|x| x == "lua"))
        }
        Err(e) => {
            warn!("file watcher error: {e}");
            false
        }
    }
}

fn start_watching(
    dirs: &BTreeSet<PathBuf>,
    tx: &mpsc::UnboundedSender<FileEvent>,
) -> notify::Result<RecommendedWatcher> {
    let tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })?;
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Wait for a stored reload outcome (or for having missed events).
async fn next_reload(events: &mut broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event {
                topic: Topic::ConfigReload { .. },
                ..
            }) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// The watcher task; ends at shutdown.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<FileEvent>();
    let mut reloads = shared.data.bus.subscribe();
    let mut watcher: Option<(BTreeSet<PathBuf>, RecommendedWatcher)> = None;
    loop {
        // Follow the configuration in force.
        let settings = shared.running_config().loaded.config.reconfig.clone();
        if !settings.watch {
            watcher = None;
        } else {
            let dirs = directories(&shared);
            if watcher.as_ref().is_none_or(|(watched, _)| *watched != dirs) {
                watcher = match start_watching(&dirs, &tx) {
                    Ok(w) => {
                        debug!("watching {dirs:?} for changes to the configuration");
                        Some((dirs, w))
                    }
                    Err(e) => {
                        warn!("cannot watch the configuration files, reload with SIGHUP: {e}");
                        None
                    }
                };
            }
        }
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { return };
                // Ask the configuration in force, not this loop's copy: a reload
                // that turned watching off may not have reached the loop yet.
                let watching = || shared.running_config().loaded.config.reconfig.watch;
                if !touches_lua(&event) || watcher.is_none() || !watching() {
                    continue;
                }
                // Debounce: wait until the files have been quiet for a while.
                let quiet = Duration::from_millis(settings.debounce_ms);
                loop {
                    tokio::select! {
                        more = rx.recv() => if more.is_none() { return },
                        _ = tokio::time::sleep(quiet) => break,
                    }
                }
                if !watching() {
                    continue;
                }
                if let Err(e) = super::reload(&shared, Trigger::File).await {
                    warn!("could not record a reload: {e}");
                }
            }
            // A reload may change what to watch: go round and follow it.
            _ = next_reload(&mut reloads) => {}
            _ = shutdown.changed() => return,
        }
    }
}
