//! The status pages and the live API: a real master and worker, users and
//! tokens from master.lua, and Debian's Chromium driven over WebDriver
//! (chromedriver) for what a person does in the browser.
//!
//! Screenshots land in `target/tmp/screenshots/` for a human to look at.

use fantoccini::{Client, ClientBuilder, Locator};
use moonbot_tests::{Backend, LONG, TestMaster, TestWorker, bin};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "status <page>",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  auth = {
    users = {
      { name = "ana", password_hash = "@ANA_HASH@", roles = { "admins" } },
      { name = "bob", password_hash = "@BOB_HASH@" },
    },
    tokens = {
      { name = "ci-bot", token_hash = "@CI_HASH@", roles = { "admins" } },
      { name = "viewer-bot", token_hash = "@VIEWER_HASH@" },
    },
    rules = { force = { "admins" }, stop = { "admins" }, rebuild = { "admins" },
              cancel = { "admins" }, reload = { "admins" } },
  },
  workers = { mb.worker { name = "w1", max_builds = 1 } },
  builders = {
    mb.builder { name = "quick", workernames = { "w1" }, tags = { "fast" },
      description = "<img src=x onerror='window.pwned=3'>",
      steps = {
        mb.steps.shell { name = "greet", command = { "echo", "<script>window.pwned=2</script>" } },
        mb.steps.shell { name = "count", command = "seq 1 2000" },
      } },
    mb.builder { name = "sleepy", workernames = { "w1" }, tags = { "slow" }, steps = {
      mb.steps.shell { name = "nap", command = "echo napping; sleep 300" },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "quick", "sleepy" } } },
}
"#;

const ANA_PASSWORD: &str = "correct horse";
const BOB_PASSWORD: &str = "battery staple";

/// A master with two users and two tokens, and its worker.
struct Site {
    master: TestMaster,
    _worker: TestWorker,
    ci_token: String,
    viewer_token: String,
}

fn hash_password(password: &str) -> String {
    let mut child = Command::new(bin("moonbot"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `moonbot api-token NAME`: (token, hash).
fn api_token(name: &str) -> (String, String) {
    let out = moonbot_tests::run_ok("moonbot", &["api-token", name]);
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("mbt_"))
        .unwrap()
        .to_string();
    let hash = out
        .split('"')
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_string();
    (token, hash)
}

fn site(backend: &Backend) -> Site {
    let (ci_token, ci_hash) = api_token("ci-bot");
    let (viewer_token, viewer_hash) = api_token("viewer-bot");
    let lua = CONFIG
        .replace("@ANA_HASH@", &hash_password(ANA_PASSWORD))
        .replace("@BOB_HASH@", &hash_password(BOB_PASSWORD))
        .replace("@CI_HASH@", &ci_hash)
        .replace("@VIEWER_HASH@", &viewer_hash);
    let mut master = TestMaster::create(backend, &lua);
    master.start();
    let mut worker = master.make_worker("w1", &master.dir.clone());
    worker.start();
    master.wait_connected("w1");
    Site {
        master,
        _worker: worker,
        ci_token,
        viewer_token,
    }
}

/// An HTTP client that does not follow redirects, so tests see them.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).build()
}

/// Status and body of a request, whatever the status.
fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String, Option<String>) {
    match r {
        Ok(r) => {
            let cookie = r.header("set-cookie").map(str::to_string);
            (r.status(), r.into_string().unwrap(), cookie)
        }
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default(), None),
        Err(e) => panic!("request failed: {e}"),
    }
}

