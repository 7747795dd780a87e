//! Issue 19: Buildbot's data API, whole. With one forced build on a fresh
//! master, every path of `/application.spec` (generated from the master's
//! router table) is asked with that build's ids:
//! - the spec lists each of Buildbot 4.3's 138 path patterns
//!   (`tests/fixtures/buildbot-4.3-data-api.tsv`) with Buildbot's type;
//! - at least as many of them answer 200 as Buildbot answers on the same
//!   scenario (117), and every moonbot path does;
//! - every object answered carries each of Buildbot's field names for its type;
//! - the query options (`field`, `__contains`, `order`, `limit`, `property`)
//!   and the nested paths answer what their flat forms answer;
//! - the controls Buildbot has (a build's `stop` and `rebuild` by builder
//!   name and number, a scheduler's `enable` across a restart, a worker's
//!   `pause`, `stop` and `kill` by name) do what they say;
//! - `/sse/listen/<path>` streams the same events as `/ws`.

use moonbot_tests::{Backend, LONG, TestMaster, process_alive};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "data api",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "unit", workernames = { "w1" }, properties = { flavour = "plain" },
      steps = {
        mb.steps.shell { name = "hello", command = "echo hello; echo world" },
        mb.steps.shell { name = "slow", command = "true" },
      } },
    mb.builder { name = "long", workernames = { "w1" },
      steps = { mb.steps.shell { command = "sleep 3" } } },
  },
  schedulers = {
    mb.schedulers.force { name = "force", builders = { "unit", "long" } },
  },
  reporters = {
    -- Nothing listens there: its one try fails, and the API shows it.
    mb.reporters.http_push { name = "hook", url = "http://127.0.0.1:9/none", max_attempts = 1 },
  },
}
"#;

moonbot_tests::on_both_databases!(every_buildbot_path_answers_with_buildbots_fields);

/// Buildbot's patterns and the type each answers.
fn buildbot_patterns() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/buildbot-4.3-data-api.tsv"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (p, t) = l.split_once('\t').unwrap();
            (p.to_string(), t.to_string())
        })
        .collect()
}

/// The pattern with each capture replaced by the scenario's value.
fn fill(pattern: &str, ids: &BTreeMap<&str, String>) -> String {
    let mut out = String::from("/api/v2");
    for s in pattern.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        match s.split_once(':') {
            Some((_, name)) => out.push_str(ids.get(name).map_or("1", |v| v.as_str())),
            None => out.push_str(s),
        }
    }
    out
}

