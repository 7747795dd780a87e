//! The master's long-lived parts as services: each is started from its section
//! of the configuration and, on a reload, handed that section again if it
//! changed (`reconfigure`), so an unchanged service keeps its state (timers,
//! poller positions, queues) and a changed one adjusts in place. A removed one
//! is stopped (it drains first). Start-up is a reconfigure from nothing; a
//! master stopping stops them all. Vector's topology and Buildbot's
//! `BuildbotServiceManager` are the models.
//!
//! This module knows no kind: [`ServiceManager::reconfigure`] compares the
//! wanted [`ServiceConfig`]s by [`ServiceId`] and calls a [`Service`]'s methods;
//! what a kind does is its own module's business, and which function starts
//! which kind is the [`Starter`] that `runtime` gives the manager.

use crate::config::{
    ChangeSourceConfig, JanitorConfig, MasterConfig, ReporterConfig, SchedulerConfig,
};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use tracing::info;

/// A service's kind and its name within the kind (`scheduler:force`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub kind: &'static str,
    pub name: String,
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// A service's section of the configuration: plain, comparable data.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceConfig {
    /// Matches pending build requests with free workers (one per master).
    Distributor,
    /// One scheduler of master.lua.
    Scheduler(SchedulerConfig),
    /// One change source of master.lua (a poller).
    ChangeSource(ChangeSourceConfig),
    /// Deletes old history (`janitor = {…}`).
    Janitor(JanitorConfig),
    /// Removes expired artifacts (`artifacts = {…}`; always running).
    ArtifactExpiry(crate::config::artifacts::ArtifactsConfig),
    /// Builders' `cancel_superseded` (one per master, while a builder has it).
    Superseder,
    /// One reporter of master.lua.
    Reporter(ReporterConfig),
}

impl ServiceConfig {
    pub fn id(&self) -> ServiceId {
        match self {
            ServiceConfig::Distributor => ServiceId {
                kind: "distributor",
                name: "distributor".into(),
            },
            ServiceConfig::Scheduler(s) => ServiceId {
                kind: "scheduler",
                name: s.name().to_string(),
            },
            ServiceConfig::ChangeSource(s) => ServiceId {
                kind: "changesource",
                name: s.name().to_string(),
            },
            ServiceConfig::ArtifactExpiry(_) => ServiceId {
                kind: "artifact_expiry",
                name: "artifacts".into(),
            },
            ServiceConfig::Janitor(_) => ServiceId {
                kind: "janitor",
                name: "janitor".into(),
            },
            ServiceConfig::Superseder => ServiceId {
                kind: "superseder",
                name: "builders".into(),
            },
            ServiceConfig::Reporter(r) => ServiceId {
                kind: "reporter",
                name: r.name.clone(),
            },
        }
    }

    /// Whether `other` asks for the same service with the same settings
    /// (positions in master.lua do not count, as in the reload's diff).
    pub fn same_settings(&self, other: &ServiceConfig) -> bool {
        match (self, other) {
            (ServiceConfig::Distributor, ServiceConfig::Distributor) => true,
            (ServiceConfig::Scheduler(a), ServiceConfig::Scheduler(b)) => {
                crate::config::diff::same_scheduler(a, b)
            }
            (ServiceConfig::ChangeSource(a), ServiceConfig::ChangeSource(b)) => {
                a.unplaced() == b.unplaced()
            }
            (ServiceConfig::Janitor(a), ServiceConfig::Janitor(b)) => a == b,
            (ServiceConfig::ArtifactExpiry(a), ServiceConfig::ArtifactExpiry(b)) => a == b,
            // It reads the builders from the running configuration.
            (ServiceConfig::Superseder, ServiceConfig::Superseder) => true,
            (ServiceConfig::Reporter(a), ServiceConfig::Reporter(b)) => {
                a.unplaced() == b.unplaced()
            }
            _ => false,
        }
    }
}

/// Every service a configuration asks for.
pub fn wanted(config: &MasterConfig) -> Vec<ServiceConfig> {
    let mut services = vec![ServiceConfig::Distributor];
    services.extend(
        config
            .schedulers
            .iter()
            .cloned()
            .map(ServiceConfig::Scheduler),
    );
    services.extend(
        config
            .change_sources
            .iter()
            .cloned()
            .map(ServiceConfig::ChangeSource),
    );
    services.extend(config.janitor.clone().map(ServiceConfig::Janitor));
    services.push(ServiceConfig::ArtifactExpiry(config.artifacts.clone()));
    if config.builders.iter().any(|b| b.cancel_superseded) {
        services.push(ServiceConfig::Superseder);
    }
    services.extend(
        config
            .reporters
            .iter()
            .cloned()
            .map(ServiceConfig::Reporter),
    );
    services
}

