//! Issue 14, schedulers: changes (from `moonbot sendchange`, the simplest
//! real source) start the right builds through `any_branch` and
//! `single_branch`, with the change's revision, properties and source stamp;
//! changes waiting for a tree-stable timer survive a reload and a restart.

use moonbot_tests::{Backend, LONG, TestMaster, run};
use serde_json::{Value, json};
use std::time::Duration;

const CONFIG: &str = r#"
local mb = require "moonbot"
local function touches_docs(change)
  for _, f in ipairs(change.files) do
    if f:match("%.md$") then return true end
  end
  return false
end
return {
  title = "schedulers",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 4 } },
  builders = {
    mb.builder { name = "ok", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "show", command = mb.interpolate("echo rev=%(prop:revision)s branch=%(prop:branch)s") },
    } },
    mb.builder { name = "docs", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "show", command = mb.interpolate("echo docs at %(prop:revision)s") },
    } },
  },
  schedulers = {
    mb.schedulers.force { name = "force", builders = { "ok", "docs" } },
    mb.schedulers.any_branch { name = "branches", builders = { "ok" },
      change_filter = { branch = { "main", "feature" }, project_re = "moon",
        filter_fn = function(change) return change.category ~= "skip" end },
      properties = { from_scheduler = "yes" }, priority = 5 },
    mb.schedulers.single_branch { name = "docs", builders = { "docs" },
      change_filter = { branch = function(branch) return branch == "main" end },
      file_is_important = touches_docs, tree_stable_timer = @TIMER@ },
    mb.schedulers.dependent { name = "after", upstream = "branches", builders = { "docs" } },
  },
}
"#;

moonbot_tests::on_both_databases!(
    a_change_builds_its_revision_on_the_builders_its_filter_picks,
    tree_stable_changes_wait_and_survive_a_reload_and_a_restart,
);

fn config(timer: u32) -> String {
    CONFIG.replace("@TIMER@", &timer.to_string())
}

/// `moonbot sendchange` a change; returns its id.
fn send(m: &TestMaster, branch: &str, revision: &str, project: &str, extra: &[&str]) -> i64 {
    let mut args = vec![
        "sendchange",
        "--master",
        &m.www,
        "--who",
        "Ann <ann@example.org>",
        "-R",
        "https://example.org/moon.git",
        "-P",
        project,
        "-b",
        branch,
        "-r",
        revision,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run("moonbot", &args);
    assert_eq!(code, 0, "{out}{err}");
    out.trim()
        .strip_prefix("change ")
        .and_then(|rest| rest.strip_suffix(" added"))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap()
}

/// The buildsets a scheduler made, oldest first, with their source stamps.
fn buildsets_of(m: &TestMaster, scheduler: &str) -> Vec<(Value, Vec<Value>)> {
    let sets = m.get("/api/v2/buildsets?order=bsid")["buildsets"]
        .as_array()
        .unwrap()
        .clone();
    sets.into_iter()
        .filter(|bs| {
            let bsid = bs["bsid"].as_i64().unwrap();
            let props = m.get(&format!("/api/v2/buildrequests?buildsetid={bsid}"));
            let brid = props["buildrequests"][0]["buildrequestid"].as_i64();
            brid.is_some_and(|_| {
                m.get(&format!("/api/v2/buildsets/{bsid}"))["buildsets"][0]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("named '{scheduler}'"))
            })
        })
        .map(|bs| {
            let bsid = bs["bsid"].as_i64().unwrap();
            let stamps = m.get(&format!("/api/v2/buildsets/{bsid}/sourcestamps"))["sourcestamps"]
                .as_array()
                .unwrap()
                .clone();
            (bs, stamps)
        })
        .collect()
}

fn request_of(m: &TestMaster, bsid: i64) -> Value {
    m.get(&format!("/api/v2/buildrequests?buildsetid={bsid}"))["buildrequests"][0].clone()
}

