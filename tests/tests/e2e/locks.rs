//! Issue 17: locks on a real worker. An exclusive master lock shared by two
//! builders keeps their builds apart (read from step start and end times),
//! and a waiting build says so (API, page, `locks_duration_s`); a counting
//! worker lock admits `max_count`; a reload that raises `max_count` lets the
//! next build in beside the holder; two builds that would deadlock on each
//! other's locks both finish.

use moonbot_tests::{Backend, LONG, TestMaster, run};
use serde_json::Value;

fn config(dir: &str, pool: u32) -> String {
    format!(
        r#"
local mb = require "moonbot"
local db = mb.locks.master {{ name = "db" }}
local pool = mb.locks.master {{ name = "pool", max_count = {pool} }}
local cpu = mb.locks.worker {{ name = "cpu", max_count = 5, max_count_for_worker = {{ w1 = 2 }} }}
local a = mb.locks.master {{ name = "a" }}
local b = mb.locks.master {{ name = "b" }}
local function hold() return mb.steps.shell {{ name = "work", command = "echo start; sleep 0.4; echo end" }} end
local function barrier(me, other) return mb.steps.shell {{ name = "barrier",
  command = "touch {dir}/" .. me .. "; i=0; while [ ! -e {dir}/" .. other .. " ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done" }} end
return {{
  title = "locks",
  www = {{ port = 0, bind = "127.0.0.1" }},
  protocols = {{ quic = {{ port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 }} }},
  db = {{ url = "@DB@" }},
  workers = {{ mb.worker {{ name = "w1", max_builds = 10 }} }},
  builders = {{
    mb.builder {{ name = "one", workernames = {{ "w1" }}, locks = {{ db:access("exclusive") }}, steps = {{ hold() }} }},
    mb.builder {{ name = "two", workernames = {{ "w1" }}, locks = {{ db:access("exclusive") }}, steps = {{ hold() }} }},
    mb.builder {{ name = "holder", workernames = {{ "w1" }}, locks = {{ db:access("exclusive") }}, steps = {{
      mb.steps.shell {{ name = "hold", command = "i=0; while [ ! -e {dir}/release ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done" }} }} }},
    mb.builder {{ name = "par", workernames = {{ "w1" }}, collapse_requests = false, steps = {{
      mb.steps.shell {{ name = "work", command = "echo start; sleep 0.6; echo end", locks = {{ cpu:access("counting") }} }} }} }},
    mb.builder {{ name = "pooled", workernames = {{ "w1" }}, collapse_requests = false, locks = {{ pool:access("counting") }}, steps = {{
      mb.steps.shell {{ name = "pooled", command = "if [ -e {dir}/first ]; then echo second; else touch {dir}/first; i=0; while [ ! -e {dir}/pool-release ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; fi" }} }} }},
    mb.builder {{ name = "x", workernames = {{ "w1" }}, locks = {{ a:access("exclusive") }}, steps = {{
      barrier("x", "y"), mb.steps.shell {{ name = "cross", command = "echo x", locks = {{ b:access("exclusive") }} }} }} }},
    mb.builder {{ name = "y", workernames = {{ "w1" }}, locks = {{ b:access("exclusive") }}, steps = {{
      barrier("y", "x"), mb.steps.shell {{ name = "cross", command = "echo y", locks = {{ a:access("exclusive") }} }} }} }},
  }},
  schedulers = {{ mb.schedulers.force {{ name = "force",
    builders = {{ "one", "two", "holder", "par", "pooled", "x", "y" }} }} }},
}}
"#
    )
}

moonbot_tests::on_both_databases!(locks_keep_builds_apart_admit_their_count_and_never_deadlock);

