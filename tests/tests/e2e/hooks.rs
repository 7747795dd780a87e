//! Issue 14, Bitbucket's webhooks and the base dialect: real bodies from
//! bitbucket.org and from Bitbucket Server / Data Center (go-scm's test
//! data), signed as Bitbucket signs them (`X-Hub-Signature: sha256=…`,
//! go-scm's test key); Buildbot's form fields on `/change_hook/base`.

use moonbot_tests::{Backend, TestMaster};
use serde_json::{Value, json};

const KEY: &str = "71295b197fa25f4356d2fb9965df3f2379d903d7";

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  www = { port = 0, bind = "127.0.0.1", change_hooks = {
    bitbucketserver = { secret = "@KEY@", strict = true },
    bitbucketcloud = { secret = "@KEY@", project = "foo" },
    base = { secret = "base-secret" },
  } },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = { mb.builder { name = "b", workernames = { "w1" }, steps = { mb.steps.shell { command = "true" } } } },
}
"#;

moonbot_tests::on_both_databases!(
    bitbucket_cloud_and_server_deliveries_are_signed_and_read,
    the_base_hook_takes_buildbots_form_fields,
);

fn the_base_hook_takes_buildbots_form_fields(backend: &Backend) {
    let config = CONFIG.replace("@KEY@", KEY);
    let mut m = TestMaster::create(backend, &config);
    m.start();
    let form = "author=Ann+%3Cann%40example.org%3E&revision=abc123&branch=main&comments=Fix+it\
&files=%5B%22src%2Fa.c%22%5D&properties=%7B%22pr%22%3A+7%7D&repository=https%3A%2F%2Fexample.org%2Fr.git";
    let post = |token: Option<&str>| {
        let mut req = ureq::post(&format!("{}/change_hook/base", m.www))
            .set("content-type", "application/x-www-form-urlencoded");
        if let Some(token) = token {
            req = req.set("x-moonbot-token", token);
        }
        match req.send_string(form) {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(post(None).0, 403);
    assert_eq!(post(Some("wrong")).0, 403);
    let (status, answer) = post(Some("base-secret"));
    assert_eq!(status, 200, "{answer}");
    let c = change(&m, &answer);
    assert_eq!(c["author"], "Ann <ann@example.org>");
    assert_eq!(c["revision"], "abc123");
    assert_eq!(c["files"], json!(["src/a.c"]));
    assert_eq!(c["properties"]["pr"], json!([7, "Change"]));
    assert_eq!(c["repository"], "https://example.org/r.git");
}

fn body(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks/bitbucket")
            .join(format!("{name}.json")),
    )
    .unwrap()
}

fn signed(bytes: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, bytes)))
}

