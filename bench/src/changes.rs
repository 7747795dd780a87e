//! Changes in: how fast forge webhooks become build requests, and how long a
//! git poll of a repository with many branches takes.
//!
//! `hooks` is the scenario Buildbot 4.3.0 was measured with on this machine
//! (issue 14): N GitHub `push` events with one commit each (GitHub's own
//! example body, `tests/fixtures/webhooks/github/push-4.json`, with a fresh
//! commit id and delivery id each), signed, posted by four clients; one
//! `any_branch` scheduler without a tree-stable timer, one builder, no worker
//! connected. `poller` times one poll of a repository with 1,000 branches.

use crate::figures::Figures;
use crate::scenarios::MASTER_LUA_HEAD;
use moonbot_tests::{Backend, TestMaster};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret";

fn hooks_lua() -> String {
    format!(
        r#"local mb = require "moonbot"
return {{
  www = {{ port = 0, bind = "127.0.0.1", change_hooks = {{ github = {{ secret = "{SECRET}" }} }} }},
  protocols = {{ quic = {{ port = 0, bind = "127.0.0.1" }} }},
  db = {{ url = "@DB@" }},
  reconfig = {{ watch = false }},
  collapse_requests = false, -- as the Buildbot baseline: every request is a build
  workers = {{ mb.worker {{ name = "w1" }} }},
  builders = {{ mb.builder {{ name = "b", workernames = {{ "w1" }}, steps = {{ mb.steps.shell {{ command = "true" }} }} }} }},
  schedulers = {{ mb.schedulers.any_branch {{ name = "pushes", builders = {{ "b" }} }} }},
}}
"#
    )
}

/// GitHub's one-commit push example with commit id and times made unique.
fn push_body(template: &Value, n: usize) -> Vec<u8> {
    let sha = format!("{n:040x}");
    let mut body = template.clone();
    body["after"] = sha.clone().into();
    body["commits"][0]["id"] = sha.clone().into();
    body["head_commit"]["id"] = sha.into();
    serde_json::to_vec(&body).expect("a JSON body")
}

fn post_hook(agent: &ureq::Agent, url: &str, body: &[u8], delivery: &str) -> anyhow::Result<f64> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signature = format!("sha256={}", hex::encode(ring::hmac::sign(&key, body)));
    let t = Instant::now();
    let answer = agent
        .post(url)
        .set("content-type", "application/json")
        .set("x-github-event", "push")
        .set("x-github-delivery", delivery)
        .set("x-hub-signature-256", &signature)
        .send_bytes(body)?;
    anyhow::ensure!(answer.status() == 200, "hook answered {}", answer.status());
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn request_count(m: &TestMaster) -> usize {
    m.sql_i64("SELECT COUNT(*) FROM buildrequests") as usize
}

/// Webhook ingestion: hooks/s to changes and to build requests, POST latency,
/// and one hook's time to its build request.
pub(crate) fn hooks(count: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let mut m = TestMaster::create(&Backend::Sqlite, &hooks_lua());
    m.start();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/webhooks/github/push-4.json");
    let template: Value = serde_json::from_slice(&std::fs::read(fixture)?)?;
    let url = format!("{}/change_hook/github", m.www);
    let bodies: Vec<Vec<u8>> = (0..count).map(|n| push_body(&template, n + 1)).collect();

    let master_pid = m.pid().expect("master running");
    let master_cpu = crate::procfs::cpu_seconds(master_pid)?;
    let started = Instant::now();
    let started_at = super::scenarios::unix_seconds()?;
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (bodies, url) = (&bodies, &url);
                s.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let agent = ureq::AgentBuilder::new().build();
                    (t..bodies.len())
                        .step_by(4)
                        .map(|i| post_hook(&agent, url, &bodies[i], &format!("bench-{i}")))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect::<anyhow::Result<Vec<Vec<f64>>>>()
            .map(|all| all.into_iter().flatten().collect())
    })?;
    let posted = started.elapsed().as_secs_f64();
    // Every POST answered after its change was stored.
    figures.add("hooks_to_changes_per_s", count as f64 / posted, "hooks/s");
    m.wait_for(
        "every hook's build request",
        Duration::from_secs(600),
        || (request_count(&m) >= count).then_some(()),
    );
    let last = m.get("/api/v2/buildrequests?order=-submitted_at&limit=1");
    let submitted = last["buildrequests"][0]["submitted_at"]
        .as_f64()
        .unwrap_or(0.0);
    figures.add(
        "hooks_to_requests_per_s",
        count as f64 / (submitted - started_at),
        "hooks/s",
    );
    // The master's CPU per hook, POST to build request (and the polling
    // above): steadier than the rates on a shared machine.
    figures.add(
        "hooks_master_cpu_ms_per_hook",
        (crate::procfs::cpu_seconds(master_pid)? - master_cpu) * 1000.0 / count as f64,
        "ms",
    );
    figures.add("hooks_post_median_ms", median(latencies.clone()), "ms");
    figures.add("hooks_post_p99_ms", percentile(latencies, 0.99), "ms");

    // One hook alone → its build request, ten times.
    let agent = ureq::AgentBuilder::new().build();
    let mut alone = Vec::new();
    for i in 0..10 {
        let before = request_count(&m);
        let body = push_body(&template, count + 1 + i);
        let t = Instant::now();
        post_hook(&agent, &url, &body, &format!("alone-{i}"))?;
        while request_count(&m) == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        alone.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    figures.add("hook_to_request_latency_ms", median(alone), "ms");
    m.stop(false);
    Ok(())
}

