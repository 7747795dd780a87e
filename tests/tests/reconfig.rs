//! Live reconfiguration end to end: a real master and workers, master.lua
//! rewritten on disk, reloads by file watch, `SIGHUP` and `moonbot reconfig`,
//! checked through the REST API, on SQLite and PostgreSQL.

use moonbot_tests::{Backend, LONG, TestMaster, TestWorker, run};
use moonbot_worker::signal::SIGHUP;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

moonbot_tests::on_both_databases!(
    builders_and_workers_follow_master_lua,
    a_reload_storm_loses_and_repeats_nothing,
    a_running_build_keeps_its_lua_functions,
    runaway_lua_is_refused_and_ends_its_step,
);

/// A master.lua or a build-time function that loops or allocates without
/// end runs into Lua's limits: the reload is refused while the running
/// configuration keeps serving, the step ends EXCEPTION, and the master stops.
fn runaway_lua_is_refused_and_ends_its_step(backend: &Backend) {
    let valid = r#"local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  reconfig = { watch = false },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "spin", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "forever", command = function(props)
        while true do end
      end },
      mb.steps.shell { name = "after", command = "echo never" },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "spin" } } },
}
"#;
    let mut m = TestMaster::create(backend, valid);
    m.start();
    let _w = start_worker(&m, "w1");

    // The function spends its budget: the step ends EXCEPTION, saying why.
    let build = m.wait_request_done(m.force(m.builderid("spin")), LONG);
    assert_eq!(build["results"], 4, "{build}");
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    assert_eq!(steps[0]["results"], 4, "{steps:?}");
    let log = m.stdio_of(steps[0]["stepid"].as_i64().unwrap());
    assert!(log.contains("budget"), "{log}");

    // A master.lua that loops, then one that allocates without end: each
    // reload is refused with the reason, and the running config stays.
    let endless = valid.replace(
        "return {",
        "local n = 0
while true do n = n + 1 end
return {",
    );
    m.write_config(&endless);
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("master.lua:3") && err.contains("budget"),
        "{err}"
    );
    let hungry = valid.replace(
        "return {",
        "local t = {}
for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end
return {",
    );
    m.write_config(&hungry);
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("memory limit"), "{err}");
    assert_eq!(names(&m, "builders"), set(&["spin"]));
    let build = m.wait_request_done(m.force(m.builderid("spin")), LONG);
    assert_eq!(
        build["results"], 4,
        "the old config still runs builds: {build}"
    );
    // `checkconfig` of the looping file ends with the error too.
    m.write_config(&endless);
    let (code, out, err) = run("moonbot", &["checkconfig", m.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("budget"), "{out}{err}");
    m.stop(false);
}

/// master.lua with `@WORKERS@`, `@BUILDERS@`, `@SETTINGS@` to fill in; builders
/// may also come from `more.lua`, which master.lua requires. The force
/// scheduler covers every builder.
const TEMPLATE: &str = r#"local mb = require "moonbot"
local more = require "more"
local builders = { @BUILDERS@ }
for _, b in ipairs(more) do builders[#builders + 1] = b end
local forced = {}
for _, b in ipairs(builders) do forced[#forced + 1] = b.name end
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 5 } },
  db = { url = "@DB@" },
  reconfig = { debounce_ms = 250, @SETTINGS@ },
  workers = { @WORKERS@ },
  builders = builders,
  schedulers = { mb.schedulers.force { name = "force", builders = forced } },
}
"#;

struct Layout<'a> {
    workers: &'a str,
    builders: &'a str,
    settings: &'a str,
}

fn master_lua(l: &Layout) -> String {
    TEMPLATE
        .replace("@WORKERS@", l.workers)
        .replace("@BUILDERS@", l.builders)
        .replace("@SETTINGS@", l.settings)
}

fn write_more(m: &TestMaster, lua: &str) {
    std::fs::write(m.dir.join("more.lua"), lua).unwrap();
}

const NO_MORE: &str = "return {}\n";

fn last_reload(m: &TestMaster) -> Value {
    m.get("/api/v2/config/reloads?limit=1")["reloads"][0].clone()
}

/// Wait for a reload newer than `after` and return it.
fn wait_reload(m: &TestMaster, after: &Value) -> Value {
    let after = after["reloadid"].as_i64().unwrap_or(0);
    m.wait_for("a reload", LONG, || {
        let last = last_reload(m);
        (last["reloadid"].as_i64()? > after).then_some(last)
    })
}

