//! Issue 15: step arguments rendered from the build (properties in their
//! layers, `mb.interpolate` with Buildbot's syntax, `mb.property`, Lua
//! functions), secrets kept out of every log and API answer, and the step
//! options `do_step_if`, `hide_step_if`, `description_done` and `decode_rc`,
//! on a real worker.

use moonbot_tests::{Backend, LONG, TestMaster, run};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

const CONFIG: &str = r#"
local mb = require "moonbot"
local on_linux = true
return {
  title = "renderables",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  properties = { project_name = "moon", release = "1.2", flag = false },
  secrets = { mb.secrets.files { dir = "secrets" } },
  workers = { mb.worker { name = "w1", properties = { flavour = "fast" } } },
  builders = {
    mb.builder { name = "render", workernames = { "w1" }, properties = { release = "2.0" }, steps = {
      mb.steps.shell { name = "argv",
        command = {
          "echo",
          mb.interpolate("%(prop:project_name)s-%(prop:release)s"),
          mb.property("missing", "dflt"),
          mb.interpolate("%(src::branch:-nobranch)s %(worker:os)s %(kw:extra)s", { extra = mb.property "flavour" }),
          mb.interpolate("%(prop:flag:#?|on|off)s %(prop:flag:?|set|unset)s %(prop:nope:+x)s 100%%"),
          function(props) return { "from-lua", props.buildername } end,
        },
        env = { GREETING = mb.interpolate("hi %(prop:workername)s") },
        workdir = mb.interpolate("wd-%(prop:buildnumber)s"),
        description = mb.interpolate("echoing for %(prop:buildername)s"),
        description_done = mb.interpolate("echoed %(prop:release)s"),
      },
      mb.steps.shell { name = "env", command = "echo \"greeting=$GREETING\"; pwd",
        env = { GREETING = mb.interpolate("hi %(prop:workername)s") },
        workdir = mb.interpolate("wd-%(prop:buildnumber)s") },
      on_linux and mb.steps.shell { name = "conditional", command = "echo kept" } or nil,
      (not on_linux) and mb.steps.shell { name = "dropped", command = "echo dropped" },
      mb.steps.shell { name = "skipped", command = "echo never", do_step_if = false },
      mb.steps.shell { name = "by-function", command = "echo ran-by-function",
        do_step_if = function(props) return props.release == "2.0" end,
        hide_step_if = function(result, props) return result == mb.results.SUCCESS end },
      mb.steps.shell { name = "warn-on-5", command = "exit 5",
        decode_rc = { [0] = mb.results.SUCCESS, [5] = mb.results.WARNINGS } },
      mb.steps.shell { name = "secret",
        env = { T = mb.secret "token", K = mb.secret "key" },
        command = "printf '%s' \"$(echo $T | cut -c1-5)\"; sleep 0.5; echo \"$(echo $T | cut -c6-)\"; printf 'key:\\n%s\\n' \"$K\"",
      },
      mb.steps.shell { name = "secret-in-command",
        command = mb.interpolate("echo direct=%(secret:token)s") },
      mb.steps.shell { name = "missing-secret",
        command = mb.interpolate("echo %(secret:nope)s"), always_run = true },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "render" }, codebases = { "" } } },
}
"#;

moonbot_tests::on_both_databases!(
    steps_render_from_the_build_and_keep_secrets_out,
    bad_templates_and_secrets_fail_checkconfig,
    steps_set_properties_run_sequences_and_run_on_the_master,
    shell_options_shape_input_output_and_interrupts,
);

const SHELL_OPTIONS: &str = r#"
local mb = require "moonbot"
local TERMINAL = "if [ -t 1 ]; then echo on-a-terminal; else echo no-terminal; fi"
return {
  title = "shell options",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "io", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "quiet-out", command = "echo visible-err >&2; echo hidden-out", want_stdout = false },
      mb.steps.shell { name = "quiet-err", command = "echo hidden-err >&2; echo visible-out", want_stderr = false },
      mb.steps.shell { name = "stdin", command = "cat; echo", initial_stdin = mb.interpolate("fed %(prop:buildername)s") },
      mb.steps.shell { name = "pty", command = TERMINAL .. "; echo err-too >&2", use_pty = true },
      mb.steps.shell { name = "no-pty", command = TERMINAL },
      mb.steps.shell { name = "warnings", warning_pattern = "warning:",
        command = "echo 'a.c:1: warning: unused'; echo fine; echo 'b.c:2: warning: shadowed' >&2" },
      mb.steps.shell { name = "too-many", warning_pattern = "^warning", max_warnings = 1,
        command = "echo 'warning 1'; echo 'warning 2'" },
      mb.steps.shell { name = "log-files", command = "mkdir -p out; echo 'line one' > out/test.log",
        log_files = { ["test.log"] = "out/test.log", absent = "out/none.log" } },
    } },
    mb.builder { name = "follow", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "follow", log_files = { progress = "progress.txt" },
        command = "echo early > progress.txt; i=0; while [ ! -e go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo late >> progress.txt" },
    } },
    mb.builder { name = "trap", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "trap", interrupt_signal = "INT", sigterm_time = 1,
        command = "trap 'echo got-INT; exit 7' INT; echo ready; sleep 30 & wait" },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "io", "follow", "trap" } } },
}
"#;

