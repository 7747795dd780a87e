//! Issue 14, timed schedulers in real time: `periodic` and `nightly` (a cron
//! pattern with seconds) build on schedule; the last run survives a restart,
//! so a restart neither fires twice nor skips a run; `only_if_changed`
//! builds only after a change.

use moonbot_tests::{Backend, LONG, TestMaster, run};
use serde_json::Value;
use std::time::Duration;

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "p", workernames = { "w1" }, steps = { mb.steps.shell { command = "true" } } },
    mb.builder { name = "n", workernames = { "w1" }, steps = { mb.steps.shell { command = "true" } } },
  },
  schedulers = {
    mb.schedulers.periodic { name = "every", builders = { "p" }, period = @PERIOD@, branch = "main",
      properties = { kind = "periodic" } },
    mb.schedulers.nightly { name = "often", builders = { "n" }, cron = "*/2 * * * * *",
      only_if_changed = true, change_filter = { branch = "main" } },
  },
}
"#;

moonbot_tests::on_both_databases!(timed_schedulers_fire_on_time_and_remember_their_last_run);

fn reasons(m: &TestMaster, scheduler: &str) -> Vec<Value> {
    m.get("/api/v2/buildsets?order=bsid")["buildsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|bs| {
            bs["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&format!("named '{scheduler}'")))
        })
        .cloned()
        .collect()
}

fn timed_schedulers_fire_on_time_and_remember_their_last_run(backend: &Backend) {
    let mut m = TestMaster::create(backend, &CONFIG.replace("@PERIOD@", "3"));
    m.start();

    // A new periodic scheduler builds at once, then every 3 s.
    let first = m.wait_for("the first periodic run", LONG, || {
        reasons(&m, "every").first().cloned()
    });
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("The Periodic scheduler named 'every'"),
        "{first}"
    );
    let bsid = first["bsid"].as_i64().unwrap();
    let stamps = m.get(&format!("/api/v2/buildsets/{bsid}/sourcestamps"))["sourcestamps"].clone();
    assert_eq!(stamps[0]["branch"], "main");
    let runs = m.wait_for("the second periodic run", LONG, || {
        let runs = reasons(&m, "every");
        (runs.len() >= 2).then_some(runs)
    });
    let gap = runs[1]["submitted_at"].as_f64().unwrap() - runs[0]["submitted_at"].as_f64().unwrap();
    assert!(gap >= 2.5, "runs {gap} s apart, the period is 3 s");

    // The nightly one with only_if_changed: nothing without a change ...
    std::thread::sleep(Duration::from_secs(3));
    assert!(reasons(&m, "often").is_empty(), "built with no change");
    // ... and one build after a change on its branch (none for another).
    for (branch, revision) in [("other", "0ther"), ("main", "ma1n")] {
        let (code, out, err) = run(
            "moonbot",
            &[
                "sendchange",
                "--master",
                &m.www,
                "--who",
                "Ann",
                "-b",
                branch,
                "-r",
                revision,
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let run = m.wait_for("the nightly run after a change", LONG, || {
        reasons(&m, "often").first().cloned()
    });
    let bsid = run["bsid"].as_i64().unwrap();
    let stamps = m.get(&format!("/api/v2/buildsets/{bsid}/sourcestamps"))["sourcestamps"].clone();
    assert_eq!(stamps[0]["revision"], "ma1n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reasons(&m, "often").len(), 1, "one change, one build");

    // A restart with a period of an hour: the last run is remembered, so
    // the scheduler does not build again at start.
    let before = reasons(&m, "every").len();
    m.stop(false);
    m.write_config(&CONFIG.replace("@PERIOD@", "3600"));
    m.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        reasons(&m, "every").len(),
        before,
        "a restart fired the periodic scheduler again"
    );
    // A run missed while the master was down fires once when it is back.
    m.stop(false);
    m.sql("UPDATE object_state SET value_json = '1000.0' WHERE name = 'last_build'");
    m.start();
    m.wait_for("the missed run", LONG, || {
        (reasons(&m, "every").len() == before + 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        reasons(&m, "every").len(),
        before + 1,
        "the missed runs fired more than once"
    );
}
