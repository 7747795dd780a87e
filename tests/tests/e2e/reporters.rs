//! Issue 18 (the outbox and `http_push`): real builds reported to a local
//! HTTP receiver that stands in for the services on the internet and
//! checks the requests: method, path, headers, auth, signature and JSON.
//! - `build_start_end` posts each build's start and end, in that order;
//! - `problem` and `change` across pass → fail → fail → pass;
//! - a receiver that fails three times (503) then answers gets the message once;
//! - a 4xx is not retried: recorded, shown in the API and the page, logged once;
//! - a receiver down across a master restart gets the message after it;
//! - a removed reporter's queue is dropped, and says so;
//! - the token and the HMAC secret never appear in the log or the API.

use moonbot_tests::{Backend, LONG, TestMaster, run};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "s3cr3t-T0KEN";
const HMAC: &str = "hm4c-SECRET";

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "reporters",
  buildbot_url = "http://ci.example.org",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "flip", workernames = { "w1" }, tags = { "main" },
      steps = { mb.steps.shell { name = "run", command = mb.interpolate("exit %(prop:code:-0)s") } } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "flip" } } },
  reporters = {
    mb.reporters.http_push { name = "all", url = "@RECV@/all", token = "@TOKEN@", hmac_secret = "@HMAC@",
      headers = { ["X-Team"] = "ci" },
      generators = { mb.generators.build_start_end { builders = { "flip" } } } },
    mb.reporters.http_push { name = "problems", url = "@RECV@/problems",
      generators = { mb.generators.build_status { mode = { "problem" } } } },
    mb.reporters.http_push { name = "changes", url = "@RECV@/changes",
      generators = { mb.generators.build_status { mode = { "change" }, tags = { "main" } } } },
    mb.reporters.http_push { name = "flaky", url = "@RECV@/flaky", max_attempts = 5,
      format_fn = function(build) return { text = build.builder.name .. " #" .. build.number .. " " .. build.event } end,
      generators = { mb.generators.build_status { mode = { "failing" } } } },
    mb.reporters.http_push { name = "refused", url = "@RECV@/refused", user = "bot", password = "@TOKEN@",
      generators = { mb.generators.build_status { mode = { "passing" } } } },
    @LATER@
  },
}
"#;

const LATER: &str = r#"mb.reporters.http_push { name = "later", url = "@RECV@/later",
      generators = { mb.generators.build_status { mode = { "all" } } } },"#;

moonbot_tests::on_both_databases!(builds_are_reported_once_in_order_and_nothing_is_lost);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// Which connection it came on (the receiver numbers them as it accepts).
    connection: usize,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A local HTTP receiver: records every request; answers each path with the
/// statuses queued for it (then 200).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<BTreeMap<String, VecDeque<u16>>>>,
}

impl Receiver {
    fn start() -> (Receiver, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let r = receiver.clone();
        std::thread::spawn(move || {
            for (connection, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let r = r.clone();
                std::thread::spawn(move || r.serve(stream, connection));
            }
        });
        (receiver, url)
    }

    fn serve(&self, mut stream: std::net::TcpStream, connection: usize) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let len: usize = headers
                .get("content-length")
                .map_or(0, |l| l.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = self
                .answers
                .lock()
                .unwrap()
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
                .unwrap_or(200);
            self.got.lock().unwrap().push(Received {
                method,
                path,
                headers,
                body: String::from_utf8(body).unwrap(),
                connection,
            });
            let text = if status == 200 { "ok" } else { "nope" };
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            )
            .unwrap();
        }
    }

    fn answer(&self, path: &str, statuses: &[u16]) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.into(), statuses.iter().copied().collect());
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn config(url: &str, later: bool) -> String {
    CONFIG
        .replace("@LATER@", if later { LATER } else { "" })
        .replace("@RECV@", url)
        .replace("@TOKEN@", TOKEN)
        .replace("@HMAC@", HMAC)
}

fn force(m: &TestMaster, builderid: i64, code: i64) -> Value {
    let (status, answer) = m.rpc(
        "/api/v2/forceschedulers/force",
        "force",
        json!({"builderid": builderid, "properties": {"code": code.to_string()}}),
    );
    assert_eq!(status, 200, "{answer}");
    let brid = answer["result"][1][builderid.to_string()].as_i64().unwrap();
    m.wait_request_done(brid, LONG)
}

