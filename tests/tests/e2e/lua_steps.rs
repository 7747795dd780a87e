//! Issue 17: steps written in Lua (`mb.steps.lua`) and steps a build adds to
//! itself (`step.build:add_steps_after_current/after_last`), on a real
//! worker: commands, logs, properties and summaries from Lua; a Lua error's
//! traceback in the step's own log; runaway loops and allocations stopped
//! by the step's budget while the master keeps running; several Lua steps
//! waiting on commands at once.

use moonbot_tests::{Backend, LONG, TestMaster};
use serde_json::{Value, json};

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "lua steps",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 8 } },
  builders = {
    mb.builder { name = "lua", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "three", run = function(step)
        local rc1 = step:shell { command = "echo one" }
        local rc2, out = step:shell { command = { "sh", "-c", "echo two-$0", "x" }, collect_stdout = true }
        step:set_property("second", (out:gsub("%s+$", "")))
        local rc3 = step:shell { command = "echo three; exit 3" }
        step:set_property("rcs", { rc1, rc2, rc3 })
        local notes = step:add_log("notes")
        notes:write("builder=" .. step:property("buildername") .. " second=" .. step:property("second") .. "\n")
        step:set_summary("ran 3 commands")
        if rc3 ~= 0 then return mb.results.WARNINGS end
      end },
      mb.steps.shell { name = "after", command = mb.interpolate("echo second=%(prop:second)s") },
      mb.steps.lua { name = "adds", run = function(step)
        step.build:add_steps_after_current {
          mb.steps.shell { name = "added-now", command = "echo now" },
          mb.steps.lua { name = "added-lua", run = function(s) s:set_property("from_added", "yes") end },
        }
        step.build:add_steps_after_last { mb.steps.shell { name = "after", command = "echo last" } }
      end },
      mb.steps.shell { name = "configured-last", command = "echo configured" },
      mb.steps.shell { name = "by-renderable", command = function(props)
        mb.build:add_steps_after_current { mb.steps.shell { name = "from-renderable", command = "echo rendered in" } }
        return "echo adding"
      end },
    } },
    mb.builder { name = "moves", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "moves", run = function(step)
        assert(step:download { s = "from the master\n", workerdest = "got.txt" } == mb.results.SUCCESS)
        local _, out = step:shell { command = "cat got.txt", collect_stdout = true }
        step:set_property("got", out)
        return step:upload { workersrc = "got.txt", masterdest = "back.txt" }
      end },
    } },
    mb.builder { name = "raises", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "raises", run = function(step)
        local function inner() error("deliberate failure") end
        step:shell { command = "echo before" }
        inner()
      end },
      mb.steps.shell { name = "never", command = "echo never" },
    } },
    mb.builder { name = "loops", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "spins", max_instructions = 1000000, run = function(step)
        while true do pcall(function() end) end
      end },
    } },
    mb.builder { name = "hoards", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "hoards", max_memory_mb = 16, run = function(step)
        local t = {}
        for i = 1, 100000000 do t[i] = ("x"):rep(64) .. i end
      end },
    } },
    mb.builder { name = "huge", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "huge", run = function(step)
        local s = string.rep("x", 1 << 30)
        return #s
      end },
    } },
    mb.builder { name = "typo", workernames = { "w1" }, steps = {
      mb.steps.lua { name = "typo", run = function(step) step:shell { comand = "echo x" } end },
    } },
    -- Four builds at once: a request still pending when another starts
    -- must not be collapsed into it (CI's load can queue them together).
    mb.builder { name = "waits", workernames = { "w1" }, collapse_requests = false, steps = {
      mb.steps.lua { name = "waits", run = function(step)
        step:shell { command = { "sh", "-c", "touch \"$0\"; i=0; while [ $i -lt 300 ] && [ $(ls @TMP@/waiting-* | wc -l) -lt 4 ]; do sleep 0.1; i=$((i+1)); done; ls @TMP@/waiting-* | wc -l",
          mb.interpolate("@TMP@/waiting-%(prop:buildnumber)s") } }
      end },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force",
    builders = { "lua", "moves", "raises", "loops", "hoards", "huge", "typo", "waits" } } },
}
"#;

moonbot_tests::on_both_databases!(lua_steps_run_commands_add_steps_and_stay_in_budget);

fn log_of(m: &TestMaster, step: &Value, name: &str) -> String {
    m.log_of(step["stepid"].as_i64().unwrap(), name)
}

fn run_build(m: &TestMaster, builder: &str) -> (Value, Vec<Value>) {
    let build = m.wait_request_done(m.force(m.builderid(builder)), LONG);
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    (build, steps)
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps:?}"))
}

