//! Controlling a worker: pause and unpause through the REST API (stored, shown
//! in the API), and `moonbot-worker stop`, which lets running builds finish
//! while the master gives the worker no new ones; `--now` interrupts them.

use moonbot_tests::{Backend, LONG, TestMaster, process_alive, run};
use serde_json::{Value, json};
use std::time::Duration;

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "worker-control",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" }, collapse_requests = false, -- each forced request is one build
  workers = { mb.worker { name = "w1", max_builds = 2 } },
  builders = {
    mb.builder { name = "slow", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "work", command = "echo started; sleep 3; echo finished" },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "slow" } } },
}
"#;

moonbot_tests::on_both_databases!(
    a_paused_worker_gets_no_new_builds,
    a_graceful_stop_finishes_running_builds_first,
    a_full_worker_takes_the_next_request_as_soon_as_a_build_ends,
);

fn worker(m: &TestMaster) -> Value {
    m.get("/api/v2/workers?name=w1")["workers"][0].clone()
}

fn request(m: &TestMaster, brid: i64) -> Value {
    m.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0].clone()
}

/// Requests queued behind a worker at `max_builds` start the moment a build
/// gives its slot back, not at the distributor's next 10 s look, and never more
/// than `max_builds` at once.
fn a_full_worker_takes_the_next_request_as_soon_as_a_build_ends(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let slow = m.builderid("slow");
    // The first two builds end 2 s apart, so each end frees a slot on its own.
    let mut brids = vec![m.force(slow)];
    m.wait_for("the first build to start", LONG, || {
        m.builds_of(brids[0]).pop().map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(2));
    brids.extend((0..3).map(|_| m.force(slow)));
    let builds: Vec<Value> = brids
        .iter()
        .map(|&brid| m.wait_request_done(brid, LONG))
        .collect();
    let at = |b: &Value, field: &str| b[field].as_f64().unwrap();
    for b in &builds {
        assert_eq!(b["results"], 0, "{b}");
    }
    // Two at once (max_builds = 2), so the third and fourth start only when
    // the first two have ended, and right then.
    let mut ends: Vec<f64> = builds[..2].iter().map(|b| at(b, "complete_at")).collect();
    ends.sort_by(f64::total_cmp);
    let mut starts: Vec<f64> = builds[2..].iter().map(|b| at(b, "started_at")).collect();
    starts.sort_by(f64::total_cmp);
    for (end, start) in ends.iter().zip(&starts) {
        assert!(
            start >= end,
            "a third build started before a slot was free: {builds:?}"
        );
        assert!(
            start - end < 1.0,
            "a queued build waited {:.1} s for a free slot: {builds:?}",
            start - end
        );
    }
}

fn a_paused_worker_gets_no_new_builds(backend: &Backend) {
    let (mut m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let workerid = worker(&m)["workerid"].as_i64().unwrap();

    let (status, answer) = m.rpc(&format!("/api/v2/workers/{workerid}"), "pause", json!({}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["paused"], true, "{answer}");
    assert_eq!(worker(&m)["paused"], true);

    let brid = m.force(m.builderid("slow"));
    std::thread::sleep(Duration::from_secs(2));
    let br = request(&m, brid);
    assert_eq!(br["claimed"], false, "a paused worker takes nothing: {br}");
    assert!(m.builds_of(brid).is_empty());

    // The pause is stored: it outlives a master restart.
    m.pin_quic_port(CONFIG);
    m.stop(false);
    m.start();
    m.wait_connected("w1");
    assert_eq!(worker(&m)["paused"], true);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(request(&m, brid)["claimed"], false);

    let (status, answer) = m.rpc("/api/v2/workers/w1", "unpause", json!({}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(worker(&m)["paused"], false);
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 0, "{done}");

    let (status, answer) = m.rpc("/api/v2/workers/nobody", "pause", json!({}));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in this master's configuration")
    );
    let (status, answer) = m.rpc("/api/v2/workers/w1", "dance", json!({}));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("takes stop, kill, pause, unpause")
    );
}

fn a_graceful_stop_finishes_running_builds_first(backend: &Backend) {
    let (m, mut w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let slow = m.builderid("slow");

    let running = m.force(slow);
    m.wait_for("the build to start", LONG, || {
        let b = m.builds_of(running).pop()?;
        let stepid = m.steps(b["buildid"].as_i64()?).first()?["stepid"].as_i64()?;
        m.stdio_of(stepid).contains("started").then_some(())
    });
    let pid = w.pid().unwrap() as i32;
    let wdir = w.dir.clone();
    // `stop` waits for the worker to exit: run it beside the test.
    let stopper =
        std::thread::spawn(move || run("moonbot-worker", &["stop", wdir.to_str().unwrap()]));
    m.wait_for("the API to show the worker stopping", LONG, || {
        (worker(&m)["graceful"] == true).then_some(())
    });
    // No new build goes to a stopping worker, though it has a free slot.
    let waiting = m.force(slow);
    let done = m.wait_request_done(running, LONG);
    assert_eq!(done["results"], 0, "the running build finished: {done}");
    let (code, out, err) = stopper.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("stops when its running builds have finished"),
        "{out}"
    );
    assert!(!process_alive(pid), "the worker exited");
    assert!(
        w.log().contains("the master says no build is left"),
        "{}",
        w.log()
    );
    assert_eq!(request(&m, waiting)["claimed"], false);
    assert!(m.builds_of(waiting).is_empty());
    m.wait_for("the worker to be disconnected", LONG, || {
        (worker(&m)["connected_to"].as_array()?.is_empty()).then_some(())
    });

    // Back again, it takes the waiting build; `stop --now` interrupts it and
    // the build ends RETRY, to run again later.
    w.start();
    m.wait_for("the waiting build to start", LONG, || {
        let b = m.builds_of(waiting).pop()?;
        let stepid = m.steps(b["buildid"].as_i64()?).first()?["stepid"].as_i64()?;
        m.stdio_of(stepid).contains("started").then_some(())
    });
    let (code, out, err) = run(
        "moonbot-worker",
        &["stop", "--now", w.dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let interrupted = m.wait_for("the build to end", LONG, || {
        let b = m.builds_of(waiting).into_iter().next()?;
        (b["complete"] == true).then_some(b)
    });
    assert_eq!(interrupted["results"], 5, "RETRY: {interrupted}");
    assert_eq!(request(&m, waiting)["complete"], false, "queued again");
}