fn reporter(m: &TestMaster, name: &str) -> Value {
    m.get(&format!("/api/v2/reporters/{name}"))["reporters"][0].clone()
}

fn builds_are_reported_once_in_order_and_nothing_is_lost(backend: &Backend) {
    let (recv, url) = Receiver::start();
    recv.answer("/flaky", &[503, 503, 503]);
    recv.answer("/refused", &[401, 401, 401]);
    let (mut m, _w1) = TestMaster::started_with_worker(backend, &config(&url, false), "w1");
    let flip = m.builderid("flip");

    // pass → fail → fail → pass.
    let builds: Vec<Value> = [0, 1, 1, 0]
        .iter()
        .map(|&code| force(&m, flip, code))
        .collect();
    let ids: Vec<i64> = builds
        .iter()
        .map(|b| b["buildid"].as_i64().unwrap())
        .collect();
    assert_eq!(
        builds
            .iter()
            .map(|b| b["results"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 2, 2, 0]
    );

    // build_start_end: each build's start, then its end, as the receiver got them.
    m.wait_for("every start and end", LONG, || {
        (recv.at("/all").len() >= 8).then_some(())
    });
    let all = recv.at("/all");
    assert_eq!(all.len(), 8, "{all:?}");
    for (i, id) in ids.iter().enumerate() {
        let (start, end) = (all[2 * i].json(), all[2 * i + 1].json());
        assert_eq!(
            (&start["buildid"], &start["event"]),
            (&json!(id), &json!("started"))
        );
        assert_eq!(
            (&end["buildid"], &end["event"]),
            (&json!(id), &json!("finished"))
        );
        assert_eq!(end["results"], builds[i]["results"]);
        assert_eq!(end["builder"]["name"], "flip");
        assert_eq!(end["url"], format!("http://ci.example.org/builds/{id}"));
        assert_eq!(
            end["properties"]["code"][0],
            if i % 3 == 0 { "0" } else { "1" }
        );
    }
    // The reporter keeps its connection: the 8 messages came on one.
    assert!(
        all.iter().all(|r| r.connection == all[0].connection),
        "{:?}",
        all.iter().map(|r| r.connection).collect::<Vec<_>>()
    );
    let first = &all[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.headers["x-team"], "ci");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC.as_bytes());
    let mac = hex::encode(ring::hmac::sign(&key, first.body.as_bytes()));
    assert_eq!(
        first.headers["x-hub-signature-256"],
        format!("sha256={mac}")
    );

    // problem: the first failure after a pass; change: each change of result.
    m.wait_for("the change reports", LONG, || {
        (recv.at("/changes").len() >= 2).then_some(())
    });
    let problems: Vec<Value> = recv.at("/problems").iter().map(Received::json).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["buildid"], ids[1]);
    let changes: Vec<Value> = recv.at("/changes").iter().map(Received::json).collect();
    assert_eq!(
        changes
            .iter()
            .map(|c| c["buildid"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [ids[1], ids[3]]
    );

    // Three 503s, then 200: each failing build's message arrives once (the
    // two are retried apart: only one build's messages wait for each
    // other); the body is format_fn's.
    m.wait_for("the flaky receiver's messages", LONG, || {
        (reporter(&m, "flaky")["delivered"] == 2).then_some(())
    });
    let flaky = recv.at("/flaky");
    assert_eq!(
        flaky.len(),
        5,
        "three failures, then each message once: {flaky:?}"
    );
    let mut answered: Vec<Value> = flaky[3..].iter().map(Received::json).collect();
    answered.sort_by_key(|v| v.to_string());
    assert_eq!(
        answered,
        [1, 2].map(|i| json!({"text": format!("flip #{} finished", builds[i]["number"])}))
    );
    let record = reporter(&m, "flaky");
    assert_eq!(
        (record["queued"].as_i64(), record["failed"].as_i64()),
        (Some(0), Some(0)),
        "{record}"
    );

    // A 401 is not retried: failed at once, both messages, and shown.
    m.wait_for("the refused messages", LONG, || {
        (reporter(&m, "refused")["failed"] == 2).then_some(())
    });
    assert_eq!(recv.at("/refused").len(), 2, "not retried");
    let refused = reporter(&m, "refused");
    assert_eq!(refused["last_error"]["status"], 401, "{refused}");
    assert_eq!(refused["kind"], "HttpStatusPush");
    let page = m.get_status("/reporters").1;
    assert!(page.contains("HTTP 401"), "{page}");
    assert_eq!(
        m.log().matches("delivery given up").count(),
        2,
        "logged once each"
    );

    // A receiver down across a restart: the message waits in the queue.
    // (A restart with a new reporter; the worker finds the master again on
    // its pinned port.)
    m.pin_quic_port(&config(&url, true));
    m.stop(true);
    m.start();
    m.wait_connected("w1");
    m.wait_for("the new reporter", LONG, || {
        m.get("/api/v2/reporters")["reporters"]
            .as_array()?
            .iter()
            .any(|r| r["name"] == "later")
            .then_some(())
    });
    recv.answer("/later", &[503; 1000]);
    let build = force(&m, flip, 0);
    m.wait_for("a failed try", LONG, || {
        (!recv.at("/later").is_empty()).then_some(())
    });
    m.stop(true);
    recv.answer("/later", &[]);
    m.start();
    m.wait_connected("w1");
    m.wait_for("the message after the restart", LONG, || {
        (reporter(&m, "later")["delivered"] == 1).then_some(())
    });
    let later = recv.at("/later");
    assert_eq!(later.last().unwrap().json()["buildid"], build["buildid"]);
    assert!(
        later
            .iter()
            .all(|r| r.json()["buildid"] == build["buildid"]),
        "nothing else, nothing twice"
    );

    // A removed reporter's queue is dropped, visibly.
    recv.answer("/later", &[503; 1000]);
    force(&m, flip, 0);
    let tries = recv.at("/later").len();
    m.wait_for("a failed try", LONG, || {
        (recv.at("/later").len() > tries).then_some(())
    });
    m.write_config(&config(&url, false));
    run("moonbot", &["reconfig", m.path()]);
    m.wait_for("the queue dropped", LONG, || {
        m.log()
            .contains("undelivered message(s) are dropped")
            .then_some(())
    });
    assert_eq!(m.get_status("/api/v2/reporters/later").0, 404);

    // No secret in the log or the API.
    let log = m.log();
    let api = m.get("/api/v2/reporters").to_string() + &m.get("/api/v2/config").to_string();
    for secret in [TOKEN, HMAC] {
        assert!(!log.contains(secret), "{secret} is in the log");
        assert!(!api.contains(secret), "{secret} is in the API");
    }
}

const STATUS_CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "statuses",
  buildbot_url = "http://ci.example.org/",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = {
    mb.builder { name = "test", workernames = { "w1" },
      steps = { mb.steps.shell { command = mb.interpolate("exit %(prop:code:-0)s") } } },
  },
  schedulers = { mb.schedulers.any_branch { name = "on-push", builders = { "test" } } },
  reporters = {
    mb.reporters.github_status { token = "@TOKEN@", base_url = "@RECV@/gh" },
    mb.reporters.gitlab_status { token = "@TOKEN@", base_url = "@RECV@/gl", context = "ci/%(prop:buildername)s" },
    mb.reporters.gitea_status { token = "@TOKEN@", base_url = "@RECV@/gt" },
    mb.reporters.bitbucket_status { token = "@TOKEN@", base_url = "@RECV@/bb" },
    mb.reporters.github_comment { token = "@TOKEN@", base_url = "@RECV@/gh" },
  },
}
"#;