fn a_change_builds_its_revision_on_the_builders_its_filter_picks(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, &config(2), "w1");

    let a = send(&m, "main", "aaa111", "moonbot", &["-p", "pr:7", "src/a.c"]);
    let (bs, stamps) = m.wait_for("a buildset for the change on main", LONG, || {
        buildsets_of(&m, "branches").into_iter().next()
    });
    assert_eq!(stamps.len(), 1, "{stamps:?}");
    assert_eq!(stamps[0]["revision"], "aaa111");
    assert_eq!(stamps[0]["branch"], "main");
    assert_eq!(stamps[0]["repository"], "https://example.org/moon.git");
    let request = request_of(&m, bs["bsid"].as_i64().unwrap());
    assert_eq!(request["builderid"], m.builderid("ok"));
    assert_eq!(request["priority"], 5);
    let build = m.wait_request_done(request["buildrequestid"].as_i64().unwrap(), LONG);
    assert_eq!(build["results"], 0, "{build}");
    let buildid = build["buildid"].as_i64().unwrap();
    let props = &m.get(&format!("/api/v2/builds/{buildid}/properties"))["properties"][0];
    assert_eq!(props["revision"], json!(["aaa111", "Build"]));
    assert_eq!(props["branch"], json!(["main", "Build"]));
    assert_eq!(props["project"], json!(["moonbot", "Build"]));
    assert_eq!(
        props["repository"],
        json!(["https://example.org/moon.git", "Build"])
    );
    assert_eq!(props["codebase"], json!(["", "Build"]));
    assert_eq!(props["scheduler"], json!(["branches", "Scheduler"]));
    assert_eq!(props["from_scheduler"], json!(["yes", "Scheduler"]));
    assert_eq!(props["pr"], json!(["7", "Change"]));
    let steps = m.steps(buildid);
    assert!(
        m.stdio_of(steps[0]["stepid"].as_i64().unwrap())
            .contains("rev=aaa111 branch=main"),
        "the step sees the change's revision"
    );
    // The build and the change name each other.
    let changes = m.get(&format!("/api/v2/builds/{buildid}/changes"))["changes"].clone();
    assert_eq!(changes[0]["changeid"], a, "{changes}");
    let builds = m.get(&format!("/api/v2/changes/{a}/builds"))["builds"].clone();
    assert_eq!(builds[0]["buildid"], buildid, "{builds}");

    // The dependent scheduler follows the successful buildset, once, with
    // its source stamp.
    let upstream = bs["bsid"].as_i64().unwrap();
    let downstream = m.wait_for("the dependent buildset", LONG, || {
        let sets = m.get("/api/v2/buildsets?order=bsid")["buildsets"].clone();
        sets.as_array()
            .unwrap()
            .iter()
            .find(|s| s["external_idstring"] == format!("dependent:after:{upstream}"))
            .cloned()
    });
    let bsid = downstream["bsid"].as_i64().unwrap();
    let stamps = m.get(&format!("/api/v2/buildsets/{bsid}/sourcestamps"))["sourcestamps"].clone();
    assert_eq!(stamps[0]["revision"], "aaa111");
    assert_eq!(request_of(&m, bsid)["builderid"], m.builderid("docs"));

    // The builder page shows each build's branch and revision; the
    // build page its source stamp.
    let (code, page) = m.get_status(&format!("/builders/{}", m.builderid("ok")));
    assert_eq!(code, 200);
    assert!(
        page.contains("<td>main</td><td class=\"revision\" title=\"aaa111\">aaa111</td>"),
        "{page}"
    );
    let (_, page) = m.get_status(&format!("/builds/{buildid}"));
    assert!(page.contains("aaa111"), "{page}");

    // Not taken: another branch, another project, a category filter_fn
    // refuses. Then one that is: only it builds.
    send(&m, "other", "bbb222", "moonbot", &[]);
    send(&m, "feature", "ccc333", "sun", &[]);
    send(&m, "feature", "ddd444", "moonbot", &["-C", "skip"]);
    send(&m, "feature", "eee555", "moonbot", &[]);
    let sets = m.wait_for("a buildset for the feature change", LONG, || {
        let sets = buildsets_of(&m, "branches");
        (sets.len() >= 2).then_some(sets)
    });
    let revisions: Vec<&Value> = sets.iter().map(|(_, s)| &s[0]["revision"]).collect();
    assert_eq!(revisions, vec!["aaa111", "eee555"]);

    // The schedulers are in the API, run by this master.
    let listed = m.get("/api/v2/schedulers")["schedulers"].clone();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["force", "branches", "docs", "after"]);
    assert_eq!(listed[1]["enabled"], true);
    assert!(
        listed[1]["master"]["masterid"].as_i64().is_some(),
        "{listed}"
    );
    let id = listed[1]["schedulerid"].as_i64().unwrap();
    assert_eq!(
        m.get(&format!("/api/v2/schedulers/{id}"))["schedulers"][0]["name"],
        "branches"
    );
    assert_eq!(m.get_status("/api/v2/schedulers/999").0, 404);
}

