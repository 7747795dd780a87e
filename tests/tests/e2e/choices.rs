//! Issue 17: the builder's choices on real workers: `next_worker` choosing
//! by a worker property, `can_start_build` vetoing a worker, `next_build`
//! picking the newest request, a step `retry` after its worker is killed
//! and on an exit code, and `max_retries` ending a request that keeps
//! ending RETRY.

use moonbot_tests::{Backend, LONG, TestMaster};
use serde_json::Value;

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "choices",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = {
    mb.worker { name = "w1", max_builds = 4, properties = { fast = false } },
    mb.worker { name = "w2", max_builds = 4, properties = { fast = true } },
    mb.worker { name = "w3", max_builds = 1 },
    mb.worker { name = "w4", max_builds = 1 },
  },
  builders = {
    mb.builder { name = "picky", workernames = { "w1", "w2" },
      next_worker = function(builder, workers, request)
        for _, w in ipairs(workers) do
          if w.properties.fast then return w.name end
        end
      end,
      steps = { mb.steps.shell { command = "echo picked" } } },
    mb.builder { name = "vetoed", workernames = { "w1", "w2" },
      can_start_build = function(builder, worker, request) return worker.name ~= "w2" end,
      steps = { mb.steps.shell { command = "echo allowed" } } },
    mb.builder { name = "newest-first", workernames = { "w3" }, collapse_requests = false,
      next_build = function(builder, requests) return requests[#requests] end,
      steps = { mb.steps.shell { command = "echo ran" } } },
    mb.builder { name = "retrying", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "flaky", retry = { on = { "worker_lost" }, max = 2 },
        command = "if [ -e marker ]; then echo second; else touch marker; echo first; sleep 300; fi" } } },
    mb.builder { name = "rc-retry", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "killed", retry = { on = { rc = { 137 } }, max = 1, delay = 1 },
        command = "if [ -e m2 ]; then echo fine; else touch m2; exit 137; fi" } } },
    mb.builder { name = "low", workernames = { "w4" }, steps = { mb.steps.shell { command = "echo low" } } },
    mb.builder { name = "high", workernames = { "w4" }, priority = 10, steps = { mb.steps.shell { command = "echo high" } } },
    mb.builder { name = "elsewhere", workernames = { "w1" }, workerbuilddir = "custom-dir",
      steps = { mb.steps.shell { command = "pwd" } } },
    mb.builder { name = "slow-once", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "stalls", timeout = 1, retry = { on = { "timeout" }, max = 1 },
        command = "if [ -e m3 ]; then echo quick; else touch m3; sleep 30; fi" } } },
    mb.builder { name = "loops", workernames = { "w1" }, max_retries = 2, steps = {
      mb.steps.shell { command = "exit 3", decode_rc = { [3] = mb.results.RETRY } } } },
  },
  schedulers = { mb.schedulers.force { name = "force",
    builders = { "picky", "vetoed", "newest-first", "retrying", "rc-retry", "loops", "low", "high", "elsewhere", "slow-once" } } },
}
"#;

moonbot_tests::on_both_databases!(builders_choose_workers_and_requests_and_steps_retry);

