//! Issue 14, the git poller: real repositories made here, pushed to while
//! the master polls them, and while it is down.

use moonbot_tests::{Backend, LONG, TestMaster, git};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "poller",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 4 } },
  builders = {
    mb.builder { name = "ok", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "show", command = mb.interpolate("echo building %(prop:revision)s on %(prop:branch)s") },
    } },
  },
  change_sources = {
    mb.changes.git_poller { name = "repo", repourl = "@REPO@", branches = @BRANCHES@,
      poll_interval = 1, poll_at_launch = true, project = "moon", category = "polled" },
  },
  schedulers = {
    mb.schedulers.any_branch { name = "all", builders = { "ok" } },
  },
}
"#;

moonbot_tests::on_both_databases!(
    a_poller_reports_each_new_commit_once_across_a_restart,
    a_thousand_branches_poll_and_only_moved_ones_report,
);

/// A bare repository and a clone to commit and push from.
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let repo = Repo {
            bare: root.join("origin.git"),
            work: root.join("work"),
        };
        git(
            root,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                repo.bare.to_str().unwrap(),
            ],
        );
        git(
            root,
            &[
                "clone",
                "-q",
                repo.bare.to_str().unwrap(),
                repo.work.to_str().unwrap(),
            ],
        );
        git(&repo.work, &["checkout", "-q", "-b", "main"]);
        repo
    }

    fn commit(&self, file: &str, message: &str) -> String {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, message).unwrap();
        git(&self.work, &["add", file]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn push(&self, args: &[&str]) {
        let mut all = vec!["push", "-q", "origin"];
        all.extend_from_slice(args);
        git(&self.work, &all);
    }
}

fn config(repo: &Repo, branches: &str) -> String {
    CONFIG
        .replace("@REPO@", repo.bare.to_str().unwrap())
        .replace("@BRANCHES@", branches)
}

/// The changes, oldest first.
fn changes(m: &TestMaster) -> Vec<Value> {
    m.get("/api/v2/changes?order=changeid")["changes"]
        .as_array()
        .unwrap()
        .clone()
}

