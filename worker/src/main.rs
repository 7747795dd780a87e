//! The `moonbot-worker` command line: create a worker directory, run the worker
//! in the foreground, stop a running worker.
//!
//! Everything a subcommand does lives in the library ([`moonbot_worker::workdir`],
//! [`moonbot_worker::run`]); this file only parses arguments, sets up logging,
//! the pid file and signals, and turns errors into a message and exit code 1.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use moonbot_worker::StopMode;
use moonbot_worker::signal::{SIGTERM, SIGUSR1, process_alive, signal_process};
use moonbot_worker::workdir::{self, CreateOptions, WorkerDir};
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How long `stop` waits for the worker to exit (it stops its running commands
/// first, each within its SIGTERM grace time).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    name = "moonbot-worker",
    version,
    about = "moonbot worker: dials the master over QUIC with mutual TLS and runs the commands it is sent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a worker directory: a private key (never leaves this machine), and
    /// either a certificate request for the master's admin (--master, --name,
    /// --ca) or, with --token, the certificate itself, fetched from the master.
    CreateWorker {
        /// The worker directory to create.
        wdir: PathBuf,
        /// A one-time enrollment token from `moonbot worker-token` (it names the
        /// master, the worker and the master's CA).
        #[arg(long, value_name = "TOKEN", conflicts_with_all = ["master", "name", "ca"])]
        token: Option<String>,
        /// The master's QUIC address, HOST:PORT (the master listens on 9989 unless master.lua says otherwise).
        #[arg(long, value_name = "HOST:PORT", required_unless_present = "token")]
        master: Option<String>,
        /// This worker's name, as the master's configuration lists it.
        #[arg(long, required_unless_present = "token")]
        name: Option<String>,
        /// The master's CA certificate (MASTERDIR/pki/ca.crt on the master).
        #[arg(long, value_name = "CA.crt", required_unless_present = "token")]
        ca: Option<PathBuf>,
        /// Who to contact about this worker (shown on the master's web pages).
        #[arg(long, value_name = "TEXT")]
        admin: Option<String>,
        /// A description of this machine.
        #[arg(long, value_name = "TEXT")]
        host_description: Option<String>,
    },
    /// Run the worker in the foreground until SIGINT or SIGTERM.
    Start {
        /// The worker directory.
        wdir: PathBuf,
    },
    /// Stop the worker running in a worker directory: it takes no new builds,
    /// finishes the running ones, then exits.
    Stop {
        /// The worker directory.
        wdir: PathBuf,
        /// Interrupt running builds instead of waiting for them (they end RETRY
        /// and run again elsewhere or later).
        #[arg(long)]
        now: bool,
    },
}

fn main() -> ExitCode {
    // Another install (e.g. by a library) is fine: ring is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CreateWorker {
            wdir,
            token: Some(token),
            admin,
            host_description,
            ..
        } => enroll_worker(&wdir, &token, admin, host_description),
        Command::CreateWorker {
            wdir,
            master: Some(master),
            name: Some(name),
            ca: Some(ca),
            admin,
            host_description,
            ..
        } => create_worker(&wdir, master, name, &ca, admin, host_description),
        Command::CreateWorker { .. } => Err(anyhow::anyhow!(
            "create-worker needs --token, or --master, --name and --ca"
        )),
        Command::Start { wdir } => start(&wdir),
        Command::Stop { wdir, now } => stop(&wdir, now),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moonbot-worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn create_worker(
    wdir: &Path,
    master: String,
    name: String,
    ca: &Path,
    admin: Option<String>,
    host_description: Option<String>,
) -> anyhow::Result<()> {
    let ca_pem = fs::read_to_string(ca).with_context(|| {
        format!(
            "could not read the master's CA certificate {}",
            ca.display()
        )
    })?;
    let options = CreateOptions {
        master,
        name: name.clone(),
        ca_pem,
        admin,
        host_description,
    };
    let csr = workdir::create(wdir, &options)
        .with_context(|| format!("could not create the worker directory {}", wdir.display()))?;
    println!("created worker {name} in {}", wdir.display());
    println!("certificate request: {}", csr.display());
    println!(
        "now have the master's admin run: moonbot sign-worker MASTERDIR {}",
        csr.display()
    );
    println!(
        "then start the worker with: moonbot-worker start {}",
        wdir.display()
    );
    Ok(())
}