/// A future a service's stop returns.
pub type Stopping = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running service.
pub trait Service: Send {
    /// Its section changed (same id, other settings): adjust in place.
    fn reconfigure(&mut self, config: &ServiceConfig);
    /// Stop taking new work, finish what runs, end; the manager awaits it.
    fn stop(self: Box<Self>) -> Stopping;
}

/// A service that is one task reading the running configuration: it is
/// woken on a reconfigure (`settings` changes) and told to stop
/// (`shutdown`), and its stop waits for the task. The change schedulers,
/// timed and dependent schedulers and the git poller are this.
pub struct TaskService {
    kind: &'static str,
    name: String,
    settings: tokio::sync::watch::Sender<u64>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`TaskService`]'s task is given: its settings' version (bumped on
/// each reconfigure) and the stop flag.
pub type TaskSignals = (
    tokio::sync::watch::Receiver<u64>,
    tokio::sync::watch::Receiver<bool>,
);

impl TaskService {
    /// Spawn `run` as the service `kind` `name`.
    pub fn spawn<F, Fut>(kind: &'static str, name: &str, run: F) -> TaskService
    where
        F: FnOnce(TaskSignals) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (settings, settings_rx) = tokio::sync::watch::channel(0);
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        TaskService {
            kind,
            name: name.to_string(),
            settings,
            shutdown,
            task: tokio::spawn(run((settings_rx, shutdown_rx))),
        }
    }
}

impl Service for TaskService {
    fn reconfigure(&mut self, _config: &ServiceConfig) {
        info!(kind = self.kind, name = %self.name, "reconfigured in place; its state is kept");
        self.settings.send_modify(|n| *n += 1);
    }

    fn stop(self: Box<Self>) -> Stopping {
        let _ = self.shutdown.send(true);
        let task = self.task;
        Box::pin(async move {
            let _ = task.await;
        })
    }
}

/// Starts the service a section describes (the one place that knows every kind).
pub type Starter = Box<dyn Fn(&ServiceConfig) -> Box<dyn Service> + Send + Sync>;

/// What one [`ServiceManager::reconfigure`] did, by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServiceChanges {
    pub started: Vec<String>,
    pub reconfigured: Vec<String>,
    pub stopped: Vec<String>,
}

struct Running {
    config: ServiceConfig,
    service: Box<dyn Service>,
}

/// The running services, by id.
#[derive(Default)]
pub struct ServiceManager {
    /// Set once by `runtime`, before the first reconfigure.
    start: Option<Starter>,
    running: BTreeMap<ServiceId, Running>,
}

impl ServiceManager {
    /// A manager that starts services with `start`, running nothing yet.
    pub fn new(start: Starter) -> Self {
        ServiceManager {
            start: Some(start),
            running: BTreeMap::new(),
        }
    }

    /// Give a manager made empty (before the master's state existed) its starter.
    pub fn set_starter(&mut self, start: Starter) {
        self.start = Some(start);
    }