fn deliver(
    m: &TestMaster,
    dialect: &str,
    event: &str,
    bytes: &[u8],
    signature: Option<&str>,
    id: &str,
) -> (u16, Value) {
    let delivery = if dialect == "bitbucketcloud" {
        "x-request-uuid"
    } else {
        "x-request-id"
    };
    let mut req = ureq::post(&format!("{}/change_hook/{dialect}", m.www))
        .set("content-type", "application/json")
        .set("x-event-key", event)
        .set(delivery, id);
    if let Some(signature) = signature {
        req = req.set("x-hub-signature", signature);
    }
    match req.send_bytes(bytes) {
        Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

fn change(m: &TestMaster, answer: &Value) -> Value {
    let id = answer["changes"][0]
        .as_i64()
        .unwrap_or_else(|| panic!("{answer}"));
    m.get(&format!("/api/v2/changes/{id}"))["changes"][0].clone()
}

fn bitbucket_cloud_and_server_deliveries_are_signed_and_read(backend: &Backend) {
    let config = CONFIG.replace("@KEY@", KEY);
    let mut m = TestMaster::create(backend, &config);
    m.start();

    // go-scm's signature vector for this body.
    let push = body("goscm-server-push");
    assert!(signed(&push).starts_with("sha256=c90565fa018f3039"));
    let (status, _) = deliver(
        &m,
        "bitbucketserver",
        "repo:refs_changed",
        &push,
        None,
        "s-0",
    );
    assert_eq!(status, 403, "unsigned");
    let wrong = "sha256=380f462cd2e160b84765144beabdad2e930a7ec5";
    let (status, _) = deliver(
        &m,
        "bitbucketserver",
        "repo:refs_changed",
        &push,
        Some(wrong),
        "s-0",
    );
    assert_eq!(status, 403, "badly signed");
    let (status, _) = deliver(
        &m,
        "bitbucketserver",
        "repo:refs_changed",
        b"{not json",
        Some(&signed(b"{not json")),
        "s-x",
    );
    assert_eq!(status, 400, "malformed");
    assert_eq!(
        m.get("/api/v2/changes")["changes"],
        json!([]),
        "refusals store nothing"
    );

    let (status, answer) = deliver(
        &m,
        "bitbucketserver",
        "repo:refs_changed",
        &push,
        Some(&signed(&push)),
        "s-1",
    );
    assert_eq!(status, 200, "{answer}");
    let c = change(&m, &answer);
    assert_eq!(c["revision"], "823b2230a56056231c9425d63758fa87078a66b4");
    assert_eq!(c["branch"], "master");
    assert_eq!(c["author"], "Jane Citizen <jane@example.com>");
    let (_, again) = deliver(
        &m,
        "bitbucketserver",
        "repo:refs_changed",
        &push,
        Some(&signed(&push)),
        "s-1",
    );
    assert_eq!(again["changes"], json!([]), "a redelivery makes nothing");

    let pr = body("goscm-server-pr_from_ref_updated");
    let (status, answer) = deliver(
        &m,
        "bitbucketserver",
        "pr:from_ref_updated",
        &pr,
        Some(&signed(&pr)),
        "s-2",
    );
    assert_eq!(status, 200, "{answer}");
    let c = change(&m, &answer);
    assert_eq!(c["branch"], "refs/pull-requests/2/from");
    assert_eq!(c["revision"], "c00d0f269a9844dd168f72f6a9d78a9cff49a318");
    assert_eq!(
        c["properties"]["bitbucket.destination.branch"],
        json!(["master", "Change"])
    );

    // Bitbucket Cloud: a real pull request body (Buildbot 4.3 fails on it).
    let pr = body("goscm-cloud-pr_updated");
    let (status, answer) = deliver(
        &m,
        "bitbucketcloud",
        "pullrequest:updated",
        &pr,
        Some(&signed(&pr)),
        "c-1",
    );
    assert_eq!(status, 200, "{answer}");
    let c = change(&m, &answer);
    assert_eq!(c["branch"], "refs/pull-requests/1/from");
    assert_eq!(c["project"], "foo");
    assert_eq!(
        c["properties"]["bitbucket.source.branch"],
        json!(["develop", "Change"])
    );
    let comment = body("goscm-cloud-pr_comment_created");
    let (status, answer) = deliver(
        &m,
        "bitbucketcloud",
        "pullrequest:comment_created",
        &comment,
        Some(&signed(&comment)),
        "c-2",
    );
    assert_eq!(
        (status, answer["changes"].clone()),
        (200, json!([])),
        "a comment is ignored"
    );
    assert_eq!(
        m.get("/api/v2/changes")["changes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(!m.log().contains(KEY), "the secret is in the log");
}

moonbot_tests::on_both_databases!(
    a_github_pull_requests_files_come_from_the_api_with_the_token,
    a_gitea_pull_requests_files_come_from_its_api_too,
    a_gitlab_merge_requests_files_come_from_its_api_too,
);

fn a_gitlab_merge_requests_files_come_from_its_api_too(backend: &Backend) {
    let (api, seen) = fake_forge_api(&["lib/a.rb", "spec/a_spec.rb"]);
    let config = CONFIG.replace(
        "base = { secret = \"base-secret\" },",
        &format!("gitlab = {{ secret = \"gl-hook\", token = \"gl-T0KEN-value\", api_url = \"{api}/api/v4\" }},"),
    );
    let config = config.replace("@KEY@", KEY);
    let mut m = TestMaster::create(backend, &config);
    m.start();
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks/gitlab/bb-mr-open.json"),
    )
    .unwrap();
    let answer: Value = ureq::post(&format!("{}/change_hook/gitlab", m.www))
        .set("content-type", "application/json")
        .set("x-gitlab-event", "Merge Request Hook")
        .set("x-gitlab-token", "gl-hook")
        .send_bytes(&bytes)
        .unwrap()
        .into_json()
        .unwrap();
    let c = change(&m, &answer);
    assert_eq!(c["files"], json!(["lib/a.rb", "spec/a_spec.rb"]), "{c}");
    let request = seen.join().unwrap().to_ascii_lowercase();
    assert!(
        request.starts_with(
            "get /api/v4/projects/239/merge_requests/6/diffs?per_page=100&page=1 http/1.1\r\n"
        ),
        "{request}"
    );
    assert!(
        request.contains("private-token: gl-t0ken-value\r\n"),
        "{request}"
    );
    assert!(
        !m.log().contains("gl-T0KEN-value"),
        "the token is in the log"
    );
}

fn a_gitea_pull_requests_files_come_from_its_api_too(backend: &Backend) {
    let (api, seen) = fake_forge_api(&["README.md"]);
    let config = CONFIG.replace(
        "base = { secret = \"base-secret\" },",
        &format!("gitea = {{ secret = \"test\", token = \"gt-T0KEN-value\", api_url = \"{api}/api/v1\" }},"),
    );
    let config = config.replace("@KEY@", KEY);
    let mut m = TestMaster::create(backend, &config);
    m.start();
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks/gitea/goscm-pull_request_opened.json"),
    )
    .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"test");
    let answer: Value = ureq::post(&format!("{}/change_hook/gitea", m.www))
        .set("content-type", "application/json")
        .set("x-gitea-event", "pull_request")
        .set("x-gitea-delivery", "gitea-pr-1")
        .set(
            "x-gitea-signature",
            &hex::encode(ring::hmac::sign(&key, &bytes)),
        )
        .send_bytes(&bytes)
        .unwrap()
        .into_json()
        .unwrap();
    let c = change(&m, &answer);
    assert_eq!(c["files"], json!(["README.md"]), "{c}");
    let request = seen.join().unwrap().to_ascii_lowercase();
    assert!(
        request.starts_with(
            "get /api/v1/repos/jcitizen/my-repo/pulls/1/files?limit=50&page=1 http/1.1\r\n"
        ),
        "{request}"
    );
    assert!(
        request.contains("authorization: token gt-t0ken-value\r\n"),
        "{request}"
    );
    assert!(
        !m.log().contains("gt-T0KEN-value"),
        "the token is in the log"
    );
}

/// A stand-in for a forge's API (GitHub's, Gitea's, GitLab's): answers one
/// "list a pull request's files" request with `files`, and hands back the
/// request it got.
fn fake_forge_api(files: &[&str]) -> (String, std::thread::JoinHandle<String>) {
    let body = Value::Array(
        files
            .iter()
            // GitHub's and Gitea's name `filename`, GitLab's diffs `new_path`.
            .map(|f| json!({"filename": f, "status": "modified", "new_path": f, "old_path": f, "deleted_file": false}))
            .collect(),
    );
    let (url, seen) = fake_paged_api(|_| vec![body]);
    (
        url,
        std::thread::spawn(move || seen.join().unwrap().remove(0)),
    )
}

fn a_github_pull_requests_files_come_from_the_api_with_the_token(backend: &Backend) {
    let (api, seen) = fake_forge_api(&["docs/intro.md", "src/main.c"]);
    let config = format!(
        r#"
local mb = require "moonbot"
return {{
  www = {{ port = 0, bind = "127.0.0.1", change_hooks = {{
    github = {{ secret = "s3cret", token = "gh-T0KEN-value", github_api_endpoint = "{api}" }},
  }} }},
  protocols = {{ quic = {{ port = @QUIC_PORT@, bind = "127.0.0.1" }} }},
  db = {{ url = "@DB@" }},
  workers = {{ mb.worker {{ name = "w1" }} }},
  builders = {{ mb.builder {{ name = "b", workernames = {{ "w1" }}, steps = {{ mb.steps.shell {{ command = "true" }} }} }} }},
  schedulers = {{ mb.schedulers.any_branch {{ name = "prs", builders = {{ "b" }},
    change_filter = {{ branch_re = "refs/pull/" }},
    file_is_important = function(change)
      for _, f in ipairs(change.files) do if f:match("%.c$") then return true end end
      return false
    end }} }},
}}
"#
    );
    let mut m = TestMaster::create(backend, &config);
    m.start();
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks/github/pull_request-0.json"),
    )
    .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    let signature = format!("sha256={}", hex::encode(ring::hmac::sign(&key, &bytes)));
    let answer: Value = ureq::post(&format!("{}/change_hook/github", m.www))
        .set("content-type", "application/json")
        .set("x-github-event", "pull_request")
        .set("x-github-delivery", "pr-files-1")
        .set("x-hub-signature-256", &signature)
        .send_bytes(&bytes)
        .unwrap()
        .into_json()
        .unwrap();
    let c = change(&m, &answer);
    assert_eq!(c["files"], json!(["docs/intro.md", "src/main.c"]), "{c}");
    // The request GitHub documents: the path, a page of 100, the token as
    // a bearer, the API's media type and version.
    let request = seen.join().unwrap().to_ascii_lowercase();
    assert!(
        request.starts_with(
            "get /repos/codertocat/hello-world/pulls/2/files?per_page=100&page=1 http/1.1\r\n"
        ),
        "{request}"
    );
    assert!(
        request.contains("authorization: bearer gh-t0ken-value\r\n"),
        "{request}"
    );
    assert!(
        request.contains("accept: application/vnd.github+json\r\n"),
        "{request}"
    );
    assert!(
        request.contains("x-github-api-version: 2022-11-28\r\n"),
        "{request}"
    );
    // file_is_important saw the files: the pull request builds.
    m.wait_for("the pull request's buildset", moonbot_tests::LONG, || {
        let sets = m.get("/api/v2/buildsets")["buildsets"].clone();
        (!sets.as_array().unwrap().is_empty()).then_some(())
    });
    assert!(
        !m.log().contains("gh-T0KEN-value"),
        "the token is in the log"
    );
}

