//! Matching pending build requests to workers with a free slot.
//!
//! Runs as one task: whenever a request is added or released, a worker connects
//! or is unpaused, or the config changes (all seen on the event bus), or a build
//! gives its worker slot back (the registry's notification), it reads the
//! pending requests of builders that have a free worker from the data layer,
//! oldest first, a page at a time, and for each one whose builder still has a
//! free slot it claims the request (with those that collapse into it, see
//! [`super::collapse`]) and starts the build. Events that arrive
//! while it works are covered by its next look, not one look each. The claim is
//! the database's, so a second master could not run it twice.

use super::{build, choices, collapse};
use crate::config::BuilderConfig;
use crate::data::buildsets::PendingRequest;
use crate::mq::topic::{BuildRequestEvent, WorkerEvent};
use crate::mq::{Event, Topic};
use crate::services::{Service, ServiceConfig, Stopping};
use crate::shared::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tracing::warn;

/// Look again at least this often, in case an event was missed.
const POLL: Duration = Duration::from_secs(10);

/// At most this many pending requests are read per query; more pages are read
/// while workers are free.
const PAGE: usize = 64;

/// The distributor as a service: its task, and how to tell it to stop.
pub struct Distributor {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Distributor {
    pub fn start(shared: Arc<Shared>) -> Distributor {
        let (shutdown, rx) = watch::channel(false);
        Distributor {
            shutdown,
            task: tokio::spawn(run(shared, rx)),
        }
    }
}

impl Service for Distributor {
    /// It has no settings of its own: every look reads the builders, workers
    /// and their limits from the running configuration.
    fn reconfigure(&mut self, _config: &ServiceConfig) {}

    /// Stop looking; builds it started run on (they are the running builds').
    fn stop(self: Box<Self>) -> Stopping {
        Box::pin(async move {
            let _ = self.shutdown.send(true);
            let _ = self.task.await;
        })
    }
}

async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut events = shared.data.bus.subscribe();
    let mut freed = shared.workers.slots_freed();
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
                    Ok(e) if relevant(&e) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
                // A build ended and gave its worker slot back.
                _ = freed.changed() => break,
                _ = &mut deadline => break,
                _ = shutdown.changed() => return,
            }
        }
        // One look covers every event that came meanwhile (a burst of forced
        // builds is one query, not one each).
        loop {
            match events.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
    }
}

/// Could this event let a build start?
fn relevant(event: &Event) -> bool {
    matches!(
        event.topic,
        Topic::BuildRequest {
            event: BuildRequestEvent::New | BuildRequestEvent::Unclaimed,
            ..
        } | Topic::Worker {
            event: WorkerEvent::Connected | WorkerEvent::StateUpdated,
            ..
        } | Topic::ConfigReload { .. }
    )
}

