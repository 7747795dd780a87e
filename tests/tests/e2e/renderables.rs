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
);

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
        format!("/#/builders/{}/builds/1", m.builderid("render")),
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