moonbot_tests::on_both_databases!(a_bitbucket_pull_requests_files_come_from_its_api_page_by_page);

/// A stand-in for an API that pages: answers one request per page with the
/// bodies `pages` makes from its own address, and hands back the requests.
fn fake_paged_api(
    pages: impl FnOnce(&str) -> Vec<Value>,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = pages(&url);
    let handle = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for body in bodies {
            let body = body.to_string();
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                request.push_str(&line);
            }
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            requests.push(request.to_ascii_lowercase());
        }
        requests
    });
    (url, handle)
}

/// With a `token`, a Bitbucket pull request's files come from Bitbucket's
/// APIs: Cloud's diffstat (following `next`; a removed file by its old
/// path), Server's changes (by `start` until `isLastPage`), each with the
/// token as a bearer; the token stays out of the log.
fn a_bitbucket_pull_requests_files_come_from_its_api_page_by_page(backend: &Backend) {
    let (cloud, cloud_seen) = fake_paged_api(|url| {
        vec![
            json!({"pagelen": 500, "page": 1, "size": 3,
                "values": [
                    {"type": "diffstat", "status": "modified", "old": {"path": "README.md"}, "new": {"path": "README.md"}},
                    {"type": "diffstat", "status": "removed", "old": {"path": "old.txt"}, "new": null},
                ],
                "next": format!("{url}/2.0/repositories/brydzewski/foo/pullrequests/1/diffstat?pagelen=500&page=2")}),
            json!({"pagelen": 500, "page": 2, "size": 3,
                "values": [{"type": "diffstat", "status": "added", "old": null, "new": {"path": "src/new.go"}}]}),
        ]
    });
    let (server, server_seen) = fake_paged_api(|_| {
        vec![
            json!({"size": 1, "limit": 500, "isLastPage": false, "start": 0, "nextPageStart": 1,
                "values": [{"path": {"toString": "src/A.java", "name": "A.java"}, "type": "MODIFY"}]}),
            json!({"size": 1, "limit": 500, "isLastPage": true, "start": 1,
                "values": [{"path": {"toString": "pom.xml", "name": "pom.xml"}, "type": "ADD"}]}),
        ]
    });
    let config = CONFIG
        .replace(
            "bitbucketserver = { secret = \"@KEY@\", strict = true },",
            &format!("bitbucketserver = {{ secret = \"@KEY@\", strict = true, token = \"bbs-T0KEN\", api_url = \"{server}\" }},"),
        )
        .replace(
            "bitbucketcloud = { secret = \"@KEY@\", project = \"foo\" },",
            &format!("bitbucketcloud = {{ secret = \"@KEY@\", project = \"foo\", token = \"bbc-T0KEN\", api_url = \"{cloud}/2.0\" }},"),
        )
        .replace("@KEY@", KEY);
    let mut m = TestMaster::create(backend, &config);
    m.start();

    let bytes = body("goscm-cloud-pr_created");
    let (status, answer) = deliver(
        &m,
        "bitbucketcloud",
        "pullrequest:created",
        &bytes,
        Some(&signed(&bytes)),
        "c-1",
    );
    assert_eq!(status, 200, "{answer}");
    let c = change(&m, &answer);
    assert_eq!(
        c["files"],
        json!(["README.md", "old.txt", "src/new.go"]),
        "{c}"
    );
    let requests = cloud_seen.join().unwrap();
    assert!(
        requests[0].starts_with(
            "get /2.0/repositories/brydzewski/foo/pullrequests/1/diffstat?pagelen=500 http/1.1\r\n"
        ),
        "{requests:?}"
    );
    assert!(
        requests[1].starts_with(
            "get /2.0/repositories/brydzewski/foo/pullrequests/1/diffstat?pagelen=500&page=2 "
        ),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.contains("authorization: bearer bbc-t0ken\r\n")),
        "{requests:?}"
    );

    let bytes = body("goscm-server-pr_open");
    let (status, answer) = deliver(
        &m,
        "bitbucketserver",
        "pr:opened",
        &bytes,
        Some(&signed(&bytes)),
        "s-1",
    );
    assert_eq!(status, 200, "{answer}");
    let c = change(&m, &answer);
    assert_eq!(c["files"], json!(["src/A.java", "pom.xml"]), "{c}");
    let requests = server_seen.join().unwrap();
    assert!(
        requests[0].starts_with("get /rest/api/1.0/projects/prj/repos/my-repo/pull-requests/2/changes?limit=500 http/1.1\r\n"),
        "{requests:?}"
    );
    assert!(requests[1].starts_with("get /rest/api/1.0/projects/prj/repos/my-repo/pull-requests/2/changes?limit=500&start=1 "), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.contains("authorization: bearer bbs-t0ken\r\n")),
        "{requests:?}"
    );
    let log = m.log();
    assert!(
        !log.contains("bbc-T0KEN") && !log.contains("bbs-T0KEN"),
        "a token is in the log"
    );
}