async fn distribute(shared: &Arc<Shared>) -> Result<(), crate::data::DataError> {
    let running = shared.running_config();
    let config = &running.loaded.config;
    if config.builders.is_empty() {
        return Ok(());
    }
    // Only the workers that builders name: a master with thousands of
    // workers is woken by each of them connecting, and must not walk them
    // all every time.
    let named: HashSet<&str> = config
        .builders
        .iter()
        .flat_map(|b| b.workernames.iter().map(String::as_str))
        .collect();
    let max_builds: HashMap<&str, Option<u32>> = config
        .workers
        .iter()
        .filter(|w| named.contains(w.name.as_str()))
        .map(|w| (w.name.as_str(), w.max_builds))
        .collect();
    let max_of = |name: &str| max_builds.get(name).copied().flatten();
    let has_free_worker = |builder: &BuilderConfig| {
        builder
            .workernames
            .iter()
            .any(|name| shared.workers.free_slots(name, max_of(name)) > 0)
    };
    // Only builders that could start a build now are asked about: while every
    // worker is busy, new requests cost no query at all.
    let ready: HashMap<i64, &BuilderConfig> = config
        .builders
        .iter()
        .filter(|b| has_free_worker(b))
        .filter_map(|b| Some((*running.builder_ids.get(&b.name)?, b)))
        .collect();
    if ready.is_empty() {
        return Ok(());
    }
    let builderids: Vec<i64> = ready.keys().copied().collect();
    // No more requests than the free slots of those builders' workers can start.
    let workers: HashSet<&String> = ready.values().flat_map(|b| &b.workernames).collect();
    let free = workers.iter().fold(0usize, |n, name| {
        n.saturating_add(shared.workers.free_slots(name, max_of(name)))
    });
    // Builders in an order of their own (priorities, prioritize_builders)
    // are ordered over a full page, not only as many requests as slots.
    let ordered = config.prioritize_builders.is_some() || ready.values().any(|b| b.priority != 0);
    let page_size = if ordered { PAGE } else { free.clamp(1, PAGE) } as u64;
    let ranks = choices::builder_ranks(&running.loaded.lua, config, &ready).await;
    let mut offset = 0;
    loop {
        let page = shared
            .data
            .pending_requests(&builderids, offset, page_size)
            .await?;
        let read = page.len() as u64;
        let in_page: HashSet<i64> = page.iter().map(|r| r.brid).collect();
        // When this page is every pending request, one alone for its builder
        // has nothing to collapse with: no query for it (the usual case).
        let whole = offset == 0 && read < page_size;
        let mut pending_of: HashMap<i64, usize> = HashMap::new();
        for r in &page {
            *pending_of.entry(r.builderid).or_default() += 1;
        }
        let mut taken: HashSet<i64> = HashSet::new();
        // Builders in their order (priority, or prioritize_builders); a
        // builder left out waits for the next pass.
        let mut page = page;
        page.retain(|r| ranks.get(&r.builderid).copied().flatten().is_some());
        page.sort_by_key(|r| ranks.get(&r.builderid).copied().flatten());
        let mut passed: HashSet<i64> = HashSet::new();
        for request in &page {
            if taken.contains(&request.brid) || passed.contains(&request.builderid) {
                continue;
            }
            let Some(&builder) = ready.get(&request.builderid) else {
                continue;
            };
            let lua = &running.loaded.lua;
            let request = if builder.next_build.is_some() {
                // The function chooses among all of the builder's pending
                // requests, not only this page's.
                let all = shared
                    .data
                    .pending_requests(&[request.builderid], 0, PAGE as u64)
                    .await?;
                let waiting: Vec<&PendingRequest> =
                    all.iter().filter(|r| !taken.contains(&r.brid)).collect();
                if waiting.is_empty() {
                    continue;
                }
                match choices::next_build(lua, builder, &waiting).await {
                    Some(i) => waiting[i].clone(),
                    None => {
                        passed.insert(request.builderid);
                        continue;
                    }
                }
            } else {
                request.clone()
            };
            let mut free: Vec<(String, usize)> = builder
                .workernames
                .iter()
                .filter(|name| shared.workers.free_slots(name, max_of(name)) > 0)
                .map(|name| (name.clone(), shared.workers.running(name)))
                .collect();
            free.sort_by_key(|(_, running)| *running);
            let candidates = if builder.next_worker.is_some() || builder.can_start_build.is_some() {
                choices::workers_for(lua, config, builder, &request, free).await
            } else {
                free.into_iter().map(|(name, _)| name).collect()
            };
            let Some(lease) = candidates
                .iter()
                .find_map(|name| shared.workers.reserve(name, max_of(name)))
            else {
                continue;
            };
            let alone = whole && pending_of.get(&request.builderid) == Some(&1);
            let mut group = if alone {
                vec![request.clone()]
            } else {
                let rule = config.collapse_requests_of(builder);
                collapse::group(&shared.data, rule, &running.loaded.lua, builder, &request).await?
            };
            // The newest request of the group is the build; the others are
            // collapsed into it, if no other master has claimed them.
            let Some(mut newest) = group.pop() else {
                continue;
            };
            if !shared.data.claim_request(&mut newest).await? {
                continue;
            }
            taken.insert(newest.brid);
            let mut collapsed = Vec::with_capacity(group.len());
            for mut other in group {
                if shared.data.claim_request(&mut other).await? {
                    taken.insert(other.brid);
                    collapsed.push(other);
                }
            }
            let shared = shared.clone();
            let builder = builder.clone();
            let loaded = running.loaded.clone();
            let worker_config = config.worker(&lease.worker.name).cloned();
            tokio::spawn(async move {
                build::run(
                    shared,
                    newest,
                    collapsed,
                    builder,
                    worker_config,
                    loaded,
                    lease,
                )
                .await;
            });
        }
        let claimed = taken.intersection(&in_page).count() as u64;
        // Claimed requests leave the pending set: the next page starts
        // after the ones that are still waiting.
        offset += read - claimed;
        if read < page_size || !ready.values().any(|b| has_free_worker(b)) {
            return Ok(());
        }
    }
}
