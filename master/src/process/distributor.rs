//! Matching pending build requests to workers with a free slot.
//!
//! Runs as one task: whenever a request is added or released, a worker connects,
//! or a build finishes (all seen on the event bus), it reads the pending requests
//! from the data layer, oldest first, and for each one whose builder has a
//! connected worker with a free slot it claims the request and starts the build.
//! The claim is the database's, so a second master could not run it twice.

use super::build;
use crate::runtime::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tracing::warn;

/// Look again at least this often, in case an event was missed.
const POLL: Duration = Duration::from_secs(10);

pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut events = shared.data.bus.subscribe();
    loop {
        if shared.accepting_builds.load(Ordering::SeqCst)
            && let Err(e) = distribute(&shared).await
        {
            warn!("could not distribute build requests: {e}");
        }
        // Wait for something that could let another build start.
        let deadline = tokio::time::sleep(POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => {
                        let relevant = matches!(
                            (e.collection(), e.kind()),
                            ("buildrequests", "new" | "unclaimed")
                                | ("workers", "connected")
                                | ("builds", "finished")
                                | ("config_reloads", "new")
                        );
                        if relevant { break; }
                    }
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
                _ = &mut deadline => break,
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn distribute(shared: &Arc<Shared>) -> Result<(), crate::data::DataError> {
    let pending = shared.data.pending_requests().await?;
    if pending.is_empty() {
        return Ok(());
    }
    let running = shared.running_config();
    for request in pending {
        let Some(builder) = running
            .builder_ids
            .iter()
            .find(|(_, id)| **id == request.builderid)
            .and_then(|(name, _)| running.loaded.config.builder(name))
        else {
            // Its builder is not configured now; the request waits in the database.
            continue;
        };
        let mut candidates: Vec<&String> = builder.workernames.iter().collect();
        candidates.sort_by_key(|name| shared.workers.running(name));
        let lease = candidates.into_iter().find_map(|name| {
            let max = running
                .loaded
                .config
                .worker(name)
                .and_then(|w| w.max_builds);
            shared.workers.reserve(name, max)
        });
        let Some(lease) = lease else {
            continue;
        };
        if !shared.data.claim_request(request.brid).await? {
            continue;
        }
        let shared = shared.clone();
        let builder = builder.clone();
        let lua = running.loaded.lua.clone();
        let worker_config = running.loaded.config.worker(&lease.worker.name).cloned();
        tokio::spawn(async move {
            build::run(shared, request, builder, worker_config, lua, lease).await;
        });
    }
    Ok(())
}
