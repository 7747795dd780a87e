//! Issue 15, the `git` step, against a real bare repository the test makes
//! (branches, a submodule, a pull request's ref, a force-push) and a real
//! worker: the exact revision, incremental and full checkouts, shallow
//! fetches of an older revision, one shared mirror per repository, and an
//! ssh key that leaves nothing behind.

use moonbot_tests::{Backend, LONG, TestMaster, git};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

moonbot_tests::on_both_databases!(the_git_step_checks_out_exactly_what_the_build_builds);

/// A bare `origin.git` and `sub.git`, and a work tree to commit from.
struct Repos {
    origin: PathBuf,
    work: PathBuf,
}

impl Repos {
    fn new(root: &Path) -> Repos {
        let origin = root.join("origin.git");
        let sub = root.join("sub.git");
        let work = root.join("work");
        let subwork = root.join("subwork");
        for bare in [&origin, &sub] {
            git(
                root,
                &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
            );
        }
        git(
            root,
            &["init", "-q", "-b", "main", subwork.to_str().unwrap()],
        );
        std::fs::write(subwork.join("s.txt"), "from the submodule\n").unwrap();
        git(&subwork, &["add", "."]);
        git(&subwork, &["commit", "-q", "-m", "sub"]);
        git(&subwork, &["push", "-q", sub.to_str().unwrap(), "main"]);
        git(root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(
            &work,
            &["remote", "add", "origin", origin.to_str().unwrap()],
        );
        Repos { origin, work }
    }

    fn commit(&self, file: &str, text: &str) -> String {
        std::fs::write(self.work.join(file), text).unwrap();
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", text.trim()]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

const CONFIG: &str = r#"
local mb = require "moonbot"
local GIT_ENV = { GIT_CONFIG_COUNT = "1", GIT_CONFIG_KEY_0 = "protocol.file.allow", GIT_CONFIG_VALUE_0 = "always" }
local function show(marker)
  return mb.steps.shell { name = "show", command =
    "cat a.txt; cat sub/s.txt 2>/dev/null; echo head=$(git rev-parse HEAD); echo count=$(git rev-list --count HEAD); " ..
    "if [ -e marker ]; then echo marker-kept; else echo marker-gone; fi; touch marker" }
end
return {
  title = "git step",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  secrets = { mb.secrets.files { dir = "secrets" } },
  workers = { mb.worker { name = "w1", max_builds = 1 } },
  builders = {
    mb.builder { name = "full", workernames = { "w1" }, steps = {
      mb.steps.git { repourl = "@ORIGIN@", mode = "full", method = "fresh", submodules = true, env = GIT_ENV },
      show(),
    } },
    mb.builder { name = "incremental", workernames = { "w1" }, steps = {
      mb.steps.git { repourl = "@ORIGIN@", branch = "main",
        ssh_private_key = mb.secret "deploy_key", retry_fetch = true },
      show(),
    } },
    mb.builder { name = "shallow", workernames = { "w1" }, steps = {
      mb.steps.git { repourl = "@ORIGIN@", shallow = true, mode = "full", method = "clobber" },
      show(),
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", codebases = { "" },
    builders = { "full", "incremental", "shallow" } } },
}
"#;

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

/// Force `builder` at `branch`/`revision`; the finished build, its `show`
/// step's log and its got_revision.
fn build(m: &TestMaster, builder: &str, branch: &str, revision: &str) -> (Value, String, Value) {
    let id = m.builderid(builder);
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": id, "reason": "test", "owner": "tester",
               "branch": branch, "revision": revision}),
    );
    assert_eq!(status, 200, "{answer}");
    let brid = answer["result"][1][id.to_string()].as_i64().unwrap();
    let done = m.wait_request_done(brid, LONG);
    let buildid = done["buildid"].as_i64().unwrap();
    let steps = m.steps(buildid);
    let git_log = m.stdio_of(steps[0]["stepid"].as_i64().unwrap());
    assert_eq!(done["results"], 0, "{done}\n{git_log}");
    let show = m.stdio_of(steps[1]["stepid"].as_i64().unwrap());
    let props = m.get(&format!("/api/v2/builds/{buildid}/properties"));
    let got = props["properties"][0]["got_revision"].clone();
    (done, format!("{git_log}\n{show}"), got)
}

fn the_git_step_checks_out_exactly_what_the_build_builds(backend: &Backend) {
    let mut m = TestMaster::create(backend, "");
    let repos = Repos::new(m.tmp.path());
    let c1 = repos.commit("a.txt", "one\n");
    git(
        &repos.work,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            m.tmp.path().join("sub.git").to_str().unwrap(),
            "sub",
        ],
    );
    let c2 = repos.commit("a.txt", "two\n");
    git(&repos.work, &["push", "-q", "origin", "main"]);
    git(&repos.work, &["checkout", "-q", "-b", "feature"]);
    let c3 = repos.commit("a.txt", "feature\n");
    git(&repos.work, &["push", "-q", "origin", "feature"]);
    git(&repos.work, &["checkout", "-q", "-b", "pr", "main"]);
    let pr = repos.commit("a.txt", "pull request\n");
    git(
        &repos.work,
        &["push", "-q", "origin", "HEAD:refs/pull/7/head"],
    );
    git(&repos.work, &["checkout", "-q", "main"]);