fn every_buildbot_path_answers_with_buildbots_fields(backend: &Backend) {
    let (mut m, mut w1) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let builderid = m.builderid("unit");
    let brid = m.force(builderid);
    let build = m.wait_request_done(brid, LONG);
    let buildid = build["buildid"].as_i64().unwrap();
    let steps = m.steps(buildid);
    let step = &steps[0];
    let stepid = step["stepid"].as_i64().unwrap();
    let logs = m.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"].clone();
    let log = &logs[0];
    let worker = m.get("/api/v2/workers/w1")["workers"][0].clone();
    let master = m.get("/api/v2/masters")["masters"][0].clone();
    let scheduler = m.get("/api/v2/schedulers")["schedulers"][0].clone();
    let request = m.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0].clone();
    let ids: BTreeMap<&str, String> = [
        ("builderid", builderid.to_string()),
        ("buildername", "unit".into()),
        ("build_number", build["number"].to_string()),
        ("buildid", buildid.to_string()),
        ("buildrequestid", brid.to_string()),
        ("bsid", request["buildsetid"].to_string()),
        ("buildsetid", request["buildsetid"].to_string()),
        ("stepid", stepid.to_string()),
        ("step_number", step["number"].to_string()),
        ("step_name", "hello".into()),
        ("logid", log["logid"].to_string()),
        ("log_slug", log["slug"].as_str().unwrap().into()),
        ("workerid", worker["workerid"].to_string()),
        ("name", "w1".into()),
        ("masterid", master["masterid"].to_string()),
        ("schedulerid", scheduler["schedulerid"].to_string()),
        ("schedulername", "force".into()),
        ("reportername", "hook".into()),
        ("projectname", "project".into()),
        ("codebasename", "codebase".into()),
        ("revision", "abc123".into()),
    ]
    .into_iter()
    .collect();

    // The spec is the router's table: Buildbot's every pattern, typed as Buildbot types it.
    let spec = m.get("/api/v2/application.spec");
    let specs = spec["specs"].as_array().unwrap();
    let typed: BTreeMap<&str, &Value> = specs
        .iter()
        .map(|s| (s["path"].as_str().unwrap(), s))
        .collect();
    let buildbot = buildbot_patterns();
    assert_eq!(buildbot.len(), 138);
    for (pattern, ty) in &buildbot {
        let s = typed
            .get(pattern.as_str())
            .unwrap_or_else(|| panic!("the spec lacks Buildbot's {pattern}"));
        assert_eq!(s["type"], ty.as_str(), "{pattern}");
    }
    assert_eq!(spec["meta"]["total"], specs.len());

    // Every path, filled with this build's ids.
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    let mut missing = std::collections::BTreeSet::new();
    for s in specs {
        let pattern = s["path"].as_str().unwrap();
        let path = fill(pattern, &ids);
        let (status, body) = m.get_status(&path);
        let from_buildbot = buildbot.iter().any(|(p, _)| p == pattern);
        if status != 200 {
            assert_eq!(status, 404, "{path}: {body}");
            // moonbot's own paths all answer, but an artifact's (this
            // build uploaded none).
            if !from_buildbot && !pattern.contains("n:artifactid") {
                panic!("moonbot's own {path} answered {status}: {body}");
            }
            refused.push(pattern.to_string());
            continue;
        }
        if from_buildbot {
            answered.push(pattern.to_string());
        }
        if pattern.ends_with("/raw") || pattern.ends_with("/raw_inline") {
            assert!(body.contains("hello\nworld\n"), "{path}: {body}");
            continue;
        }
        let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        let plural = s["plural"].as_str().unwrap();
        let items = answer[plural]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no '{plural}': {answer}"));
        assert_eq!(answer["meta"]["total"], items.len(), "{path}");
        for item in items {
            for field in s["type_spec"]["fields"].as_array().into_iter().flatten() {
                let name = field["name"].as_str().unwrap();
                if item.get(name).is_none() {
                    missing.insert(format!("{}.{name} ({path})", s["type"]));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "Buildbot's fields missing: {missing:#?}"
    );
    eprintln!(
        "{} of 138 Buildbot paths answered; 404: {refused:?}",
        answered.len()
    );
    assert!(
        answered.len() >= 117,
        "only {} of Buildbot's 138 paths answered (Buildbot: 117); 404: {refused:?}",
        answered.len()
    );

    // Nested forms answer what the flat ones do.
    let flat_build = m.get(&format!("/api/v2/builds/{buildid}"))["builds"].clone();
    let number = build["number"].as_i64().unwrap();
    assert_eq!(
        m.get(&format!("/api/v2/builders/unit/builds/{number}"))["builds"],
        flat_build
    );
    assert_eq!(
        m.get("/api/v2/builders/unit")["builders"][0]["builderid"],
        builderid
    );
    let contents = m.get(&format!(
        "/api/v2/builders/{builderid}/builds/{number}/steps/hello/logs/stdio/contents"
    ));
    assert!(
        contents["logchunks"][0]["content"]
            .as_str()
            .unwrap()
            .contains("hello"),
        "{contents}"
    );
    let url = format!(
        "{}/api/v2/builds/{buildid}/steps/hello/logs/stdio/raw_inline",
        m.www
    );
    let inline = ureq::get(&url).call().unwrap();
    assert!(inline.content_type().starts_with("text/plain"));
    assert!(inline.header("content-disposition").is_none());
    let url = format!("{}/api/v2/logs/{}/raw", m.www, log["logid"]);
    let raw = ureq::get(&url).call().unwrap();
    assert!(
        raw.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    // Properties as Buildbot's list.
    let props = m.get(&format!("/api/v2/builds/{buildid}/property_list"))["_properties"].clone();
    assert!(
        props
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "flavour" && p["value"] == "plain" && p["source"].is_string()),
        "{props}"
    );
    // Missing objects are 404; missing entities' lists are empty.
    assert_eq!(m.get_status("/api/v2/builds/999999").0, 404);
    assert_eq!(m.get_status("/api/v2/builders/nosuch/builds").0, 404);
    assert_eq!(m.get_status("/api/v2/projects/1").0, 404);
    assert_eq!(
        m.get("/api/v2/projects"),
        json!({"projects": [], "meta": {"total": 0}})
    );

    // Query options: field, __contains, order, limit, property.
    let only = m.get("/api/v2/builds?field=buildid&field=results");
    let keys: Vec<&String> = only["builds"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["buildid", "results"]);
    assert_eq!(m.get_status("/api/v2/builds?field=nosuch").0, 400);
    let steps_of = format!("/api/v2/builds/{buildid}/steps");
    let found = m.get(&format!("{steps_of}?name__contains=ell"));
    assert_eq!(found["steps"][0]["name"], "hello", "{found}");
    assert_eq!(found["meta"]["total"], 1, "{found}");
    assert_eq!(
        m.get(&format!("{steps_of}?name__contains=zzz"))["meta"]["total"],
        0
    );
    let ordered = m.get(&format!(
        "/api/v2/builds/{buildid}/steps?order=-number&limit=1"
    ));
    assert_eq!(ordered["steps"][0]["name"], "slow");
    let with_one = m.get(&format!("/api/v2/builds/{buildid}?property=flavour"));
    let names: Vec<&String> = with_one["builds"][0]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(names, ["flavour"]);

    // Controls by Buildbot's nested paths: rebuild by builder name and number.
    let (status, answer) = m.rpc(
        &format!("/api/v2/builders/unit/builds/{number}"),
        "rebuild",
        json!({}),
    );
    assert_eq!(status, 200, "{answer}");
    let rebuilt = answer["result"][1].as_i64().unwrap();
    m.wait_request_done(rebuilt, LONG);
    let (_, answer) = m.rpc("/api/v2/builds/1", "fly", json!({}));
    assert_eq!(answer["error"]["code"], -32601, "{answer}");

    // A scheduler disabled: force is refused, and it stays disabled across a restart.
    let schedulerid = scheduler["schedulerid"].as_i64().unwrap();
    let (status, answer) = m.rpc(
        &format!("/api/v2/schedulers/{schedulerid}"),
        "enable",
        json!({"enabled": false}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["enabled"], false, "{answer}");
    m.pin_quic_port(CONFIG);
    m.stop(true);
    m.start();
    assert_eq!(
        m.get(&format!("/api/v2/schedulers/{schedulerid}"))["schedulers"][0]["enabled"],
        false
    );
    assert_eq!(
        m.get("/api/v2/forceschedulers/force")["forceschedulers"][0]["enabled"],
        false
    );
    let (_, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": builderid}),
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{answer}"
    );
    let (_, answer) = m.rpc(
        &format!(
            "/api/v2/masters/{}/schedulers/{schedulerid}",
            master["masterid"]
        ),
        "enable",
        json!({"enabled": true}),
    );
    assert_eq!(answer["result"]["enabled"], true, "{answer}");
    m.wait_connected("w1");

    // Server-sent events: a handshake, then the events of the path listened to.
    let (stream, events) = sse_listen(&m, "builds/*/finished");
    let brid = m.force(builderid);
    let done = m.wait_request_done(brid, LONG);
    let event = events.recv_timeout(LONG).expect("an event");
    assert_eq!(
        event["key"],
        json!(["builds", done["buildid"].to_string(), "finished"]),
        "{event}"
    );
    assert_eq!(event["message"]["buildid"], done["buildid"]);
    // The stream takes one more path, and lets the first go.
    assert_eq!(
        m.get_status(&format!("/sse/add/{stream}/buildrequests/*/complete")),
        (200, "ok".into())
    );
    assert_eq!(
        m.get_status(&format!("/sse/remove/{stream}/builds/*/finished")),
        (200, "ok".into())
    );
    assert_eq!(m.get_status("/sse/add/no-such-stream/builds/*/new").0, 400);
    let brid = m.force(builderid);
    m.wait_request_done(brid, LONG);
    let event = events.recv_timeout(LONG).expect("an event");
    assert_eq!(
        event["key"],
        json!(["buildrequests", brid.to_string(), "complete"]),
        "only the path added: {event}"
    );

    // Worker controls by name: pause, then stop (after its running build;
    // the worker process exits), and kill.
    let (status, answer) = m.rpc("/api/v2/workers/w1", "pause", json!({}));
    assert_eq!(
        (status, &answer["result"]["paused"]),
        (200, &json!(true)),
        "{answer}"
    );
    m.rpc("/api/v2/workers/w1", "unpause", json!({}));
    let brid = m.force(m.builderid("long"));
    m.wait_for("the build to run", LONG, || {
        (m.builds_of(brid).first()?["complete"] == false).then_some(())
    });
    let (status, answer) = m.rpc("/api/v2/workers/w1", "stop", json!({}));
    assert_eq!(status, 200, "{answer}");
    m.wait_for("the API to show the worker stopping", LONG, || {
        (m.get("/api/v2/workers/w1")["workers"][0]["graceful"] == true).then_some(())
    });
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 0, "the running build finished: {done}");
    let pid = w1.pid().unwrap() as i32;
    m.wait_for("the stopped worker to exit", LONG, || {
        (!process_alive(pid)).then_some(())
    });
    w1.start();
    m.wait_connected("w1");
    let (status, answer) = m.rpc(
        &format!("/api/v2/builders/{builderid}/workers/w1"),
        "kill",
        json!({}),
    );
    assert_eq!(status, 200, "{answer}");
    let pid = w1.pid().unwrap() as i32;
    m.wait_for("the killed worker to exit", LONG, || {
        (!process_alive(pid)).then_some(())
    });
    m.wait_for("the API to show it gone", LONG, || {
        m.get("/api/v2/workers/w1")["workers"][0]["connected_to"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
}

/// Listen at `/sse/listen/<path>`; the stream's id, and the events as they arrive.
fn sse_listen(m: &TestMaster, path: &str) -> (String, std::sync::mpsc::Receiver<Value>) {
    let addr = m.www.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /sse/listen/{path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut handshake = false;
    // Headers, then the handshake event.
    let id = loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("content-type:") || line.starts_with("Content-Type:") {
            assert!(line.contains("text/event-stream"), "{line}");
        }
        if line.trim_end().ends_with("event: handshake") {
            handshake = true;
        }
        if handshake && let Some(id) = line.trim_end().split("data: ").nth(1) {
            break id.to_string();
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut is_event = false;
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let text = line.trim_end();
            if text.ends_with("event: event") {
                is_event = true;
            } else if let Some(data) = text.split("data: ").nth(1).filter(|_| is_event) {
                if tx.send(serde_json::from_str(data).unwrap()).is_err() {
                    return;
                }
                is_event = false;
            }
            line.clear();
        }
    });
    (id, rx)
}