/// want_stdout / want_stderr, initial_stdin, use_pty, warning_pattern with
/// max_warnings, and interrupt_signal, on a real worker.
fn shell_options_shape_input_output_and_interrupts(backend: &Backend) {
    let (m, w) = TestMaster::started_with_worker(backend, SHELL_OPTIONS, "w1");
    let build = m.wait_request_done(m.force(m.builderid("io")), LONG);
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let step = |name: &str| -> Value {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    let log = |name: &str| m.stdio_of(step(name)["stepid"].as_i64().unwrap());
    let out = log("quiet-out");
    // The command line shows in the header; its output is what counts.
    assert!(
        out.contains("\nvisible-err\n") && !out.contains("\nhidden-out\n"),
        "{out}"
    );
    let err = log("quiet-err");
    assert!(
        err.contains("\nvisible-out\n") && !err.contains("\nhidden-err\n"),
        "{err}"
    );
    assert!(log("stdin").contains("\nfed io\n"), "{}", log("stdin"));
    let pty = log("pty");
    assert!(
        pty.contains("\non-a-terminal") && pty.contains("\nerr-too"),
        "{pty}"
    );
    assert!(log("no-pty").contains("\nno-terminal\n"));

    assert_eq!(step("warnings")["results"], 1);
    let stepid = step("warnings")["stepid"].as_i64().unwrap();
    let logs = m.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"].clone();
    let warnings = logs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "warnings")
        .unwrap_or_else(|| panic!("no warnings log: {logs}"))["logid"]
        .as_i64()
        .unwrap();
    let text = String::from_utf8(m.get_bytes(&format!("/api/v2/logs/{warnings}/raw"))).unwrap();
    assert_eq!(text, "a.c:1: warning: unused\nb.c:2: warning: shadowed\n");
    assert!(log("warnings").contains("2 warning(s)"));
    assert_eq!(step("too-many")["results"], 2);
    let stepid = step("log-files")["stepid"].as_i64().unwrap();
    let logs = m.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"].clone();
    let names: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stdio", "absent", "test.log"]);
    let raw = |logid: &Value| {
        String::from_utf8(m.get_bytes(&format!("/api/v2/logs/{}/raw", logid.as_i64().unwrap())))
            .unwrap()
    };
    assert_eq!(raw(&logs[2]["logid"]), "line one\n");
    assert_eq!(raw(&logs[1]["logid"]), "", "a file that never showed up");
    assert_eq!(step("log-files")["results"], 0);

    // log_files are followed while the command runs: the command waits
    // until the test has seen its first line in the log.
    let brid = m.force(m.builderid("follow"));
    let buildid = m.wait_for("the follow build to start", LONG, || {
        m.builds_of(brid)
            .first()
            .and_then(|b| b["buildid"].as_i64())
    });
    let progress = |m: &TestMaster| -> Option<String> {
        let stepid = m.steps(buildid).first()?["stepid"].as_i64()?;
        let logs = m.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"].clone();
        let logid = logs.as_array()?.iter().find(|l| l["name"] == "progress")?["logid"].as_i64()?;
        String::from_utf8(m.get_bytes(&format!("/api/v2/logs/{logid}/raw"))).ok()
    };
    m.wait_for("the followed file's first line", LONG, || {
        progress(&m).filter(|t| t == "early\n").map(|_| ())
    });
    std::fs::write(w.dir.join("builds/follow/build/go"), "").unwrap();
    let build = m.wait_request_done(brid, LONG);
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(progress(&m).unwrap(), "early\nlate\n");

    // Stopping the build sends the command's own signal, which it traps.
    let brid = m.force(m.builderid("trap"));
    let buildid = m.wait_for("the trap build to start", LONG, || {
        m.builds_of(brid)
            .first()
            .and_then(|b| b["buildid"].as_i64())
    });
    m.wait_for("the command to be ready", LONG, || {
        let steps = m.steps(buildid);
        let id = steps.first()?["stepid"].as_i64()?;
        m.stdio_of(id).contains("\nready\n").then_some(())
    });
    let (status, answer) = m.rpc(&format!("/api/v2/builds/{buildid}"), "stop", json!({}));
    assert_eq!(status, 200, "{answer}");
    let build = m.wait_request_done(brid, LONG);
    assert_eq!(build["results"], 6, "{build}");
    let trap = m.stdio_of(m.steps(buildid)[0]["stepid"].as_i64().unwrap());
    assert!(trap.contains("\ngot-INT\n"), "{trap}");
}