moonbot_tests::on_both_databases!(a_hook_secret_can_come_from_a_file);

/// `secret_file`: the secret is read from a file of the master directory
/// (not written in master.lua), and a file every user may read is refused
/// with an error naming it.
fn a_hook_secret_can_come_from_a_file(backend: &Backend) {
    use std::os::unix::fs::PermissionsExt;
    let config = CONFIG
        .replace(
            "base = { secret = \"base-secret\" },",
            "base = { secret_file = \"hook-secret\" },",
        )
        .replace("@KEY@", KEY);
    let mut m = TestMaster::create(backend, &config);
    let file = m.dir.join("hook-secret");
    std::fs::write(&file, "from-a-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = moonbot_tests::run("moonbot", &["checkconfig", m.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("www.change_hooks.base: secret_file 'hook-secret' is readable by every user of this machine (mode 644)"),
        "{err}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    m.start();
    let post = |token: &str| match ureq::post(&format!("{}/change_hook/base", m.www))
        .set("x-moonbot-token", token)
        .send_form(&[
            ("author", "Ann <ann@example.org>"),
            ("revision", "f00d"),
            ("branch", "main"),
        ]) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(post("from-a-fil"), 403);
    // The file ends with a newline; the secret does not.
    assert_eq!(post("from-a-file"), 200);
    assert!(!m.log().contains("from-a-file"), "the secret is in the log");
}