fn names(m: &TestMaster, collection: &str) -> BTreeSet<String> {
    m.get(&format!("/api/v2/{collection}"))[collection]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn start_worker(m: &TestMaster, name: &str) -> TestWorker {
    let mut w = m.make_worker(name, &m.dir.clone());
    w.start();
    m.wait_connected(name);
    w
}

/// `moonbot reconfig DIR` → (exit code, stdout, stderr).
fn reconfig(m: &TestMaster) -> (i32, String, String) {
    run("moonbot", &["reconfig", m.path()])
}

fn builders_and_workers_follow_master_lua(backend: &Backend) {
    let mut layout = Layout {
        workers: r#"mb.worker { name = "w1" }, mb.worker { name = "w2" }"#,
        builders: r#"mb.builder { name = "b1", workernames = { "w1" }, steps = {
            mb.steps.shell { command = "echo one" } } }"#,
        settings: "",
    };
    let mut m = TestMaster::create(backend, &master_lua(&layout));
    write_more(&m, NO_MORE);
    m.start();
    let _w1 = start_worker(&m, "w1");
    let w2 = start_worker(&m, "w2");
    let startup = last_reload(&m);
    assert_eq!(startup["trigger"], "startup");
    assert_eq!(startup["changes"]["builders"]["added"][0], "b1");
    let config = &m.get("/api/v2/config")["config"][0];
    assert_eq!(
        config["files"],
        serde_json::json!(["master.lua", "more.lua"])
    );

    // 1. Saving a file master.lua requires adds a builder; the new builder runs.
    // Saved the way editors do (write a temporary file, rename it over the
    // old one, touch it again): one reload.
    let tmp = m.dir.join(".more.lua.swp");
    std::fs::write(
        &tmp,
        r#"local mb = require "moonbot"
        return { mb.builder { name = "b2", workernames = { "w2" }, steps = {
            mb.steps.shell { command = "sleep 4; echo two" } } } }"#,
    )
    .unwrap();
    std::fs::rename(&tmp, m.dir.join("more.lua")).unwrap();
    let more = std::fs::File::options()
        .append(true)
        .open(m.dir.join("more.lua"))
        .unwrap();
    more.set_len(more.metadata().unwrap().len()).unwrap();
    drop(more);
    let r = wait_reload(&m, &startup);
    assert_eq!(r["trigger"], "file");
    assert_eq!(r["success"], true, "{r}");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        last_reload(&m)["reloadid"],
        r["reloadid"],
        "one save, one reload"
    );
    assert_eq!(names(&m, "builders"), set(&["b1", "b2"]));
    let b2 = m.builderid("b2");
    let brid = m.force(b2);
    let build = m.wait_request_done(brid, LONG);
    assert_eq!(build["results"], 0, "{build}");

    // 2. With the watcher off, a saved file changes nothing until SIGHUP.
    layout.settings = "watch = false";
    m.write_config(&master_lua(&layout));
    let r = wait_reload(&m, &r);
    assert_eq!(r["changes"]["settings"][0], "reconfig", "{r}");
    // Remove worker w2 and builder b2 while a build runs on w2: the build
    // finishes, then w2 is disconnected and refused from then on.
    let running_brid = m.force(b2);
    m.wait_for("the build on w2 to start", LONG, || {
        (!m.builds_of(running_brid).is_empty()).then_some(())
    });
    layout.workers = r#"mb.worker { name = "w1" }"#;
    write_more(&m, NO_MORE);
    m.write_config(&master_lua(&layout));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(last_reload(&m)["reloadid"], r["reloadid"], "watcher is off");
    assert_eq!(names(&m, "builders"), set(&["b1", "b2"]));
    m.signal(SIGHUP);
    let r = wait_reload(&m, &r);
    assert_eq!(r["trigger"], "signal");
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["changes"]["workers"]["removed"][0], "w2");
    assert_eq!(r["changes"]["builders"]["removed"][0], "b2");
    assert_eq!(names(&m, "builders"), set(&["b1"]));
    assert_eq!(names(&m, "workers"), set(&["w1"]));
    let build = m.wait_request_done(running_brid, LONG);
    assert_eq!(build["results"], 0, "the running build finishes: {build}");
    m.wait_for("w2 to be dropped", LONG, || {
        let log = w2.log();
        log.contains("worker 'w2' was removed from the master's configuration")
            .then_some(())
    });
    m.wait_for("w2 to be refused on reconnect", LONG, || {
        w2.log()
            .contains("worker 'w2' is not in this master's configuration")
            .then_some(())
    });

    // 3. A request for a removed builder waits in the database and runs when
    // the builder comes back (with the same id, so history is kept).
    layout.builders = r#"mb.builder { name = "b1", workernames = { "w1" }, steps = {
            mb.steps.shell { command = "echo one" } } },
        mb.builder { name = "b3", workernames = { "w3" }, steps = {
            mb.steps.shell { command = "echo three" } } }"#;
    layout.workers = r#"mb.worker { name = "w1" }, mb.worker { name = "w3" }"#;
    m.write_config(&master_lua(&layout));
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("+ builder b3") && out.contains("+ worker w3"),
        "{out}"
    );
    let b3 = m.builderid("b3");
    let waiting = m.force(b3); // w3 never connects: the request stays pending
    layout.builders = r#"mb.builder { name = "b1", workernames = { "w1" }, steps = {
            mb.steps.shell { command = "echo one" } } }"#;
    m.write_config(&master_lua(&layout));
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("- builder b3"), "{out}");
    let br = &m.get(&format!("/api/v2/buildrequests/{waiting}"))["buildrequests"][0];
    assert_eq!(br["complete"], false, "{br}");
    layout.builders = r#"mb.builder { name = "b1", workernames = { "w1" }, steps = {
            mb.steps.shell { command = "echo one" } } },
        mb.builder { name = "b3", workernames = { "w1" }, steps = {
            mb.steps.shell { command = "echo three" } } }"#;
    m.write_config(&master_lua(&layout));
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(m.builderid("b3"), b3);
    let build = m.wait_request_done(waiting, LONG);
    assert_eq!(build["results"], 0, "{build}");

    // 4. `checkconfig --diff` shows a change without applying it.
    let before = last_reload(&m);
    layout.workers = r#"mb.worker { name = "w1", max_builds = 1 }, mb.worker { name = "w3" }"#;
    m.write_config(&master_lua(&layout));
    let (code, out, err) = run("moonbot", &["checkconfig", m.path(), "--diff"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("~ worker w1"), "{out}");
    assert_eq!(last_reload(&m)["reloadid"], before["reloadid"]);

    // 5. A setting the running master cannot change refuses the whole reload.
    let broken = master_lua(&layout)
        .replace(
            r#"db = { url = "@DB@" },"#,
            r#"db = { url = "sqlite:other.sqlite" },"#,
        )
        .replace(
            r#"mb.worker { name = "w3" }"#,
            r#"mb.worker { name = "w4" }"#,
        )
        .replace(r#"{ "w3" }"#, r#"{ "w4" }"#);
    m.write_config(&broken);
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("db.url cannot change while the master runs"),
        "{err}"
    );
    assert_eq!(names(&m, "workers"), set(&["w1", "w3"]));
    let config = &m.get("/api/v2/config")["config"][0];
    assert_eq!(config["last_reload"]["success"], false);
    let home = String::from_utf8(m.get_bytes("/")).unwrap();
    assert!(home.contains(r#"id="reload-failed""#), "{home}");
    assert!(home.contains("db.url cannot change"), "{home}");
    // Fixed, the banner goes.
    m.write_config(&master_lua(&layout));
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 0, "{out}{err}");
    let home = String::from_utf8(m.get_bytes("/")).unwrap();
    assert!(!home.contains("reload-failed"), "{home}");
    m.stop(false);
}

/// A config whose builders pass or fail as their names say, plus an extra
/// builder that changes on every valid reload.
fn storm_config(extra: usize) -> String {
    format!(
        r#"local mb = require "moonbot"
return {{
  www = {{ port = 0, bind = "127.0.0.1" }},
  protocols = {{ quic = {{ port = @QUIC_PORT@, bind = "127.0.0.1" }} }},
  db = {{ url = "@DB@" }},
  reconfig = {{ watch = false }}, collapse_requests = false, -- each request is one build
  workers = {{ mb.worker {{ name = "w1", max_builds = 3 }} }},
  builders = {{
    mb.builder {{ name = "pass", workernames = {{ "w1" }}, steps = {{
      mb.steps.shell {{ command = "sleep 1; echo ok" }} }} }},
    mb.builder {{ name = "fail", workernames = {{ "w1" }}, steps = {{
      mb.steps.shell {{ command = "sleep 1; exit 1" }} }} }},
    mb.builder {{ name = "extra-{extra}", description = "generation {extra}", workernames = {{ "w1" }},
      steps = {{ mb.steps.shell {{ command = "true" }} }} }},
  }},
  schedulers = {{ mb.schedulers.force {{ name = "force", builders = {{ "pass", "fail" }} }} }},
}}
"#
    )
}

/// Broken variants of a valid config, each with the place its error must name.
fn broken_config(valid: &str, kind: usize) -> (String, &'static str) {
    match kind % 4 {
        // builder "pass" loses its closing brace: Lua stops at the next line
        0 => (
            valid.replace(
                r#"command = "sleep 1; echo ok" } } },"#,
                r#"command = "sleep 1; echo ok" } } "#,
            ),
            "master.lua:11: '}' expected (to close '{' at line 9) near 'mb'",
        ),
        1 => (
            valid.replace(
                r#"name = "fail", workernames = { "w1" }"#,
                r#"name = "fail", workernames = { "nobody" }"#,
            ),
            "master.lua:11: builder 'fail' names unknown worker 'nobody'",
        ),
        2 => (
            valid.replace(r#"name = "fail""#, r#"name = "pass""#),
            "master.lua:11: duplicate builder 'pass'",
        ),
        _ => (
            valid.replace("return {", "local broken = nil\nreturn broken.field, {"),
            "master.lua:3: attempt to index a nil value",
        ),
    }
}

fn a_reload_storm_loses_and_repeats_nothing(backend: &Backend) {
    let mut m = TestMaster::create(backend, &storm_config(0));
    m.start();
    let _w = start_worker(&m, "w1");
    let (pass, fail) = (m.builderid("pass"), m.builderid("fail"));
    let mut requests = Vec::new();
    for i in 0..20 {
        let (builder, expected) = if i % 2 == 0 { (pass, 0) } else { (fail, 2) };
        requests.push((m.force(builder), expected));
    }

    let mut last_valid = 0;
    for round in 0..30 {
        let valid = storm_config(round);
        if round % 2 == 0 {
            m.write_config(&valid);
            // Alternate the two ways a person asks for a reload.
            if round % 4 == 0 {
                let (code, out, err) = reconfig(&m);
                assert_eq!(code, 0, "round {round}: {out}{err}");
            } else {
                let before = last_reload(&m);
                m.signal(SIGHUP);
                assert_eq!(wait_reload(&m, &before)["success"], true);
            }
            last_valid = round;
        } else {
            let (broken, place) = broken_config(&valid, round / 2);
            m.write_config(&broken);
            let (code, out, err) = reconfig(&m);
            assert_eq!(code, 1, "round {round}: a broken config was applied: {out}");
            assert!(
                err.contains(place),
                "round {round}: expected '{place}' in:\n{err}"
            );
        }
        let expected = set(&["pass", "fail", &format!("extra-{last_valid}")]);
        assert_eq!(names(&m, "builders"), expected, "round {round}");
    }

    for (brid, expected) in requests {
        let build = m.wait_request_done(brid, LONG);
        assert_eq!(build["results"], expected, "request {brid}: {build}");
        assert_eq!(m.builds_of(brid).len(), 1, "request {brid} ran twice");
    }
    let builds = m.get("/api/v2/builds");
    assert_eq!(builds["meta"]["total"], 20, "{builds}");
    m.stop(false);
}

const GENERATION: &str = r#"local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "gen", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "wait", command = "while [ ! -e @TMP@/go ]; do sleep 0.1; done" },
      mb.steps.shell { name = "render", command = function(props)
        return { "echo", "rendered by @NAME@ for build " .. props.buildnumber }
      end },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "gen" } } },
}
"#;