const PROPERTY_STEPS: &str = r#"
local mb = require "moonbot"
return {
  title = "property steps",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  allow_master_shell = true,
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "props", workernames = { "w1" }, steps = {
      mb.steps.set_property { property = "color", value = mb.interpolate("%(prop:buildername)s-blue") },
      mb.steps.set_properties { properties = { size = 3, shape = mb.property "color" } },
      mb.steps.set_property_from_command { command = "echo '  abc123  '", property = "got" },
      mb.steps.set_property_from_command { command = "echo one=1; echo two=2 >&2; exit 3",
        flunk_on_failure = false,
        extract_fn = function(rc, out, err)
          return { rc = rc, one = out:match("one=(%d)"), two = err:match("two=(%d)") }
        end },
      mb.steps.shell { name = "uses", command = { "echo",
        mb.interpolate("%(prop:color)s %(prop:size)s %(prop:shape)s [%(prop:got)s] %(prop:one)s%(prop:two)s rc=%(prop:rc)s") } },
      mb.steps.shell_sequence { name = "seq", commands = {
        { command = "echo first", log_name = "first" },
        { command = "echo soft-fail; exit 1", flunk_on_failure = false, warn_on_failure = true },
        { command = { "echo", "third", mb.property "color" }, log_name = "third" },
        { command = "echo halting; exit 2", halt_on_failure = true, log_name = "fourth" },
        { command = "echo never", log_name = "never" },
      } },
      mb.steps.master_shell { name = "on-master", always_run = true,
        command = "echo on-master; pwd; echo \"builder=$BUILDER\"",
        env = { BUILDER = mb.property "buildername" } },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "props" } } },
}
"#;

/// Steps that set properties for later ones, a shell sequence with a log
/// per command, and a command on the master.
fn steps_set_properties_run_sequences_and_run_on_the_master(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, PROPERTY_STEPS, "w1");
    let build = m.wait_request_done(m.force(m.builderid("props")), LONG);
    let buildid = build["buildid"].as_i64().unwrap();
    let steps = m.steps(buildid);
    let by_name = |name: &str| -> Value {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name} in {steps:?}"))
    };
    let log_named =
        |step: &str, log: &str| m.log_of(by_name(step)["stepid"].as_i64().unwrap(), log);

    // Each property with the step that set it as its source.
    let props = &m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0];
    assert_eq!(props["color"], json!(["props-blue", "set color"]));
    assert_eq!(props["size"], json!([3, "set_properties"]));
    assert_eq!(props["shape"], json!(["props-blue", "set_properties"]));
    assert_eq!(props["got"], json!(["abc123", "set_property_from_command"]));
    assert_eq!(props["rc"], json!([3, "set_property_from_command_1"]));
    assert_eq!(by_name("set_property_from_command_1")["results"], 2);
    let uses = log_named("uses", "stdio");
    assert!(
        uses.contains("\nprops-blue 3 props-blue [abc123] 12 rc=3\n"),
        "{uses}"
    );

    // The sequence: a log per named command, the soft failure a warning,
    // the halting one ends it.
    let seq = by_name("seq");
    assert_eq!(seq["results"], 2, "{seq}");
    let stepid = seq["stepid"].as_i64().unwrap();
    let names: Vec<String> = m.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["stdio", "first", "third", "fourth"]);
    assert!(log_named("seq", "first").contains("\nfirst\n"));
    assert!(log_named("seq", "stdio").contains("\nsoft-fail\n"));
    assert!(log_named("seq", "third").contains("\nthird props-blue\n"));
    assert!(log_named("seq", "fourth").contains("exit code 2"));
    assert_eq!(build["results"], 2);
    assert_eq!(build["state_string"], "failed seq");

    // On the master, in its directory, after the failure (always_run).
    let on_master = log_named("on-master", "stdio");
    assert_eq!(by_name("on-master")["results"], 0, "{on_master}");
    assert!(on_master.contains("\non-master\n"), "{on_master}");
    assert!(
        on_master.contains(&format!("\n{}\n", m.path())),
        "{on_master}"
    );
    assert!(on_master.contains("\nbuilder=props\n"), "{on_master}");

    // Without allow_master_shell, checkconfig refuses the step at its line.
    let refused = PROPERTY_STEPS.replace("allow_master_shell = true,", "");
    m.write_config(&refused);
    let (code, out, err) = run(
        moonbot_tests::bin("moonbot").to_str().unwrap(),
        &["checkconfig", m.path()],
    );
    let line = refused
        .lines()
        .position(|l| l.contains("mb.steps.master_shell"))
        .unwrap()
        + 1;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("master.lua:{line}: builder 'props': step 'on-master': master_shell runs commands on the master")),
        "{out}{err}"
    );
}

