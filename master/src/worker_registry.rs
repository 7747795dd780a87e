//! Connected workers and their free build slots.
//!
//! A leaf every service sees through [`crate::shared::Shared`]: the listener
//! adds and removes connections, the distributor leases slots, builds follow
//! their worker across reconnects, and the pages show who is connected.
//!
//! A build holds a [`WorkerLease`] for its whole run; dropping it frees the slot.
//! The lock is a plain mutex held only to look up or change the map, never
//! across I/O.

use moonbot_worker::protocol::WorkerInfo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One live connection of a worker.
#[derive(Debug, Clone)]
pub struct ConnectedWorker {
    pub name: String,
    pub workerid: i64,
    pub conn: quinn::Connection,
    pub info: WorkerInfo,
    /// Distinguishes this connection from an earlier or later one of the same worker.
    pub connection_id: u64,
    /// Builds running on this connection.
    running: Arc<AtomicUsize>,
    /// Set when a reconfig removed this worker: its connection task tells the
    /// worker and closes the connection.
    retire: Arc<tokio::sync::Notify>,
    /// Set by the API's worker `stop` and `kill`: its connection task lets
    /// the worker go (after its running builds, or now) and tells it to exit.
    stop: Arc<tokio::sync::watch::Sender<StopRequest>>,
    /// When the worker was last heard on this connection (any control frame),
    /// in milliseconds since the registry's epoch.
    heard_ms: Arc<AtomicU64>,
    epoch: Instant,
}

/// What the API asked of a worker's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopRequest {
    #[default]
    None,
    /// Buildbot's `stop`: no new builds; once the running ones end, the
    /// worker is told to exit.
    Graceful,
    /// Buildbot's `kill`: the worker is told to exit now.
    Now,
}

/// A second connection for a worker whose connection is alive: a copied
/// worker directory, not a reconnect.
#[derive(Debug, Clone, thiserror::Error)]
#[error("worker {name} is already connected from {from}")]
pub struct AlreadyConnected {
    pub name: String,
    pub from: std::net::SocketAddr,
}

impl ConnectedWorker {
    /// The worker was heard on this connection just now.
    pub fn heard(&self) {
        self.heard_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the worker was last heard on this connection.
    pub fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(heard)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Ask this connection's task to drop the worker (see [`Self::retired`]).
    pub fn retire(&self) {
        self.retire.notify_one();
    }

    /// Resolves once [`Self::retire`] has been called.
    pub async fn retired(&self) {
        self.retire.notified().await
    }

    /// Let the worker go once its running builds end, and tell it to exit.
    pub fn stop_gracefully(&self) {
        self.stop.send_if_modified(|s| {
            let changed = *s == StopRequest::None;
            if changed {
                *s = StopRequest::Graceful;
            }
            changed
        });
    }

    /// Let the worker go now, and tell it to exit.
    pub fn kill(&self) {
        self.stop.send_replace(StopRequest::Now);
    }

    /// What the API asked of this connection; changes on each request.
    pub fn stop_requests(&self) -> tokio::sync::watch::Receiver<StopRequest> {
        self.stop.subscribe()
    }
}

/// A build slot on a worker; the slot is freed when this is dropped.
#[derive(Debug)]
pub struct WorkerLease {
    pub worker: ConnectedWorker,
    /// The registry's [`WorkerRegistry::slots_freed`] counter.
    freed: tokio::sync::watch::Sender<u64>,
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        self.worker.running.fetch_sub(1, Ordering::SeqCst);
        self.freed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What the registry knows of one worker name.
#[derive(Debug, Default)]
struct Slot {
    /// The live connection, if any.
    current: Option<ConnectedWorker>,
    /// Builds running on this worker, whichever connection they started on: a
    /// build waiting for its worker to reconnect still holds its slot.
    running: Arc<AtomicUsize>,
    /// Paused by a user: no new builds.
    paused: bool,
    /// The current connection asked to stop after its running builds.
    graceful: bool,
}

/// All workers connected to this master, by name.
#[derive(Debug)]
pub struct WorkerRegistry {
    slots: Mutex<HashMap<String, Slot>>,
    next_connection: AtomicU64,
    /// Bumped on every connect and disconnect, for [`Self::connection_after`].
    changes: tokio::sync::watch::Sender<u64>,
    /// Counts the build slots given back, for [`Self::slots_freed`].
    freed: tokio::sync::watch::Sender<u64>,
    /// What connections measure their last-heard time from.
    epoch: Instant,
}

impl Default for WorkerRegistry {
    fn default() -> Self {
        WorkerRegistry {
            slots: Mutex::default(),
            next_connection: AtomicU64::new(1),
            changes: tokio::sync::watch::Sender::new(0),
            freed: tokio::sync::watch::Sender::new(0),
            epoch: Instant::now(),
        }
    }
}

impl WorkerRegistry {
    /// Record a new connection. An older connection of the same worker that
    /// was heard within `alive_within` is alive, and the new one is refused:
    /// two processes with one certificate (a copied worker directory) would
    /// otherwise replace each other without end. An older one silent for
    /// longer, or closed, is returned so the caller can close it (a worker
    /// reconnecting after an outage wins). `paused` is the worker's stored
    /// pause state.
    pub fn insert(
        &self,
        name: &str,
        workerid: i64,
        conn: quinn::Connection,
        info: WorkerInfo,
        paused: bool,
        alive_within: Duration,
    ) -> Result<(ConnectedWorker, Option<ConnectedWorker>), AlreadyConnected> {
        let mut map = self.slots.lock().expect("registry lock");
        let slot = map.entry(name.to_string()).or_default();
        if let Some(current) = &slot.current
            && current.conn.close_reason().is_none()
            && current.silent_for() < alive_within
        {
            return Err(AlreadyConnected {
                name: name.to_string(),
                from: current.conn.remote_address(),
            });
        }
        let worker = ConnectedWorker {
            name: name.to_string(),
            workerid,
            conn,
            info,
            connection_id: self.next_connection.fetch_add(1, Ordering::SeqCst),
            running: slot.running.clone(),
            retire: Arc::new(tokio::sync::Notify::new()),
            stop: Arc::new(tokio::sync::watch::channel(StopRequest::None).0),
            heard_ms: Default::default(),
            epoch: self.epoch,
        };
        worker.heard();
        let old = slot.current.replace(worker.clone());
        slot.paused = paused;
        slot.graceful = false;
        drop(map);
        self.changes.send_modify(|n| *n += 1);
        Ok((worker, old))
    }