fn rpc_body(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

fn post_rpc(m: &TestMaster, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = agent()
        .post(&format!("{}{path}", m.www))
        .set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let (status, text, _) = answer(req.send_string(body));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Log in through the form; the session cookie (`name=value`).
fn login(m: &TestMaster, user: &str, password: &str) -> Result<String, u16> {
    let (status, _, cookie) = answer(agent().post(&format!("{}/login", m.www)).send_form(&[
        ("username", user),
        ("password", password),
        ("next", "/"),
    ]));
    if status != 303 {
        return Err(status);
    }
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    Ok(cookie.split(';').next().unwrap().to_string())
}

/// The CSRF token a page hands to a visitor with `cookie`.
fn csrf_of(m: &TestMaster, cookie: Option<&str>) -> String {
    let mut req = agent().get(&format!("{}/", m.www));
    if let Some(c) = cookie {
        req = req.set("cookie", c);
    }
    let page = req.call().unwrap().into_string().unwrap();
    let start = page.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
    page[start..start + 64].to_string()
}

fn post_form(m: &TestMaster, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> u16 {
    let mut req = agent().post(&format!("{}{path}", m.www));
    if let Some(c) = cookie {
        req = req.set("cookie", c);
    }
    answer(req.send_form(form)).0
}

fn pending_requests(m: &TestMaster, builderid: i64) -> u64 {
    m.get(&format!(
        "/api/v2/buildrequests?builderid={builderid}&complete=false"
    ))["meta"]["total"]
        .as_u64()
        .unwrap()
}

moonbot_tests::on_both_databases!(control_needs_a_user_a_role_and_a_csrf_token);

fn control_needs_a_user_a_role_and_a_csrf_token(backend: &Backend) {
    let s = site(backend);
    let m = &s.master;
    let quick = m.builderid("quick");
    let sleepy = m.builderid("sleepy");
    let force = rpc_body("force", json!({"builderid": quick, "reason": "api"}));
    let path = "/api/v2/forceschedulers/force";

    // Reading needs no login; the home page offers one.
    let (status, home) = m.get_status("/");
    assert_eq!(status, 200);
    assert!(home.contains("id=\"login\""), "{home}");

    // Scripts: no token, a forged token, a token without the role, the right one.
    assert_eq!(post_rpc(m, path, None, &force).0, 401);
    assert_eq!(post_rpc(m, path, Some("mbt_forged"), &force).0, 401);
    let (status, body) = post_rpc(m, path, Some(&s.viewer_token), &force);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("admins"), "{body}");
    assert_eq!(
        pending_requests(m, quick),
        0,
        "a refused force queued a build"
    );
    let (status, body) = post_rpc(m, path, Some(&s.ci_token), &force);
    assert_eq!(status, 200, "{body}");
    let brid = body["result"][1][quick.to_string()].as_i64().unwrap();
    let build = m.wait_request_done(brid, LONG);
    assert_eq!(build["results"], 0);
    let props = m.get(&format!("/api/v2/builds/{}/properties", build["buildid"]));
    assert_eq!(
        props["properties"][0]["owner"][0], "ci-bot",
        "the token is the owner"
    );
    // A JSON-RPC call in another content type is refused (no cross-site posts).
    let (status, _, _) = answer(
        agent()
            .post(&format!("{}{path}", m.www))
            .set("authorization", &format!("Bearer {}", s.ci_token))
            .set("content-type", "text/plain")
            .send_string(&force),
    );
    assert_eq!(status, 415);

    // `moonbot sendchange` needs a token too: refused without one (saying
    // why), stored with the CI token.
    let sendchange = |token: Option<&str>| {
        let mut args = vec![
            "sendchange",
            "--master",
            &m.www,
            "--who",
            "ann",
            "-b",
            "main",
        ];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        moonbot_tests::run("moonbot", &args)
    };
    let (code, out, err) = sendchange(None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("log in to sendchange"),
        "{err}"
    );
    assert_eq!(m.get("/api/v2/changes")["changes"], json!([]));
    let (code, out, err) = sendchange(Some(&s.ci_token));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(m.get("/api/v2/changes")["changes"][0]["author"], "ann");

    // People: a wrong password is refused; sessions need the CSRF token.
    assert_eq!(login(m, "ana", "wrong"), Err(401));
    assert_eq!(login(m, "nobody", ANA_PASSWORD), Err(401));
    let ana = login(m, "ana", ANA_PASSWORD).unwrap();
    let csrf = csrf_of(m, Some(&ana));
    let force_path = format!("/builders/{quick}/force");
    let form = |token: &'static str| {
        vec![
            ("scheduler", "force"),
            ("reason", "form"),
            ("csrf_token", token),
        ]
    };
    assert_eq!(
        post_form(m, &force_path, Some(&ana), &form("")[..2]),
        403,
        "no CSRF token"
    );
    assert_eq!(
        post_form(m, &force_path, Some(&ana), &form("0badc0de")),
        403,
        "wrong CSRF token"
    );
    assert_eq!(
        post_form(m, &force_path, None, &form("0badc0de")),
        401,
        "no session"
    );
    let anonymous_csrf = csrf_of(m, None);
    let mut with_anonymous = form("");
    with_anonymous[2].1 = &anonymous_csrf;
    assert_eq!(
        post_form(m, &force_path, None, &with_anonymous),
        401,
        "anonymous with a token"
    );
    assert_eq!(pending_requests(m, quick), 0);
    let mut good = form("");
    good[2].1 = &csrf;
    assert_eq!(post_form(m, &force_path, Some(&ana), &good), 303);
    let builds = m.wait_for("the form's build", LONG, || {
        let b = m.get(&format!(
            "/api/v2/builders/{quick}/builds?complete=true&property=owner"
        ));
        (b["meta"]["total"] == 2).then_some(b)
    });
    let owners: Vec<&str> = builds["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties"]["owner"][0].as_str().unwrap())
        .collect();
    assert!(owners.contains(&"ana"), "{owners:?}");

    // The JSON API with a session cookie needs the token in a header.
    let cookie_rpc = |header: Option<&str>| {
        let mut req = agent()
            .post(&format!("{}{path}", m.www))
            .set("content-type", "application/json")
            .set("cookie", &ana);
        if let Some(h) = header {
            req = req.set("x-csrf-token", h);
        }
        answer(req.send_string(&rpc_body("force", json!({"builderid": sleepy})))).0
    };
    assert_eq!(cookie_rpc(None), 403);
    assert_eq!(cookie_rpc(Some(&csrf)), 200);

    // A user without the role is told so.
    let bob = login(m, "bob", BOB_PASSWORD).unwrap();
    let bob_csrf = csrf_of(m, Some(&bob));
    let mut bob_form = form("");
    bob_form[2].1 = &bob_csrf;
    assert_eq!(
        post_form(
            m,
            &format!("/builders/{sleepy}/force"),
            Some(&bob),
            &bob_form
        ),
        403
    );

    // Cancel a waiting request (the worker is busy with the sleepy build) and
    // rebuild a finished build.
    let waiting = post_rpc(
        m,
        path,
        Some(&s.ci_token),
        &rpc_body("force", json!({"builderid": quick, "reason": "to cancel"})),
    )
    .1["result"][1][quick.to_string()]
    .as_i64()
    .unwrap();
    let cancel = rpc_body("cancel", json!({}));
    let cancel_path = format!("/api/v2/buildrequests/{waiting}");
    assert_eq!(
        post_rpc(m, &cancel_path, Some(&s.viewer_token), &cancel).0,
        403
    );
    let (status, body) = post_rpc(m, &cancel_path, Some(&s.ci_token), &cancel);
    assert_eq!(status, 200, "{body}");
    let request = m.get(&cancel_path);
    assert_eq!(request["buildrequests"][0]["complete"], true);
    assert_eq!(request["buildrequests"][0]["results"], 6, "CANCELLED");
    let again = post_rpc(m, &cancel_path, Some(&s.ci_token), &cancel);
    assert_eq!(again.0, 400, "a finished request cannot be cancelled again");

    let first = build["buildid"].as_i64().unwrap();
    let (status, body) = post_rpc(
        m,
        &format!("/api/v2/builds/{first}"),
        Some(&s.ci_token),
        &rpc_body("rebuild", json!({})),
    );
    assert_eq!(status, 200, "{body}");
    let rebuilt = body["result"][1].as_i64().unwrap();
    let request = m.get(&format!("/api/v2/buildrequests/{rebuilt}"));
    assert_eq!(request["buildrequests"][0]["builderid"], quick);

    // Stop the sleepy build so the rebuild runs.
    let running = m.get(&format!("/api/v2/builders/{sleepy}/builds?complete=false"));
    let sleeping = running["builds"][0]["buildid"].as_i64().unwrap();
    let stop = rpc_body("stop", json!({}));
    assert_eq!(
        post_rpc(m, &format!("/api/v2/builds/{sleeping}"), None, &stop).0,
        401
    );
    assert_eq!(
        post_rpc(
            m,
            &format!("/api/v2/builds/{sleeping}"),
            Some(&s.ci_token),
            &stop
        )
        .0,
        200
    );
    let rebuilt_build = m.wait_request_done(rebuilt, LONG);
    assert_eq!(rebuilt_build["results"], 0);
    let props = m.get(&format!(
        "/api/v2/builds/{}/properties",
        rebuilt_build["buildid"]
    ));
    assert!(
        props["properties"][0]["reason"][0]
            .as_str()
            .unwrap()
            .starts_with("rebuild of build #1 by ci-bot"),
        "{props}"
    );

    // Logging out ends the session on the master, not only in the browser:
    // the same cookie is refused afterwards, and still after a restart, while
    // a new login works.
    let ana_pages = |cookie: &str| {
        answer(
            agent()
                .get(&format!("{}/", m.www))
                .set("cookie", cookie)
                .call(),
        )
        .1
    };
    assert!(ana_pages(&ana).contains("ana"), "logged in before");
    let logout = post_form(m, "/logout", Some(&ana), &[("csrf_token", &csrf)]);
    assert_eq!(logout, 303);
    assert_eq!(cookie_rpc(Some(&csrf)), 401, "the cookie after logout");
    assert!(ana_pages(&ana).contains("id=\"login\""), "logged out");
    let mut s = s;
    s.master.stop(false);
    s.master.start();
    let m = &s.master;
    let force_as = |cookie: &str, csrf: &str| {
        let req = agent()
            .post(&format!("{}{path}", m.www))
            .set("content-type", "application/json")
            .set("cookie", cookie)
            .set("x-csrf-token", csrf);
        answer(req.send_string(&rpc_body("force", json!({"builderid": quick})))).0
    };
    assert_eq!(force_as(&ana, &csrf), 401, "the cookie after a restart");
    let again = login(m, "ana", ANA_PASSWORD).unwrap();
    assert_ne!(again, ana);
    assert_eq!(
        force_as(&again, &csrf_of(m, Some(&again))),
        200,
        "a new login"
    );

    // Failed logins back off: after three wrong passwords from an address the
    // next attempt is refused at once (429, with Retry-After), even with the
    // right password, until the delay has passed; then the right one works.
    for _ in 0..3 {
        assert_eq!(login(m, "bob", "wrong"), Err(401));
    }
    let (status, page, _) = answer(
        agent()
            .post(&format!("{}/login", m.www))
            .send_form(&[("username", "bob"), ("password", BOB_PASSWORD)]),
    );
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many failed logins"), "{page}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(login(m, "bob", BOB_PASSWORD).is_ok(), "after the delay");

    // The CLI reloads a master with `auth` with the master directory's own
    // token (cli-token, mode 0600); a wrong token is refused, saying why.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(m.dir.join("cli-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, out, err) = moonbot_tests::run("moonbot", &["reconfig", m.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reconfig"), "{out}");
    let (code, out, err) = moonbot_tests::run("moonbot", &["checkconfig", m.path(), "--diff"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) =
        moonbot_tests::run("moonbot", &["reconfig", m.path(), "--token", "not-a-token"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("the master refused (HTTP 401): the API token is not valid"),
        "{err}"
    );
}

/// chromedriver on a free port, with one headless Chromium session.
struct Browser {
    driver: Child,
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is needed for the status-page tests: run ./test (it installs chromium and chromium-driver), or apt-get install chromium chromium-driver",
            );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + LONG;
        let client = rt.block_on(async {
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Browser {
            driver,
            client: Some(client),
            rt,
            _profile: profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    fn js(&self, script: &str) -> Value {
        self.rt.block_on(self.c().execute(script, vec![])).unwrap()
    }

    fn js_async(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute_async(script, vec![]))
            .unwrap()
    }

    /// Wait until `script` (an expression) is truthy, and return its value.
    fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + LONG;
        loop {
            let v = self.js(&format!("return ({script});"));
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if Instant::now() > deadline {
                self.screenshot("failed");
                panic!(
                    "timed out waiting for {what} on {}:\n{}",
                    self.js("return location.href;"),
                    self.js("return document.querySelector('main').innerHTML;")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        // Live updates replace parts of the page: an element found just
        // before one is gone by the time it is clicked; find it again.
        for attempt in 1.. {
            let clicked = self.rt.block_on(async {
                self.c()
                    .wait()
                    .at_most(LONG)
                    .for_element(Locator::Css(css))
                    .await
                    .unwrap_or_else(|e| panic!("no {css}: {e}"))
                    .click()
                    .await
            });
            match clicked {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() && attempt < 5 => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .send_keys(text)
                .await
                .unwrap()
        });
    }

    fn text(&self, css: &str) -> String {
        self.js(&format!(
            "var e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        ))
        .as_str()
        .unwrap_or_else(|| panic!("no {css}"))
        .to_string()
    }

    fn screenshot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_developer_watches_forces_and_stops_builds_in_the_browser() {
    let s = site(&Backend::Sqlite);
    let m = &s.master;
    let quick = m.builderid("quick");
    let sleepy = m.builderid("sleepy");
    let b = Browser::start();

    // Anonymous: the page shows, control needs a login.
    b.goto(&format!("{}/builders/{quick}", m.www));
    assert!(b.text("main").contains("Log in to start builds"));
    assert!(b.js("return document.querySelector('form.force') === null;") == true);

    b.goto(&format!("{}/login", m.www));
    b.type_into("input[name=username]", "ana");
    b.type_into("input[name=password]", ANA_PASSWORD);
    b.click("#login-form button");
    b.wait_js(
        "the home page",
        "location.pathname === '/' && document.querySelector('#user')",
    );
    assert_eq!(b.text("#user"), "ana");
    b.screenshot("1-home");

    // Reload master.lua from the home page.
    let reloads = || {
        m.get("/api/v2/config/reloads")["meta"]["total"]
            .as_u64()
            .unwrap()
    };
    let before = reloads();
    b.click("button.reload");
    // The page before the click already matches "home page with a reload
    // button": wait for the reload the click asked for, then for the page.
    m.wait_for("the reload from the home page", LONG, || {
        (reloads() > before).then_some(())
    });
    b.wait_js(
        "the home page again",
        "location.pathname === '/' && document.querySelector('button.reload')",
    );
    assert_eq!(reloads(), before + 1);
    assert_eq!(
        m.get("/api/v2/config/reloads?limit=1")["reloads"][0]["trigger"],
        "api"
    );

    // A build forced through the API appears and finishes live, without a reload.
    b.goto(&format!("{}/builders/{quick}", m.www));
    b.wait_js(
        "live updates",
        "document.getElementById('live-status').className === 'on'",
    );
    b.js("window.stillHere = 'yes';");
    let (status, body) = post_rpc(
        m,
        "/api/v2/forceschedulers/force",
        Some(&s.ci_token),
        &rpc_body(
            "force",
            json!({"builderid": quick, "reason": "<script>window.pwned=1</script>"}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    b.wait_js(
        "build #1 to show as a success",
        "document.querySelector('#builds tr.success[data-number=\"1\"]')",
    );
    assert_eq!(
        b.js("return window.stillHere;"),
        "yes",
        "the page was reloaded"
    );
    assert!(
        b.text("#builds")
            .contains("<script>window.pwned=1</script>")
    );
    b.screenshot("2-builder");

    // The build page: escaped reason, steps, and the log inline.
    b.click("#builds tr[data-number=\"1\"] a");
    b.wait_js("the build page", "document.getElementById('build-state')");
    assert_eq!(b.text("#build-state .result"), "success");
    assert_eq!(b.text("#reason"), "<script>window.pwned=1</script>");
    assert_eq!(
        b.js("return document.querySelectorAll('#steps li.step').length;"),
        2
    );
    b.click("li[data-step=greet] summary");
    b.wait_js(
        "the greet log inline",
        "document.querySelector('li[data-step=greet] pre.log').textContent.indexOf('<script>window.pwned=2</script>') >= 0",
    );
    b.screenshot("3-build");

    // The log viewer pages the count log in as one scrolls.
    let count_log =
        b.js("return document.querySelector('li[data-step=count] pre.log').dataset.logid;");
    b.goto(&format!("{}/logs/{}", m.www, count_log.as_str().unwrap()));
    b.wait_js(
        "the first page of lines",
        "document.querySelectorAll('#logview .l').length >= 1000",
    );
    let loaded = b.js("return document.querySelectorAll('#logview .l').length;");
    assert!(
        loaded.as_u64().unwrap() < 2003,
        "the whole log was loaded at once"
    );
    b.wait_js(
        "the rest of the log as the reader scrolls down",
        "(window.scrollTo(0, document.body.scrollHeight), document.querySelectorAll('#logview .l').length >= 2002)",
    );
    assert!(b.text("#logview").contains("2000\n"));
    b.screenshot("4-log");

    // Buildbot's WebSocket protocol, spoken by the page's own browser.
    let events = b.js_async(&format!(
        r#"var done = arguments[arguments.length - 1];
        var seen = [];
        var ws = new WebSocket('ws://' + location.host + '/ws');
        ws.onopen = function () {{ ws.send(JSON.stringify({{cmd: 'startConsuming', path: 'builds/*/*', _id: 7}})); }};
        ws.onmessage = function (m) {{
          var msg = JSON.parse(m.data);
          seen.push(msg);
          if (msg._id === 7) {{
            fetch('/api/v2/forceschedulers/force', {{method: 'POST', headers: {{'content-type': 'application/json',
              'x-csrf-token': document.body.dataset.csrf}}, body: JSON.stringify({{jsonrpc: '2.0', id: 1,
              method: 'force', params: {{builderid: {quick}}}}})}});
          }}
          if (msg.k && /^builds\/\d+\/finished$/.test(msg.k)) {{ ws.close(); done(seen); }}
        }};"#
    ));
    let events = events.as_array().unwrap();
    assert_eq!(events[0], json!({"_id": 7, "code": 200, "msg": "OK"}));
    let new = events
        .iter()
        .find(|e| e["k"].as_str().is_some_and(|k| k.ends_with("/new")))
        .unwrap();
    assert_eq!(new["m"]["builderid"], quick);
    assert_eq!(new["m"]["number"], 2);

    // Force a long build from the form, watch it run, stop it from the page.
    b.goto(&format!("{}/builders/{sleepy}", m.www));
    b.type_into("#force-force input[name=reason]", "nap time");
    b.click("#force-force button");
    b.wait_js(
        "the sleepy build to start",
        "document.querySelector('#builds tr.running[data-number=\"1\"] a')",
    );
    b.click("#builds tr[data-number=\"1\"] a");
    b.wait_js(
        "the running step's log",
        "document.querySelector('li[data-step=nap] pre.log') && document.querySelector('li[data-step=nap] pre.log').textContent.indexOf('napping') >= 0",
    );
    assert_eq!(b.text("#reason"), "nap time");
    b.screenshot("5-running");
    b.click("#build-state button.stop");
    b.wait_js(
        "the build to end cancelled",
        "document.getElementById('build-state').dataset.state === 'cancelled'",
    );
    b.screenshot("6-stopped");

    // The overviews show the builds; the worker page shows the worker.
    b.goto(&format!("{}/waterfall", m.www));
    assert!(
        b.js("return document.querySelectorAll('#waterfall .chip').length;")
            .as_u64()
            .unwrap()
            >= 3
    );
    b.screenshot("7-waterfall");
    b.goto(&format!("{}/grid", m.www));
    assert!(b.js("return document.querySelectorAll('#grid .chip.cancelled').length;") == 1);
    b.goto(&format!("{}/workers", m.www));
    assert!(
        b.text("#workers tr[data-worker=w1] .conn")
            .starts_with("connected since")
    );
    b.goto(&format!("{}/builders?tag=slow", m.www));
    assert_eq!(
        b.js("return document.querySelectorAll('#builders tr[data-builder]').length;"),
        1
    );

    // The schedulers page: disable the force scheduler, and enable it again.
    b.goto(&format!("{}/schedulers", m.www));
    assert_eq!(b.text("#schedulers tr.enabled td:nth-child(1)"), "force");
    b.click("#schedulers tr.enabled button.disable");
    b.wait_js(
        "the scheduler to show disabled",
        "document.querySelector('#schedulers tr.disabled button.enable') !== null",
    );
    assert_eq!(
        m.get("/api/v2/schedulers")["schedulers"][0]["enabled"],
        false
    );
    b.click("#schedulers tr.disabled button.enable");
    b.wait_js(
        "the scheduler to show enabled",
        "document.querySelector('#schedulers tr.enabled button.disable') !== null",
    );
    // A connected worker's page offers the stop and kill buttons.
    b.goto(&format!("{}/workers/1", m.www));
    assert!(b.js("return document.querySelector('button.stop') !== null && document.querySelector('button.kill') !== null;") == true);

    // Nothing that was injected ran.
    assert_eq!(b.js("return typeof window.pwned;"), "undefined");
    b.goto(&format!("{}/builders", m.www));
    assert!(
        b.text("#builders")
            .contains("<img src=x onerror='window.pwned=3'>")
    );
    assert_eq!(b.js("return typeof window.pwned;"), "undefined");

    // The badge shows the last result.
    let (status, svg) = m.get_status("/badges/sleepy.svg");
    assert_eq!(status, 200);
    assert!(svg.contains("sleepy: cancelled"), "{svg}");
}