    /// Bring the running services in line with `wanted`: stop the removed
    /// (first, so a replaced service never runs twice), reconfigure the
    /// changed, start the added; an unchanged service is not touched.
    pub async fn reconfigure(&mut self, wanted: Vec<ServiceConfig>) -> ServiceChanges {
        let mut changes = ServiceChanges::default();
        let wanted: BTreeMap<ServiceId, ServiceConfig> =
            wanted.into_iter().map(|c| (c.id(), c)).collect();
        let removed: Vec<ServiceId> = self
            .running
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(running) = self.running.remove(&id) {
                running.service.stop().await;
                info!(service = %id, "service stopped");
                changes.stopped.push(id.to_string());
            }
        }
        for (id, config) in wanted {
            match self.running.get_mut(&id) {
                Some(running) if running.config.same_settings(&config) => {
                    running.config = config;
                }
                Some(running) => {
                    running.service.reconfigure(&config);
                    running.config = config;
                    info!(service = %id, "service reconfigured");
                    changes.reconfigured.push(id.to_string());
                }
                None => {
                    let start = self
                        .start
                        .as_ref()
                        .expect("runtime sets the starter before the first reconfigure");
                    let service = start(&config);
                    info!(service = %id, "service started");
                    changes.started.push(id.to_string());
                    self.running.insert(id, Running { config, service });
                }
            }
        }
        changes
    }

    /// Stop every service (the master is stopping).
    pub async fn stop_all(&mut self) -> ServiceChanges {
        self.reconfigure(Vec::new()).await
    }

    /// The ids of the running services.
    pub fn ids(&self) -> Vec<ServiceId> {
        self.running.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records what the manager did to each service instance.
    #[derive(Clone, Default)]
    struct Journal(Arc<Mutex<Vec<String>>>);

    impl Journal {
        fn note(&self, line: String) {
            self.0.lock().unwrap().push(line);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    /// A service that remembers its instance number, so a test can tell a
    /// kept instance from a restarted one.
    struct Recording {
        instance: usize,
        label: String,
        journal: Journal,
    }

    impl Service for Recording {
        fn reconfigure(&mut self, config: &ServiceConfig) {
            let ServiceConfig::Scheduler(SchedulerConfig::Force { label, .. }) = config else {
                panic!("only force schedulers here");
            };
            self.journal.note(format!(
                "#{} reconfigured: {} -> {label}",
                self.instance, self.label
            ));
            self.label = label.clone();
        }

        fn stop(self: Box<Self>) -> Stopping {
            let journal = self.journal.clone();
            let instance = self.instance;
            Box::pin(async move { journal.note(format!("#{instance} stopped")) })
        }
    }

    fn manager(journal: &Journal) -> ServiceManager {
        let journal = journal.clone();
        let count = Arc::new(Mutex::new(0));
        ServiceManager::new(Box::new(move |config| {
            let mut n = count.lock().unwrap();
            *n += 1;
            let label = match config {
                ServiceConfig::Scheduler(SchedulerConfig::Force { label, .. }) => label.clone(),
                other => other.id().to_string(),
            };
            journal.note(format!("#{} started: {}", *n, config.id()));
            Box::new(Recording {
                instance: *n,
                label,
                journal: journal.clone(),
            })
        }))
    }

    fn force(name: &str, label: &str, at: &str) -> ServiceConfig {
        ServiceConfig::Scheduler(SchedulerConfig::Force {
            name: name.into(),
            builders: vec!["b".into()],
            label: label.into(),
            form: Box::default(),
            defined_at: at.into(),
        })
    }

    #[tokio::test]
    async fn a_reload_touches_only_what_changed() {
        let journal = Journal::default();
        let mut services = manager(&journal);

        // Start-up: a reconfigure from nothing starts everything.
        let changes = services
            .reconfigure(vec![
                ServiceConfig::Distributor,
                force("a", "A", "master.lua:1"),
                force("b", "B", "master.lua:2"),
            ])
            .await;
        assert_eq!(
            changes.started,
            vec!["distributor:distributor", "scheduler:a", "scheduler:b"]
        );
        assert_eq!(journal.take().len(), 3);

        // The same configuration again, moved down by a comment: nothing is
        // restarted or reconfigured.
        let same = services
            .reconfigure(vec![
                ServiceConfig::Distributor,
                force("a", "A", "master.lua:2"),
                force("b", "B", "master.lua:3"),
            ])
            .await;
        assert_eq!(same, ServiceChanges::default());
        assert!(journal.take().is_empty());

        // `a` changes, `b` goes, `c` comes: instance #2 (a) is reconfigured in
        // place, #3 (b) stopped, and only `c` is new.
        let changes = services
            .reconfigure(vec![
                ServiceConfig::Distributor,
                force("a", "A2", "master.lua:2"),
                force("c", "C", "master.lua:3"),
            ])
            .await;
        assert_eq!(changes.reconfigured, vec!["scheduler:a"]);
        assert_eq!(changes.stopped, vec!["scheduler:b"]);
        assert_eq!(changes.started, vec!["scheduler:c"]);
        assert_eq!(
            journal.take(),
            vec![
                "#3 stopped",
                "#2 reconfigured: A -> A2",
                "#4 started: scheduler:c"
            ]
        );

        // Stopping the master stops every service, each once.
        let stopped = services.stop_all().await;
        assert_eq!(stopped.stopped.len(), 3);
        let mut lines = journal.take();
        lines.sort();
        assert_eq!(lines, vec!["#1 stopped", "#2 stopped", "#4 stopped"]);
        assert!(services.ids().is_empty());
    }
}
