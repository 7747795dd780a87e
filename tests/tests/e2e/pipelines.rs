//! Issue 17: a pipeline from the repository (`mb.steps.pipeline`), read from
//! a real git checkout on a real worker and evaluated in a sandbox: the
//! steps it returns run after it (their Lua functions in the pipeline's own
//! state, with modules `require`d from beside the file); hostile files (an
//! endless loop, `os.execute`, `io`, a 1 GiB string, a file outside the
//! directory, a syntax error) are each stopped or refused with the file and
//! line in the log, and the master keeps running.

use moonbot_tests::{Backend, LONG, TestMaster, git};
use serde_json::Value;
use std::path::Path;

moonbot_tests::on_both_databases!(a_pipeline_file_from_the_checkout_adds_sandboxed_steps);

const SECRET: &str = "s3cret-v4lue-271828";

const PIPELINE: &str = r#"local mb = require "moonbot"
local helpers = require "helpers"
local steps = {}
for i = 1, 3 do
  steps[#steps + 1] = mb.steps.shell { name = "gen-" .. i, command = "echo generated " .. i .. " " .. helpers.word }
end
steps[#steps + 1] = mb.steps.lua { name = "lua-from-repo", run = function(step)
  local _, out = step:shell { command = "cat a.txt", collect_stdout = true }
  step:set_property("from_repo", (out:gsub("%s+$", "")))
end }
steps[#steps + 1] = mb.steps.shell { name = "conditional", command = "echo conditional ran",
  do_step_if = function(props) return props.from_repo == "hello" end }
steps[#steps + 1] = mb.steps.shell { name = "skipped", command = "echo never",
  do_step_if = function(props) return props.from_repo ~= "hello" end }
steps[#steps + 1] = mb.steps.trigger { name = "sub-builds", schedulers = { "sub" }, wait_for_finish = true }
return steps
"#;

/// Hostile or broken pipeline files, each with what its log must say (the
/// line is the file's first unless said).
const HOSTILE: &[(&str, &str, &str)] = &[
    ("loop.lua", "while true do end", "ran over its budget"),
    (
        "os.lua",
        "os.execute('touch @TMP@/pwned') return {}",
        "global 'os'",
    ),
    (
        "io.lua",
        "io.open('@TMP@/pwned', 'w') return {}",
        "global 'io'",
    ),
    (
        "big.lua",
        "local s = string.rep('x', 1 << 30) return {}",
        "memory",
    ),
    (
        "escape.lua",
        "local stolen = dofile('/etc/hostname') return stolen",
        "outside the sandbox's directory",
    ),
    (
        "syntax.lua",
        "local mb = require 'moonbot'\nreturn { mb.steps.shell { command = 'x' }",
        "expected",
    ),
    ("notsteps.lua", "return { 'not a step' }", "expected a step"),
    (
        "onmaster.lua",
        "local mb = require 'moonbot' return { mb.steps.master_shell { command = 'touch @TMP@/pwned' } }",
        "runs commands on the master: refused for a step from the repository",
    ),
    (
        "readmaster.lua",
        "local mb = require 'moonbot' return { mb.steps.file_download { mastersrc = 'master.lua', workerdest = 'stolen' } }",
        "reads the master's files: refused for a step from the repository",
    ),
    (
        "sneaky.lua",
        "local mb = require 'moonbot' return { mb.steps.lua { run = function(step) \
         step.build:add_steps_after_current { mb.steps.master_shell { command = 'touch @TMP@/pwned' } } end } }",
        "",
    ),
];

fn config(origin: &Path) -> String {
    let mut builders = String::from(
        r#"    mb.builder { name = "piped", workernames = { "w1" }, steps = {
      mb.steps.git { repourl = "@ORIGIN@", branch = "main" },
      mb.steps.pipeline {},
      mb.steps.shell { name = "configured-after", command = "echo after the pipeline" },
    } },
    mb.builder { name = "sub", workernames = { "w1" }, steps = { mb.steps.shell { command = "echo sub-build" } } },
    mb.builder { name = "secretive", workernames = { "w1" }, steps = {
      mb.steps.git { repourl = "@ORIGIN@", branch = "main" },
      mb.steps.shell { name = "trusted", command = mb.interpolate("echo token=%(secret:token)s") },
      mb.steps.pipeline { file = ".moonbot/secret.lua" },
    } },
"#,
    );
    for (file, _, _) in HOSTILE {
        let name = file.trim_end_matches(".lua");
        builders.push_str(&format!(
            r#"    mb.builder {{ name = "{name}", workernames = {{ "w1" }}, steps = {{
      mb.steps.git {{ repourl = "@ORIGIN@", branch = "main" }},
      mb.steps.pipeline {{ file = ".moonbot/{file}", max_instructions = 5000000, max_memory_mb = 32 }},
      mb.steps.shell {{ name = "never", command = "echo never" }},
    }} }},
"#
        ));
    }
    let names: Vec<String> = std::iter::once("piped")
        .chain(HOSTILE.iter().map(|(f, _, _)| f.trim_end_matches(".lua")))
        .chain(["secretive"])
        .map(|n| format!("{n:?}"))
        .collect();
    format!(
        r#"
local mb = require "moonbot"
return {{
  title = "pipelines",
  www = {{ port = 0, bind = "127.0.0.1" }},
  protocols = {{ quic = {{ port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 }} }},
  db = {{ url = "@DB@" }},
  secrets = {{ mb.secrets.files {{ dir = "secrets" }} }},
  workers = {{ mb.worker {{ name = "w1", max_builds = 2 }} }},
  builders = {{
{builders}  }},
  schedulers = {{ mb.schedulers.force {{ name = "force", builders = {{ {} }} }},
    mb.schedulers.triggerable {{ name = "sub", builders = {{ "sub" }} }} }},
}}
"#,
        names.join(", ")
    )
    .replace("@ORIGIN@", origin.to_str().unwrap())
}