fn tree_stable_changes_wait_and_survive_a_reload_and_a_restart(backend: &Backend) {
    let mut m = TestMaster::create(backend, &config(3));
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");

    // An unimportant change alone never builds; an important one after it
    // builds both, at the newest revision, once the tree is stable.
    send(&m, "main", "c0de01", "moonbot", &["src/a.c"]);
    let important = send(&m, "main", "d0c501", "moonbot", &["README.md"]);
    let sent = m.get(&format!("/api/v2/changes/{important}"))["changes"][0]["when_timestamp"]
        .as_f64()
        .unwrap();
    let (bs, stamps) = m.wait_for("the docs buildset", LONG, || {
        buildsets_of(&m, "docs").into_iter().next()
    });
    assert_eq!(stamps[0]["revision"], "d0c501");
    assert!(
        bs["submitted_at"].as_f64().unwrap() >= sent + 2.5,
        "built before the tree was stable: {bs} (change at {sent})"
    );
    let request = request_of(&m, bs["bsid"].as_i64().unwrap());
    assert_eq!(request["builderid"], m.builderid("docs"));
    m.wait_request_done(request["buildrequestid"].as_i64().unwrap(), LONG);

    // A reload that leaves the scheduler alone keeps its waiting change.
    let kept = send(&m, "main", "d0c502", "moonbot", &["guide.md"]);
    let touched = format!("-- reloaded\n{}", config(3));
    m.write_config(&touched);
    let (code, out, err) = run("moonbot", &["reconfig", m.path()]);
    assert_eq!(code, 0, "{out}{err}");
    let sets = m.wait_for(
        "the buildset of the change sent before the reload",
        LONG,
        || {
            let sets = buildsets_of(&m, "docs");
            (sets.len() == 2).then_some(sets)
        },
    );
    assert_eq!(sets[1].1[0]["revision"], "d0c502");
    assert!(kept > important);

    // A restart while a change waits: it builds after the restart, once.
    send(&m, "main", "d0c503", "moonbot", &["notes.md"]);
    m.stop(false);
    m.start();
    let sets = m.wait_for(
        "the buildset of the change sent before the restart",
        LONG,
        || {
            let sets = buildsets_of(&m, "docs");
            (sets.len() == 3).then_some(sets)
        },
    );
    assert_eq!(sets[2].1[0]["revision"], "d0c503");

    // Changes sent while nothing waits on them are read after a restart
    // too: the master crashes right after a change is stored.
    send(&m, "main", "d0c504", "moonbot", &["more.md"]);
    m.kill();
    m.start();
    let sets = m.wait_for(
        "the buildset of the change sent before the crash",
        LONG,
        || {
            let sets = buildsets_of(&m, "docs");
            (sets.len() == 4).then_some(sets)
        },
    );
    assert_eq!(sets[3].1[0]["revision"], "d0c504");
    // Nothing is built twice, and an unimportant change on its own makes
    // nothing: still four buildsets, well after its timer would have run.
    send(&m, "main", "c0de02", "moonbot", &["src/b.c"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(buildsets_of(&m, "docs").len(), 4);
    drop(w);
}

const SUPERSEDING: &str = r#"
local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 2 } },
  builders = {
    mb.builder { name = "slow", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "work", command = "echo working; sleep 60" },
    } },
  },
  schedulers = {
    mb.schedulers.any_branch { name = "latest", builders = { "slow" }, cancel_superseded = true },
  },
}
"#;

