//! Uploads (issue 16): a large file and a directory of many files, from a
//! real worker to the master over QUIC, with the master's peak memory, which
//! must stay flat as the upload grows (each size runs on its own master, so
//! one peak cannot hide another).

use crate::Sizes;
use crate::figures::Figures;
use crate::procfs;
use crate::scenarios::MASTER_LUA_HEAD;
use moonbot_tests::{Backend, TestMaster};
use serde_json::Value;
use std::time::Duration;

/// A master with one builder that makes `make` and uploads it with `upload`;
/// the upload step's seconds and the master's peak RSS.
fn upload(make: &str, upload: &str) -> anyhow::Result<(f64, f64)> {
    let lua = format!(
        "{MASTER_LUA_HEAD}  workers = {{ mb.worker {{ name = \"w1\" }} }},\n  builders = {{\n    mb.builder {{ name = \"up\", workernames = {{ \"w1\" }}, steps = {{\n      mb.steps.shell {{ name = \"make\", command = [==[{make}]==] }},\n      {upload},\n    }} }},\n  }},\n  schedulers = {{ mb.schedulers.force {{ name = \"force\", builders = {{ \"up\" }} }} }},\n}}\n"
    );
    let mut m = TestMaster::create(&Backend::Sqlite, &lua);
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");
    let brid = m.force(m.builderid("up"));
    let build = m.wait_request_done(brid, Duration::from_secs(1800));
    anyhow::ensure!(build["results"] == 0, "the upload build failed: {build}");
    let steps = m.steps(build["buildid"].as_i64().unwrap_or(0));
    let step: &Value = &steps[1];
    let seconds =
        step["complete_at"].as_f64().unwrap_or(0.0) - step["started_at"].as_f64().unwrap_or(0.0);
    let peak = procfs::memory(m.pid().expect("master running"))?.peak_mib;
    Ok((seconds, peak))
}

pub(crate) fn transfers(sizes: &Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    for mib in [64, sizes.upload_mib] {
        let (seconds, peak) = upload(
            &format!("head -c {}M /dev/urandom > big.bin", mib),
            "mb.steps.file_upload { workersrc = \"big.bin\" }",
        )?;
        figures.add(
            &format!("upload_file_{mib}mib_mb_s"),
            mib as f64 / seconds,
            "MiB/s",
        );
        figures.add(
            &format!("upload_file_{mib}mib_master_peak_rss_mb"),
            peak,
            "MiB",
        );
    }
    for files in [1000, sizes.upload_files] {
        // 100 directories of small files (4 KiB each).
        let make = format!(
            "rm -rf tree && mkdir tree && cd tree && for d in $(seq 0 99); do mkdir d$d; done && \
             i=0; while [ $i -lt {files} ]; do head -c 4096 /dev/urandom > d$((i % 100))/f$i; i=$((i + 1)); done"
        );
        let (seconds, peak) = upload(&make, "mb.steps.directory_upload { workersrc = \"tree\" }")?;
        figures.add(
            &format!("upload_dir_{files}_files_s"),
            files as f64 / seconds,
            "files/s",
        );
        figures.add(
            &format!("upload_dir_{files}_master_peak_rss_mb"),
            peak,
            "MiB",
        );
    }
    Ok(())
}
