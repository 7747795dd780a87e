//! End-to-end: real master and worker processes over real QUIC with real
//! certificates, driven through the CLI and the REST API, on SQLite and PostgreSQL.

#[path = "e2e/choices.rs"]
mod choices;
#[path = "e2e/data_api.rs"]
mod data_api;
#[path = "e2e/forged_frames.rs"]
mod forged_frames;
#[path = "e2e/git_poller.rs"]
mod git_poller;
#[path = "e2e/git_step.rs"]
mod git_step;
#[path = "e2e/hooks.rs"]
mod hooks;
#[path = "e2e/locks.rs"]
mod locks;
#[path = "e2e/lua_steps.rs"]
mod lua_steps;
#[path = "e2e/pipelines.rs"]
mod pipelines;
#[path = "e2e/platforms.rs"]
mod platforms;
#[path = "e2e/renderables.rs"]
mod renderables;
#[path = "e2e/reporters.rs"]
mod reporters;
#[path = "e2e/schedulers.rs"]
mod schedulers;
#[path = "e2e/timed.rs"]
mod timed;
#[path = "e2e/transfers.rs"]
mod transfers;
#[path = "e2e/triggers.rs"]
mod triggers;

use moonbot_tests::{Backend, LONG, TestMaster, process_alive, run};
use serde_json::{Value, json};
use std::time::Duration;

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "e2e",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 4 } },
  builders = {
    mb.builder { name = "ok", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "greet", command = { "echo", "hello world" } },
      mb.steps.shell { name = "stderr", command = "echo to-stderr >&2" },
    } },
    mb.builder { name = "bad", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "compile", command = "echo compiling; exit 3", halt_on_failure = true },
      mb.steps.shell { name = "test", command = { "echo", "never runs" } },
      mb.steps.shell { name = "cleanup", command = { "echo", "cleanup" }, always_run = true },
    } },
    mb.builder { name = "sleepy", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "sleep", command = "sleep 300 & echo $! > @TMP@/pids; echo $$ >> @TMP@/pids; echo waiting; sleep 300" },
    } },
    mb.builder { name = "flaky", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "maybe-slow",
        command = "if [ -e @TMP@/quick ]; then echo quick; else echo slow; sleep 120; fi" },
    } },
    mb.builder { name = "biglog", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "cat", command = { "cat", "@TMP@/payload" } },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force",
    builders = { "ok", "bad", "sleepy", "flaky", "biglog" } } },
}
"#;

moonbot_tests::on_both_databases!(
    builds_pass_and_fail_as_buildbot_would,
    stopping_a_build_kills_its_process_tree,
    a_lost_worker_means_retry_and_the_request_runs_again,
    master_stop_and_crash_lose_no_request,
    foreign_ca_and_unknown_names_are_refused,
    a_ten_mib_log_reads_back_byte_for_byte,
    pages_show_control_characters_and_send_security_headers,
    a_copied_worker_is_refused_while_the_original_is_connected,
    reads_of_huge_logs_and_texts_stay_small,
    idle_and_slow_clients_cannot_crowd_out_others,
    each_browser_gets_its_own_csrf_token,
    changes_come_in_through_sendchange,
    a_push_reports_each_new_commit_through_the_post_receive_hook,
    github_deliveries_become_changes_once_and_only_when_signed,
    gitlab_deliveries_need_the_token_and_merge_requests_keep_their_own_ref,
    gitea_deliveries_are_signed_and_made_oldest_first,
);

/// Issue 14, Gitea's hook: the bodies Gitea signs (`X-Gitea-Signature`, a
/// bare hex HMAC-SHA256, key `test` as in buildbot-gitea's tests) become
/// changes oldest first; a wrong signature stores nothing; a redelivery
/// (`X-Gitea-Delivery`) makes nothing.
fn gitea_deliveries_are_signed_and_made_oldest_first(backend: &Backend) {
    let config = CONFIG.replace(
        r#"www = { port = 0, bind = "127.0.0.1" }"#,
        r#"www = { port = 0, bind = "127.0.0.1", change_hooks = { gitea = { secret = "test" } } }"#,
    );
    let (m, _w) = TestMaster::started_with_worker(backend, &config, "w1");
    let body = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/webhooks/gitea")
                .join(format!("{name}.json")),
        )
        .unwrap()
    };
    let signed = |bytes: &[u8]| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"test");
        hex::encode(ring::hmac::sign(&key, bytes))
    };
    let deliver = |event: &str, bytes: &[u8], signature: &str, id: &str| {
        let req = ureq::post(&format!("{}/change_hook/gitea", m.www))
            .set("content-type", "application/json")
            .set("x-gitea-event", event)
            .set("x-gitea-delivery", id)
            .set("x-gitea-signature", signature);
        match req.send_bytes(bytes) {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    };
    let push = body("bbgitea-push");
    // buildbot-gitea's recorded signature for this body starts so.
    assert!(signed(&push).starts_with("b5feb0994ad2"));
    let (status, _) = deliver("push", &push, &signed(b"other"), "g-0");
    assert_eq!(status, 403);
    let (status, answer) = deliver("push", &push, &signed(&push), "g-1");
    assert_eq!(status, 200, "{answer}");
    let ids: Vec<i64> = answer["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{answer}");
    let first = &m.get(&format!("/api/v2/changes/{}", ids[0]))["changes"][0];
    assert!(
        first["revision"].as_str().unwrap().starts_with("ad7157cc"),
        "{first}"
    );
    assert_eq!(first["branch"], "feature-branch");
    let (_, again) = deliver("push", &push, &signed(&push), "g-1");
    assert_eq!(again["changes"], json!([]));
    let pr = body("goscm-pull_request_opened");
    let (status, answer) = deliver("pull_request", &pr, &signed(&pr), "g-2");
    assert_eq!(status, 200, "{answer}");
    let id = answer["changes"][0].as_i64().unwrap();
    let change = &m.get(&format!("/api/v2/changes/{id}"))["changes"][0];
    assert_eq!(change["branch"], "refs/pull/1/head");
    assert_eq!(change["properties"]["gitea.number"], json!([1, "Change"]));
    assert_eq!(
        m.get("/api/v2/changes")["changes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Issue 14, GitLab's hook: GitLab's own bodies with the right
/// `X-Gitlab-Token` become changes, with the wrong or no token nothing; a
/// merge request's change is on its own ref; a comment makes none; a retry
/// (same `Idempotency-Key`) makes no second change.
fn gitlab_deliveries_need_the_token_and_merge_requests_keep_their_own_ref(backend: &Backend) {
    let config = CONFIG.replace(
        r#"www = { port = 0, bind = "127.0.0.1" }"#,
        r#"www = { port = 0, bind = "127.0.0.1",
            change_hooks = { gitlab = { secret = "the token", codebase = "gl" } } }"#,
    );
    let (m, _w) = TestMaster::started_with_worker(backend, &config, "w1");
    let body = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/webhooks/gitlab")
                .join(format!("{name}.json")),
        )
        .unwrap()
    };
    let deliver = |event: &str, name: &str, token: Option<&str>, key: &str| {
        let mut req = ureq::post(&format!("{}/change_hook/gitlab", m.www))
            .set("content-type", "application/json")
            .set("x-gitlab-event", event)
            .set("idempotency-key", key);
        if let Some(t) = token {
            req = req.set("x-gitlab-token", t);
        }
        match req.send_bytes(&body(name)) {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    };
    let count = || {
        m.get("/api/v2/changes")["changes"]
            .as_array()
            .unwrap()
            .len()
    };

    for (token, what) in [(None, "no token"), (Some("not it"), "a wrong token")] {
        let (status, answer) = deliver("Push Hook", "bb-push", token, what);
        assert_eq!(status, 403, "{what}: {answer}");
    }
    assert_eq!(count(), 0);
    let (status, answer) = deliver("Push Hook", "bb-push", Some("the token"), "k-1");
    assert_eq!(status, 200, "{answer}");
    let ids = answer["changes"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2, "{answer}");
    let first = &m.get(&format!("/api/v2/changes/{}", ids[0]))["changes"][0];
    assert_eq!(
        first["revision"],
        "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327"
    );
    assert_eq!(first["author"], "Jordi Mallach <jordi@softcatala.org>");
    assert_eq!(first["codebase"], "gl");
    // GitLab's retry of the same delivery: nothing new.
    let (status, _) = deliver("Push Hook", "bb-push", Some("the token"), "k-1");
    assert_eq!(status, 200);
    assert_eq!(count(), 2);

    let (status, answer) = deliver(
        "Merge Request Hook",
        "bb-mr-addcommit",
        Some("the token"),
        "k-2",
    );
    assert_eq!(status, 200, "{answer}");
    let id = answer["changes"][0].as_i64().unwrap();
    let change = &m.get(&format!("/api/v2/changes/{id}"))["changes"][0];
    assert_eq!(change["branch"], "refs/merge-requests/6/head");
    assert_eq!(
        change["properties"]["source_branch"],
        json!(["ms-viewport", "Change"])
    );
    assert_eq!(
        change["properties"]["target_branch"],
        json!(["master", "Change"])
    );

    let (status, answer) = deliver("Note Hook", "bb-note-mr", Some("the token"), "k-3");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"], json!([]));
    assert_eq!(count(), 3);
    // Only the configured dialect answers.
    assert_eq!(m.get_status("/change_hook/github").0, 404);
    assert!(!m.log().contains("the token"));
}

const HOOK_SECRET: &str = "it's a s3cret";

/// A GitHub webhook body from `tests/fixtures/webhooks/github/`.
fn github_case(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks/github")
            .join(format!("{name}.json")),
    )
    .unwrap()
}