fn revisions(changes: &[Value]) -> Vec<(String, String)> {
    changes
        .iter()
        .map(|c| {
            (
                c["branch"].as_str().unwrap_or("").to_string(),
                c["revision"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Wait until the poller has recorded its first heads.
fn wait_first_poll(m: &TestMaster) {
    m.wait_for("the poller's first poll", LONG, || {
        (m.sql_i64("SELECT COUNT(*) FROM object_state WHERE name = 'lastRev'") == 1).then_some(())
    });
}

fn wait_changes(m: &TestMaster, count: usize) -> Vec<Value> {
    m.wait_for(&format!("{count} changes"), LONG, || {
        let seen = changes(m);
        (seen.len() >= count).then_some(seen)
    })
}

fn a_poller_reports_each_new_commit_once_across_a_restart(backend: &Backend) {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path());
    let history = repo.commit("old.txt", "history before the poller");
    repo.push(&["main"]);

    let mut m = TestMaster::create(backend, &config(&repo, r#""all""#));
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");
    wait_first_poll(&m);
    assert!(changes(&m).is_empty(), "the first poll builds no history");
    let source = &m.get("/api/v2/changesources")["changesources"][0];
    assert_eq!(source["name"], "repo");
    assert!(source["master"]["masterid"].as_i64().is_some(), "{source}");

    // Two commits in one push: two changes, oldest first, with what git says.
    let first = repo.commit("src/a.c", "first\n\nwith a body");
    let second = repo.commit("docs/b.md", "second");
    repo.push(&["main"]);
    let seen = wait_changes(&m, 2);
    assert_eq!(
        revisions(&seen),
        vec![
            ("main".into(), first.clone()),
            ("main".into(), second.clone())
        ]
    );
    assert_eq!(seen[0]["author"], "Ada <ada@example.org>");
    assert_eq!(seen[0]["committer"], "Cy <cy@example.org>");
    assert_eq!(seen[0]["comments"], "first\n\nwith a body");
    assert_eq!(seen[0]["files"], json!(["src/a.c"]));
    assert_eq!(seen[0]["when_timestamp"], 1_796_119_200.0);
    assert_eq!(seen[0]["project"], "moon");
    assert_eq!(seen[0]["category"], "polled");
    assert_eq!(seen[0]["repository"], repo.bare.to_str().unwrap());
    assert_ne!(seen[0]["revision"], history.as_str());

    // The scheduler builds the pushed revision.
    let change = seen[1]["changeid"].as_i64().unwrap();
    let build = m.wait_for("a build of the second commit", LONG, || {
        let builds = m.get(&format!("/api/v2/changes/{change}/builds"))["builds"].clone();
        builds
            .as_array()
            .and_then(|b| b.first().cloned())
            .filter(|b| b["complete"] == true)
    });
    let stdio = m.stdio_of(
        m.steps(build["buildid"].as_i64().unwrap())[0]["stepid"]
            .as_i64()
            .unwrap(),
    );
    assert!(
        stdio.contains(&format!("building {second} on main")),
        "{stdio}"
    );

    // A new branch reports only the commit that no known branch has.
    git(&repo.work, &["checkout", "-q", "-b", "feature"]);
    let feature = repo.commit("f.txt", "feature work");
    repo.push(&["feature"]);
    let seen = wait_changes(&m, 3);
    assert_eq!(
        revisions(&seen[2..]),
        vec![("feature".into(), feature.clone())]
    );

    // A force-push of rewritten history reports its new head only.
    git(&repo.work, &["checkout", "-q", "main"]);
    git(&repo.work, &["reset", "-q", "--hard", &history]);
    repo.commit("x.txt", "rewritten one");
    let rewritten = repo.commit("y.txt", "rewritten two");
    repo.push(&["--force", "main"]);
    let seen = wait_changes(&m, 4);
    assert_eq!(
        revisions(&seen[3..]),
        vec![("main".into(), rewritten.clone())]
    );

    // A deleted branch reports nothing.
    repo.push(&[":feature"]);
    // Pushed while the master is down: reported after the restart, once.
    m.stop(false);
    let down_one = repo.commit("z1.txt", "while down one");
    let down_two = repo.commit("z2.txt", "while down two");
    repo.push(&["main"]);
    m.start();
    let seen = wait_changes(&m, 6);
    assert_eq!(
        revisions(&seen[4..]),
        vec![("main".into(), down_one), ("main".into(), down_two)]
    );
    // Several polls later, still six: nothing reported twice.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(changes(&m).len(), 6);
    drop(w);
}

fn a_thousand_branches_poll_and_only_moved_ones_report(backend: &Backend) {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path());
    let base = repo.commit("base.txt", "base");
    repo.push(&["main"]);
    let refs: String = (0..1000)
        .map(|i| format!("create refs/heads/b{i:04} {base}\n"))
        .collect();
    let mut update = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    update
        .stdin
        .take()
        .unwrap()
        .write_all(refs.as_bytes())
        .unwrap();
    assert!(update.wait().unwrap().success());

    // Follow the b* branches through a Lua function of the branch name.
    let branches = r#"function(branch) return branch:sub(1, 1) == "b" end"#;
    let mut m = TestMaster::create(backend, &config(&repo, branches));
    m.start();
    wait_first_poll(&m);
    let recorded = m.sql_i64(
        "SELECT CAST(LENGTH(value_json) AS BIGINT) FROM object_state WHERE name = 'lastRev'",
    );
    // 1000 entries of "bNNNN":"<40 hex>" at least.
    assert!(recorded > 1000 * 50, "{recorded}");

    // Three branches move; main (not followed) moves too.
    let mut moved = Vec::new();
    for name in ["b0007", "b0500", "b0999"] {
        git(&repo.work, &["fetch", "-q", "origin", name]);
        git(
            &repo.work,
            &["checkout", "-q", "-B", name, &format!("origin/{name}")],
        );
        moved.push((name.to_string(), repo.commit(&format!("{name}.txt"), name)));
    }
    repo.push(&["b0007", "b0500", "b0999"]);
    git(&repo.work, &["checkout", "-q", "main"]);
    repo.commit("main.txt", "main moves, unfollowed");
    repo.push(&["main"]);
    let seen = wait_changes(&m, 3);
    let mut got = revisions(&seen);
    got.sort();
    assert_eq!(got, moved);
    assert!(
        m.log().contains("followed=1000 moved=3"),
        "the poll fetched only the moved branches:\n{}",
        m.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(changes(&m).len(), 3);
}