moonbot_tests::on_both_databases!(commit_statuses_go_pending_running_and_done_in_order);

/// A push to each forge's repository: its status API gets pending when the
/// request is queued, then running (GitLab; pending "Build started"
/// elsewhere), then the result, in that order, with the token in the
/// forge's header and the build's page as the link.
fn commit_statuses_go_pending_running_and_done_in_order(backend: &Backend) {
    let (recv, _, m, _w1) = started_with_receivers(backend, STATUS_CONFIG);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let push = |repository: &str, code: &str| {
        let (status, answer) = m.rpc(
            "/api/v2/changes",
            "add",
            json!({"author": "ann", "repository": repository, "branch": "main", "revision": sha,
                   "properties": {"code": code}}),
        );
        assert_eq!(status, 200, "{answer}");
    };
    push("https://github.com/octo/hello.git", "0");
    push("git@gitlab.example.org:group/sub/proj.git", "1");
    push("https://gitea.example.org/ann/tool", "0");
    push("https://bitbucket.org/team/app.git", "0");
    let done = |path: &str, n: usize| {
        m.wait_for(&format!("{n} statuses at {path}"), LONG, || {
            (recv.at(path).len() >= n).then_some(())
        })
    };
    let gh = format!("/gh/repos/octo/hello/statuses/{sha}");
    let gl = format!("/gl/api/v4/projects/group%2Fsub%2Fproj/statuses/{sha}");
    let gt = format!("/gt/api/v1/repos/ann/tool/statuses/{sha}");
    let bb = format!("/bb/2.0/repositories/team/app/commit/{sha}/statuses/build");
    for path in [&gh, &gl, &gt, &bb] {
        done(path, 3);
    }
    let states = |path: &str, field: &str| -> Vec<String> {
        recv.at(path)
            .iter()
            .map(|r| r.json()[field].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states(&gh, "state"), ["pending", "pending", "success"]);
    assert_eq!(
        states(&gh, "description"),
        ["Build queued", "Build started", "Build done: success"]
    );
    assert_eq!(states(&gl, "state"), ["pending", "running", "failed"]);
    assert_eq!(states(&gt, "state"), ["pending", "pending", "success"]);
    assert_eq!(
        states(&bb, "state"),
        ["INPROGRESS", "INPROGRESS", "SUCCESSFUL"]
    );

    let github = recv.at(&gh);
    assert_eq!(github[0].method, "POST");
    assert_eq!(
        github[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
    assert_eq!(github[0].headers["accept"], "application/vnd.github+json");
    let body = github[2].json();
    assert_eq!(body["context"], "moonbot/test");
    let build = &m.get("/api/v2/builds?order=buildid&limit=1")["builds"][0];
    assert_eq!(
        body["target_url"],
        format!("http://ci.example.org/builds/{}", build["buildid"])
    );
    let gitlab = recv.at(&gl);
    assert_eq!(gitlab[0].headers["private-token"], TOKEN);
    assert_eq!(gitlab[1].json()["name"], "ci/test");
    assert_eq!(gitlab[1].json()["ref"], "main");
    assert_eq!(
        recv.at(&gt)[0].headers["authorization"],
        format!("token {TOKEN}")
    );
    let bitbucket = recv.at(&bb)[2].json();
    assert_eq!(
        (&bitbucket["key"], &bitbucket["name"]),
        (&json!("moonbot/test"), &json!("moonbot/test"))
    );
    assert_eq!(
        recv.at(&bb)[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
    // Those builds built no pull request: no comment. A pull request's
    // build gets one, on the pull request.
    assert!(
        recv.got
            .lock()
            .unwrap()
            .iter()
            .all(|r| !r.path.contains("/issues/"))
    );
    let (status, answer) = m.rpc(
        "/api/v2/changes",
        "add",
        json!({"author": "ann", "repository": "https://github.com/octo/hello", "branch": "refs/pull/7/merge",
               "revision": "fedcba9876543210fedcba9876543210fedcba98", "properties": {"github.number": 7}}),
    );
    assert_eq!(status, 200, "{answer}");
    done("/gh/repos/octo/hello/issues/7/comments", 1);
    let comment = &recv.at("/gh/repos/octo/hello/issues/7/comments")[0];
    assert_eq!(comment.headers["authorization"], format!("Bearer {TOKEN}"));
    let pr_build = &m.get("/api/v2/builds?order=-buildid&limit=1")["builds"][0];
    assert_eq!(
        comment.json(),
        json!({"body": format!("Build test #{} success: http://ci.example.org/builds/{}", pr_build["number"], pr_build["buildid"])})
    );
    assert!(!m.log().contains(TOKEN));
}

const CHAT_CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "chat",
  buildbot_url = "http://ci.example.org",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = { mb.builder { name = "docs", workernames = { "w1" }, steps = { mb.steps.shell { command = "exit 2" } } } },
  schedulers = { mb.schedulers.force { name = "force", builders = { "docs" } } },
  reporters = {
    mb.reporters.slack { webhook = "@RECV@/slack/T000/B000/@TOKEN@" },
    mb.reporters.discord { webhook = "@RECV@/discord/api/webhooks/1/@TOKEN@",
      format_fn = function(b) return "**" .. b.builder.name .. "** " .. b.results end },
    mb.reporters.matrix { homeserver = "@RECV@/mx", room = "!room:example.org", token = "@TOKEN@" },
    mb.reporters.zulip { site = "@RECV@/zulip", stream = "ci", email = "bot@example.org", api_key = "@TOKEN@" },
  },
}
"#;

moonbot_tests::on_both_databases!(chat_services_get_a_line_per_build);

/// Slack's and Discord's webhooks, Matrix's room message and Zulip's stream
/// message, each as its service documents it.
fn chat_services_get_a_line_per_build(backend: &Backend) {
    let (recv, _, m, _w1) = started_with_receivers(backend, CHAT_CONFIG);
    let build = force(&m, m.builderid("docs"), 0);
    let line = format!(
        "docs #1 failure: http://ci.example.org/builds/{}",
        build["buildid"]
    );
    m.wait_for("four messages", LONG, || {
        (recv.got.lock().unwrap().len() >= 4).then_some(())
    });

    let slack = &recv.at(&format!("/slack/T000/B000/{TOKEN}"))[0];
    assert_eq!(slack.method, "POST");
    assert_eq!(slack.json(), json!({"text": line}));
    let discord = &recv.at(&format!("/discord/api/webhooks/1/{TOKEN}"))[0];
    assert_eq!(discord.json(), json!({"content": "**docs** 2"}));
    let matrix = recv
        .got
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.path.starts_with("/mx/"))
        .cloned()
        .unwrap();
    assert_eq!(matrix.method, "PUT");
    assert!(
        matrix.path.starts_with(
            "/mx/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/moonbot-"
        ),
        "{}",
        matrix.path
    );
    assert_eq!(matrix.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(matrix.json(), json!({"msgtype": "m.text", "body": line}));
    let zulip = &recv.at("/zulip/api/v1/messages")[0];
    assert_eq!(
        zulip.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("bot@example.org:{TOKEN}"));
    assert_eq!(zulip.headers["authorization"], format!("Basic {basic}"));
    let form: BTreeMap<String, String> = serde_urlencoded::from_str(&zulip.body).unwrap();
    assert_eq!(form["type"], "stream");
    assert_eq!(form["to"], "ci");
    assert_eq!(form["topic"], "builds");
    assert_eq!(form["content"], line);
    // The webhook URLs and tokens are credentials: not in the log or the API.
    assert!(!m.log().contains(TOKEN));
    assert!(!m.get("/api/v2/reporters").to_string().contains(TOKEN));
}

const MAIL_CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "mail",
  buildbot_url = "http://ci.example.org",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = { mb.builder { name = "mailer", workernames = { "w1" }, steps = {
    mb.steps.shell { name = "unit", command = "echo 'test_parse ... FAILED'; exit 1" } } } },
  schedulers = { mb.schedulers.any_branch { name = "on-push", builders = { "mailer" } } },
  reporters = {
    mb.reporters.mail { from = "CI <ci@example.org>", extra_recipients = { "team@example.org" },
      lookup = "example.org", extra_headers = { ["X-CI"] = "moonbot" },
      smtp = { host = "127.0.0.1", port = @SMTP@, tls = "none", user = "ci", password = "@TOKEN@" },
      generators = { mb.generators.build_status { mode = { "failing" } } } },
  },
}
"#;

/// What the SMTP receiver got.
type Mails = Arc<Mutex<Vec<Mail>>>;

/// One mail as the SMTP receiver got it.
#[derive(Debug, Clone, Default)]
struct Mail {
    /// `user password` from AUTH PLAIN.
    auth: String,
    from: String,
    to: Vec<String>,
    data: String,
}

/// A local SMTP receiver (no TLS; AUTH PLAIN): answers the first
/// `refuse` MAIL commands 451 (try later), then takes every mail.
fn smtp_receiver(refuse: usize) -> (u16, Mails, Arc<Mutex<usize>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let refusals = Arc::new(Mutex::new(0usize));
    let (m, r) = (mails.clone(), refusals.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = write!(stream, "220 localhost ESMTP test\r\n");
            let mut mail = Mail::default();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let cmd = line.trim_end().to_string();
                line.clear();
                let upper = cmd.to_ascii_uppercase();
                let answer = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                    "250-localhost\r\n250 AUTH PLAIN LOGIN".to_string()
                } else if upper.starts_with("AUTH PLAIN ") {
                    use base64::Engine;
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(cmd[11..].trim())
                        .unwrap_or_default();
                    mail.auth = String::from_utf8_lossy(&decoded)
                        .replace('\0', " ")
                        .trim()
                        .to_string();
                    "235 2.7.0 accepted".to_string()
                } else if upper.starts_with("MAIL FROM:") {
                    let mut refused = r.lock().unwrap();
                    if *refused < refuse {
                        *refused += 1;
                        "451 4.3.0 try again later".to_string()
                    } else {
                        mail.from = cmd[10..].trim().to_string();
                        "250 OK".to_string()
                    }
                } else if upper.starts_with("RCPT TO:") {
                    mail.to.push(cmd[8..].trim().to_string());
                    "250 OK".to_string()
                } else if upper == "DATA" {
                    let _ = write!(stream, "354 go ahead\r\n");
                    let mut data = String::new();
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                            break;
                        }
                        data.push_str(&l);
                    }
                    mail.data = data;
                    m.lock().unwrap().push(std::mem::take(&mut mail));
                    "250 queued".to_string()
                } else if upper == "QUIT" {
                    let _ = write!(stream, "221 bye\r\n");
                    break;
                } else {
                    "250 OK".to_string()
                };
                let _ = write!(stream, "{answer}\r\n");
            }
        }
    });
    (port, mails, refusals)
}