moonbot_tests::on_both_databases!(a_newer_change_cancels_what_the_older_one_started);

/// The build (once started) of the buildset made for change `changeid`.
fn build_of_change(m: &TestMaster, changeid: i64) -> Value {
    m.wait_for(&format!("a build of change {changeid}"), LONG, || {
        m.get(&format!("/api/v2/changes/{changeid}/builds"))["builds"]
            .as_array()
            .and_then(|b| b.first().cloned())
    })
}

/// `build` ends CANCELLED, saying a newer change superseded it.
fn assert_superseded(m: &TestMaster, build: &Value) {
    let stopped = m.wait_for("the superseded build to end", LONG, || {
        let build = &m.get(&format!("/api/v2/builds/{}", build["buildid"]))["builds"][0];
        (build["complete"] == true).then(|| build.clone())
    });
    assert_eq!(stopped["results"], 6, "CANCELLED: {stopped}");
    assert!(
        stopped["state_string"]
            .as_str()
            .unwrap()
            .starts_with("cancelled: superseded by a newer change (buildset"),
        "the build says why it stopped: {stopped}"
    );
}

fn a_newer_change_cancels_what_the_older_one_started(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, SUPERSEDING, "w1");
    let a = send(&m, "main", "aaaa01", "p", &[]);
    let first = build_of_change(&m, a);
    // A newer change on the same branch stops the running build.
    let b = send(&m, "main", "bbbb02", "p", &[]);
    let second = build_of_change(&m, b);
    assert_superseded(&m, &first);
    // Another branch is left alone; a third change on main stops the second.
    let f = send(&m, "feature", "ffff01", "p", &[]);
    let feature = build_of_change(&m, f);
    let c = send(&m, "main", "cccc03", "p", &[]);
    build_of_change(&m, c);
    m.wait_for("the second build to be cancelled", LONG, || {
        let build = &m.get(&format!("/api/v2/builds/{}", second["buildid"]))["builds"][0];
        (build["results"] == 6).then_some(())
    });
    let feature = &m.get(&format!("/api/v2/builds/{}", feature["buildid"]))["builds"][0];
    assert_eq!(
        feature["complete"], false,
        "the other branch's build goes on: {feature}"
    );
}

moonbot_tests::on_both_databases!(set_priority_puts_a_pending_request_first);

