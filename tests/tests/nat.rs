//! A volunteer's worker behind a real NAT (network namespaces, nftables
//! masquerade; see `moonbot_tests::netns`): builds through the NAT, a NAT
//! enrollment and builds through the NAT, a NAT rebinding mid-build, link cuts
//! shorter and longer than the reconnect grace, revocation, and a dead worker
//! noticed within `missing_timeout`.

use moonbot_tests::netns::{Nat, run_in};
use moonbot_tests::{Backend, LONG, TestMaster, TestWorker, bin, run_ok};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `count` prints numbered lines slowly (about 10 a second) so the test can
/// break the network in the middle of it and check every line arrived once;
/// only 20 once the file `quick` exists.
const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "nat",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = 0, bind = "@MASTER_IP@" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "v1", missing_timeout = 3, reconnect_grace = 12 } },
  builders = {
    mb.builder { name = "count", workernames = { "v1" }, steps = {
      mb.steps.shell { name = "count",
        command = mb.interpolate("n=%(prop:lines)s; if [ -e @TMP@/quick ]; then n=20; fi; i=0; while [ $i -lt $n ]; do i=$((i+1)); echo line $i; sleep 0.1; done") },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "count" } } },
}
"#;

/// Force `count` printing `lines` lines.
fn force_count(m: &TestMaster, lines: u32) -> i64 {
    let builderid = m.builderid("count");
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": builderid, "reason": "nat test", "properties": {"lines": lines.to_string()}}),
    );
    assert_eq!(status, 200, "{answer}");
    answer["result"][1][builderid.to_string()].as_i64().unwrap()
}

/// The step log of the first (and only) step of `build`.
fn log_of(m: &TestMaster, build: &Value) -> String {
    let stepid = m.steps(build["buildid"].as_i64().unwrap())[0]["stepid"]
        .as_i64()
        .unwrap();
    m.stdio_of(stepid)
}