fn worker_of(m: &TestMaster, build: &Value) -> String {
    let id = build["workerid"].as_i64().unwrap();
    m.get(&format!("/api/v2/workers/{id}"))["workers"][0]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

fn builders_choose_workers_and_requests_and_steps_retry(backend: &Backend) {
    let (m, mut w1) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let mut w2 = m.make_worker("w2", &m.dir.clone());
    w2.start();
    m.wait_connected("w2");

    // next_worker: always the fast one; can_start_build: never w2.
    for _ in 0..3 {
        let build = m.wait_request_done(m.force(m.builderid("picky")), LONG);
        assert_eq!(worker_of(&m, &build), "w2", "{build}");
        let build = m.wait_request_done(m.force(m.builderid("vetoed")), LONG);
        assert_eq!(worker_of(&m, &build), "w1", "{build}");
    }

    // next_build: three requests wait for w3; once it comes, newest first.
    let brids: Vec<i64> = (0..3)
        .map(|_| m.force(m.builderid("newest-first")))
        .collect();
    let mut w3 = m.make_worker("w3", &m.dir.clone());
    w3.start();
    let builds: Vec<Value> = brids
        .iter()
        .map(|&b| m.wait_request_done(b, LONG))
        .collect();
    let numbers: Vec<i64> = builds
        .iter()
        .map(|b| b["number"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        [3, 2, 1],
        "the newest request was built first: {builds:?}"
    );

    // Builder priority: with w4 away, a request for each; the higher first.
    let low = m.force(m.builderid("low"));
    let high = m.force(m.builderid("high"));
    let mut w4 = m.make_worker("w4", &m.dir.clone());
    w4.start();
    let low = m.wait_request_done(low, LONG);
    let high = m.wait_request_done(high, LONG);
    assert!(
        high["buildid"].as_i64() < low["buildid"].as_i64(),
        "the higher-priority builder went first: {high} {low}"
    );

    // workerbuilddir: the builder's directory on the worker.
    let build = m.wait_request_done(m.force(m.builderid("elsewhere")), LONG);
    let step = &m.steps(build["buildid"].as_i64().unwrap())[0];
    let out = m.stdio_of(step["stepid"].as_i64().unwrap());
    assert!(out.contains("/custom-dir/build\n"), "{out}");

    // A step retried after its worker was killed, in the same build.
    let brid = m.force(m.builderid("retrying"));
    let build = m.wait_for("the flaky step's first attempt", LONG, || {
        let build = m.builds_of(brid).pop()?;
        let steps = m.steps(build["buildid"].as_i64()?);
        let step = steps.first()?;
        m.stdio_of(step["stepid"].as_i64()?)
            .contains("\nfirst\n")
            .then_some(build)
    });
    w1.kill();
    w1.start();
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 0, "{done}");
    assert_eq!(done["buildid"], build["buildid"], "the same build: {done}");
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["flaky", "flaky (retry 1)"]);
    assert_eq!(steps[0]["results"], 5, "{steps:?}");
    assert!(
        m.stdio_of(steps[1]["stepid"].as_i64().unwrap())
            .contains("\nsecond\n")
    );

    // On an exit code, after the delay.
    let done = m.wait_request_done(m.force(m.builderid("rc-retry")), LONG);
    assert_eq!(done["results"], 0, "{done}");
    let steps = m.steps(done["buildid"].as_i64().unwrap());
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["results"], 2);
    assert_eq!(steps[1]["results"], 0);

    // On a timeout (a second without output).
    let done = m.wait_request_done(m.force(m.builderid("slow-once")), LONG);
    assert_eq!(done["results"], 0, "{done}");
    let steps = m.steps(done["buildid"].as_i64().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["stalls", "stalls (retry 1)"]);
    assert_eq!(steps[0]["results"], 2, "{steps:?}");
    assert!(
        m.stdio_of(steps[0]["stepid"].as_i64().unwrap())
            .contains("timed out")
    );
    assert!(
        m.stdio_of(steps[1]["stepid"].as_i64().unwrap())
            .contains("\nquick\n")
    );

    // max_retries = 2: two builds end RETRY, the third ends the request EXCEPTION.
    let brid = m.force(m.builderid("loops"));
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 4, "{done}");
    let results: Vec<i64> = m
        .builds_of(brid)
        .iter()
        .map(|b| b["results"].as_i64().unwrap())
        .collect();
    assert_eq!(results, [5, 5, 4], "{results:?}");
    let request = &m.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0];
    assert_eq!(request["results"], 4, "{request}");
}

const PRIORITIZED: &str = r#"
local mb = require "moonbot"
local function echo(name)
  return mb.builder { name = name, workernames = { "w9" }, steps = { mb.steps.shell { command = "echo " .. name } } }
end
return {
  title = "prioritized",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w9", max_builds = 1 } },
  -- Reverse order of names; "left-out" never gets a worker.
  prioritize_builders = function(builders)
    local names = {}
    for _, b in ipairs(builders) do
      if b.name ~= "left-out" then names[#names + 1] = b.name end
    end
    table.sort(names, function(a, b) return a > b end)
    return names
  end,
  builders = { echo("alpha"), echo("beta"), echo("left-out") },
  schedulers = { mb.schedulers.force { name = "force", builders = { "alpha", "beta", "left-out" } } },
}
"#;

moonbot_tests::on_both_databases!(prioritize_builders_orders_builders_and_leaves_some_out);

fn prioritize_builders_orders_builders_and_leaves_some_out(backend: &Backend) {
    let mut m = TestMaster::create(backend, PRIORITIZED);
    m.start();
    let left_out = m.force(m.builderid("left-out"));
    let alpha = m.force(m.builderid("alpha"));
    let beta = m.force(m.builderid("beta"));
    let mut w9 = m.make_worker("w9", &m.dir.clone());
    w9.start();
    let alpha = m.wait_request_done(alpha, LONG);
    let beta = m.wait_request_done(beta, LONG);
    assert!(
        beta["buildid"].as_i64() < alpha["buildid"].as_i64(),
        "beta before alpha, as the function orders them: {beta} {alpha}"
    );
    let request = &m.get(&format!("/api/v2/buildrequests/{left_out}"))["buildrequests"][0];
    assert_eq!(request["complete"], false, "{request}");
    assert!(m.builds_of(left_out).is_empty());
}