    /// Forget a connection, unless the worker has reconnected since.
    pub fn remove(&self, name: &str, connection_id: u64) -> bool {
        let mut map = self.slots.lock().expect("registry lock");
        let Some(slot) = map.get_mut(name) else {
            return false;
        };
        if slot
            .current
            .as_ref()
            .is_none_or(|w| w.connection_id != connection_id)
        {
            return false;
        }
        slot.current = None;
        slot.graceful = false;
        drop(map);
        self.changes.send_modify(|n| *n += 1);
        true
    }

    /// Take a build slot on `name` if it is connected, not paused, not
    /// stopping, and has one free.
    pub fn reserve(&self, name: &str, max_builds: Option<u32>) -> Option<WorkerLease> {
        let map = self.slots.lock().expect("registry lock");
        let slot = map.get(name)?;
        if slot.paused || slot.graceful {
            return None;
        }
        let worker = slot.current.as_ref()?;
        let limit = max_builds.map(|m| m as usize).unwrap_or(usize::MAX);
        worker
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(WorkerLease {
            worker: worker.clone(),
            freed: self.freed.clone(),
        })
    }

    /// A receiver that changes whenever a build gives its slot back: the
    /// distributor starts the next build, a stopping or removed worker sees
    /// its last build end.
    pub fn slots_freed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.freed.subscribe()
    }

    /// How many builds [`WorkerRegistry::reserve`] would let `name` start now
    /// (`usize::MAX` when it has no limit).
    pub fn free_slots(&self, name: &str, max_builds: Option<u32>) -> usize {
        let map = self.slots.lock().expect("registry lock");
        let Some(slot) = map.get(name) else {
            return 0;
        };
        let (Some(worker), false, false) = (&slot.current, slot.paused, slot.graceful) else {
            return 0;
        };
        let limit = max_builds.map(|m| m as usize).unwrap_or(usize::MAX);
        limit.saturating_sub(worker.running.load(Ordering::SeqCst))
    }

    /// Builds running on `name`, on any of its connections.
    pub fn running(&self, name: &str) -> usize {
        self.slots
            .lock()
            .expect("registry lock")
            .get(name)
            .map(|s| s.running.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// The current connection of `name`, if any.
    pub fn get(&self, name: &str) -> Option<ConnectedWorker> {
        self.slots
            .lock()
            .expect("registry lock")
            .get(name)
            .and_then(|s| s.current.clone())
    }

    pub fn is_connected(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every current connection (for shutdown).
    pub fn all(&self) -> Vec<ConnectedWorker> {
        self.slots
            .lock()
            .expect("registry lock")
            .values()
            .filter_map(|s| s.current.clone())
            .collect()
    }

    /// Record a pause or unpause; returns the previous state.
    pub fn set_paused(&self, name: &str, paused: bool) -> bool {
        let mut map = self.slots.lock().expect("registry lock");
        std::mem::replace(&mut map.entry(name.to_string()).or_default().paused, paused)
    }

    /// The current connection `connection_id` of `name` stops after its running
    /// builds.
    pub fn set_graceful(&self, name: &str, connection_id: u64) {
        let mut map = self.slots.lock().expect("registry lock");
        if let Some(slot) = map.get_mut(name)
            && slot
                .current
                .as_ref()
                .is_some_and(|w| w.connection_id == connection_id)
        {
            slot.graceful = true;
        }
    }

    /// Wait until `name` has a connection newer than `after` (any connection
    /// when `after` is `None`), until `deadline`.
    pub async fn connection_after(
        &self,
        name: &str,
        after: Option<u64>,
        deadline: tokio::time::Instant,
    ) -> Option<ConnectedWorker> {
        let mut changes = self.changes.subscribe();
        loop {
            if let Some(worker) = self.get(name)
                && after.is_none_or(|id| worker.connection_id > id)
            {
                return Some(worker);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }
}
