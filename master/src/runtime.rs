//! The running master: start-up, the shared state every task sees, the main
//! loop that waits for signals, and shutdown.
//!
//! Start-up order matters: config first (a broken master.lua starts nothing;
//! loading it is the same path as a live reload, see [`crate::reconfig`]),
//! then the database, then cleaning up after a previous crash, then the
//! listeners, and only then the distributor, so no build starts before the
//! master can record it. `SIGTERM`/`SIGINT` stop fast (running builds end RETRY,
//! their requests stay queued); `SIGUSR1` stops cleanly (no new builds, wait for
//! running ones).

use crate::config::ConfigErrors;
use crate::data::{self, Data};
use crate::janitor::Janitor;
use crate::mq::Bus;
use crate::process::distributor::Distributor;
use crate::reconfig::{self, Trigger};
use crate::running_builds::{RunningBuilds, StopKind};
use crate::schedulers::OnDemand;
use crate::services::{self, Service, ServiceConfig, ServiceManager};
use crate::shared::{ConfigSlot, Shared};
use crate::worker_registry::WorkerRegistry;
use crate::workers::listener;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

/// Files the running master keeps in its directory.
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("moonbot.pid")
}

/// `{"www": "127.0.0.1:8010", "quic": "0.0.0.0:9989"}`: the addresses actually
/// bound (useful when master.lua asks for port 0).
pub fn ports_file(dir: &Path) -> PathBuf {
    dir.join("moonbot.ports")
}

/// The contents of [`ports_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    pub www: SocketAddr,
    pub quic: SocketAddr,
}

impl Ports {
    /// The ports of the master running from `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Ports> {
        let text = std::fs::read_to_string(ports_file(dir)).with_context(|| {
            format!(
                "no master is running from {} (no moonbot.ports)",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).context("reading moonbot.ports")
    }

    fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(
            ports_file(dir),
            serde_json::to_string(self).expect("ports serialize"),
        )
    }
}

/// How the master should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Interrupt running builds (they end RETRY and run again later).
    Fast,
    /// Start nothing new and wait for running builds.
    Clean,
}

/// A started master; [`Master::run_until`] drives it.
pub struct Master {
    pub shared: Arc<Shared>,
    pub www_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn resolve(bind: &str, port: u16) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (bind, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve bind address {bind}"))?
        .next()
        .with_context(|| format!("bind address {bind} resolves to nothing"))
}

impl Master {
    /// Load the config, open the database, bind the listeners, start the tasks.
    pub async fn start(dir: &Path) -> anyhow::Result<Master> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("master directory {}", dir.display()))?;
        let started = (data::now(), std::time::Instant::now());
        let (loaded, changes) = reconfig::prepare(&dir, None)
            .await
            .map_err(|e| anyhow::anyhow!("{}", ConfigErrors(e)))?;
        let cfg = loaded.config.clone();
        let db = crate::db::connect(&cfg.db.url, &dir).await?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let master_name = format!("{host}:{}", dir.display());
        let masterid = data::masters::register(&db, &master_name).await?;
        let data = Data::new(db, Bus::new(), masterid);
        let reaped = data.reap_unfinished().await?;
        // Children of builds that ended RETRY while waiting for them.
        let orphans = data.cancel_orphaned_children(None).await?;
        if !orphans.is_empty() {
            info!(requests = ?orphans, "cancelled the triggered requests of builds that will run again");
        }
        if reaped > 0 {
            warn!(
                "{reaped} build(s) left unfinished by a previous run ended as RETRY; their requests are queued again"
            );
        }
        // Start-up is a reload from nothing: the same diff, rows and record.
        let running = reconfig::sync_rows(&data, loaded).await?;
        reconfig::record(
            &data,
            Trigger::Startup,
            started,
            Vec::new(),
            changes,
            cfg.summary(),
        )
        .await?;