    let config = CONFIG.replace("@ORIGIN@", repos.origin.to_str().unwrap());
    m.write_config(&config);
    let secrets = Path::new(m.path()).join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("deploy_key"), KEY).unwrap();
    std::fs::set_permissions(
        secrets.join("deploy_key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    m.start();
    let mut w = m.make_worker("w1", &m.dir.clone());
    w.start();
    m.wait_connected("w1");
    let builds = w.dir.join("builds");

    // A branch's head, with its submodule.
    let (_, log, got) = build(&m, "full", "main", "");
    assert_eq!(got, json!([c2, "git"]), "{log}");
    assert!(
        log.contains("\ntwo\n") && log.contains("\nfrom the submodule\n"),
        "{log}"
    );
    assert!(log.contains("marker-gone"), "{log}");
    // Exactly the revision asked for, older than the branch's head; a full
    // (fresh) checkout removes what the last build left.
    let (_, log, got) = build(&m, "full", "main", &c1);
    assert_eq!(got, json!([c1, "git"]), "{log}");
    assert!(
        log.contains("\none\n") && log.contains(&format!("head={c1}")),
        "{log}"
    );
    assert!(log.contains("marker-gone"), "{log}");
    // Another branch, and a pull request's ref.
    let (_, log, got) = build(&m, "full", "feature", "");
    assert_eq!(got, json!([c3, "git"]), "{log}");
    let (_, log, got) = build(&m, "full", "refs/pull/7/head", "");
    assert_eq!(got, json!([pr, "git"]), "{log}");
    assert!(log.contains("\npull request\n"), "{log}");

    // Incremental: the checkout is reused (what a build left stays).
    let (_, log, _) = build(&m, "incremental", "", "");
    assert!(
        log.contains("marker-gone") && log.contains(&format!("head={c2}")),
        "{log}"
    );
    // A force-push: the branch's new head is built.
    git(&repos.work, &["commit", "-q", "--amend", "-m", "rewritten"]);
    let rewritten = git(&repos.work, &["rev-parse", "HEAD"]);
    git(&repos.work, &["push", "-q", "--force", "origin", "main"]);
    let (_, log, got) = build(&m, "incremental", "", "");
    assert_eq!(got, json!([rewritten, "git"]), "{log}");
    assert!(log.contains("marker-kept"), "{log}");
    // The key was on the worker for the step alone, and never shown.
    assert!(!builds.join("incremental/.moonbot-ssh").exists());
    assert!(!log.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{log}");

    // One mirror for the repository, which both builders' checkouts borrow
    // from: they hold no objects of their own.
    let mirrors: Vec<_> = std::fs::read_dir(builds.join(".moonbot-git"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    for builder in ["full", "incremental"] {
        let checkout = builds.join(builder).join("build");
        let alternates =
            std::fs::read_to_string(checkout.join(".git/objects/info/alternates")).unwrap();
        assert!(alternates.contains(".moonbot-git/"), "{alternates}");
        let counts = git(&checkout, &["count-objects", "-v"]);
        assert!(
            counts.lines().any(|l| l == "count: 0") && counts.lines().any(|l| l == "in-pack: 0"),
            "{builder}: {counts}"
        );
    }

    // Shallow: an older revision itself, one commit deep.
    let (_, log, got) = build(&m, "shallow", "main", &c1);
    assert_eq!(got, json!([c1, "git"]), "{log}");
    assert!(log.contains("count=1\n"), "{log}");
    assert!(
        !builds
            .join("shallow/build/.git/objects/info/alternates")
            .exists()
    );
}