/// POST a delivery as GitHub sends it; (status, answer).
fn deliver(
    m: &TestMaster,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
    content_type: &str,
) -> (u16, Value) {
    let mut req = ureq::post(&format!("{}/change_hook/github", m.www))
        .set("content-type", content_type)
        .set("x-github-event", event)
        .set("x-github-delivery", delivery)
        .set("user-agent", "GitHub-Hookshot/test");
    if let Some(sig) = signature {
        req = req.set("x-hub-signature-256", &sig);
    }
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

fn sign(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body)))
}

/// Issue 14, GitHub's hook: signed deliveries of GitHub's own example bodies
/// become changes; unsigned, badly signed, malformed and oversized ones are
/// refused and store nothing; a redelivery (even after a restart) makes no
/// second change; the secret shows nowhere.
fn github_deliveries_become_changes_once_and_only_when_signed(backend: &Backend) {
    let config = CONFIG.replace(
        r#"www = { port = 0, bind = "127.0.0.1" }"#,
        &format!(
            r#"www = {{ port = 0, bind = "127.0.0.1",
                change_hooks = {{ github = {{ secret = "{HOOK_SECRET}", strict = true }} }} }}"#
        ),
    );
    assert_ne!(config, CONFIG);
    let (mut m, _w) = TestMaster::started_with_worker(backend, &config, "w1");
    let count = |m: &TestMaster| {
        m.get("/api/v2/changes")["changes"]
            .as_array()
            .unwrap()
            .len()
    };
    let json = "application/json";

    let push = github_case("push-4");
    let (status, answer) = deliver(&m, "push", "d-1", &push, Some(sign(&push)), json);
    assert_eq!(status, 200, "{answer}");
    let id = answer["changes"][0].as_i64().unwrap();
    let change = &m.get(&format!("/api/v2/changes/{id}"))["changes"][0];
    assert_eq!(change["branch"], "master");
    assert_eq!(
        change["revision"],
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    );
    assert_eq!(change["files"], json!(["README.md"]));
    assert_eq!(
        change["repository"],
        "https://github.com/Codertocat/Hello-World"
    );
    assert_eq!(change["project"], "Codertocat/Hello-World");

    // The same delivery again: answered, nothing made.
    let (status, answer) = deliver(&m, "push", "d-1", &push, Some(sign(&push)), json);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"], json!([]));
    assert_eq!(count(&m), 1);

    // Eight redeliveries of a new delivery at once: its change is made once.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let (www, body) = (m.www.clone(), push.clone());
            std::thread::spawn(move || {
                ureq::post(&format!("{www}/change_hook/github"))
                    .set("content-type", "application/json")
                    .set("x-github-event", "push")
                    .set("x-github-delivery", "d-race")
                    .set("x-hub-signature-256", &sign(&body))
                    .send_bytes(&body)
                    .map(|r| r.status())
                    .unwrap_or(0)
            })
        })
        .collect();
    for answer in racing {
        assert_eq!(answer.join().unwrap(), 200);
    }
    assert_eq!(count(&m), 2, "one change for the raced delivery");

    // Refusals store nothing.
    let refusals: [(&str, Vec<u8>, Option<String>, u16); 4] = [
        ("unsigned", push.clone(), None, 403),
        (
            "badly signed",
            push.clone(),
            Some(sign(b"another body")),
            403,
        ),
        ("not hex", push.clone(), Some("sha256=zz".into()), 403),
        (
            "malformed",
            b"{not json".to_vec(),
            Some(sign(b"{not json")),
            400,
        ),
    ];
    for (what, body, signature, expected) in refusals {
        let (status, answer) = deliver(&m, "push", what, &body, signature, json);
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    // An oversized one is answered from its headers (the raw socket reads the
    // answer without sending the body, as a client that waits would).
    let oversized = {
        use std::io::{Read, Write};
        let host = host_of(&m);
        let mut socket = std::net::TcpStream::connect(&host).unwrap();
        write!(
            socket,
            "POST /change_hook/github HTTP/1.1\r\nHost: {host}\r\nX-GitHub-Event: push\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 << 20
        )
        .unwrap();
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        answer
    };
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
    assert_eq!(count(&m), 2);

    // A pull request: a change on its own ref, with its properties.
    let pr = github_case("pull_request-0");
    let (status, answer) = deliver(&m, "pull_request", "d-2", &pr, Some(sign(&pr)), json);
    assert_eq!(status, 200, "{answer}");
    let id = answer["changes"][0].as_i64().unwrap();
    let change = &m.get(&format!("/api/v2/changes/{id}"))["changes"][0];
    assert_eq!(change["branch"], "refs/pull/2/head");
    assert_eq!(change["properties"]["github.number"], json!([2, "Change"]));

    // A form-encoded delivery (GitHub's other content type): the tag.
    let tag = github_case("push-0");
    let form =
        serde_urlencoded::to_string([("payload", std::str::from_utf8(&tag).unwrap())]).unwrap();
    let (status, answer) = deliver(
        &m,
        "push",
        "d-3",
        form.as_bytes(),
        Some(sign(form.as_bytes())),
        "application/x-www-form-urlencoded",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"].as_array().unwrap().len(), 1, "{answer}");

    // Ping and events that make no change: 200, nothing stored, one log line.
    let ping = github_case("ping-0");
    let (status, _) = deliver(&m, "ping", "d-4", &ping, Some(sign(&ping)), json);
    assert_eq!(status, 200);
    let (status, answer) = deliver(&m, "issues", "d-5", b"{}", Some(sign(b"{}")), json);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(count(&m), 4);
    m.wait_for("the ignored event in the log", LONG, || {
        m.log()
            .contains("the 'issues' event makes no change")
            .then_some(())
    });
    // Only configured dialects answer.
    let (status, _) = m.get_status("/change_hook/gitlab");
    assert_eq!(status, 404);

    // A redelivery after a restart still makes nothing.
    m.stop(false);
    m.pin_quic_port(&config);
    m.start();
    let (status, answer) = deliver(&m, "push", "d-1", &push, Some(sign(&push)), json);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(count(&m), 4);
    // The secret shows in no log line and no API answer.
    assert!(!m.log().contains(HOOK_SECRET));
    assert!(!m.get("/api/v2/config").to_string().contains(HOOK_SECRET));
}

/// `contrib/git-post-receive` in a real bare repository: each pushed commit
/// becomes one change, oldest first; a new branch reports only its own
/// commits, a tag its commit, a deleted branch nothing.
fn a_push_reports_each_new_commit_through_the_post_receive_hook(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let tmp = m.tmp.path();
    let bare = tmp.join("r.git");
    let work = tmp.join("w");
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Tess")
            .env("GIT_AUTHOR_EMAIL", "tess@example.org")
            .env("GIT_COMMITTER_NAME", "Tess")
            .env("GIT_COMMITTER_EMAIL", "tess@example.org")
            .env("MOONBOT_MASTER", &m.www)
            .env("MOONBOT_REPOSITORY", "https://example.org/r.git")
            .env("MOONBOT", moonbot_tests::bin("moonbot"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "git {args:?}: {text}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(
        tmp,
        &["init", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let hook = bare.join("hooks/post-receive");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/git-post-receive"),
        &hook,
    )
    .unwrap();
    git(
        tmp,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let commit = |file: &str, message: &str| {
        let path = work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, message).unwrap();
        git(&work, &["add", file]);
        git(&work, &["commit", "-q", "-m", message]);
        git(&work, &["rev-parse", "HEAD"])
    };
    let changes = || -> Vec<Value> {
        m.get("/api/v2/changes?order=changeid")["changes"]
            .as_array()
            .unwrap()
            .clone()
    };

    let first = commit("a.txt", "first");
    let second = commit("dir/b.txt", "second\n\nwith a body");
    git(&work, &["push", "-q", "origin", "main"]);
    let seen = changes();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["revision"], first.as_str());
    assert_eq!(seen[0]["files"], json!(["a.txt"]));
    assert_eq!(seen[0]["comments"].as_str().unwrap().trim(), "first");
    assert_eq!(seen[1]["revision"], second.as_str());
    assert_eq!(seen[1]["files"], json!(["dir/b.txt"]));
    assert_eq!(
        seen[1]["comments"].as_str().unwrap().trim(),
        "second\n\nwith a body"
    );
    assert_eq!(seen[1]["author"], "Tess <tess@example.org>");
    assert_eq!(seen[1]["branch"], "main");
    assert_eq!(seen[1]["repository"], "https://example.org/r.git");

    // A new branch: only the commit main does not have.
    git(&work, &["checkout", "-q", "-b", "feature"]);
    let third = commit("c.txt", "third");
    git(&work, &["push", "-q", "origin", "feature"]);
    let seen = changes();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2]["revision"], third.as_str());
    assert_eq!(seen[2]["branch"], "feature");

    // A deleted branch reports nothing; a tag reports its commit.
    git(&work, &["push", "-q", "origin", ":feature"]);
    assert_eq!(changes().len(), 3);
    git(&work, &["tag", "v1", &first]);
    git(&work, &["push", "-q", "origin", "v1"]);
    let seen = changes();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[3]["branch"], "v1");
    assert_eq!(seen[3]["revision"], first.as_str());
}