/// Buildbot's `set_priority` on a pending request: the distributor then
/// starts it before older requests of lower priority.
fn set_priority_puts_a_pending_request_first(backend: &Backend) {
    // No worker yet: both requests wait.
    let config = SUPERSEDING.replace("max_builds = 2", "max_builds = 1");
    let mut m = TestMaster::create(backend, &config);
    m.start();
    send(&m, "one", "0001", "p", &[]);
    send(&m, "two", "0002", "p", &[]);
    let requests = m.wait_for("two pending requests", LONG, || {
        let all = m.get("/api/v2/buildrequests?order=buildrequestid")["buildrequests"].clone();
        (all.as_array().unwrap().len() == 2).then_some(all)
    });
    let second = requests[1]["buildrequestid"].as_i64().unwrap();
    let path = format!("/api/v2/buildrequests/{second}");
    let (status, answer) = m.rpc(&path, "set_priority", serde_json::json!({"priority": 10}));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(m.get(&path)["buildrequests"][0]["priority"], 10);
    let (_, bad) = m.rpc(
        &path,
        "set_priority",
        serde_json::json!({"priority": "high"}),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let (_, missing) = m.rpc(
        "/api/v2/buildrequests/999",
        "set_priority",
        serde_json::json!({"priority": 1}),
    );
    assert!(missing.get("error").is_some(), "{missing}");

    // One build at a time: the raised request is built first.
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    let first = m.wait_for("the first build", LONG, || {
        m.get("/api/v2/builds?order=buildid&limit=1")["builds"]
            .as_array()
            .and_then(|b| b.first().cloned())
    });
    assert_eq!(first["buildrequestid"], second, "{first}");
    let (_, started) = m.rpc(&path, "set_priority", serde_json::json!({"priority": 1}));
    assert!(
        started["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("already started"),
        "a started request keeps its priority: {started}"
    );
}

const COLLAPSING: &str = r#"
local mb = require "moonbot"
local steps = { mb.steps.shell { name = "show", command = mb.interpolate("echo built %(prop:revision)s") } }
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 1 } },
  builders = {
    mb.builder { name = "collapsing", workernames = { "w1" }, steps = steps },
    mb.builder { name = "apart", workernames = { "w1" }, steps = steps, collapse_requests = false },
    mb.builder { name = "by_fn", workernames = { "w1" }, steps = steps,
      collapse_requests = function(builder, new, old)
        return builder.name == "by_fn" and new.buildrequestid > old.buildrequestid
          and #new.sourcestamps == 1 and #new.changeids == 1
      end },
  },
  schedulers = {
    mb.schedulers.any_branch { name = "pushes", builders = { "collapsing", "apart", "by_fn" } },
  },
}
"#;

moonbot_tests::on_both_databases!(pending_requests_collapse_into_one_build_that_names_them);

/// The builds of one builder, oldest first.
fn builds_of(m: &TestMaster, builder: &str) -> Vec<Value> {
    let builderid = m.builderid(builder);
    m.get(&format!(
        "/api/v2/builders/{builderid}/builds?order=number&complete=true"
    ))["builds"]
        .as_array()
        .unwrap()
        .clone()
}

fn revisions(changes: &Value) -> Vec<String> {
    let mut revisions: Vec<String> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_str().unwrap().to_string())
        .collect();
    revisions.sort();
    revisions
}