fn lua_steps_run_commands_add_steps_and_stay_in_budget(backend: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("@TMP@", tmp.path().to_str().unwrap());
    let (m, _w) = TestMaster::started_with_worker(backend, &config, "w1");

    // Three commands, properties, a log and a summary from Lua.
    let (build, steps) = run_build(&m, "lua");
    let three = step(&steps, "three");
    assert_eq!(three["results"], 1, "{three}");
    assert_eq!(three["state_string"], "ran 3 commands (warnings)");
    let stdio = log_of(&m, three, "stdio");
    for line in ["\none\n", "\ntwo-x\n", "\nthree\n", "exit code 3"] {
        assert!(stdio.contains(line), "{line:?} in {stdio}");
    }
    assert_eq!(
        log_of(&m, three, "notes"),
        "builder=lua second=two-x\n",
        "the log holds what log:write wrote"
    );
    let buildid = build["buildid"].as_i64().unwrap();
    let props = &m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0];
    assert_eq!(props["second"], json!(["two-x", "three"]));
    assert_eq!(props["rcs"], json!([[0, 0, 3], "three"]));
    assert_eq!(props["from_added"], json!(["yes", "added-lua"]));
    assert!(log_of(&m, step(&steps, "after"), "stdio").contains("\nsecond=two-x\n"));

    // Added steps: after the current one in order, and after the last (a
    // repeated name gets a suffix, as Buildbot's do).
    let order: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        [
            "three",
            "after",
            "adds",
            "added-now",
            "added-lua",
            "configured-last",
            "by-renderable",
            "from-renderable",
            "after_1"
        ]
    );
    assert!(log_of(&m, step(&steps, "after_1"), "stdio").contains("\nlast\n"));
    assert!(log_of(&m, step(&steps, "from-renderable"), "stdio").contains("\nrendered in\n"));
    assert!(log_of(&m, step(&steps, "adds"), "stdio").contains("added step 'added-now'"));
    // A step's WARNINGS count only with warn_on_warnings, as Buildbot's.
    assert_eq!(build["results"], 0, "{build}");

    // Transfers from Lua: a download, then an upload kept as an artifact.
    let (build, _) = run_build(&m, "moves");
    assert_eq!(build["results"], 0, "{build}");
    let buildid = build["buildid"].as_i64().unwrap();
    let props = &m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0];
    assert_eq!(props["got"], json!(["from the master\n", "moves"]));
    let artifacts = m.get(&format!("/api/v2/builds/{buildid}/artifacts"))["artifacts"].clone();
    assert_eq!(artifacts[0]["name"], "back.txt", "{artifacts}");
    let id = artifacts[0]["artifactid"].as_i64().unwrap();
    assert_eq!(
        m.get_bytes(&format!("/api/v2/artifacts/{id}/raw")),
        b"from the master\n"
    );

    // An error: EXCEPTION, the traceback in err.text, the build stops.
    let (build, steps) = run_build(&m, "raises");
    assert_eq!(build["results"], 4, "{build}");
    let raises = step(&steps, "raises");
    assert_eq!(raises["results"], 4);
    let line = config
        .lines()
        .position(|l| l.contains("error(\"deliberate failure\")"))
        .unwrap()
        + 1;
    let err = log_of(&m, raises, "err.text");
    assert!(
        err.contains(&format!("master.lua:{line}: deliberate failure")),
        "{err}"
    );
    assert!(err.contains("stack traceback:"), "{err}");
    assert!(err.contains(&format!("master.lua:{}:", line + 2)), "{err}");
    assert!(log_of(&m, raises, "stdio").contains("\nbefore\n"));
    assert!(steps.iter().all(|s| s["name"] != "never"), "{steps:?}");

    // An endless loop (even one that catches errors), a hoard of memory and
    // one huge allocation: each stopped, EXCEPTION, with the reason.
    let (_, steps) = run_build(&m, "loops");
    let err = log_of(&m, step(&steps, "spins"), "err.text");
    assert!(
        err.contains("ran over its budget of 1000000 Lua instructions"),
        "{err}"
    );
    let (_, steps) = run_build(&m, "hoards");
    assert_eq!(step(&steps, "hoards")["results"], 4);
    let err = log_of(&m, step(&steps, "hoards"), "err.text");
    assert!(err.contains("ran over its memory budget"), "{err}");
    let (_, steps) = run_build(&m, "huge");
    assert_eq!(step(&steps, "huge")["results"], 4);
    let err = log_of(&m, step(&steps, "huge"), "err.text");
    assert!(err.contains("memory"), "{err}");

    // A misspelt argument is an error at the call, like master.lua's.
    let (_, steps) = run_build(&m, "typo");
    let err = log_of(&m, step(&steps, "typo"), "err.text");
    let line = config.lines().position(|l| l.contains("comand =")).unwrap() + 1;
    assert!(err.starts_with(&format!("master.lua:{line}: ")), "{err}");
    assert!(
        err.contains("lua step 'typo': step:shell: unknown field 'comand'"),
        "{err}"
    );

    // Four Lua steps wait on their commands at once: each command sees all
    // four started before any ends.
    let brids: Vec<i64> = (0..4).map(|_| m.force(m.builderid("waits"))).collect();
    for brid in brids {
        let build = m.wait_request_done(brid, LONG);
        assert_eq!(build["results"], 0, "{build}");
        let steps = m.steps(build["buildid"].as_i64().unwrap());
        let out = log_of(&m, step(&steps, "waits"), "stdio");
        assert!(out.contains("\n4\n"), "{out}");
    }

    // After all that, the master still runs Lua steps.
    let (build, steps) = run_build(&m, "lua");
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(step(&steps, "three")["results"], 1);
}
