//! Connected workers and their free build slots.
//!
//! A build holds a [`WorkerLease`] for its whole run; dropping it frees the slot.
//! The lock is a plain mutex held only to look up or change the map, never
//! across I/O.

use moonbot_worker::protocol::WorkerInfo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
}

impl ConnectedWorker {
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
}

/// A build slot on a worker; the slot is freed when this is dropped.
#[derive(Debug)]
pub struct WorkerLease {
    pub worker: ConnectedWorker,
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        self.worker.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// All workers connected to this master, by name.
#[derive(Debug, Default)]
pub struct WorkerRegistry {
    workers: Mutex<HashMap<String, ConnectedWorker>>,
    next_connection: AtomicU64,
}

impl WorkerRegistry {
    /// Record a new connection; an older connection of the same worker is
    /// returned so the caller can close it (a reconnecting worker wins).
    pub fn insert(
        &self,
        name: &str,
        workerid: i64,
        conn: quinn::Connection,
        info: WorkerInfo,
    ) -> (ConnectedWorker, Option<ConnectedWorker>) {
        let worker = ConnectedWorker {
            name: name.to_string(),
            workerid,
            conn,
            info,
            connection_id: self.next_connection.fetch_add(1, Ordering::SeqCst),
            running: Arc::new(AtomicUsize::new(0)),
            retire: Arc::new(tokio::sync::Notify::new()),
        };
        let old = self
            .workers
            .lock()
            .expect("registry lock")
            .insert(name.to_string(), worker.clone());
        (worker, old)
    }

    /// Forget a connection, unless the worker has reconnected since.
    pub fn remove(&self, name: &str, connection_id: u64) -> bool {
        let mut map = self.workers.lock().expect("registry lock");
        if map
            .get(name)
            .is_some_and(|w| w.connection_id == connection_id)
        {
            map.remove(name);
            true
        } else {
            false
        }
    }

    /// Take a build slot on `name` if it is connected and has one free.
    pub fn reserve(&self, name: &str, max_builds: Option<u32>) -> Option<WorkerLease> {
        let map = self.workers.lock().expect("registry lock");
        let worker = map.get(name)?;
        let limit = max_builds.map(|m| m as usize).unwrap_or(usize::MAX);
        worker
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(WorkerLease {
            worker: worker.clone(),
        })
    }

    /// Builds running on `name` (0 when not connected).
    pub fn running(&self, name: &str) -> usize {
        self.workers
            .lock()
            .expect("registry lock")
            .get(name)
            .map(|w| w.running())
            .unwrap_or(0)
    }

    /// The current connection of `name`, if any.
    pub fn get(&self, name: &str) -> Option<ConnectedWorker> {
        self.workers
            .lock()
            .expect("registry lock")
            .get(name)
            .cloned()
    }

    pub fn is_connected(&self, name: &str) -> bool {
        self.workers
            .lock()
            .expect("registry lock")
            .contains_key(name)
    }

    /// Every current connection (for shutdown).
    pub fn all(&self) -> Vec<ConnectedWorker> {
        self.workers
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }
}