moonbot_tests::on_both_databases!(a_failing_build_is_mailed_to_its_authors);

/// A push by `bob` that fails: one mail, after a 451, to bob (through
/// `lookup`) and the team, with Buildbot's subject and a body holding the
/// link, the change, the failing step and its log's last lines.
fn a_failing_build_is_mailed_to_its_authors(backend: &Backend) {
    let (port, mails, refusals) = smtp_receiver(1);
    let lua = MAIL_CONFIG
        .replace("@SMTP@", &port.to_string())
        .replace("@TOKEN@", TOKEN);
    let (m, _w1) = TestMaster::started_with_worker(backend, &lua, "w1");
    let (status, answer) = m.rpc(
        "/api/v2/changes",
        "add",
        json!({"author": "bob", "repository": "https://git.example.org/app", "branch": "main",
               "revision": "abcdef1234567890", "comments": "Parse the new format\n\nDetails."}),
    );
    assert_eq!(status, 200, "{answer}");
    m.wait_for("the mail", LONG, || {
        (!mails.lock().unwrap().is_empty()).then_some(())
    });
    assert_eq!(
        *refusals.lock().unwrap(),
        1,
        "the first try was told to come back"
    );
    let mail = mails.lock().unwrap()[0].clone();
    assert_eq!(mail.from, "<ci@example.org>");
    assert_eq!(mail.auth, format!("ci {TOKEN}"));
    let mut to = mail.to.clone();
    to.sort();
    assert_eq!(to, ["<bob@example.org>", "<team@example.org>"]);
    let data = mail.data.replace("\r\n", "\n");
    let build = &m.get("/api/v2/builds")["builds"][0];
    assert!(
        data.contains("Subject: [moonbot] mailer #1 failure on main\n"),
        "{data}"
    );
    assert!(data.contains("X-CI: moonbot\n"), "{data}");
    assert!(
        data.contains(&format!(
            "http://ci.example.org/builds/{}",
            build["buildid"]
        )),
        "{data}"
    );
    assert!(
        data.contains("abcdef123456 by bob: Parse the new format"),
        "{data}"
    );
    assert!(data.contains("Failing steps:\n  unit: failure"), "{data}");
    assert!(data.contains("  test_parse ... FAILED\n"), "{data}");
    m.wait_for("the record", LONG, || {
        (reporter(&m, "mail")["delivered"] == 1).then_some(())
    });
    assert_eq!(mails.lock().unwrap().len(), 1, "once");
    assert!(!m.log().contains(TOKEN));
}