fn median(values: Vec<f64>) -> f64 {
    percentile(values, 0.5)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or(0.0)
}

fn git(dir: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.org")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.org")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A repository with `branches` branches, each with a commit of its own:
/// the first poll (which fetches them all), then a poll after three moved.
pub(crate) fn poller(branches: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().join("work");
    let bare = tmp.path().join("origin.git");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"], None)?;
    // One commit per branch, written by fast-import in one go.
    let mut stream = String::new();
    for i in 0..branches {
        let content = format!("branch {i}\n");
        stream.push_str(&format!(
            "commit refs/heads/b{i:04}\ncommitter Bench <bench@example.org> 1764583200 +0000\ndata 7\nbranch\n\
M 644 inline f{i}.txt\ndata {}\n{content}\n",
            content.len()
        ));
    }
    git(&work, &["fast-import", "--quiet"], Some(&stream))?;
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap_or(""),
            bare.to_str().unwrap_or(""),
        ],
        None,
    )?;

    let lua = format!(
        r#"{MASTER_LUA_HEAD}  change_sources = {{ mb.changes.git_poller {{ name = "many", repourl = "{}", branches = "all",
    poll_interval = 1, poll_at_launch = true }} }},
}}
"#,
        bare.display()
    );
    let mut m = TestMaster::create(&Backend::Sqlite, &lua);
    let started = Instant::now();
    m.start();
    m.wait_for("the first poll", Duration::from_secs(600), || {
        (m.sql_i64("SELECT COUNT(*) FROM object_state WHERE name = 'lastRev'") == 1).then_some(())
    });
    figures.add(
        &format!("poller_{branches}_branches_first_poll_s"),
        started.elapsed().as_secs_f64(),
        "s",
    );
    // Three branches move; the poll after that reports three changes.
    for name in ["b0001", "b0002", "b0003"] {
        git(&work, &["checkout", "-q", name], None)?;
        std::fs::write(work.join("moved.txt"), name)?;
        git(&work, &["add", "moved.txt"], None)?;
        git(&work, &["commit", "-q", "-m", "moved"], None)?;
    }
    git(
        &work,
        &[
            "push",
            "-q",
            bare.to_str().unwrap_or(""),
            "b0001",
            "b0002",
            "b0003",
        ],
        None,
    )?;
    let pushed = Instant::now();
    m.wait_for(
        "the moved branches' changes",
        Duration::from_secs(600),
        || (m.sql_i64("SELECT COUNT(*) FROM changes") == 3).then_some(()),
    );
    // The wait includes up to one poll interval (1 s) before the poll starts.
    figures.add(
        &format!("poller_{branches}_branches_push_to_changes_s"),
        pushed.elapsed().as_secs_f64(),
        "s",
    );
    // The poll itself (ls-remote, the fetch of three branches, their
    // commits, the store), as the master logged it.
    let log = m.log();
    let poll_ms = log
        .lines()
        .find(|l| l.contains("new commits") && l.contains("poller=many"))
        .and_then(|l| l.split("poll_ms=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no poll duration in the master's log"))?;
    figures.add(
        &format!("poller_{branches}_branches_poll_ms"),
        poll_ms,
        "ms",
    );
    m.stop(false);
    Ok(())
}