/// `collapse_requests`: pending requests of one branch become one build of
/// the newest revision, whose changes are all of theirs; the others end
/// SKIPPED naming it. Another branch is its own build, a builder with
/// `collapse_requests = false` builds each, and a Lua function decides for
/// its builder.
fn pending_requests_collapse_into_one_build_that_names_them(backend: &Backend) {
    // No worker yet: every request waits.
    let mut m = TestMaster::create(backend, COLLAPSING);
    m.start();
    for revision in ["a001", "a002", "a003"] {
        send(&m, "main", revision, "p", &[]);
    }
    send(&m, "feature", "f001", "p", &[]);
    m.wait_for("twelve pending requests", LONG, || {
        let all = m.get("/api/v2/buildrequests")["buildrequests"].clone();
        (all.as_array().unwrap().len() == 12).then_some(())
    });
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_for("every request to be complete", LONG, || {
        let open = m.get("/api/v2/buildrequests?complete=false")["buildrequests"].clone();
        open.as_array().unwrap().is_empty().then_some(())
    });

    let collapsing = builds_of(&m, "collapsing");
    assert_eq!(
        collapsing.len(),
        2,
        "main once, feature once: {collapsing:?}"
    );
    let main = collapsing
        .iter()
        .find(|b| {
            let id = b["buildid"].as_i64().unwrap();
            revisions(&m.get(&format!("/api/v2/builds/{id}/changes"))).len() == 3
        })
        .unwrap_or_else(|| panic!("a build with main's three changes: {collapsing:?}"));
    let main_id = main["buildid"].as_i64().unwrap();
    assert_eq!(main["results"], 0, "{main}");
    assert_eq!(
        revisions(&m.get(&format!("/api/v2/builds/{main_id}/changes"))),
        ["a001", "a002", "a003"]
    );
    let props = m.get(&format!("/api/v2/builds/{main_id}/properties"));
    assert_eq!(
        props["properties"][0]["revision"][0], "a003",
        "the newest revision is built: {props}"
    );
    let skipped = m.get(&format!(
        "/api/v2/buildrequests?collapsed_into_buildid={main_id}&order=buildrequestid"
    ))["buildrequests"]
        .clone();
    let skipped = skipped.as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    for request in skipped {
        assert_eq!(request["complete"], true, "{request}");
        assert_eq!(request["results"], 3, "SKIPPED: {request}");
        assert_ne!(request["buildrequestid"], main["buildrequestid"]);
    }
    let (status, page) = m.get_status(&format!("/builds/{main_id}"));
    assert_eq!(status, 200);
    assert!(page.contains("collapsed into this build"), "{page}");
    assert!(page.contains("a001") && page.contains("a002"), "{page}");

    let apart = builds_of(&m, "apart");
    assert_eq!(
        apart.len(),
        4,
        "collapse_requests = false builds each: {apart:?}"
    );
    let requests = m.get(&format!(
        "/api/v2/buildrequests?builderid={}",
        m.builderid("apart")
    ));
    for request in requests["buildrequests"].as_array().unwrap() {
        assert_eq!(
            request["results"], 0,
            "nothing of 'apart' was collapsed: {request}"
        );
        assert_eq!(request["collapsed_into_buildid"], Value::Null, "{request}");
    }

    // The function collapses across branches, for its builder only.
    let by_fn = builds_of(&m, "by_fn");
    assert_eq!(by_fn.len(), 1, "{by_fn:?}");
    let id = by_fn[0]["buildid"].as_i64().unwrap();
    assert_eq!(
        revisions(&m.get(&format!("/api/v2/builds/{id}/changes"))),
        ["a001", "a002", "a003", "f001"]
    );
    drop(w);
}

const TYPED_FORCE: &str = r#"
local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = { mb.builder { name = "b", workernames = { "w1" }, steps = {
    mb.steps.shell { command = "true" } } } },
  schedulers = {
    mb.schedulers.force { name = "typed", builders = { "b" }, button_name = "Go",
      reason = mb.params.string { name = "reason", label = "Why", default = "just because" },
      codebases = { mb.params.codebase { codebase = "app",
        branch = mb.params.choice { name = "branch", choices = { "main", "next" } },
        repository = "https://example.org/app.git" } },
      properties = {
        mb.params.string { name = "flavour", regex = "[a-z]+$", default = "debug" },
        mb.params.int { name = "jobs", label = "Jobs", default = 2, required = true },
        mb.params.boolean { name = "clean" },
        mb.params.choice { name = "targets", choices = { "linux", "mac", "bsd" }, multiple = true, default = { "linux" } },
        mb.params.text { name = "notes" },
        mb.params.fixed { name = "arch", default = "x86_64" },
      } },
  },
}
"#;

moonbot_tests::on_both_databases!(typed_force_parameters_check_and_type_what_they_queue);

fn buildset_count(m: &TestMaster) -> usize {
    m.get("/api/v2/buildsets")["buildsets"]
        .as_array()
        .unwrap()
        .len()
}

/// The properties of the newest buildset, name → value.
fn newest_buildset_properties(m: &TestMaster) -> Value {
    let sets = m.get("/api/v2/buildsets?order=-bsid&limit=1");
    let bsid = sets["buildsets"][0]["bsid"].as_i64().unwrap();
    let props = m.get(&format!("/api/v2/buildsets/{bsid}/properties"));
    let mut out = serde_json::Map::new();
    for (name, pair) in props["properties"][0].as_object().unwrap() {
        out.insert(name.clone(), pair[0].clone());
    }
    Value::Object(out)
}