const SETS_CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "sets",
  buildbot_url = "http://ci.example.org",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1", missing_timeout = 2, notify_on_missing = { "ops@example.org" } } },
  builders = {
    mb.builder { name = "pass", workernames = { "w1" }, steps = { mb.steps.shell { name = "ok", command = "true" } } },
    mb.builder { name = "fail", workernames = { "w1" }, steps = { mb.steps.shell { name = "no", command = "exit 1" } } },
  },
  schedulers = { mb.schedulers.any_branch { name = "on-push", builders = { "pass", "fail" } } },
  reporters = {
    mb.reporters.http_push { name = "failing-sets", url = "@RECV@/sets",
      generators = { mb.generators.buildset { mode = { "failing" } } } },
    mb.reporters.http_push { name = "passing-sets", url = "@RECV@/passing",
      generators = { mb.generators.buildset { mode = { "passing" }, builders = { "fail" } } } },
    mb.reporters.http_push { name = "combined", url = "@RECV@/combined",
      generators = { mb.generators.buildset_combined {} } },
    mb.reporters.http_push { name = "pushed", url = "@RECV@/pushed",
      generators = { mb.generators.build_status { schedulers = { "on-push" } } } },
    mb.reporters.http_push { name = "forced", url = "@RECV@/forced",
      generators = { mb.generators.build_status { schedulers = { "force" } } } },
    mb.reporters.slack { webhook = "@RECV@/slack", generators = { mb.generators.worker_missing {} } },
    mb.reporters.mail { from = "ci@example.org", smtp = { host = "127.0.0.1", port = @SMTP@, tls = "none" },
      generators = { mb.generators.worker_missing { workers = { "w1" } } } },
  },
}
"#;