/// Issue 14 (a first part): `moonbot sendchange` stores a change with its
/// files, properties and source stamp, publishes `changes/N/new`, and the
/// API shows it at Buildbot's paths.
fn changes_come_in_through_sendchange(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let host = host_of(&m);
    let (mut ws, _) = tungstenite::client(
        format!("ws://{host}/ws"),
        std::net::TcpStream::connect(&host).unwrap(),
    )
    .unwrap();
    ws.send(tungstenite::Message::text(
        r#"{"cmd":"startConsuming","path":"changes/*/*","_id":1}"#,
    ))
    .unwrap();
    ws.read().unwrap();

    let send = |revision: &str, comments: &str| {
        let (code, out, err) = run(
            "moonbot",
            &[
                "sendchange",
                "--master",
                &m.www,
                "--who",
                "Ann <ann@example.org>",
                "-R",
                "https://example.org/r.git",
                "-P",
                "proj",
                "-b",
                "main",
                "-r",
                revision,
                "-C",
                "nightly",
                "-p",
                "pr:7",
                "-c",
                comments,
                "--when",
                "1700000000",
                "-l",
                "https://example.org/c/1",
                "--codebase",
                "cb",
                "src/a.c",
                "docs/b.md",
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        out.trim()
            .strip_prefix("change ")
            .and_then(|rest| rest.strip_suffix(" added"))
            .unwrap_or_else(|| panic!("{out}"))
            .parse::<i64>()
            .unwrap()
    };
    let first = send("abc123", "Fix the thing\n\nA longer body.");
    let change = &m.get(&format!("/api/v2/changes/{first}"))["changes"][0];
    assert_eq!(change["changeid"], first);
    assert_eq!(change["author"], "Ann <ann@example.org>");
    assert_eq!(change["comments"], "Fix the thing\n\nA longer body.");
    assert_eq!(change["files"], json!(["src/a.c", "docs/b.md"]));
    assert_eq!(change["properties"], json!({"pr": ["7", "Change"]}));
    assert_eq!(change["revision"], "abc123");
    assert_eq!(change["branch"], "main");
    assert_eq!(change["category"], "nightly");
    assert_eq!(change["when_timestamp"], 1_700_000_000.0);
    assert_eq!(change["revlink"], "https://example.org/c/1");
    assert_eq!(
        (
            &change["repository"],
            &change["project"],
            &change["codebase"]
        ),
        (
            &json!("https://example.org/r.git"),
            &json!("proj"),
            &json!("cb")
        )
    );
    let stamp = &change["sourcestamp"];
    assert_eq!(stamp["revision"], "abc123");
    assert_eq!(stamp["branch"], "main");
    assert_eq!(stamp["codebase"], "cb");
    let ssid = stamp["ssid"].as_i64().unwrap();

    // The event carries the change as the API shows it.
    let event: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(event["k"], format!("changes/{first}/new"));
    assert_eq!(event["m"]["files"], change["files"]);

    // The same revision again shares its source stamp; another has its own.
    let again = send("abc123", "the same commit, reported twice");
    let other = send("def456", "the next commit");
    let of_stamp = m.get(&format!("/api/v2/sourcestamps/{ssid}/changes"));
    let ids: Vec<i64> = of_stamp["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["changeid"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [again, first], "newest first");
    let stamps = m.get("/api/v2/sourcestamps");
    assert_eq!(stamps["sourcestamps"].as_array().unwrap().len(), 2);
    assert_eq!(
        m.get(&format!("/api/v2/sourcestamps/{ssid}"))["sourcestamps"][0]["ssid"],
        ssid
    );
    let listed = m.get("/api/v2/changes?branch=main&order=-changeid");
    assert_eq!(listed["changes"][0]["changeid"], other);
    assert_eq!(
        listed["changes"][0]["files"],
        json!(["src/a.c", "docs/b.md"])
    );
    // No build has been made from them yet (there is no scheduler for changes).
    assert_eq!(
        m.get(&format!("/api/v2/changes/{first}/builds"))["builds"],
        json!([])
    );
    let (status, _) = m.get_status("/api/v2/changes/999999/builds");
    assert_eq!(status, 404);

    // The changes page lists them; a change's page shows it all, escaped,
    // with its link only when it is a web address.
    let (status, page) = m.get_status("/changes");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("href=\"/changes/{other}\"")),
        "{page}"
    );
    assert!(page.contains("Ann &lt;ann@example.org&gt;"), "{page}");
    let (status, page) = m.get_status(&format!("/changes/{first}"));
    assert_eq!(status, 200);
    for shown in [
        "<li>src/a.c</li>",
        "<li>docs/b.md</li>",
        "Fix the thing\n\nA longer body.",
        "<code>abc123</code>",
        "<a href=\"https://example.org/c/1\" rel=\"noreferrer\">",
        "<tr><th>pr</th><td>7</td><td>Change</td></tr>",
        "No build has been made from this change.",
    ] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    let (_, answer) = m.rpc(
        "/api/v2/changes",
        "add",
        json!({"author": "<b>x</b>", "comments": "<script>alert(1)</script>",
               "revlink": "javascript:alert(1)"}),
    );
    let hostile = answer["result"].as_i64().unwrap();
    let (_, page) = m.get_status(&format!("/changes/{hostile}"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;b&gt;x&lt;/b&gt;") && !page.contains("<b>x"),
        "{page}"
    );
    assert!(!page.contains("href=\"javascript:"), "{page}");
    assert_eq!(m.get_status("/changes/999999").0, 404);

    // A change without an author, or with a field Buildbot does not have, is
    // refused and stores nothing.
    let before = m.get("/api/v2/changes")["changes"]
        .as_array()
        .unwrap()
        .len();
    for params in [
        json!({"comments": "nobody"}),
        json!({"author": "a", "colour": "red"}),
    ] {
        let (status, answer) = m.rpc("/api/v2/changes", "add", params);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
    }
    assert_eq!(
        m.get("/api/v2/changes")["changes"]
            .as_array()
            .unwrap()
            .len(),
        before
    );
    // A forced build has no changes.
    let build = m.wait_request_done(m.force(m.builderid("ok")), LONG);
    let buildid = build["buildid"].as_i64().unwrap();
    assert_eq!(
        m.get(&format!("/api/v2/builds/{buildid}/changes"))["changes"],
        json!([])
    );
}

/// Issue 20, items 5 and 7: without `auth`, each browser gets a cookie of
/// its own and a CSRF token that goes with it, so one visitor's token (or a
/// page of another site) cannot act for another; with an https
/// `buildbot_url`, cookies are `Secure`.
fn each_browser_gets_its_own_csrf_token(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let visit = |cookie: Option<&str>| {
        let mut req = agent.get(&format!("{}/builders/{}", m.www, m.builderid("ok")));
        if let Some(c) = cookie {
            req = req.set("cookie", c);
        }
        let response = req.call().unwrap();
        let set_cookie = response.header("set-cookie").map(str::to_string);
        let page = response.into_string().unwrap();
        let start = page.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
        (set_cookie, page[start..start + 64].to_string())
    };
    let (set_a, token_a) = visit(None);
    let (set_b, token_b) = visit(None);
    let set_a = set_a.expect("a first visit gets a browser cookie");
    assert!(set_a.starts_with("moonbot_browser="), "{set_a}");
    assert!(
        set_a.contains("HttpOnly") && set_a.contains("SameSite=Strict"),
        "{set_a}"
    );
    assert!(!set_a.contains("Secure"), "{set_a}");
    let cookie_a = set_a.split(';').next().unwrap().to_string();
    let cookie_b = set_b.unwrap().split(';').next().unwrap().to_string();
    assert_ne!(cookie_a, cookie_b);
    assert_ne!(token_a, token_b, "two browsers got the same CSRF token");
    // A returning browser keeps its cookie and its token.
    let (again, token_again) = visit(Some(&cookie_a));
    assert_eq!(again, None);
    assert_eq!(token_again, token_a);

    let ok = m.builderid("ok");
    let force = |cookie: Option<&str>, token: &str| {
        let mut req = agent.post(&format!("{}/builders/{ok}/force", m.www));
        if let Some(c) = cookie {
            req = req.set("cookie", c);
        }
        match req.send_form(&[
            ("csrf_token", token),
            ("scheduler", "force"),
            ("reason", "csrf"),
        ]) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        force(Some(&cookie_a), &token_b),
        403,
        "B's token with A's cookie"
    );
    assert_eq!(force(None, &token_a), 403, "a token without its cookie");
    assert_eq!(force(Some(&cookie_a), "0badc0de"), 403, "a made-up token");
    assert_eq!(force(Some(&cookie_a), &token_a), 303, "A's own token");

    // An https buildbot_url makes every cookie Secure.
    m.write_config(&CONFIG.replace(
        "title = \"e2e\",",
        "title = \"e2e\", buildbot_url = \"https://ci.example.org/\",",
    ));
    let (code, out, err) = run("moonbot", &["reconfig", m.path()]);
    assert_eq!(code, 0, "{out}{err}");
    let (set, _) = visit(None);
    assert!(set.unwrap().contains("; Secure"));
}

/// Force `builderid` with `reason`; the build request's id.
fn force_with_reason(m: &TestMaster, builderid: i64, reason: &str) -> i64 {
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": builderid, "reason": reason}),
    );
    assert_eq!(status, 200, "{answer}");
    answer["result"][1][builderid.to_string()].as_i64().unwrap()
}

/// The master's resident memory now, and its peak since the last
/// [`reset_peak_memory`], in KiB (`/proc/PID/status`).
fn memory_kib(m: &TestMaster) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid().unwrap())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Start counting the master's peak memory from now (`clear_refs` 5).
fn reset_peak_memory(m: &TestMaster) {
    std::fs::write(format!("/proc/{}/clear_refs", m.pid().unwrap()), "5").unwrap();
}