fn stdio(m: &TestMaster, step: &Value) -> String {
    m.stdio_of(step["stepid"].as_i64().unwrap())
}

fn a_pipeline_file_from_the_checkout_adds_sandboxed_steps(backend: &Backend) {
    let root = tempfile::tempdir().unwrap();
    let origin = root.path().join("origin.git");
    let work = root.path().join("work");
    git(
        root.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().unwrap(),
        ],
    );
    git(
        root.path(),
        &["init", "-q", "-b", "main", work.to_str().unwrap()],
    );
    std::fs::create_dir(work.join(".moonbot")).unwrap();
    std::fs::write(work.join("a.txt"), "hello\n").unwrap();
    std::fs::write(work.join(".moonbot/pipeline.lua"), PIPELINE).unwrap();
    std::fs::write(
        work.join(".moonbot/helpers.lua"),
        "return { word = 'from-helpers' }\n",
    )
    .unwrap();
    let tmp = root.path().to_str().unwrap();
    std::fs::write(
        work.join(".moonbot/secret.lua"),
        "local mb = require 'moonbot'\nreturn { mb.steps.shell { name = 'leak', command = mb.interpolate('echo %(secret:token)s') } }\n",
    )
    .unwrap();
    for (file, text, _) in HOSTILE {
        std::fs::write(work.join(".moonbot").join(file), text.replace("@TMP@", tmp)).unwrap();
    }
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "pipelines"]);
    git(&work, &["push", "-q", origin.to_str().unwrap(), "main"]);

    let mut m = TestMaster::create(backend, &config(&origin));
    let secrets = Path::new(m.path()).join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("token"), SECRET).unwrap();
    std::fs::set_permissions(
        secrets.join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");

    // The pipeline's steps run after it, before the configured rest.
    let build = m.wait_request_done(m.force(m.builderid("piped")), LONG);
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "git",
            "pipeline",
            "gen-1",
            "gen-2",
            "gen-3",
            "lua-from-repo",
            "conditional",
            "skipped",
            "sub-builds",
            "configured-after"
        ],
        "{steps:?}"
    );
    assert_eq!(build["results"], 0, "{build}");
    let by = |name: &str| steps.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(
        by("pipeline")["state_string"],
        "7 steps from .moonbot/pipeline.lua"
    );
    assert!(stdio(&m, &by("gen-2")).contains("\ngenerated 2 from-helpers\n"));
    // Functions from the file ran in its state: a Lua step, do_step_if.
    let buildid = build["buildid"].as_i64().unwrap();
    let props = &m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0];
    assert_eq!(props["from_repo"][0], "hello");
    assert!(stdio(&m, &by("conditional")).contains("\nconditional ran\n"));
    assert_eq!(by("skipped")["results"], 3);
    // A sub-build on another builder, through a trigger the file returned.
    let children = m.get(&format!("/api/v2/builds/{buildid}/triggered_builds"))["builds"].clone();
    assert_eq!(children.as_array().unwrap().len(), 1, "{children}");
    assert_eq!(children[0]["results"], 0, "{children}");

    // Each hostile file: the pipeline step fails with the file and line,
    // the build halts, nothing escapes the sandbox.
    for (file, _, expected) in HOSTILE {
        let name = file.trim_end_matches(".lua");
        let build = m.wait_request_done(m.force(m.builderid(name)), LONG);
        let steps = m.steps(build["buildid"].as_i64().unwrap());
        if *file == "sneaky.lua" {
            // A Lua step from the file tries to add a command on the
            // master: that step fails, and the build with it.
            assert_eq!(build["results"], 4, "{file}: {build}");
            let lua = steps.iter().find(|s| s["name"] == "lua").unwrap();
            assert_eq!(lua["results"], 4, "{lua}");
            let err = m.log_of(lua["stepid"].as_i64().unwrap(), "err.text");
            assert!(
                err.contains("runs commands on the master: refused for a step from the repository"),
                "{err}"
            );
            continue;
        }
        assert_eq!(build["results"], 2, "{file}: {build}");
        let pipeline = steps.iter().find(|s| s["name"] == "pipeline").unwrap();
        assert_eq!(pipeline["results"], 2, "{file}: {pipeline}");
        let log = stdio(&m, pipeline);
        // Where: the line, except for a returned value that is no step
        // and the allocation Lua refused (its error has no place).
        let place = match *file {
            "syntax.lua" => format!(".moonbot/{file}:2:"),
            "notsteps.lua" | "big.lua" | "onmaster.lua" | "readmaster.lua" => {
                format!(".moonbot/{file}: ")
            }
            _ => format!(".moonbot/{file}:1:"),
        };
        assert!(log.contains(&place), "{file}: {log}");
        assert!(log.contains(expected), "{file}: {log}");
        assert!(
            steps.iter().all(|s| s["name"] != "never"),
            "{file}: {steps:?}"
        );
    }
    assert!(!root.path().join("pwned").exists());

    // The master's secrets: a step of master.lua uses one, a step from the
    // repository cannot.
    let build = m.wait_request_done(m.force(m.builderid("secretive")), LONG);
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let by = |name: &str| steps.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(by("trusted")["results"], 0, "{steps:?}");
    let leak = by("leak");
    assert_eq!(leak["results"], 4, "{leak}");
    let log = stdio(&m, &leak);
    assert!(log.contains("secret"), "{log}");
    assert!(!log.contains(SECRET), "{log}");

    // The master is unaffected.
    let build = m.wait_request_done(m.force(m.builderid("piped")), LONG);
    assert_eq!(build["results"], 0, "{build}");
}