/// A master with worker `w1` on `config`, whose `@RECV@` is an HTTP
/// receiver, `@SMTP@` the port of an SMTP one and `@TOKEN@` [`TOKEN`].
fn started_with_receivers(
    backend: &Backend,
    config: &str,
) -> (Receiver, Mails, TestMaster, moonbot_tests::TestWorker) {
    let (recv, url) = Receiver::start();
    let (port, mails, _) = smtp_receiver(0);
    let lua = config
        .replace("@RECV@", &url)
        .replace("@SMTP@", &port.to_string())
        .replace("@TOKEN@", TOKEN);
    let (m, w1) = TestMaster::started_with_worker(backend, &lua, "w1");
    (recv, mails, m, w1)
}

moonbot_tests::on_both_databases!(buildsets_and_missing_workers_are_reported);

/// `buildset` (one message with the builds its modes and filters take),
/// `buildset_combined` (every build), the `schedulers` filter, and
/// `worker_missing` to chat and to the worker's `notify_on_missing`.
fn buildsets_and_missing_workers_are_reported(backend: &Backend) {
    let (recv, mails, m, mut w1) = started_with_receivers(backend, SETS_CONFIG);
    let (status, answer) = m.rpc(
        "/api/v2/changes",
        "add",
        json!({"author": "bob", "repository": "https://git.example.org/app", "branch": "main",
               "revision": "abcdef1234567890", "comments": "Two builders"}),
    );
    assert_eq!(status, 200, "{answer}");
    m.wait_for("the buildset reports", LONG, || {
        (recv.at("/sets").len() == 1
            && recv.at("/combined").len() == 1
            && recv.at("/pushed").len() == 2)
            .then_some(())
    });
    let builders = |r: &Received| -> Vec<(String, i64)> {
        let mut b: Vec<(String, i64)> = r.json()["builds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["builder"]["name"].as_str().unwrap().to_string(),
                    b["results"].as_i64().unwrap(),
                )
            })
            .collect();
        b.sort();
        b
    };
    let sets = &recv.at("/sets")[0];
    assert_eq!(sets.json()["event"], "buildset");
    assert_eq!(sets.json()["results"], 2, "the buildset failed");
    assert_eq!(sets.json()["complete"], true);
    assert_eq!(
        builders(sets),
        [("fail".to_string(), 2)],
        "failing builds only"
    );
    let combined = &recv.at("/combined")[0];
    assert_eq!(
        builders(combined),
        [("fail".to_string(), 2), ("pass".to_string(), 0)]
    );
    // Its only build of "fail" failed: "passing" takes none, no message;
    // the builds were not forced: "force" takes none either.
    m.wait_for("the reporters to pass those events", LONG, || {
        let done = |name: &str| {
            m.get(&format!("/api/v2/reporters/{name}"))["reporters"][0]["delivered"].as_i64()
                == Some(match name {
                    "pushed" => 2,
                    _ => 1,
                })
        };
        (done("failing-sets") && done("combined") && done("pushed")).then_some(())
    });
    assert!(recv.at("/passing").is_empty());
    assert!(recv.at("/forced").is_empty());
    assert_eq!(reporter(&m, "passing-sets")["delivered"], 0);
    // The API and the page say what each reports.
    assert_eq!(
        reporter(&m, "passing-sets")["generators"],
        json!(["buildset(passing) builders=fail"])
    );
    assert_eq!(
        reporter(&m, "pushed")["generators"],
        json!(["build_status(all) schedulers=on-push"])
    );
    let page = m.get_status("/reporters").1;
    assert!(page.contains("worker_missing(w1)"), "{page}");

    // The worker dies: after 2 s of silence it is lost, after 2 more missing.
    w1.kill();
    m.wait_for("the missing worker's messages", LONG, || {
        (!recv.at("/slack").is_empty() && !mails.lock().unwrap().is_empty()).then_some(())
    });
    let workerid = m.get("/api/v2/workers/w1")["workers"][0]["workerid"].clone();
    assert_eq!(
        recv.at("/slack")[0].json(),
        json!({"text": format!(
            "worker w1 missing (away for more than 2 s): http://ci.example.org/workers/{workerid}"
        )})
    );
    let mail = mails.lock().unwrap()[0].clone();
    assert_eq!(mail.to, ["<ops@example.org>"]);
    let data = mail.data.replace("\r\n", "\n");
    assert!(
        data.contains("Subject: [moonbot] worker w1 missing\n"),
        "{data}"
    );
    assert!(
        data.contains("Worker w1 has been away for more than 2 s"),
        "{data}"
    );
    assert!(m.log().contains("worker missing"), "{}", m.log());
}