/// (start, end) of the step `name` of each build.
fn spans(m: &TestMaster, builds: &[Value], name: &str) -> Vec<(f64, f64)> {
    builds
        .iter()
        .map(|b| {
            let step = m
                .steps(b["buildid"].as_i64().unwrap())
                .into_iter()
                .find(|s| s["name"] == name)
                .unwrap();
            (
                step["started_at"].as_f64().unwrap(),
                step["complete_at"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The most spans running at one instant.
fn most_at_once(spans: &[(f64, f64)]) -> usize {
    spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn locks_keep_builds_apart_admit_their_count_and_never_deadlock(backend: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let (m, _w) = TestMaster::started_with_worker(backend, &config(dir, 1), "w1");

    // A holder keeps "db"; a build of "one" waits, and says so.
    let holder = m.force(m.builderid("holder"));
    m.wait_for("the holder to run", LONG, || m.builds_of(holder).pop());
    let waiting = m.force(m.builderid("one"));
    let build = m.wait_for("the waiting build", LONG, || {
        m.builds_of(waiting)
            .pop()
            .filter(|b| b["state_string"] == "waiting for lock db")
    });
    let buildid = build["buildid"].as_i64().unwrap();
    let (_, page) = m.get_status(&format!("/builds/{buildid}"));
    assert!(page.contains("waiting for lock db"), "{page}");
    assert!(m.steps(buildid).is_empty(), "no step runs before its locks");
    // A build stopped while it waits for its lock ends CANCELLED, no step run.
    let stopped = m.force(m.builderid("two"));
    let waiter = m.wait_for("the second waiting build", LONG, || {
        m.builds_of(stopped)
            .pop()
            .filter(|b| b["state_string"] == "waiting for lock db")
    });
    let waiter_id = waiter["buildid"].as_i64().unwrap();
    let (status, answer) = m.rpc(
        &format!("/api/v2/builds/{waiter_id}"),
        "stop",
        serde_json::json!({"reason": "not needed"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(m.wait_request_done(stopped, LONG)["results"], 6);
    assert!(m.steps(waiter_id).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(tmp.path().join("release"), "").unwrap();
    let done = m.wait_request_done(waiting, LONG);
    assert_eq!(done["results"], 0, "{done}");
    assert!(done["locks_duration_s"].as_i64().unwrap() >= 1, "{done}");

    // Builds of two builders sharing an exclusive lock never overlap.
    let brids: Vec<i64> = (0..6)
        .map(|i| m.force(m.builderid(if i % 2 == 0 { "one" } else { "two" })))
        .collect();
    let builds: Vec<Value> = brids
        .iter()
        .map(|&b| m.wait_request_done(b, LONG))
        .collect();
    assert!(builds.iter().all(|b| b["results"] == 0), "{builds:?}");
    let builds: Vec<Value> = brids
        .iter()
        .map(|&b| m.builds_of(b).pop().unwrap())
        .collect();
    let exclusive = spans(&m, &builds, "work");
    assert_eq!(most_at_once(&exclusive), 1, "{exclusive:?}");

    // A counting worker lock with two places on w1: never more than two.
    let brids: Vec<i64> = (0..5).map(|_| m.force(m.builderid("par"))).collect();
    for &b in &brids {
        assert_eq!(m.wait_request_done(b, LONG)["results"], 0);
    }
    let builds: Vec<Value> = brids
        .iter()
        .map(|&b| m.builds_of(b).pop().unwrap())
        .collect();
    let counted = spans(&m, &builds, "work");
    assert!(most_at_once(&counted) <= 2, "{counted:?}");

    // max_count 1 → 2 by a reload: the next build runs beside the holder.
    let first = m.force(m.builderid("pooled"));
    m.wait_for("the first pooled build to hold", LONG, || {
        tmp.path().join("first").exists().then_some(())
    });
    m.write_config(&config(dir, 2));
    let (code, out, err) = run("moonbot", &["reconfig", m.path()]);
    assert_eq!(code, 0, "{out}{err}");
    let second = m.wait_request_done(m.force(m.builderid("pooled")), LONG);
    assert_eq!(second["results"], 0, "{second}");
    assert_eq!(
        m.builds_of(first).pop().unwrap()["complete"],
        false,
        "the second ran while the first held the lock"
    );
    std::fs::write(tmp.path().join("pool-release"), "").unwrap();
    assert_eq!(m.wait_request_done(first, LONG)["results"], 0);

    // x holds a and wants b; y holds b and wants a: both finish.
    let x = m.force(m.builderid("x"));
    let y = m.force(m.builderid("y"));
    assert_eq!(m.wait_request_done(x, LONG)["results"], 0);
    assert_eq!(m.wait_request_done(y, LONG)["results"], 0);
}