const TOKEN: &str = "tok3n-31415-92653";
const KEY: &str =
    "-----BEGIN TEST KEY-----\nAAAABBBBCCCCDDDD\nEEEEFFFFGGGGHHHH\n-----END TEST KEY-----\n";

fn write_secret(m: &TestMaster, name: &str, value: &str) {
    let dir = std::path::Path::new(m.path()).join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn steps_render_from_the_build_and_keep_secrets_out(backend: &Backend) {
    let mut m = TestMaster::create(backend, CONFIG);
    write_secret(&m, "token", TOKEN);
    write_secret(&m, "key", KEY);
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");

    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": m.builderid("render"), "reason": "test", "owner": "tester",
               "branch": "feature-x"}),
    );
    assert_eq!(status, 200, "{answer}");
    let brid = answer["result"][1][m.builderid("render").to_string()]
        .as_i64()
        .unwrap();
    let build = m.wait_request_done(brid, LONG);
    let buildid = build["buildid"].as_i64().unwrap();
    let steps = m.steps(buildid);
    let by_name = |name: &str| -> &Value {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name} in {steps:?}"))
    };
    let log_of = |name: &str| m.stdio_of(by_name(name)["stepid"].as_i64().unwrap());

    // Properties in their layers: the builder's `release` wins over the
    // global one, the worker's and the global ones reach the build.
    let props = &m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0];
    assert_eq!(props["release"], json!(["2.0", "Builder"]));
    assert_eq!(props["project_name"], json!(["moon", "Global"]));
    assert_eq!(props["flavour"], json!(["fast", "Worker"]));
    assert_eq!(props["branch"], json!(["feature-x", "Build"]));
    assert_eq!(props["owners"], json!([["tester"], "Build"]));
    assert_eq!(props["scheduler"], json!(["force", "Scheduler"]));

    // Every kind of renderable in one argv.
    let argv = log_of("argv");
    let want = format!(
        "\nmoon-2.0 dflt feature-x {} fast off set  100% from-lua render\n",
        std::env::consts::OS
    );
    assert!(argv.contains(&want), "{want:?} not in\n{argv}");
    assert_eq!(by_name("argv")["state_string"], "echoed 2.0");
    let env = log_of("env");
    assert!(env.contains("\ngreeting=hi w1\n"), "{env}");
    assert!(
        env.contains("/build/render/wd-1\n") || env.contains("/wd-1\n"),
        "{env}"
    );

    // Holes in the step list are skipped; do_step_if false is SKIPPED;
    // hide_step_if hides; decode_rc maps 5 to WARNINGS.
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"conditional") && !names.contains(&"dropped"),
        "{names:?}"
    );
    assert_eq!(by_name("skipped")["results"], 3);
    assert!(!log_of("skipped").contains("never"));
    assert_eq!(by_name("by-function")["results"], 0);
    assert_eq!(by_name("by-function")["hidden"], true);
    assert!(log_of("by-function").contains("ran-by-function"));
    assert_eq!(by_name("argv")["hidden"], false);
    assert_eq!(by_name("warn-on-5")["results"], 1);
    // The build page leaves the hidden step out, and shows it when asked.
    let (_, page) = m.get_status(&format!("/builds/{buildid}"));
    assert!(!page.contains("data-step=\"by-function\""), "{page}");
    assert!(page.contains("1 hidden step(s)"), "{page}");
    let (_, page) = m.get_status(&format!("/builds/{buildid}?hidden=1"));
    assert!(page.contains("data-step=\"by-function\""), "{page}");

    // Secrets: split across two output frames, multi-line, in the command
    // line itself: none of their text is stored or shown.
    let secret = log_of("secret");
    assert!(secret.contains("\n<token>\n"), "{secret}");
    assert!(
        secret.contains("key:\n<key>\n<key>\n<key>\n<key>\n"),
        "{secret}"
    );
    let direct = log_of("secret-in-command");
    assert!(direct.contains("direct=<token>"), "{direct}");
    assert_eq!(
        by_name("secret-in-command")["state_string"],
        "'echo direct=<token>'"
    );
    assert_eq!(by_name("secret-in-command")["results"], 0);
    let missing = by_name("missing-secret");
    assert_eq!(missing["results"], 4, "{missing}");
    assert!(
        log_of("missing-secret").contains("secret 'nope' is not known"),
        "{}",
        log_of("missing-secret")
    );
    // The build ends with the worst of its steps: the missing secret's EXCEPTION.
    assert_eq!(build["results"], 4, "{build}");

    let mut everything = String::new();
    for s in &steps {
        everything.push_str(&log_of(s["name"].as_str().unwrap()));
    }
    for path in [
        format!("/api/v2/builds/{buildid}"),
        format!("/api/v2/builds/{buildid}/steps"),
        format!("/api/v2/builds/{buildid}/properties"),
        format!("/builds/{buildid}?hidden=1"),
    ] {
        everything.push_str(&m.get_status(&path).1);
    }
    for line in std::iter::once(TOKEN).chain(KEY.lines().filter(|l| l.len() >= 4)) {
        assert!(!everything.contains(line), "{line:?} leaked");
    }
    for (table, column) in [
        ("steps", "state_string"),
        ("steps", "name"),
        ("builds", "state_string"),
        ("build_properties", "value"),
        ("buildset_properties", "property_value"),
    ] {
        let stored = m.sql_i64(&format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%31415%' OR {column} LIKE '%BBBBCCCC%'"
        ));
        assert_eq!(stored, 0, "a secret is stored in {table}.{column}");
    }
}