const TEMPLATE_CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "templates",
  buildbot_url = "http://ci.example.org",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  workers = { mb.worker { name = "w1" } },
  builders = { mb.builder { name = "tpl", workernames = { "w1" }, steps = {
    mb.steps.shell { name = "unit", command = "echo 'line one'; echo 'test_x FAILED'; exit 1" } } } },
  schedulers = { mb.schedulers.force { name = "force", builders = { "tpl" } } },
  reporters = {
    mb.reporters.http_push { name = "json", url = "@RECV@/json",
      generators = { mb.generators.build_status {} },
      template = [[{"builder": "{{ buildername }}", "number": {{ build.number }}, "result": "{{ result_names[results] }}", "title": "{{ buildbot_title }}"}]] },
    mb.reporters.slack { webhook = "@RECV@/slack",
      template = "{{ buildername }} {{ result | upper }}: {{ summary }} ({{ build_url }})" },
    mb.reporters.mail { from = "ci@example.org", extra_recipients = { "team@example.org" },
      smtp = { host = "127.0.0.1", port = @SMTP@, tls = "none" },
      subject = "{{ result_names[results] | upper }} {{ buildername }} #{{ build.number }}",
      add_logs = { "unit.stdio" } },
  },
}
"#;

moonbot_tests::on_both_databases!(templates_render_messages_and_mail_attaches_logs);

