//! `moonbot-bench`: the scenario benchmarks of `bench/README.md`.
//!
//! Each scenario creates a fresh master (SQLite) and workers on loopback from a
//! generated master.lua, drives them only through the CLI, process ids (`/proc`)
//! and the REST API, and prints one `name: value unit` line per figure. All
//! figures also go to a JSON file. The scenarios mirror the ones Buildbot 4.3 was
//! measured with on this machine, so the ratios mean something.
//!
//! Run from a release build (`cargo run --release -p moonbot-bench`): it starts
//! the `moonbot` and `moonbot-worker` binaries found beside itself.

mod changes;
mod figures;
mod history;
mod procfs;
mod reported;
mod scenarios;
mod swarm;
mod transfers;
mod triggers;

use clap::{Parser, Subcommand};
use figures::Figures;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "moonbot-bench", about = "moonbot scenario benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sizes: Sizes,
    /// Run only these scenarios (comma-separated): idle, builds, log, reconfig,
    /// workers, login, hooks, poller, triggers, and history and transfers (minutes
    /// long: only when named here).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// The standing guard for a change to a hot path (well under a minute):
    /// the builds (with the API latency) and log scenarios, the log at 25 MiB.
    /// Run it before and after the change and compare.
    #[arg(long, conflicts_with = "only")]
    quick: bool,
}

/// MiB the log step prints in a `--quick` run.
const QUICK_LOG_MIB: usize = 25;

/// The sizes of the scenarios (defaults: the sizes Buildbot was measured with).
#[derive(clap::Args, Debug, Clone)]
pub struct Sizes {
    /// Forced builds in the throughput scenario.
    #[arg(long, default_value_t = 200)]
    pub builds: usize,
    /// MiB a step prints in the log scenarios.
    #[arg(long, default_value_t = 100)]
    pub log_mib: usize,
    /// Builders in the reconfig and start-up scenarios.
    #[arg(long, default_value_t = 500)]
    pub builders: usize,
    /// Workers connecting at once in the many-workers scenario.
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,
    /// GitHub push events posted in the hooks scenario.
    #[arg(long, default_value_t = 400)]
    pub hooks: usize,
    /// Branches of the repository in the poller scenario.
    #[arg(long, default_value_t = 1000)]
    pub branches: usize,
    /// MiB of the large file in the transfers scenario (it also runs at 64).
    #[arg(long, default_value_t = 1024)]
    pub upload_mib: usize,
    /// Files of the directory in the transfers scenario (it also runs at 1,000).
    #[arg(long, default_value_t = 10_000)]
    pub upload_files: usize,
    /// Finished builds loaded into the history scenario's database (it also
    /// runs at 1,000 to compare).
    #[arg(long, default_value_t = 1_000_000)]
    pub history_builds: usize,
}

#[derive(Subcommand)]
enum Command {
    /// (Used by the many-workers scenario.) Run every worker directory under DIR
    /// in this one process until killed.
    Swarm { dir: PathBuf },
}

const SCENARIOS: &[&str] = &[
    "idle",
    "builds",
    "rendered",
    "log",
    "reconfig",
    "workers",
    "login",
    "hooks",
    "poller",
    "history",
    "transfers",
    "triggers",
    "reported",
];
/// Scenarios that run only when `--only` names them.
const ON_REQUEST: &[&str] = &["history", "transfers", "reported"];

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Command::Swarm { dir }) = cli.command {
        return swarm::run(&dir);
    }
    for name in &cli.only {
        anyhow::ensure!(
            SCENARIOS.contains(&name.as_str()),
            "unknown scenario '{name}' (known: {})",
            SCENARIOS.join(", ")
        );
    }
    if cli.quick {
        cli.only = vec!["builds".into(), "log".into()];
        cli.sizes.log_mib = cli.sizes.log_mib.min(QUICK_LOG_MIB);
    }
    let wanted = |name: &str| {
        if cli.only.is_empty() {
            !ON_REQUEST.contains(&name)
        } else {
            cli.only.iter().any(|o| o == name)
        }
    };
    let mut figures = Figures::default();
    let started = std::time::Instant::now();
    if wanted("idle") {
        scenarios::idle(&mut figures)?;
    }
    if wanted("builds") {
        scenarios::builds(&cli.sizes, &mut figures)?;
    }
    if wanted("rendered") {
        scenarios::rendered(&cli.sizes, &mut figures)?;
    }
    if wanted("log") {
        scenarios::log(&cli.sizes, &mut figures)?;
    }
    if wanted("reconfig") {
        scenarios::reconfig_and_startup(&cli.sizes, &mut figures)?;
    }
    if wanted("workers") {
        scenarios::many_workers(&cli.sizes, &mut figures)?;
    }
    if wanted("login") {
        scenarios::login_flood(&mut figures)?;
    }
    if wanted("hooks") {
        changes::hooks(cli.sizes.hooks, &mut figures)?;
    }
    if wanted("poller") {
        changes::poller(cli.sizes.branches, &mut figures)?;
    }
    if wanted("triggers") {
        triggers::fan_out(100, &mut figures)?;
    }
    if wanted("reported") {
        reported::reported(&cli.sizes, &mut figures)?;
    }
    if wanted("transfers") {
        transfers::transfers(&cli.sizes, &mut figures)?;
    }
    if wanted("history") {
        history::history(cli.sizes.history_builds, &mut figures)?;
    }
    figures.add("bench_total_s", started.elapsed().as_secs_f64(), "s");
    figures.write_json(&cli.json, &cli.sizes)?;
    eprintln!("figures written to {}", cli.json.display());
    Ok(())
}
