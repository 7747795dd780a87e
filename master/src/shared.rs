//! The handles every service of the master sees: [`Shared`] (the master's
//! directory and name, the data layer, the worker registry, the running builds,
//! the session key, the revocation list) and the configuration in force
//! ([`RunningConfig`]).
//!
//! A leaf: it imports no service, so the listener, the distributor, builds,
//! schedulers, reconfig and the web server can all take an `Arc<Shared>`
//! without importing each other or [`crate::runtime`], which assembles them.

use crate::config::LoadedConfig;
use crate::credentials::SessionKey;
use crate::data::Data;
use crate::pki::revoke::Revocations;
use crate::running_builds::RunningBuilds;
use crate::services::ServiceManager;
use crate::worker_registry::WorkerRegistry;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The configuration in force, with the database ids of its builders and workers.
pub struct RunningConfig {
    pub loaded: LoadedConfig,
    pub builder_ids: BTreeMap<String, i64>,
    pub worker_ids: BTreeMap<String, i64>,
    pub scheduler_ids: BTreeMap<String, i64>,
}

impl RunningConfig {
    /// A configured builder's name from its id.
    pub fn builder_name(&self, builderid: i64) -> Option<&str> {
        self.builder_ids
            .iter()
            .find(|(_, id)| **id == builderid)
            .map(|(name, _)| name.as_str())
    }
}

/// State shared by every task of the master.
pub struct Shared {
    pub dir: PathBuf,
    pub master_name: String,
    pub data: Data,
    pub workers: WorkerRegistry,
    pub builds: RunningBuilds,
    /// The locks builds and steps hold and wait for.
    pub locks: crate::locks::LockRegistry,
    /// False while the master is stopping: no new builds start.
    pub accepting_builds: AtomicBool,
    pub idle_timeout: Duration,
    /// Held for the whole of a reload, so reloads happen one at a time.
    pub reloading: tokio::sync::Mutex<()>,
    /// Signs the web UI's session cookies and CSRF tokens.
    pub session_key: SessionKey,
    /// Backoff for failed web logins.
    pub login_throttle: crate::login_throttle::LoginThrottle,
    /// The hash of `DIR/cli-token` (see [`crate::credentials::CLI_TOKEN_FILE`]).
    pub cli_token_hash: String,
    /// `pki/revoked.json`, re-read when it changes.
    pub revocations: Revocations,
    /// The running services (distributor, schedulers …); reconfigured by
    /// [`crate::reconfig`] after each swap of the configuration.
    pub services: tokio::sync::Mutex<ServiceManager>,
    /// The configuration in force; see [`Shared::running_config`].
    pub config: ConfigSlot,
}

impl Shared {
    /// The configuration in force (a snapshot; cheap).
    pub fn running_config(&self) -> Arc<RunningConfig> {
        self.config.0.read().expect("config lock").clone()
    }

    /// Put a new configuration in force (only [`crate::reconfig`] does this).
    pub(crate) fn set_running_config(&self, running: RunningConfig) {
        *self.config.0.write().expect("config lock") = Arc::new(running);
    }
}

/// Where the configuration in force is kept: read as a cheap snapshot, replaced
/// in one swap, and only by [`crate::reconfig`] (through
/// [`Shared::set_running_config`]).
pub struct ConfigSlot(RwLock<Arc<RunningConfig>>);

impl ConfigSlot {
    pub fn new(running: RunningConfig) -> Self {
        ConfigSlot(RwLock::new(Arc::new(running)))
    }
}