fn a_running_build_keeps_its_lua_functions(backend: &Backend) {
    let mut m = TestMaster::create(backend, &GENERATION.replace("@NAME@", "generation one"));
    m.start();
    let _w = start_worker(&m, "w1");
    let gen_id = m.builderid("gen");
    let first = m.force(gen_id);
    let build = m.wait_for("the first build to wait", LONG, || {
        let build = m.builds_of(first).pop()?;
        let steps = m.steps(build["buildid"].as_i64()?);
        (steps.first()?["started_at"].is_number()).then_some(build)
    });

    // The function changes while the build waits in its first step.
    m.write_config(&GENERATION.replace("@NAME@", "generation two"));
    let (code, out, err) = reconfig(&m);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("~ builder gen"), "{out}");
    std::fs::write(m.tmp.path().join("go"), "").unwrap();

    let done = m.wait_request_done(first, LONG);
    assert_eq!(done["buildid"], build["buildid"]);
    assert_eq!(done["results"], 0, "{done}");
    let steps = m.steps(done["buildid"].as_i64().unwrap());
    let log = m.stdio_of(steps[1]["stepid"].as_i64().unwrap());
    assert!(
        log.contains("rendered by generation one for build 1"),
        "{log}"
    );

    let second = m.wait_request_done(m.force(gen_id), LONG);
    let steps = m.steps(second["buildid"].as_i64().unwrap());
    let log = m.stdio_of(steps[1]["stepid"].as_i64().unwrap());
    assert!(
        log.contains("rendered by generation two for build 2"),
        "{log}"
    );
    m.stop(false);
}