        let idle_timeout = Duration::from_secs(cfg.quic.idle_timeout_s);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            master_name,
            data,
            workers: WorkerRegistry::default(),
            builds: RunningBuilds::default(),
            locks: Default::default(),
            accepting_builds: AtomicBool::new(true),
            idle_timeout,
            reloading: tokio::sync::Mutex::new(()),
            session_key: crate::credentials::SessionKey::load_or_create(&dir)
                .context("cannot read or create the web session key")?,
            login_throttle: Default::default(),
            cli_token_hash: crate::credentials::cli_token_hash(&dir)
                .context("cannot read or create the CLI token (cli-token)")?,
            revocations: crate::pki::revoke::Revocations::new(&dir),
            services: tokio::sync::Mutex::new(ServiceManager::default()),
            config: ConfigSlot::new(running),
        });
        // Sessions ended by a logout stay ended across restarts.
        let now = crate::data::now() as u64;
        let ended = shared
            .data
            .revoked_sessions(now)
            .await
            .context("cannot read the ended web sessions")?;
        shared.session_key.end_sessions(ended, now);
        let weak = Arc::downgrade(&shared);
        shared
            .services
            .lock()
            .await
            .set_starter(Box::new(move |config| {
                let shared = weak
                    .upgrade()
                    .expect("services start while the master runs");
                start_service(config, shared)
            }));

        let tls = crate::pki::server_tls_config(&dir)?;
        let endpoint = listener::bind(tls, resolve(&cfg.quic.bind, cfg.quic.port)?, idle_timeout)?;
        let quic_addr = endpoint.local_addr()?;
        let www_bind = resolve(&cfg.www.bind, cfg.www.port)?;
        let tcp = tokio::net::TcpListener::bind(www_bind)
            .await
            .with_context(|| format!("cannot listen for HTTP on {www_bind}"))?;
        let www_addr = tcp.local_addr()?;
        Ports {
            www: www_addr,
            quic: quic_addr,
        }
        .write(&dir)?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(listener::accept_loop(endpoint.clone(), shared.clone())),
            tokio::spawn(crate::www::serve(tcp, shared.clone(), shutdown_rx.clone())),
            tokio::spawn(reconfig::watch::run(shared.clone(), shutdown_rx.clone())),
            tokio::spawn(heartbeat(shared.clone(), shutdown_rx)),
        ];
        // Services last (the distributor among them): no build starts before
        // the master can record it. Start-up is a reconfigure from nothing.
        shared
            .services
            .lock()
            .await
            .reconfigure(services::wanted(&cfg))
            .await;
        info!(
            "master '{}' started: {}; web at http://{www_addr}/, workers connect to {quic_addr}",
            cfg.title,
            cfg.summary()
        );
        Ok(Master {
            shared,
            www_addr,
            quic_addr,
            endpoint,
            shutdown_tx,
            tasks,
        })
    }

    /// Stop: builds first (as `mode` says), then listeners and tasks.
    pub async fn stop(self, mode: StopMode) {
        let shared = &self.shared;
        shared.accepting_builds.store(false, Ordering::SeqCst);
        match mode {
            StopMode::Clean => {
                info!(
                    "stopping cleanly: waiting for {} running build(s)",
                    shared.builds.count()
                );
            }
            StopMode::Fast => {
                let n = shared.builds.count();
                if n > 0 {
                    info!("stopping: interrupting {n} running build(s); they will run again");
                }
                shared
                    .builds
                    .stop_all(StopKind::Shutdown, "the master is stopping");
            }
        }
        shared.builds.wait_idle().await;
        shared.services.lock().await.stop_all().await;
        let _ = self.shutdown_tx.send(true);
        for w in shared.workers.all() {
            w.conn.close(0u32.into(), b"master stopping");
        }
        self.endpoint.close(0u32.into(), b"master stopping");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        for t in self.tasks {
            t.abort();
        }
        if let Err(e) = shared.data.master_stopped().await {
            warn!("could not mark the master stopped: {e}");
        }
        let _ = std::fs::remove_file(ports_file(&shared.dir));
        info!("master stopped");
    }

    /// Run until a signal says stop (or `extra` resolves: fast stop).
    pub async fn run_until(
        self,
        extra: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::pin!(extra);
        let mode = loop {
            tokio::select! {
                _ = term.recv() => break StopMode::Fast,
                _ = int.recv() => break StopMode::Fast,
                _ = usr1.recv() => break StopMode::Clean,
                _ = &mut extra => break StopMode::Fast,
                _ = hup.recv() => {
                    info!("SIGHUP received: reloading the configuration");
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = reconfig::reload(&shared, Trigger::Signal).await {
                            warn!("could not record a reload: {e}");
                        }
                    });
                }
            }
        };
        self.stop(mode).await;
        Ok(())
    }
}

/// Start the service a configuration section describes: the one place that
/// knows every kind of service.
fn start_service(config: &ServiceConfig, shared: Arc<Shared>) -> Box<dyn Service> {
    match config {
        ServiceConfig::Distributor => Box::new(Distributor::start(shared)),
        ServiceConfig::Scheduler(scheduler) => match scheduler {
            crate::config::SchedulerConfig::Force { .. }
            | crate::config::SchedulerConfig::Triggerable { .. } => {
                Box::new(OnDemand::start(scheduler))
            }
            crate::config::SchedulerConfig::Changes(changes) => {
                Box::new(crate::schedulers::changes::start(shared, changes))
            }
            crate::config::SchedulerConfig::Timed(timed) => {
                Box::new(crate::schedulers::timed::start(shared, timed))
            }
            crate::config::SchedulerConfig::Dependent { name, .. } => {
                Box::new(crate::schedulers::dependent::start(shared, name))
            }
        },
        ServiceConfig::ChangeSource(source) => match source {
            crate::config::ChangeSourceConfig::GitPoller(poller) => {
                Box::new(crate::changes::git_poller::start(shared, poller))
            }
        },
        ServiceConfig::Janitor(janitor) => {
            Box::new(Janitor::start(shared.data.clone(), janitor.clone()))
        }
        ServiceConfig::ArtifactExpiry(_) => Box::new(crate::janitor::expire_artifacts(shared)),
        ServiceConfig::Superseder => Box::new(crate::process::supersede::start(shared)),
        ServiceConfig::Reporter(reporter) => Box::new(crate::reporters::start(shared, reporter)),
    }
}

async fn heartbeat(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                if let Err(e) = shared.data.heartbeat().await {
                    warn!("heartbeat failed: {e}");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
