//! The builds running on this master, by build id, and how each is told to
//! stop: a user's cancel (the build ends CANCELLED) or the master stopping (it
//! ends RETRY and its request runs again).
//!
//! A leaf: the API and the forms stop builds through it, a build's steps watch
//! its [`StopSignal`], and the master waits on it before stopping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{Notify, watch};

/// Why a running build is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// A user asked: the build ends CANCELLED and its request is complete.
    Cancel,
    /// The master is stopping: the build ends RETRY and its request stays queued.
    Shutdown,
}

struct StopHandle {
    kind: Arc<OnceLock<StopKind>>,
    interrupt: watch::Sender<Option<String>>,
}

/// What a running build watches to learn it should stop.
pub struct StopSignal {
    kind: Arc<OnceLock<StopKind>>,
    pub interrupt: watch::Receiver<Option<String>>,
}

impl StopSignal {
    pub fn requested(&self) -> Option<StopKind> {
        self.kind.get().copied()
    }
}

/// A build's place in [`RunningBuilds`]; leaving it (on any path, panics
/// included) removes the build, so a master stop never waits for a build that
/// is gone.
pub struct Registration<'a> {
    builds: &'a RunningBuilds,
    buildid: i64,
    pub stop: StopSignal,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.builds.unregister(self.buildid);
    }
}

/// Builds running on this master, by build id.
#[derive(Default)]
pub struct RunningBuilds {
    builds: Mutex<HashMap<i64, StopHandle>>,
    changed: Notify,
}

impl RunningBuilds {
    /// Register a build; its registration tells it when to stop.
    pub fn register(&self, buildid: i64) -> Registration<'_> {
        let kind = Arc::new(OnceLock::new());
        let (tx, rx) = watch::channel(None);
        self.builds.lock().expect("running builds lock").insert(
            buildid,
            StopHandle {
                kind: kind.clone(),
                interrupt: tx,
            },
        );
        Registration {
            builds: self,
            buildid,
            stop: StopSignal {
                kind,
                interrupt: rx,
            },
        }
    }

    fn unregister(&self, buildid: i64) {
        self.builds
            .lock()
            .expect("running builds lock")
            .remove(&buildid);
        self.changed.notify_waiters();
    }

    /// Ask one build to stop; false when it is not running here.
    pub fn stop(&self, buildid: i64, kind: StopKind, reason: &str) -> bool {
        let builds = self.builds.lock().expect("running builds lock");
        let Some(handle) = builds.get(&buildid) else {
            return false;
        };
        let _ = handle.kind.set(kind);
        let _ = handle.interrupt.send(Some(reason.to_string()));
        true
    }

    /// Ask every build to stop.
    pub fn stop_all(&self, kind: StopKind, reason: &str) {
        let ids: Vec<i64> = self
            .builds
            .lock()
            .expect("running builds lock")
            .keys()
            .copied()
            .collect();
        for id in ids {
            self.stop(id, kind, reason);
        }
    }

    pub fn count(&self) -> usize {
        self.builds.lock().expect("running builds lock").len()
    }

    /// Wait until no build is running.
    pub async fn wait_idle(&self) {
        loop {
            // Register before checking, or a build ending in between is missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}