/// Issue 14, force: typed parameters, described as Buildbot describes them,
/// checked (a wrong value names its field and queues nothing), typed in the
/// buildset, with a codebase's source stamp; the web form is drawn from the
/// same parameters and posts through the same checks.
fn typed_force_parameters_check_and_type_what_they_queue(backend: &Backend) {
    let mut m = TestMaster::create(backend, TYPED_FORCE);
    m.start();
    let described = m.get("/api/v2/forceschedulers/typed")["forceschedulers"][0].clone();
    assert_eq!(described["button_name"], "Go", "{described}");
    let fields = described["all_fields"].as_array().unwrap();
    assert_eq!(fields[0]["fields"][1]["fullName"], "reason");
    assert_eq!(fields[0]["fields"][1]["label"], "Why");
    assert_eq!(fields[0]["fields"][1]["default"], "just because");
    assert_eq!(fields[1]["type"], "nested");
    assert_eq!(fields[1]["fields"][0]["fullName"], "app_branch");
    assert_eq!(fields[1]["fields"][0]["type"], "list");
    assert_eq!(fields[1]["fields"][2]["type"], "fixed");
    let types: Vec<&str> = fields[2..]
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text", "int", "bool", "list", "textarea", "fixed"]);
    assert_eq!(fields[3]["required"], true);
    assert_eq!(fields[5]["multiple"], true);

    // Wrong values: a clear error naming the field, and nothing queued.
    let path = "/api/v2/forceschedulers/typed";
    let before = buildset_count(&m);
    for (params, message) in [
        (
            json!({"jobs": "many"}),
            "field 'jobs' must be a whole number, not 'many'",
        ),
        (
            json!({"flavour": "Release"}),
            "field 'flavour' 'Release' does not match [a-z]+$",
        ),
        (
            json!({"targets": ["linux", "hurd"]}),
            "field 'targets' 'hurd' is not one of the choices (linux, mac, bsd)",
        ),
        (
            json!({"app_branch": "old"}),
            "field 'app_branch' 'old' is not one of the choices (main, next)",
        ),
        (
            json!({"arch": "arm64"}),
            "field 'arch' is fixed to \"x86_64\"",
        ),
        (
            json!({"clean": "maybe"}),
            "field 'clean' must be true or false, not 'maybe'",
        ),
        (
            json!({"colour": "red"}),
            "field 'colour' is not a field of this form",
        ),
    ] {
        let (status, answer) = m.rpc(path, "force", params.clone());
        assert_eq!(status, 400, "{params}: {answer}");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        let got = answer["error"]["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{params}: {got}");
    }
    assert_eq!(
        buildset_count(&m),
        before,
        "a refused force queued something"
    );

    // Typed JSON in, typed properties and a source stamp out.
    let (status, answer) = m.rpc(
        path,
        "force",
        json!({"jobs": 8, "clean": true, "targets": ["mac", "bsd"], "app_branch": "next",
               "app_revision": "abc123", "owner": "ann"}),
    );
    assert_eq!(status, 200, "{answer}");
    let bsid = answer["result"][0].as_i64().unwrap();
    let props = newest_buildset_properties(&m);
    assert_eq!(props["jobs"], 8);
    assert_eq!(props["clean"], true);
    assert_eq!(props["targets"], json!(["mac", "bsd"]));
    assert_eq!(
        props["flavour"], "debug",
        "a default fills what was left out"
    );
    assert_eq!(props["arch"], "x86_64");
    assert_eq!(props["reason"], "just because");
    assert_eq!(props["owner"], "ann");
    let stamps = m.get(&format!("/api/v2/buildsets/{bsid}/sourcestamps"))["sourcestamps"].clone();
    assert_eq!(stamps[0]["codebase"], "app", "{stamps}");
    assert_eq!(stamps[0]["branch"], "next");
    assert_eq!(stamps[0]["revision"], "abc123");
    assert_eq!(stamps[0]["repository"], "https://example.org/app.git");

    // The web form: drawn from the parameters, posted through the same checks.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let builder = m.builderid("b");
    let response = agent
        .get(&format!("{}/builders/{builder}", m.www))
        .call()
        .unwrap();
    let cookie = response
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = response.into_string().unwrap();
    for control in [
        "<input type=\"number\" step=\"1\" name=\"jobs\" value=\"2\" required>",
        "<select name=\"targets\" multiple><option value=\"linux\" selected>linux</option>",
        "<input type=\"checkbox\" name=\"clean\" value=\"true\">",
        "<select name=\"app_branch\"><option value=\"main\" selected>main</option>",
        "<code class=\"fixed\">x86_64</code>",
        "<textarea name=\"notes\"",
        "<button class=\"force\">Go</button>",
    ] {
        assert!(page.contains(control), "the page lacks {control}");
    }
    let start = page.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
    let token = page[start..start + 64].to_string();
    let post = |pairs: &[(&str, &str)]| {
        let mut form = vec![("csrf_token", token.as_str()), ("scheduler", "typed")];
        form.extend_from_slice(pairs);
        match agent
            .post(&format!("{}/builders/{builder}/force", m.www))
            .set("cookie", &cookie)
            .send_form(&form)
        {
            Ok(r) => (r.status(), String::new()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let before = buildset_count(&m);
    let (status, body) = post(&[("jobs", "lots")]);
    assert_eq!(status, 400);
    assert!(
        body.contains("field &#39;jobs&#39; must be a whole number")
            || body.contains("field 'jobs' must be a whole number"),
        "{body}"
    );
    assert_eq!(buildset_count(&m), before);
    let (status, _) = post(&[
        ("jobs", "3"),
        ("clean", "false"),
        ("clean", "true"),
        ("targets", ""),
        ("targets", "linux"),
        ("targets", "bsd"),
        ("app_branch", "main"),
        ("notes", "two\nlines"),
    ]);
    assert_eq!(status, 303);
    let props = newest_buildset_properties(&m);
    assert_eq!(props["jobs"], 3);
    assert_eq!(props["clean"], true);
    assert_eq!(props["targets"], json!(["linux", "bsd"]));
    assert_eq!(props["notes"], "two\nlines");
}

moonbot_tests::on_both_databases!(
    a_builder_with_cancel_superseded_stops_older_revisions_whoever_asked
);

/// `cancel_superseded` on a builder: a request for a newer revision of a
/// branch stops the builder's older build of that branch, even when another
/// scheduler (here a force with a codebase) made the new one; another
/// branch goes on.
fn a_builder_with_cancel_superseded_stops_older_revisions_whoever_asked(backend: &Backend) {
    let config = SUPERSEDING
        .replace("cancel_superseded = true }", "}")
        .replace(
            "mb.builder { name = \"slow\", workernames = { \"w1\" },",
            "mb.builder { name = \"slow\", workernames = { \"w1\" }, cancel_superseded = true,",
        )
        .replace(
            "schedulers = {",
            "schedulers = {\n    mb.schedulers.force { name = \"force\", builders = { \"slow\" }, codebases = { \"\" } },",
        );
    assert!(config.contains("cancel_superseded = true,"), "{config}");
    let (m, _w) = TestMaster::started_with_worker(backend, &config, "w1");
    let a = send(&m, "main", "aaaa01", "p", &[]);
    let first = build_of_change(&m, a);
    let f = send(&m, "feature", "ffff01", "p", &[]);
    let feature = build_of_change(&m, f);
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"branch": "main", "revision": "bbbb02", "repository": "https://example.org/moon.git",
               "project": "p", "reason": "newer"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_superseded(&m, &first);
    let feature = &m.get(&format!("/api/v2/builds/{}", feature["buildid"]))["builds"][0];
    assert_eq!(
        feature["complete"], false,
        "another branch goes on: {feature}"
    );
}