/// A template's mistake, a secrets file others may read and a too-short
/// secret are refused by checkconfig, at the line of the call.
fn bad_templates_and_secrets_fail_checkconfig(backend: &Backend) {
    let m = TestMaster::create(backend, CONFIG);
    write_secret(&m, "token", TOKEN);
    write_secret(&m, "key", KEY);
    let checkconfig = |lua: &str| {
        m.write_config(lua);
        let (code, out, err) = run(
            moonbot_tests::bin("moonbot").to_str().unwrap(),
            &["checkconfig", m.path()],
        );
        (code, format!("{out}{err}"))
    };
    let (code, out) = checkconfig(CONFIG);
    assert_eq!(code, 0, "{out}");

    let line_of =
        |lua: &str, needle: &str| lua.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (from, to, says) in [
        (
            r#"mb.interpolate("%(prop:project_name)s-%(prop:release)s")"#,
            r#"mb.interpolate("%(prop:project_name)s-%(prop:release)")"#,
            "not closed by ')s'",
        ),
        (
            r#"mb.interpolate("echo direct=%(secret:token)s")"#,
            r#"mb.interpolate("echo %(kw:absent)s")"#,
            "names a keyword that was not given",
        ),
        (
            r#"mb.interpolate("hi %(prop:workername)s") },"#,
            r#"mb.interpolate("hi %(wrker:os)s") },"#,
            "unknown selector 'wrker:'",
        ),
        (
            r#"mb.interpolate("%(prop:flag:#?|on|off)s"#,
            r#"mb.interpolate("%(prop:flag:#?|on)s"#,
            "two alternatives",
        ),
    ] {
        let lua = CONFIG.replacen(from, to, 1);
        assert_ne!(lua, CONFIG, "{from} is in the config");
        let (code, out) = checkconfig(&lua);
        assert_ne!(code, 0, "{to}: {out}");
        assert!(out.contains(says), "{to}: {out}");
        let line = line_of(&lua, to);
        assert!(
            out.contains(&format!("master.lua:{line}:")),
            "line {line}: {out}"
        );
    }

    let open = std::path::Path::new(m.path()).join("secrets/token");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = checkconfig(CONFIG);
    assert_ne!(code, 0);
    assert!(out.contains("readable by other users"), "{out}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_secret(&m, "pin", "123");
    let (code, out) = checkconfig(CONFIG);
    assert_ne!(code, 0);
    assert!(
        out.contains("secret 'pin'") && out.contains("shorter than 4"),
        "{out}"
    );
    assert!(!out.contains("123\n") && !out.contains(TOKEN), "{out}");
}
