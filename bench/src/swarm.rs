//! Many workers in one process: the many-workers scenario cannot afford a
//! process per worker, so `moonbot-bench swarm DIR` runs the worker library's
//! connection loop once for every worker directory under DIR, each with its own
//! key, certificate and QUIC endpoint, exactly as `moonbot-worker start` would.

use moonbot_worker::workdir::WorkerDir;
use std::path::Path;

pub(crate) fn run(dir: &Path) -> anyhow::Result<()> {
    let mut workers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.join("worker.crt").exists() {
            workers.push(WorkerDir::load(&path)?);
        }
    }
    anyhow::ensure!(
        !workers.is_empty(),
        "no worker directories under {}",
        dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in workers {
            tasks.spawn(moonbot_worker::run(worker, std::future::pending()));
        }
        // Runs until the bench kills this process; a worker that gives up is an error.
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        anyhow::Ok(())
    })
}
