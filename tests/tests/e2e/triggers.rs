//! Issue 17: `trigger` steps and `triggerable` schedulers on a real worker:
//! a fan-out of 20 children waited for through a reload, results that count
//! and one that does not, properties and source stamps handed down, links
//! both ways (API and pages), a stopped parent cancelling and stopping its
//! children, and a master restart while a parent waits (the parent ends
//! RETRY, its children that had not started are cancelled, none is left).

use moonbot_tests::{Backend, LONG, TestMaster, run};
use serde_json::{Value, json};
use std::time::Duration;

fn config(go: &str) -> String {
    let mut children = String::new();
    let mut names = Vec::new();
    for i in 1..=20 {
        let name = format!("child-{i:02}");
        children.push_str(&format!(
            "    mb.builder {{ name = \"{name}\", workernames = {{ \"w1\" }}, steps = {{ child_step }} }},\n"
        ));
        names.push(format!("\"{name}\""));
    }
    format!(
        r#"
local mb = require "moonbot"
local child_step = mb.steps.shell {{ name = "wait-for-go",
  command = mb.interpolate("i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo from=%(prop:from_parent)s color=%(prop:color)s scheduler=%(prop:scheduler)s") }}
return {{
  title = "triggers",
  www = {{ port = 0, bind = "127.0.0.1" }},
  protocols = {{ quic = {{ port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 }} }},
  db = {{ url = "@DB@" }},
  properties = {{ color = "blue" }},
  workers = {{ mb.worker {{ name = "w1", max_builds = 30 }}, mb.worker {{ name = "absent" }} }},
  builders = {{
    mb.builder {{ name = "parent", workernames = {{ "w1" }}, steps = {{
      mb.steps.trigger {{ name = "fan-out", schedulers = function(props) return {{ "fan", "flaky" }} end,
        wait_for_finish = true, unimportant_schedulers = {{ "flaky" }},
        set_properties = {{ from_parent = mb.interpolate("parent-%(prop:buildnumber)s") }},
        copy_properties = {{ "color" }} }},
      mb.steps.shell {{ name = "after", command = "echo children done" }},
    }} }},
    mb.builder {{ name = "strict", workernames = {{ "w1" }}, steps = {{
      mb.steps.trigger {{ schedulers = {{ "flaky" }}, wait_for_finish = true }},
    }} }},
    mb.builder {{ name = "stopper", workernames = {{ "w1" }}, steps = {{
      mb.steps.trigger {{ schedulers = {{ "slow" }}, wait_for_finish = true, stop_children = true }},
    }} }},
    mb.builder {{ name = "waiter", workernames = {{ "w1" }}, steps = {{
      mb.steps.trigger {{ schedulers = {{ "pending" }}, wait_for_finish = true }},
    }} }},
    mb.builder {{ name = "stamped", workernames = {{ "w1" }}, steps = {{
      mb.steps.set_property {{ property = "got_revision", value = "abc123" }},
      mb.steps.trigger {{ name = "updated", schedulers = {{ "stamp" }}, wait_for_finish = true }},
      mb.steps.trigger {{ name = "as-forced", schedulers = {{ "stamp" }}, wait_for_finish = true, update_sourcestamp = false }},
      mb.steps.trigger {{ name = "latest", schedulers = {{ "stamp" }}, wait_for_finish = true, always_use_latest = true }},
    }} }},
    mb.builder {{ name = "stamp-child", workernames = {{ "w1" }}, steps = {{
      mb.steps.shell {{ name = "show", command = mb.interpolate("echo revision=%(prop:revision:-none)s branch=%(prop:branch:-none)s") }} }} }},
    mb.builder {{ name = "failing", workernames = {{ "w1" }}, steps = {{ mb.steps.shell {{ command = "exit 1" }} }} }},
    mb.builder {{ name = "slow-run", workernames = {{ "w1" }}, steps = {{ mb.steps.shell {{ command = "echo started; sleep 300" }} }} }},
    mb.builder {{ name = "never-runs", workernames = {{ "absent" }}, steps = {{ mb.steps.shell {{ command = "true" }} }} }},
{children}  }},
  schedulers = {{
    mb.schedulers.force {{ name = "force", builders = {{ "parent", "strict", "stopper", "waiter" }} }},
    mb.schedulers.force {{ name = "force-stamped", builders = {{ "stamped" }}, codebases = {{ "" }} }},
    mb.schedulers.triggerable {{ name = "stamp", builders = {{ "stamp-child" }} }},
    mb.schedulers.triggerable {{ name = "fan", builders = {{ {names} }} }},
    mb.schedulers.triggerable {{ name = "flaky", builders = {{ "failing" }} }},
    mb.schedulers.triggerable {{ name = "slow", builders = {{ "slow-run", "never-runs" }} }},
    mb.schedulers.triggerable {{ name = "pending", builders = {{ "never-runs" }} }},
  }},
}}
"#,
        names = names.join(", ")
    )
}