/// The `line N` lines of a log, in order.
fn numbered_lines(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| l.strip_prefix("line "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Every line 1..=n exactly once, in order: no gap, no duplicate.
fn assert_complete(log: &str, n: u32) {
    let got = numbered_lines(log);
    let want: Vec<u32> = (1..=n).collect();
    assert_eq!(
        got, want,
        "the log must hold every line once, in order:\n{log}"
    );
}

/// Wait until the running build of `brid` has printed line `n`.
fn wait_for_line(m: &TestMaster, brid: i64, n: u32) -> Value {
    m.wait_for(&format!("line {n} of request {brid}"), LONG, || {
        let build = m.builds_of(brid).pop()?;
        let steps = m.steps(build["buildid"].as_i64()?);
        let stepid = steps.first()?["stepid"].as_i64()?;
        numbered_lines(&m.stdio_of(stepid))
            .contains(&n)
            .then_some(build)
    })
}

/// The master's log without terminal colours.
fn master_log(m: &TestMaster) -> String {
    let log = m.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn connected(m: &TestMaster) -> bool {
    let w = &m.get("/api/v2/workers?name=v1")["workers"][0];
    w["connected_to"].as_array().is_some_and(|c| !c.is_empty())
}

/// A master on this side of the NAT, and worker `v1` enrolled from behind it
/// with a one-time token (`create-worker --token` run in the worker's namespace).
fn setup(nat: &Nat) -> (TestMaster, TestWorker) {
    let config = CONFIG.replace("@MASTER_IP@", &nat.master_ip);
    let mut m = TestMaster::create_for_hosts(&Backend::Sqlite, &config, &[&nat.master_ip]);
    m.start();
    let token = m.worker_token("v1", &[]);
    let dir = m.new_worker_dir("v1");
    let enrolled = run_in(
        &nat.worker,
        &[
            bin("moonbot-worker").to_str().unwrap(),
            "create-worker",
            dir.to_str().unwrap(),
            "--token",
            &token,
        ],
    );
    assert!(enrolled.contains("enrolled worker v1"), "{enrolled}");
    let mut w = TestWorker::at(dir);
    w.netns = Some(nat.worker.clone());
    w.start();
    m.wait_connected("v1");
    (m, w)
}

#[test]
fn a_worker_behind_nat_survives_rebinding_and_short_outages() {
    let nat = Nat::create();
    let (m, w) = setup(&nat);
    // The master sees the worker come from the NAT's public address.
    let from = format!("addr={}:", nat.public_ip);
    assert!(
        master_log(&m).contains(&from),
        "the master should see the worker at the NAT's address {}:\n{}",
        nat.public_ip,
        m.log()
    );

    // 1. A build through the NAT; mid-build the NAT gives the worker a new
    //    public port. QUIC migrates the connection; the build never notices.
    let brid = force_count(&m, 40);
    wait_for_line(&m, brid, 10);
    let (lo, hi) = nat.rebind();
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 0, "{done}\n{}", m.log());
    assert_complete(&log_of(&m, &done), 40);
    let moved = master_log(&m)
        .lines()
        .filter(|l| l.contains("worker's address changed"))
        .map(str::to_string)
        .collect::<Vec<_>>();
    let new_port = moved
        .iter()
        .find_map(|l| {
            let to = l.split("to=").nth(1)?.split_whitespace().next()?;
            to.rsplit(':').next()?.parse::<u16>().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "the master should log the move to the new port:\n{}\nconntrack:\n{}",
                m.log(),
                nat.mappings()
            )
        });
    assert!(
        (lo..=hi).contains(&new_port),
        "new port {new_port} outside the NAT's new range {lo}-{hi}"
    );
    assert_eq!(
        master_log(&m).matches("worker connected").count(),
        1,
        "the connection moved, it was not replaced:\n{}",
        m.log()
    );

    // 2. The link goes dead for 6 s: longer than missing_timeout (3 s), so the
    //    master marks the worker gone, shorter than reconnect_grace (12 s).
    //    The command keeps running on the worker, which buffers its output;
    //    on reconnect the master re-attaches it from the last byte it stored.
    let brid = force_count(&m, 150);
    wait_for_line(&m, brid, 20);
    let cut_at = Instant::now();
    nat.cut();
    m.wait_for("the master to mark the worker missing", LONG, || {
        (!connected(&m)).then_some(())
    });
    let noticed = cut_at.elapsed();
    assert!(
        noticed < Duration::from_secs(3 + 2),
        "missing_timeout is 3 s; the master took {noticed:?}"
    );
    std::thread::sleep(Duration::from_secs(6).saturating_sub(cut_at.elapsed()));
    nat.restore();
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 0, "{done}\n{}\n{}", m.log(), w.log());
    assert_complete(&log_of(&m, &done), 150);
    assert_eq!(m.builds_of(brid).len(), 1, "the same build went on");
    assert!(
        w.log().contains("re-attached at output byte"),
        "the worker log tells the story:\n{}",
        w.log()
    );
    m.wait_connected("v1");

    // 3. Revoking the worker's certificate drops it, through the NAT too, and
    //    it stays out although master.lua still lists it.
    run_ok("moonbot", &["revoke-worker", m.path(), "v1"]);
    m.wait_for("the revoked worker to be dropped", LONG, || {
        (!connected(&m)).then_some(())
    });
    m.wait_for("the revoked worker to be refused", LONG, || {
        w.log()
            .contains("refused this worker (v1): certificate of worker 'v1' has been revoked")
            .then_some(())
    });
}

#[test]
fn past_the_grace_period_the_build_retries_and_a_dead_worker_is_noticed() {
    let nat = Nat::create();
    let (m, mut w) = setup(&nat);

    // A cut longer than missing_timeout + reconnect_grace: the build ends
    // RETRY, the request is queued again and runs once the worker is back.
    let brid = force_count(&m, 600);
    wait_for_line(&m, brid, 10);
    nat.cut();
    let first = m.wait_for("the build to end RETRY", LONG, || {
        let b = m.builds_of(brid).into_iter().next()?;
        (b["complete"] == true).then_some(b)
    });
    assert_eq!(first["results"], 5, "RETRY: {first}");
    assert!(
        log_of(&m, &first).contains("did not come back within 12 s"),
        "{}",
        log_of(&m, &first)
    );
    let br = &m.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0];
    assert_eq!(br["complete"], false, "queued again: {br}");
    std::fs::write(m.tmp.path().join("quick"), "").unwrap();
    nat.restore();
    let second = m.wait_request_done(brid, LONG);
    assert_eq!(second["results"], 0, "{second}\n{}", m.log());
    assert_complete(&log_of(&m, &second), 20);
    // The abandoned command is stopped on the worker soon after the
    // reconnect, since the master did not re-attach it.
    m.wait_for("the worker to stop the abandoned command", LONG, || {
        w.log().contains("nobody re-attached it").then_some(())
    });

    // A worker that dies without a word (power cut) is marked disconnected
    // within missing_timeout.
    w.kill();
    let killed_at = Instant::now();
    m.wait_for("the dead worker to be noticed", LONG, || {
        (!connected(&m)).then_some(())
    });
    let noticed = killed_at.elapsed();
    assert!(
        noticed < Duration::from_secs(3 + 2),
        "missing_timeout is 3 s; the master took {noticed:?}"
    );
}