/// Jinja2 templates (Buildbot's MessageFormatter) for http_push (JSON out of
/// a template goes as JSON), chat and a mail subject; `add_logs` attaches
/// the named log to the mail.
fn templates_render_messages_and_mail_attaches_logs(backend: &Backend) {
    let (recv, mails, m, _w1) = started_with_receivers(backend, TEMPLATE_CONFIG);
    let build = force(&m, m.builderid("tpl"), 0);
    m.wait_for("the messages", LONG, || {
        (!recv.at("/json").is_empty()
            && !recv.at("/slack").is_empty()
            && !mails.lock().unwrap().is_empty())
        .then_some(())
    });
    let json_push = &recv.at("/json")[0];
    assert_eq!(json_push.headers["content-type"], "application/json");
    assert_eq!(
        json_push.json(),
        json!({"builder": "tpl", "number": 1, "result": "failure", "title": "templates"})
    );
    assert_eq!(
        recv.at("/slack")[0].json(),
        json!({"text": format!(
            "tpl FAILURE: BUILD FAILED: failed unit (http://ci.example.org/builds/{})",
            build["buildid"]
        )})
    );
    let mail = mails.lock().unwrap()[0].clone();
    let data = mail.data.replace("\r\n", "\n");
    assert!(data.contains("Subject: FAILURE tpl #1\n"), "{data}");
    assert!(data.contains("Content-Type: multipart/mixed"), "{data}");
    // The default body, and the log attached.
    assert!(data.contains("Failing steps:\n  unit: failure"), "{data}");
    assert!(
        data.contains("Content-Disposition: attachment; filename=\"tpl-1-unit-stdio.txt\""),
        "{data}"
    );
    assert!(data.contains("line one\ntest_x FAILED\n"), "{data}");
}