fn enroll_worker(
    wdir: &Path,
    token: &str,
    admin: Option<String>,
    host_description: Option<String>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let enrolled = runtime
        .block_on(moonbot_worker::enroll::enroll(
            wdir,
            token,
            admin,
            host_description,
        ))
        .with_context(|| format!("could not enroll a worker in {}", wdir.display()))?;
    println!(
        "enrolled worker {} with the master at {} in {}",
        enrolled.name,
        enrolled.master,
        wdir.display()
    );
    println!(
        "enrolled worker {}; start it with: moonbot-worker start {}",
        enrolled.name,
        wdir.display()
    );
    Ok(())
}

fn start(wdir: &Path) -> anyhow::Result<()> {
    let wdir =
        fs::canonicalize(wdir).with_context(|| format!("worker directory {}", wdir.display()))?;
    let dir = WorkerDir::load(&wdir)?;
    init_logging(&dir.log_path())?;
    let _pid_file = PidFile::create(&dir.pid_path())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigterm =
            signal(SignalKind::terminate()).context("could not install a SIGTERM handler")?;
        let mut sigint =
            signal(SignalKind::interrupt()).context("could not install a SIGINT handler")?;
        let mut sigusr1 =
            signal(SignalKind::user_defined1()).context("could not install a SIGUSR1 handler")?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            loop {
                let mode = tokio::select! {
                    _ = sigterm.recv() => { tracing::info!("SIGTERM received: stopping now"); StopMode::Now }
                    _ = sigint.recv() => { tracing::info!("SIGINT received: stopping now"); StopMode::Now }
                    _ = sigusr1.recv() => {
                        tracing::info!("SIGUSR1 received: stopping after the running builds");
                        StopMode::Graceful
                    }
                };
                // A graceful stop never overrides an immediate one.
                stop_tx.send_if_modified(|current| {
                    if *current == Some(StopMode::Now) {
                        return false;
                    }
                    *current = Some(mode);
                    true
                });
            }
        });
        tracing::info!(
            "worker {} starting (moonbot-worker {}, directory {})",
            dir.name,
            env!("CARGO_PKG_VERSION"),
            dir.path.display()
        );
        moonbot_worker::run_with(dir, stop_rx).await?;
        tracing::info!("worker stopped");
        anyhow::Ok(())
    })
}

/// Log to stderr and, without colours, appended to `log_path`. The level comes
/// from `RUST_LOG` (default `info`).
fn init_logging(log_path: &Path) -> anyhow::Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("could not open the log file {}", log_path.display()))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(file))
                .with_ansi(false),
        )
        .try_init()
        .context("could not set up logging")?;
    Ok(())
}

/// `WDIR/worker.pid` for as long as the worker runs.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn create(path: &Path) -> anyhow::Result<PidFile> {
        if let Some(pid) = read_pid(path)?
            && process_alive(pid)
        {
            bail!(
                "a worker is already running in {} (pid {pid}); stop it with `moonbot-worker stop`",
                path.parent().unwrap_or(path).display()
            );
        }
        fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("could not write the pid file {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only remove it if it is still ours.
        if let Ok(Some(pid)) = read_pid(&self.path)
            && u32::try_from(pid).ok() == Some(std::process::id())
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The pid in a pid file; `None` when there is no pid file.
fn read_pid(path: &Path) -> anyhow::Result<Option<i32>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let pid = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a process id", path.display()))?;
    Ok(Some(pid))
}

fn stop(wdir: &Path, now: bool) -> anyhow::Result<()> {
    let pid_path = workdir::pid_path(wdir);
    let Some(pid) = read_pid(&pid_path)? else {
        bail!(
            "no worker is running in {}: there is no {}",
            wdir.display(),
            pid_path.display()
        );
    };
    if !process_alive(pid) {
        let _ = fs::remove_file(&pid_path);
        bail!(
            "no worker is running in {}: process {pid} from the pid file is gone \
             (removed the stale pid file)",
            wdir.display()
        );
    }
    let (signal, name) = if now {
        (SIGTERM, "SIGTERM")
    } else {
        (SIGUSR1, "SIGUSR1")
    };
    signal_process(pid, signal)
        .with_context(|| format!("could not send {name} to the worker (pid {pid})"))?;
    if !now {
        println!(
            "the worker takes no new builds and stops when its running builds have finished \
             (`moonbot-worker stop --now` interrupts them)"
        );
    }
    // A graceful stop waits as long as the builds take.
    let deadline = now.then(|| Instant::now() + STOP_TIMEOUT);
    while process_alive(pid) {
        if let Some(deadline) = deadline
            && Instant::now() >= deadline
        {
            bail!(
                "the worker (pid {pid}) is still running {} s after SIGTERM",
                STOP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("worker stopped");
    Ok(())
}