moonbot_tests::on_both_databases!(triggers_fan_out_wait_through_a_reload_and_stop_with_the_parent);

fn step_named(m: &TestMaster, buildid: i64, name: &str) -> Value {
    m.steps(buildid)
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in build {buildid}"))
}

fn running_build(m: &TestMaster, brid: i64) -> i64 {
    m.wait_for("the build to start", LONG, || {
        m.builds_of(brid).pop()?["buildid"].as_i64()
    })
}

fn triggered(m: &TestMaster, buildid: i64) -> Vec<Value> {
    m.get(&format!("/api/v2/builds/{buildid}/triggered_builds"))["builds"]
        .as_array()
        .unwrap()
        .clone()
}

fn triggers_fan_out_wait_through_a_reload_and_stop_with_the_parent(backend: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let lua = config(go.to_str().unwrap());
    let (mut m, _w) = TestMaster::started_with_worker(backend, &lua, "w1");

    // Twenty children (and one unimportant failure), all running and
    // waited for.
    let brid = m.force(m.builderid("parent"));
    let parent = running_build(&m, brid);
    m.wait_for("21 triggered builds", LONG, || {
        (triggered(&m, parent).len() == 21).then_some(())
    });
    // A reload while the parent waits does not end the wait.
    let reloaded = lua.replace("title = \"triggers\"", "title = \"triggers, reloaded\"");
    m.write_config(&reloaded);
    let (code, out, err) = run("moonbot", &["reconfig", m.path()]);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(Duration::from_millis(500));
    let fan_out = step_named(&m, parent, "fan-out");
    assert_eq!(fan_out["complete"], false, "{fan_out}");
    std::fs::write(&go, "").unwrap();
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(
        done["results"], 0,
        "the unimportant failure does not count: {done}"
    );
    let fan_out = step_named(&m, parent, "fan-out");
    assert_eq!(fan_out["results"], 0, "{fan_out}");
    assert_eq!(fan_out["urls"].as_array().unwrap().len(), 21, "{fan_out}");
    let children = triggered(&m, parent);
    assert_eq!(children.len(), 21);
    let failed = children.iter().filter(|c| c["results"] == 2).count();
    assert_eq!(failed, 1, "{children:?}");
    // Properties handed down: set, copied, and the scheduler's name.
    let child = children.iter().find(|c| c["results"] == 0).unwrap();
    let child_id = child["buildid"].as_i64().unwrap();
    let out = m.stdio_of(
        step_named(&m, child_id, "wait-for-go")["stepid"]
            .as_i64()
            .unwrap(),
    );
    assert!(
        out.contains(&format!(
            "\nfrom=parent-{} color=blue scheduler=fan\n",
            done["number"]
        )),
        "{out}"
    );
    // Links both ways on the pages.
    let (status, page) = m.get_status(&format!("/builds/{child_id}"));
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("href=\"/builds/{parent}\"")),
        "{page}"
    );
    let (_, page) = m.get_status(&format!("/builds/{parent}"));
    assert!(
        page.contains(&format!("href=\"/builds/{child_id}\"")),
        "{page}"
    );
    assert!(page.contains("id=\"triggered\""), "{page}");
    // Without unimportant_schedulers, a child's failure is the parent's.
    let strict = m.wait_request_done(m.force(m.builderid("strict")), LONG);
    assert_eq!(strict["results"], 2, "{strict}");

    // Source stamps handed down: got_revision (the default), the forced
    // revision (update_sourcestamp = false), none (always_use_latest).
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force-stamped",
        "force",
        json!({"builderid": m.builderid("stamped"), "reason": "stamps", "revision": "r1", "branch": "main"}),
    );
    assert_eq!(status, 200, "{answer}");
    let brid = answer["result"][1][m.builderid("stamped").to_string()]
        .as_i64()
        .unwrap();
    let stamped = m.wait_request_done(brid, LONG);
    assert_eq!(stamped["results"], 0, "{stamped}");
    let mut seen: Vec<String> = triggered(&m, stamped["buildid"].as_i64().unwrap())
        .iter()
        .map(|c| {
            let step = step_named(&m, c["buildid"].as_i64().unwrap(), "show");
            m.stdio_of(step["stepid"].as_i64().unwrap())
                .lines()
                .find(|l| l.starts_with("revision="))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "revision=abc123 branch=main",
            "revision=none branch=main",
            "revision=r1 branch=main"
        ]
    );

    // Stopping the parent: the child not started is cancelled, the running
    // one stopped (stop_children).
    let brid = m.force(m.builderid("stopper"));
    let stopper = running_build(&m, brid);
    let running_child = m.wait_for("the running child", LONG, || {
        triggered(&m, stopper)
            .into_iter()
            .find(|c| c["complete"] == false)
    });
    let (status, answer) = m.rpc(
        &format!("/api/v2/builds/{stopper}"),
        "stop",
        json!({"reason": "enough"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(m.wait_request_done(brid, LONG)["results"], 6);
    let child_brid = running_child["buildrequestid"].as_i64().unwrap();
    assert_eq!(m.wait_request_done(child_brid, LONG)["results"], 6);
    let bsid = m.sql_i64(&format!(
        "SELECT id FROM buildsets WHERE parent_buildid = {stopper}"
    ));
    let requests =
        m.get(&format!("/api/v2/buildrequests?buildsetid={bsid}"))["buildrequests"].clone();
    for r in requests.as_array().unwrap() {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["results"], 6, "{r}");
    }

    // A restart while a parent waits: it ends RETRY, the child it waited
    // for is cancelled, and it runs again with a child of its own.
    let brid = m.force(m.builderid("waiter"));
    let first = running_build(&m, brid);
    m.wait_for("the waiting child", LONG, || {
        (triggered(&m, first).is_empty()
            && m.sql_i64(&format!(
                "SELECT COUNT(*) FROM buildsets WHERE parent_buildid = {first}"
            )) == 1)
            .then_some(())
    });
    m.pin_quic_port(&reloaded);
    m.stop(false);
    m.start();
    let old_child = m.sql_i64(&format!(
        "SELECT CAST(r.results AS BIGINT) FROM buildrequests r JOIN buildsets s ON s.id = r.buildsetid WHERE s.parent_buildid = {first}"
    ));
    assert_eq!(old_child, 6, "the old child request is cancelled");
    assert_eq!(
        m.sql_i64(&format!(
            "SELECT CAST(results AS BIGINT) FROM builds WHERE id = {first}"
        )),
        5
    );
    let second = m.wait_for("the parent to run again", LONG, || {
        m.builds_of(brid)
            .into_iter()
            .find(|b| b["buildid"].as_i64() != Some(first))?["buildid"]
            .as_i64()
    });
    m.wait_for("its own child", LONG, || {
        (m.sql_i64(&format!(
            "SELECT COUNT(*) FROM buildsets WHERE parent_buildid = {second}"
        )) == 1)
            .then_some(())
    });
    let pending = m.sql_i64(
        "SELECT COUNT(*) FROM buildrequests r JOIN builders b ON b.id = r.builderid WHERE b.name = 'never-runs' AND r.complete = FALSE",
    );
    assert_eq!(pending, 1, "one child waits: the second parent's");
}