/// Issue 20, item 2: any one read costs the master a bounded amount of
/// memory, whatever the data: eight concurrent reads of a 100 MB log's
/// contents, and of pages and lists after builds with 1 MB reasons.
fn reads_of_huge_logs_and_texts_stay_small(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let mut payload = Vec::with_capacity(100 << 20);
    let mut line = 0u64;
    while payload.len() < 100 << 20 {
        payload.extend_from_slice(
            format!("{line:09} {}\n", "x".repeat(line as usize % 200)).as_bytes(),
        );
        line += 1;
    }
    std::fs::write(m.tmp.path().join("payload"), &payload).unwrap();
    let build = m.wait_request_done(m.force(m.builderid("biglog")), Duration::from_secs(600));
    assert_eq!(build["results"], 0);
    let stepid = m.steps(build["buildid"].as_i64().unwrap())[0]["stepid"]
        .as_i64()
        .unwrap();
    let logid = m.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"][0]["logid"]
        .as_i64()
        .unwrap();

    // Builds whose reasons are 1,000,000 characters (a force form's body
    // holds one just under its 1 MiB limit).
    let ok = m.builderid("ok");
    let long_reason = format!("start{}end", "r".repeat(1_000_000 - 8));
    for _ in 0..8 {
        m.wait_request_done(force_with_reason(&m, ok, &long_reason), LONG);
    }

    let (idle, _) = memory_kib(&m);
    reset_peak_memory(&m);
    let reads: Vec<_> = (0..8)
        .map(|i| {
            let www = m.www.clone();
            std::thread::spawn(move || {
                let path = match i % 4 {
                    0 | 1 => format!("/api/v2/logs/{logid}/contents"),
                    2 => "/grid".to_string(),
                    _ => "/api/v2/builds?property=*".to_string(),
                };
                let body = ureq::get(&format!("{www}{path}"))
                    .call()
                    .unwrap()
                    .into_string()
                    .unwrap();
                (path, body)
            })
        })
        .collect();
    for read in reads {
        let (path, body) = read.join().unwrap();
        assert!(body.len() < 4 << 20, "{path}: {} bytes", body.len());
        if path.contains("/contents") {
            // One answer holds at most 1 MiB of lines, from the first.
            let page: Value = serde_json::from_str(&body).unwrap();
            let content = page["logchunks"][0]["content"].as_str().unwrap();
            assert!(content.len() <= 1 << 20, "{}", content.len());
            assert!(content.len() > 1 << 19, "{}", content.len());
            assert!(content.ends_with('\n'));
        }
    }
    let (_, peak) = memory_kib(&m);
    assert!(
        peak.saturating_sub(idle) < 64 << 10,
        "eight reads took the master from {idle} KiB to {peak} KiB"
    );

    // The next page follows on from the first; a huge offset is an empty page.
    let first = m.get(&format!("/api/v2/logs/{logid}/contents"));
    let first = first["logchunks"][0]["content"].as_str().unwrap();
    let next_line = first.lines().count();
    let last_number: u64 = first.lines().last().unwrap()[1..10].parse().unwrap();
    let next = m.get(&format!(
        "/api/v2/logs/{logid}/contents?offset={next_line}&limit=1"
    ));
    let next = next["logchunks"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        next.starts_with(&format!("o{:09} ", last_number + 1)),
        "line {next_line}: {next}"
    );

    // Lists show long texts cut, with a mark; the object's own path and page
    // show them whole.
    let sets = m.get("/api/v2/buildsets?order=-bsid&limit=1");
    let listed = sets["buildsets"][0]["reason"].as_str().unwrap();
    assert_eq!(listed.chars().count(), 1001, "{}", &listed[..50]);
    assert!(listed.starts_with("start") && listed.ends_with('…'));
    let bsid = sets["buildsets"][0]["bsid"].as_i64().unwrap();
    let whole = m.get(&format!("/api/v2/buildsets/{bsid}"));
    assert_eq!(whole["buildsets"][0]["reason"], long_reason.as_str());
    let builds = m.get("/api/v2/builds?order=-buildid&limit=1&property=reason");
    let listed = builds["builds"][0]["properties"]["reason"][0]
        .as_str()
        .unwrap();
    assert!(
        listed.len() < 2000 && listed.ends_with('…'),
        "{}",
        listed.len()
    );
    let buildid = builds["builds"][0]["buildid"].as_i64().unwrap();
    let (status, page) = m.get_status(&format!("/builds/{buildid}"));
    assert_eq!(status, 200);
    assert!(page.contains(&long_reason));

    // A list without `limit` is a page of 500; a larger `limit` gets at most 2000.
    let when = 1_700_000_000;
    for batch in 0..5 {
        let rows: Vec<String> = (0..500)
            .map(|i| format!("('ann', 'c{batch}-{i}', {when}, 'r', '', 'p')"))
            .collect();
        m.sql(&format!(
            "INSERT INTO changes (author, comments, when_timestamp, repository, codebase, project) \
             VALUES {}",
            rows.join(",")
        ));
    }
    assert_eq!(
        m.get("/api/v2/changes")["changes"]
            .as_array()
            .unwrap()
            .len(),
        500
    );
    assert_eq!(
        m.get("/api/v2/changes?limit=100000")["changes"]
            .as_array()
            .unwrap()
            .len(),
        2000
    );
    assert_eq!(
        m.get("/api/v2/changes?limit=3")["changes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// `HOST:PORT` of the master's web port.
fn host_of(m: &TestMaster) -> String {
    m.www.trim_start_matches("http://").to_string()
}

const CROWDED_CONFIG_WWW: &str =
    r#"www = { port = 0, bind = "127.0.0.1", max_connections = 40, idle_timeout = 2 }"#;

/// Issue 20, item 4: idle and half-sent connections are closed, the web port
/// holds at most `max_connections` and a real client still gets in, and a
/// `/ws` client that stops reading is dropped instead of queueing every
/// event.
fn idle_and_slow_clients_cannot_crowd_out_others(backend: &Backend) {
    use std::io::{Read, Write};
    let config = CONFIG.replace(
        r#"www = { port = 0, bind = "127.0.0.1" }"#,
        CROWDED_CONFIG_WWW,
    );
    assert_ne!(config, CONFIG);
    let (mut m, _w) = TestMaster::started_with_worker(backend, &config, "w1");
    let host = m.www.trim_start_matches("http://").to_string();
    let closed_by_master = |socket: &mut std::net::TcpStream| {
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Closed, perhaps after a word (503 when refused at the cap).
        let mut said = Vec::new();
        match socket.read_to_end(&mut said) {
            Ok(_) => said.is_empty() || said.starts_with(b"HTTP/1.1 503"),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };

    // Half a request's headers, then silence: closed after the idle timeout.
    let mut partial = std::net::TcpStream::connect(&host).unwrap();
    write!(partial, "GET /api/v2/builders HTTP/1.1\r\nHost: {host}\r\n").unwrap();
    assert!(
        closed_by_master(&mut partial),
        "a half-sent request stayed open"
    );

    // 100 idle sockets against a cap of 40: a real client still gets in
    // (the longest-quiet make room), and every idle one is closed.
    let mut idle: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(&host).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let answer = m.get("/api/v2/builders");
        assert!(!answer["builders"].as_array().unwrap().is_empty());
    }
    for socket in &mut idle {
        assert!(closed_by_master(socket), "an idle socket stayed open");
    }

    // A /ws client that consumes buildsets and then reads nothing, with a
    // small receive buffer: five buildsets with 1 MB reasons overflow its
    // queue, and the master closes it rather than keep them all.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = host.parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    let (mut ws, _) = tungstenite::client(format!("ws://{host}/ws"), stream).unwrap();
    ws.send(tungstenite::Message::text(
        r#"{"cmd":"startConsuming","path":"buildsets/*/*","_id":1}"#,
    ))
    .unwrap();
    let ack = ws.read().unwrap();
    assert!(ack.to_text().unwrap().contains("\"code\":200"), "{ack}");
    let ok = m.builderid("ok");
    let reason = "r".repeat(1_000_000);
    for _ in 0..6 {
        force_with_reason(&m, ok, &reason);
    }
    m.wait_for("the master to drop the slow /ws client", LONG, || {
        m.log().contains("too slow").then_some(())
    });
    // Reading now finds the end of the stream before the sixth buildset.
    let mut events = 0;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(_)) => events += 1,
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(events < 6 * 2, "{events} events arrived");

    // Under `ulimit -n 256`, the cap leaves room for everything else: 400
    // idle sockets neither stop the API nor a build (the database and the
    // worker keep their files).
    m.stop(false);
    m.pin_quic_port(CONFIG);
    m.start_with_open_files(256);
    m.wait_for("the web port's limit in the log", LONG, || {
        m.log().contains("at most 128 connections").then_some(())
    });
    m.wait_connected("w1");
    let idle: Vec<_> = (0..400)
        .map(|_| std::net::TcpStream::connect(host_of(&m)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let build = m.wait_request_done(m.force(m.builderid("ok")), LONG);
    assert_eq!(build["results"], 0, "{build}");
    drop(idle);
    assert!(!m.log().contains("Too many open files"), "{}", m.log());

    // A /ws from a page of another site is refused.
    let host = host_of(&m);
    let mut foreign = std::net::TcpStream::connect(&host).unwrap();
    write!(
        foreign,
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    foreign
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = foreign.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

fn a_copied_worker_is_refused_while_the_original_is_connected(backend: &Backend) {
    let (m, mut w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let copy_dir = m.tmp.path().join("w1-copy");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&w.dir)
        .arg(&copy_dir)
        .status()
        .unwrap();
    assert!(copied.success());
    // As on another machine: no pid file of a process running here.
    std::fs::remove_file(copy_dir.join("worker.pid")).unwrap();
    let mut copy = moonbot_tests::TestWorker::at(copy_dir);
    copy.start();
    // Both sides say why; the original keeps its connection and builds.
    m.wait_for("the copy to be refused", LONG, || {
        copy.log()
            .contains("worker w1 is already connected from")
            .then_some(())
    });
    assert!(
        m.log()
            .contains("refused a second connection: worker w1 is already connected from"),
        "{}",
        m.log()
    );
    let connections = |m: &TestMaster| {
        m.get("/api/v2/workers")["workers"][0]["connected_to"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(connections(&m), 1);
    let ok = m.builderid("ok");
    assert_eq!(m.wait_request_done(m.force(ok), LONG)["results"], 0);
    assert!(!m.log().contains("replaced by a new connection"));
    assert!(!w.log().contains("lost the connection"), "{}", w.log());

    // When the original goes away for real, the copy takes over.
    w.kill();
    m.wait_for("the copy to take over", LONG, || {
        copy.log().contains("connected to master").then_some(())
    });
    assert_eq!(connections(&m), 1);
    assert_eq!(m.wait_request_done(m.force(ok), LONG)["results"], 0);
    copy.kill();
}

fn pages_show_control_characters_and_send_security_headers(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let ok = m.builderid("ok");
    let force = |reason: &str| {
        m.rpc(
            "/api/v2/forceschedulers/force",
            "force",
            json!({"builderid": ok, "reason": reason}),
        )
    };
    // An ESC (terminal colours) in a reason is stored, and shown as ␛.
    let (status, answer) = force("red \u{1b}[31malert");
    assert_eq!(status, 200, "{answer}");
    let brid = answer["result"][1][ok.to_string()].as_i64().unwrap();
    m.wait_request_done(brid, LONG);
    let (status, html) = m.get_status(&format!("/builders/{ok}"));
    assert_eq!(status, 200);
    assert!(html.contains("red \u{241b}[31malert"), "{html}");
    assert!(!html.contains('\u{1b}'));
    // A NUL is refused on both databases (PostgreSQL cannot store one).
    let (status, answer) = force("nul \0 here");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("NUL"),
        "{answer}"
    );

    // A body over the 1 MiB cap is 413, one without a length (chunked) 411,
    // each with a message, answered from the headers alone: nothing of the
    // body is read (the request here sends none, so the answer is read
    // before the server closes the connection).
    let answer_to = |path: &str, framing: &str| {
        use std::io::{Read, Write};
        let host = m.www.trim_start_matches("http://");
        let mut socket = std::net::TcpStream::connect(host).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            socket,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        answer
    };
    let big = answer_to("/api/v2/forceschedulers/force", "Content-Length: 104857600");
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    assert!(big.contains("the limit is 1048576 bytes"), "{big}");
    let chunked = answer_to("/login", "Transfer-Encoding: chunked");
    assert!(chunked.starts_with("HTTP/1.1 411"), "{chunked}");
    assert!(chunked.contains("Content-Length"), "{chunked}");

    // DNS rebinding: a request naming another host is refused; a POST from a
    // page of another site too, while one from this site's own page goes on.
    let raw = |request: String| {
        use std::io::{Read, Write};
        let host = m.www.trim_start_matches("http://");
        let mut socket = std::net::TcpStream::connect(host).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        answer
    };
    let rebound = raw(
        "GET /api/v2/builders HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".into(),
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert!(
        rebound.contains("does not answer to the host name"),
        "{rebound}"
    );
    let host = m.www.trim_start_matches("http://").to_string();
    let post_from = |origin: &str| {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"force","params":{"builderid":1}}"#;
        raw(format!(
            "POST /api/v2/forceschedulers/force HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    let foreign = post_from("http://evil.example");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    assert!(foreign.contains("from another site"), "{foreign}");
    let own = post_from(&format!("http://{host}"));
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");

    // Every answer carries the security headers.
    for path in ["/", "/api/v2/builds", "/static/moonbot.js", "/nothing"] {
        let response = match ureq::get(&format!("{}{path}", m.www)).call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        let csp = response.header("content-security-policy").unwrap_or("");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("referrer-policy"), Some("same-origin"));
    }
}

fn builds_pass_and_fail_as_buildbot_would(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");

    // The worker told the master about itself.
    let worker = &m.get("/api/v2/workers")["workers"][0];
    assert_eq!(worker["name"], "w1");
    assert_eq!(worker["workerinfo"]["os"], std::env::consts::OS);
    assert_eq!(
        worker["workerinfo"]["admin"],
        "Test Admin <admin@example.org>"
    );

    let ok = m.wait_request_done(m.force(m.builderid("ok")), LONG);
    assert_eq!(ok["results"], 0, "{ok}");
    assert_eq!(ok["state_string"], "build successful");
    assert_eq!(ok["number"], 1);
    let s = m.steps(ok["buildid"].as_i64().unwrap());
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0]["name"].as_str(), s[0]["results"].as_i64()),
        (Some("greet"), Some(0))
    );
    let log = m.stdio_of(s[0]["stepid"].as_i64().unwrap());
    assert!(log.contains("\nhello world\n"), "{log}");
    assert!(log.contains("program finished with exit code 0"), "{log}");
    assert!(
        m.stdio_of(s[1]["stepid"].as_i64().unwrap())
            .contains("\nto-stderr\n")
    );
    let props = &m.get(&format!("/api/v2/builds/{}/properties", ok["buildid"]))["properties"][0];
    assert_eq!(props["buildername"], json!(["ok", "Builder"]));
    assert_eq!(props["owner"], json!(["tester", "Force Build Form"]));
    assert_eq!(props["workername"][0], "w1");

    // halt_on_failure stops the build; always_run steps still run.
    let bad = m.wait_request_done(m.force(m.builderid("bad")), LONG);
    assert_eq!(bad["results"], 2, "{bad}");
    assert_eq!(bad["state_string"], "failed compile");
    let s = m.steps(bad["buildid"].as_i64().unwrap());
    let names: Vec<_> = s.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["compile", "cleanup"]);
    assert_eq!(s[0]["results"], 2);
    assert_eq!(s[1]["results"], 0);
    assert!(
        m.stdio_of(s[0]["stepid"].as_i64().unwrap())
            .contains("exit code 3")
    );

    // The API filters and orders like Buildbot's.
    let failed = m.get("/api/v2/builds?results=2");
    assert_eq!(failed["meta"]["total"], 1);
    let latest = m.get("/api/v2/builds?order=-buildid&limit=1");
    assert_eq!(latest["builds"][0]["buildid"], bad["buildid"]);
    // A page's total is what it holds, as Buildbot 4.3 answers a list it
    // pages in the database; without a limit that is every match.
    assert_eq!(latest["meta"]["total"], 1, "{latest}");
    assert_eq!(m.get("/api/v2/builds?complete=true")["meta"]["total"], 2);
    let bs = m.get("/api/v2/buildsets");
    assert!(
        bs["buildsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["complete"] == true)
    );

    // Malformed requests are refused with a JSON error; the master stays up.
    for (path, want) in [
        ("/api/v2/builds?bogus=1", 400),
        ("/api/v2/builds?limit=minus", 400),
        // More filters or values than a database takes: our own message.
        (
            &*format!("/api/v2/builds?{}", "number__ne=1&".repeat(1001)),
            400,
        ),
        (
            &*format!("/api/v2/builds?buildid={}", "1,".repeat(1000)),
            400,
        ),
        // Past what the databases bind (2^63 - 1): refused, not a panic.
        ("/api/v2/builds?limit=9223372036854775808", 400),
        ("/api/v2/builds?offset=18446744073709551615", 400),
        (
            "/api/v2/builds?limit=9223372036854775807&offset=9223372036854775807",
            200,
        ),
        // No pattern takes a build id that is not a number: 404, as in Buildbot.
        ("/api/v2/builds/xyz", 404),
        ("/api/v2/builds/999999", 404),
        ("/api/v2/builds/999999/properties", 404),
        ("/api/v2/nothing", 404),
    ] {
        let (status, body) = m.get_status(path);
        assert_eq!(status, want, "{path}: {body}");
        if want != 200 {
            assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
            assert!(!body.contains("Expression tree"), "{path}: {body}");
        }
    }
    let (status, body) = m.get_status(&format!(
        "/builders/{}?offset=18446744073709551615",
        m.builderid("ok")
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("offset must be a whole number"), "{body}");
    let (status, answer) = m.rpc("/api/v2/forceschedulers/nope", "force", json!({}));
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let (status, _) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": "x"}),
    );
    assert_eq!(status, 400);
    let raw = ureq::post(&format!("{}/api/v2/forceschedulers/force", m.www))
        .set("content-type", "application/json")
        .send_string("{not json");
    assert!(matches!(raw, Err(ureq::Error::Status(400, _))));
    assert_eq!(m.get("/api/v2/builders")["meta"]["total"], 5);

    // The builder page shows 25 builds a page, and offers an older page only
    // when there is one: 31 builds (30 copies of the first) make two pages.
    let ok_builder = m.builderid("ok");
    m.sql(&format!(
        "INSERT INTO builds (number, builderid, buildrequestid, workerid, masterid, \
         started_at, complete_at, state_string, results) \
         SELECT number + n, builderid, buildrequestid, workerid, masterid, started_at, \
         complete_at, state_string, results FROM builds, \
         (SELECT 10 AS n UNION SELECT 11 UNION SELECT 12 UNION SELECT 13 UNION SELECT 14 \
          UNION SELECT 15 UNION SELECT 16 UNION SELECT 17 UNION SELECT 18 UNION SELECT 19 \
          UNION SELECT 20 UNION SELECT 21 UNION SELECT 22 UNION SELECT 23 UNION SELECT 24 \
          UNION SELECT 25 UNION SELECT 26 UNION SELECT 27 UNION SELECT 28 UNION SELECT 29 \
          UNION SELECT 30 UNION SELECT 31 UNION SELECT 32 UNION SELECT 33 UNION SELECT 34 \
          UNION SELECT 35 UNION SELECT 36 UNION SELECT 37 UNION SELECT 38 UNION SELECT 39) AS k \
         WHERE builds.id = {}",
        ok["buildid"]
    ));
    let page = |query: &str| {
        let (status, html) = m.get_status(&format!("/builders/{ok_builder}{query}"));
        assert_eq!(status, 200, "{html}");
        (
            html.matches("data-number=").count(),
            html.contains(">older</a>"),
        )
    };
    assert_eq!(page(""), (25, true));
    assert_eq!(page("?offset=25"), (6, false));
}

fn read_pids(path: &std::path::Path) -> Option<Vec<i32>> {
    let text = std::fs::read_to_string(path).ok()?;
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (pids.len() == 2).then_some(pids)
}

fn stopping_a_build_kills_its_process_tree(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let brid = m.force(m.builderid("sleepy"));
    let pids_file = m.tmp.path().join("pids");
    let pids = m.wait_for("the command to start", LONG, || read_pids(&pids_file));
    assert!(pids.iter().all(|&p| process_alive(p)));
    let build = m.builds_of(brid).pop().unwrap();
    // A quiet command's output is visible while it still runs.
    let stepid = m.steps(build["buildid"].as_i64().unwrap())[0]["stepid"]
        .as_i64()
        .unwrap();
    m.wait_for(
        "the step's output while it runs",
        Duration::from_secs(10),
        || m.stdio_of(stepid).contains("\nwaiting\n").then_some(()),
    );
    let (status, answer) = m.rpc(
        &format!("/api/v2/builds/{}", build["buildid"]),
        "stop",
        json!({"reason": "no longer needed"}),
    );
    assert_eq!(status, 200, "{answer}");
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 6, "{done}");
    // The shell and the background sleep it started are both gone.
    m.wait_for(
        "the process tree to be gone",
        Duration::from_secs(15),
        || pids.iter().all(|&p| !process_alive(p)).then_some(()),
    );
    let br = &m.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0];
    assert_eq!(br["complete"], true);
    assert_eq!(br["results"], 6);
}

fn a_lost_worker_means_retry_and_the_request_runs_again(backend: &Backend) {
    let (m, mut w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    let brid = m.force(m.builderid("flaky"));
    m.wait_for("the build to start its step", LONG, || {
        let b = m.builds_of(brid).pop()?;
        (m.steps(b["buildid"].as_i64()?).len() == 1).then_some(())
    });
    w.kill();
    // A new worker process comes back within the reconnect grace: the master
    // tries to re-attach the command, the new process has never heard of it,
    // so the build ends RETRY at once and the request is queued again.
    std::fs::write(m.tmp.path().join("quick"), "").unwrap();
    w.start();
    let first = m.wait_for("the build to end RETRY", LONG, || {
        let b = m.builds_of(brid).into_iter().next()?;
        (b["complete"] == true).then_some(b)
    });
    assert_eq!(first["results"], 5, "{first}");
    let stepid = m.steps(first["buildid"].as_i64().unwrap())[0]["stepid"]
        .as_i64()
        .unwrap();
    assert!(
        m.stdio_of(stepid).contains("no longer has command"),
        "the log says why: {}",
        m.stdio_of(stepid)
    );
    let second = m.wait_request_done(brid, LONG);
    assert_eq!(second["results"], 0, "{second}");
    assert_ne!(second["buildid"], first["buildid"]);
    assert_eq!(m.builds_of(brid).len(), 2);
}

fn master_stop_and_crash_lose_no_request(backend: &Backend) {
    let (mut m, mut w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    m.pin_quic_port(CONFIG);
    let flaky = m.builderid("flaky");

    // `moonbot stop`: the running build ends RETRY, its request stays queued.
    let brid = m.force(flaky);
    m.wait_for("the build to run", LONG, || {
        let b = m.builds_of(brid).pop()?;
        (m.steps(b["buildid"].as_i64()?).len() == 1).then_some(())
    });
    m.stop(false);
    m.start();
    let retried = m.builds_of(brid);
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0]["results"], 5, "{:?}", retried[0]);

    // Crash (SIGKILL) while the request runs again: the next start ends the
    // orphaned build RETRY and the request runs a third time, to success.
    m.wait_for("the request to run again", LONG, || {
        (m.builds_of(brid).len() == 2).then_some(())
    });
    m.kill();
    std::fs::write(m.tmp.path().join("quick"), "").unwrap();
    m.start();
    let builds = m.builds_of(brid);
    assert_eq!(builds[1]["results"], 5, "{:?}", builds[1]);
    let done = m.wait_request_done(brid, LONG);
    assert_eq!(done["results"], 0, "{done}");
    assert_eq!(m.builds_of(brid).len(), 3);
    assert!(m.log().contains("ended as RETRY"), "{}", m.log());

    // `moonbot stop --clean` waits for the running build instead.
    let brid = m.force(m.builderid("ok"));
    m.stop(true);
    let status = ureq::get(&format!("{}/api/v2/builds", m.www)).call();
    assert!(status.is_err(), "the master should be gone");
    m.start();
    let br = &m.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0];
    // Either it finished before the stop or it is still queued; never lost.
    assert!(br["complete"] == true || br["claimed"] == false, "{br}");
    w.kill();
}

fn foreign_ca_and_unknown_names_are_refused(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    // A worker whose certificate another master's CA signed.
    let other = TestMaster::create(&Backend::Sqlite, CONFIG);
    let mut foreign = m.make_worker("w1", &other.dir);
    foreign.start();
    // A worker signed by the right CA but not in master.lua.
    let mut stranger = m.make_worker("stranger", &m.dir.clone());
    stranger.start();
    m.wait_for("both refusals in the master log", LONG, || {
        let log = m.log();
        (log.contains("refused a worker connection during the TLS handshake")
            && log.contains("worker 'stranger' is not in this master's configuration"))
        .then_some(())
    });
    m.wait_for("the stranger to hear why", LONG, || {
        stranger
            .log()
            .contains("worker 'stranger' is not in this master's configuration")
            .then_some(())
    });
    m.wait_for("the foreign worker to log the refusal", LONG, || {
        let log = foreign.log().to_lowercase();
        (log.contains("refused") || log.contains("certificate")).then_some(())
    });
    let workers = m.get("/api/v2/workers");
    assert_eq!(workers["meta"]["total"], 1, "{workers}");
    // The genuine w1 stays the only connection.
    assert_eq!(
        workers["workers"][0]["connected_to"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn a_ten_mib_log_reads_back_byte_for_byte(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, CONFIG, "w1");
    // 10 MiB of varied lines (including bytes a UTF-8 check would mangle? no:
    // keep it valid UTF-8 so the JSON contents view can be checked too).
    let mut payload = Vec::with_capacity(10 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut line = 0u64;
    while payload.len() < 10 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 150) as usize;
        payload.extend_from_slice(format!("{line:08} ").as_bytes());
        payload.extend((0..len).map(|i| b'!' + ((x >> (i % 56)) as u8 % 90)));
        payload.push(b'\n');
        line += 1;
    }
    std::fs::write(m.tmp.path().join("payload"), &payload).unwrap();
    let build = m.wait_request_done(m.force(m.builderid("biglog")), Duration::from_secs(180));
    assert_eq!(build["results"], 0);
    let s = m.steps(build["buildid"].as_i64().unwrap());
    let stepid = s[0]["stepid"].as_i64().unwrap();
    let logs = m.get(&format!("/api/v2/steps/{stepid}/logs"));
    let log = &logs["logs"][0];
    let logid = log["logid"].as_i64().unwrap();
    let raw = m.get_bytes(&format!("/api/v2/logs/{logid}/raw"));
    let start = raw
        .windows(9)
        .position(|w| w == b"00000000 ")
        .expect("payload start in the log");
    assert_eq!(
        &raw[start..start + payload.len()],
        &payload[..],
        "payload differs"
    );
    let after = String::from_utf8_lossy(&raw[start + payload.len()..]);
    assert!(
        after.starts_with("program finished with exit code 0\n"),
        "{after}"
    );
    // Lines are counted and pageable.
    assert!(log["num_lines"].as_i64().unwrap() >= line as i64);
    let page = m.get(&format!(
        "/api/v2/logs/{logid}/contents?offset={}&limit=2",
        start_line(&raw, start) + 5
    ));
    let content = page["logchunks"][0]["content"].as_str().unwrap();
    assert!(content.starts_with("o00000005 "), "{content}");
    assert_eq!(content.lines().count(), 2);
}

/// How many lines precede byte `pos` of `raw`.
fn start_line(raw: &[u8], pos: usize) -> usize {
    raw[..pos].iter().filter(|&&b| b == b'\n').count()
}

#[test]
fn a_master_directory_from_create_master_passes_checkconfig() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let (code, out, err) = run(
        "moonbot",
        &[
            "create-master",
            dir.to_str().unwrap(),
            "--host",
            "ci.example.org",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(dir.join("pki/ca.key").exists() && dir.join("pki/master.crt").exists());
    let (code, out, _) = run("moonbot", &["checkconfig", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("1 worker(s), 2 builder(s), 1 scheduler(s)"),
        "{out}"
    );
    // A second create-master must not replace the CA.
    let (code, _, err) = run("moonbot", &["create-master", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    // Issue 20, item 10: `checkconfig --sandbox` checks a file someone sent
    // without running its commands; the sample config passes it too.
    let (code, out, err) = run(
        "moonbot",
        &["checkconfig", "--sandbox", dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let touched = tmp.path().join("touched");
    let master_lua = dir.join("master.lua");
    let sample = std::fs::read_to_string(&master_lua).unwrap();
    std::fs::write(
        &master_lua,
        format!("os.execute('touch {}')\n{sample}", touched.display()),
    )
    .unwrap();
    let (code, out, err) = run(
        "moonbot",
        &["checkconfig", "--sandbox", dir.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("master.lua:1") && err.contains("'os'"),
        "{err}"
    );
    assert!(!touched.exists(), "the sandbox ran os.execute");
    let (code, out, err) = run("moonbot", &["checkconfig", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(touched.exists(), "without --sandbox, master.lua may use os");
}

const JANITOR_CONFIG: &str = r#"
local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", max_builds = 4 } },
  builders = {
    mb.builder { name = "ok", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "greet", command = { "echo", "hello janitor" } },
    } },
    mb.builder { name = "slow", workernames = { "w1" }, steps = {
      mb.steps.shell { name = "wait",
        command = "echo started; while [ ! -e @TMP@/go ]; do sleep 0.1; done; echo finished" },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "ok", "slow" } } },
  janitor = { build_horizon = "180d", log_horizon = "30d", change_horizon = "90d", every = 1 },
}
"#;

moonbot_tests::on_both_databases!(the_janitor_deletes_old_history_and_nothing_else);

fn insert_change(m: &TestMaster, comments: &str, days_ago: f64) {
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - days_ago * 86400.0;
    m.sql(&format!(
        "INSERT INTO changes (author, comments, when_timestamp, repository, codebase, project) \
         VALUES ('ann', '{comments}', {when}, 'https://example.org/r.git', '', 'p')"
    ));
}

fn the_janitor_deletes_old_history_and_nothing_else(backend: &Backend) {
    let (m, _w) = TestMaster::started_with_worker(backend, JANITOR_CONFIG, "w1");
    let ok = m.builderid("ok");
    let done: Vec<Value> = (0..3)
        .map(|_| m.wait_request_done(m.force(ok), LONG))
        .collect();
    let [old, aging, fresh] = [0, 1, 2].map(|i| done[i]["buildid"].as_i64().unwrap());
    // A build that runs through the janitor's passes.
    let running_brid = m.force(m.builderid("slow"));
    m.wait_for("the slow build's step to start", LONG, || {
        let builds = m.builds_of(running_brid);
        let step = builds
            .first()
            .and_then(|b| m.steps(b["buildid"].as_i64().unwrap()).into_iter().next())?;
        // The step's log may not exist yet when the step does.
        let logid = m.get(&format!("/api/v2/steps/{}/logs", step["stepid"]))["logs"][0]["logid"]
            .as_i64()?;
        String::from_utf8_lossy(&m.get_bytes(&format!("/api/v2/logs/{logid}/raw")))
            .contains("started")
            .then_some(())
    });

    let aging_log = m.get(&format!(
        "/api/v2/steps/{}/logs",
        m.steps(aging)[0]["stepid"]
    ))["logs"][0]
        .clone();
    let aging_logid = aging_log["logid"].as_i64().unwrap();
    // Not expired while its build is young.
    assert!(aging_log["content_expired_at"].is_null());

    // Age history as if time had passed: `old` finished 200 days ago (past
    // build_horizon), `aging` 40 days ago (past log_horizon only).
    for (build, days) in [(old, 200), (aging, 40)] {
        let changed = m.sql(&format!(
            "UPDATE builds SET started_at = started_at - {days} * 86400, \
             complete_at = complete_at - {days} * 86400 WHERE id = {build}"
        ));
        assert_eq!(changed, 1);
    }
    insert_change(&m, "an old change", 100.0);
    insert_change(&m, "a recent change", 1.0);
    // Webhook delivery ids are forgotten past the change horizon too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (id, days) in [("old-delivery", 100.0), ("recent-delivery", 1.0)] {
        m.sql(&format!(
            "INSERT INTO change_hook_deliveries (dialect, delivery_id, received_at) \
             VALUES ('github', '{id}', {})",
            now - days * 86400.0
        ));
    }

    m.wait_for("the janitor to delete the old build", LONG, || {
        (m.get_status(&format!("/api/v2/builds/{old}")).0 == 404).then_some(())
    });
    m.wait_for("the janitor to expire the aging build's log", LONG, || {
        let log = m.get(&format!("/api/v2/logs/{aging_logid}"))["logs"][0].clone();
        log["content_expired_at"].as_f64().map(|_| ())
    });

    // The old build went with its steps, logs, chunks and properties.
    for table in ["steps", "build_properties"] {
        assert_eq!(
            m.sql_i64(&format!(
                "SELECT COUNT(*) FROM {table} WHERE buildid = {old}"
            )),
            0,
            "{table} of the deleted build"
        );
    }
    // The aging build is kept, its log's content is gone, and the viewer says so.
    let kept = &m.get(&format!("/api/v2/builds/{aging}"))["builds"][0];
    assert_eq!(kept["results"], 0);
    assert_eq!(
        m.sql_i64(&format!(
            "SELECT COUNT(*) FROM logchunks WHERE logid = {aging_logid}"
        )),
        0
    );
    let (status, page) = m.get_status(&format!("/logs/{aging_logid}"));
    assert_eq!(status, 200);
    assert!(page.contains("id=\"expired\""), "{page}");
    // The fresh build and its log are untouched.
    let fresh_step = &m.steps(fresh)[0];
    assert!(
        m.stdio_of(fresh_step["stepid"].as_i64().unwrap())
            .contains("hello janitor")
    );
    // Old changes go, recent ones stay.
    let m_ref = &m;
    m.wait_for("the janitor to delete the old change", LONG, || {
        let changes = m_ref.get("/api/v2/changes")["changes"].clone();
        let comments: Vec<String> = changes
            .as_array()?
            .iter()
            .map(|c| c["comments"].as_str().unwrap_or("").to_string())
            .collect();
        (comments == ["a recent change"]).then_some(())
    });
    m.wait_for("the janitor to forget the old delivery id", LONG, || {
        let left = m_ref.sql_i64(
            "SELECT COUNT(*) FROM change_hook_deliveries WHERE delivery_id = 'old-delivery'",
        );
        (left == 0).then_some(())
    });
    assert_eq!(
        m.sql_i64(
            "SELECT COUNT(*) FROM change_hook_deliveries WHERE delivery_id = 'recent-delivery'"
        ),
        1
    );

    // The build that ran through the passes finishes as if nothing happened.
    std::fs::write(m.tmp.path().join("go"), "").unwrap();
    let finished = m.wait_request_done(running_brid, LONG);
    assert_eq!(finished["results"], 0, "{finished}");
    let step = &m.steps(finished["buildid"].as_i64().unwrap())[0];
    let log = m.stdio_of(step["stepid"].as_i64().unwrap());
    assert!(
        log.contains("\nstarted\n") && log.contains("\nfinished\n"),
        "{log}"
    );

    // Its passes are on record, in the API and on the page.
    // (A pass still running when its last deletion showed is not complete yet.)
    let passes = m.wait_for("the finished passes to count what went", LONG, || {
        let passes = m.get("/api/v2/janitor_passes?complete=true");
        let all = passes["janitor_passes"].as_array()?.clone();
        let sum = |field: &str| all.iter().map(|p| p[field].as_i64().unwrap()).sum::<i64>();
        (sum("builds_deleted") >= 1 && sum("logs_expired") >= 1 && sum("changes_deleted") >= 1)
            .then_some(all)
    });
    let sum = |field: &str| {
        passes
            .iter()
            .map(|p| p[field].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(sum("builds_deleted"), 1, "{passes:?}");
    assert_eq!(sum("logs_expired"), 1, "{passes:?}");
    assert_eq!(sum("changes_deleted"), 1, "{passes:?}");
    assert!(passes.iter().all(|p| p["error"].is_null()), "{passes:?}");
    let (status, page) = m.get_status("/janitor");
    assert_eq!(status, 200);
    assert!(
        page.contains("180 days") && page.contains("30 days"),
        "{page}"
    );
    assert!(page.contains("id=\"passes\""), "{page}");
    if matches!(backend, Backend::Sqlite) {
        // A database moonbot created returns freed pages as the janitor goes.
        assert_eq!(m.sql_i64("PRAGMA auto_vacuum"), 2);
    }
}
