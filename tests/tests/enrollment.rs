//! End-to-end: enrolling workers with one-time tokens, certificate lifetimes
//! and revocation, with real `moonbot` and `moonbot-worker` processes over real
//! QUIC on 127.0.0.1 (SQLite: the database plays no part in this).

use moonbot_tests::{Backend, LONG, TestMaster, TestWorker, run, run_ok};
use std::time::Duration;

const CONFIG: &str = r#"
local mb = require "moonbot"
return {
  title = "enrollment",
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = @QUIC_PORT@, bind = "127.0.0.1", idle_timeout = 3 } },
  db = { url = "@DB@" },
  workers = {
    mb.worker { name = "w1" }, mb.worker { name = "w2" },
    mb.worker { name = "w3" }, mb.worker { name = "w4" },
  },
  builders = {
    mb.builder { name = "ok", workernames = { "w1", "w2", "w3", "w4" }, steps = {
      mb.steps.shell { name = "greet", command = { "echo", "hello from an enrolled worker" } },
    } },
  },
  schedulers = { mb.schedulers.force { name = "force", builders = { "ok" } } },
}
"#;

fn started() -> TestMaster {
    let mut m = TestMaster::create(&Backend::Sqlite, CONFIG);
    m.start();
    m
}

/// Wait until the worker's log contains `text`.
fn wait_worker_log(m: &TestMaster, w: &TestWorker, text: &str) {
    m.wait_for(&format!("the worker log to say {text:?}"), LONG, || {
        w.log().contains(text).then_some(())
    });
}

fn connected(m: &TestMaster, name: &str) -> bool {
    let workers = m.get(&format!("/api/v2/workers?name={name}"));
    workers["workers"][0]["connected_to"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
}

#[test]
fn a_token_enrolls_a_worker_that_then_builds() {
    let m = started();
    let out = run_ok(
        "moonbot",
        &["worker-token", m.path(), "w1", "--master", &m.quic],
    );
    assert!(
        out.contains("one-time enrollment token for worker 'w1'"),
        "{out}"
    );
    assert!(
        out.contains("moonbot-worker create-worker WDIR --token"),
        "{out}"
    );
    let token = out.lines().last().unwrap();
    assert!(token.starts_with("mbw1."), "{out}");

    let mut w = TestWorker::enroll(&m, "w1", token).expect("enrollment");
    for file in ["worker.key", "worker.crt", "ca.crt", "worker.json"] {
        assert!(w.dir.join(file).is_file(), "{file} missing");
    }
    assert_eq!(
        std::fs::read(w.dir.join("ca.crt")).unwrap(),
        std::fs::read(m.dir.join("pki/ca.crt")).unwrap()
    );
    w.start();
    m.wait_connected("w1");
    let worker = &m.get("/api/v2/workers?name=w1")["workers"][0];
    assert_eq!(worker["workerinfo"]["admin"], "Volunteer <v@example.org>");

    let build = m.wait_request_done(m.force(m.builderid("ok")), LONG);
    assert_eq!(build["results"], 0, "{build}");
    let steps = m.steps(build["buildid"].as_i64().unwrap());
    let log = m.stdio_of(steps[0]["stepid"].as_i64().unwrap());
    assert!(log.contains("hello from an enrolled worker"), "{log}");
    assert!(m.log().contains("enrolled a worker"), "{}", m.log());
}

#[test]
fn used_expired_and_forged_tokens_are_refused() {
    let m = started();
    let token = m.worker_token("w1", &[]);
    TestWorker::enroll(&m, "w1", &token).expect("first use");

    // The same token again.
    let dir = m.new_worker_dir("w1-again");
    let again = TestWorker::enroll_in(dir.clone(), &token).expect_err("second use");
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("has already been used"), "{again:?}");
    assert!(!dir.exists(), "a refused enrollment leaves no directory");

    // An expired token.
    let expired = m.worker_token("w2", &["--expires", "1s"]);
    std::thread::sleep(Duration::from_secs(2));
    let refused = TestWorker::enroll_in(dir.clone(), &expired).expect_err("expired");
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("expired at"), "{refused:?}");
    assert!(
        refused.stderr.contains("the master refused the enrollment"),
        "{refused:?}"
    );

    // A forged secret (one character changed).
    let good = m.worker_token("w2", &[]);
    let (head, secret) = good.rsplit_once('.').unwrap();
    let mut chars: Vec<char> = secret.chars().collect();
    chars[5] = if chars[5] == 'x' { 'y' } else { 'x' };
    let forged = format!("{head}.{}", chars.into_iter().collect::<String>());
    let refused = TestWorker::enroll_in(dir.clone(), &forged).expect_err("forged");
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("unknown enrollment token"),
        "{refused:?}"
    );

    // The master said why, without the secrets.
    let log = m.log();
    assert!(log.contains("refused an enrollment"), "{log}");
    for t in [&token, &expired, &forged, &good] {
        let secret = t.rsplit_once('.').unwrap().1;
        assert!(!log.contains(secret), "the master logged a secret:\n{log}");
    }

    // The refusals left nothing in the way: the genuine token works in the same directory.
    let mut w = TestWorker::enroll_in(dir, &good).expect("retry with a good token");
    w.start();
    m.wait_connected("w2");
}

#[test]
fn a_revoked_worker_is_refused_and_can_enroll_again() {
    let m = started();
    let token = m.worker_token("w1", &[]);
    let mut w = TestWorker::enroll(&m, "w1", &token).unwrap();
    w.start();
    m.wait_connected("w1");

    // Revoking a connected worker drops it at its next keep-alive...
    let out = run_ok("moonbot", &["revoke-worker", m.path(), "w1"]);
    assert!(
        out.contains("revoked 1 certificate(s) of worker 'w1'"),
        "{out}"
    );
    m.wait_for("the revoked worker to be dropped", LONG, || {
        (!connected(&m, "w1")).then_some(())
    });
    wait_worker_log(&m, &w, "the master is dropping this worker");
    // ...and every reconnection is refused.
    wait_worker_log(
        &m,
        &w,
        "refused this worker (w1): certificate of worker 'w1' has been revoked",
    );
    assert!(!connected(&m, "w1"));
    assert!(
        m.log()
            .contains("refused a worker: certificate of worker 'w1' has been revoked")
    );
    // Revocation does not touch master.lua.
    let lua = std::fs::read_to_string(m.dir.join("master.lua")).unwrap();
    assert!(lua.contains(r#"mb.worker { name = "w1" }"#));
    w.kill();

    // A new token gives the same name a new, valid certificate.
    let token = m.worker_token("w1", &[]);
    let mut again = TestWorker::enroll(&m, "w1", &token).unwrap();
    again.start();
    m.wait_connected("w1");
}

#[test]
fn an_expired_certificate_is_refused() {
    let m = started();
    let token = m.worker_token("w3", &["--cert-validity", "3s"]);
    let mut w = TestWorker::enroll(&m, "w3", &token).unwrap();
    // Not running while it expires.
    std::thread::sleep(Duration::from_secs(4));
    w.start();
    wait_worker_log(&m, &w, "certificate expired");
    assert!(!connected(&m, "w3"));
    assert!(
        m.log()
            .contains("refused a worker connection during the TLS handshake"),
        "{}",
        m.log()
    );
}

#[test]
fn sign_worker_takes_a_validity_and_a_foreign_certificate_is_refused() {
    let m = started();
    // The old way still works, with a validity.
    let dir = m.new_worker_dir("w4");
    let ca = m.dir.join("pki/ca.crt");
    run_ok(
        "moonbot-worker",
        &[
            "create-worker",
            dir.to_str().unwrap(),
            "--master",
            &m.quic,
            "--name",
            "w4",
            "--ca",
            ca.to_str().unwrap(),
        ],
    );
    let csr = dir.join("worker.csr");
    let out = run_ok(
        "moonbot",
        &[
            "sign-worker",
            m.path(),
            csr.to_str().unwrap(),
            "--cert-validity",
            "2d",
        ],
    );
    assert!(out.contains("signed worker 'w4'"), "{out}");
    let (code, _, err) = run(
        "moonbot",
        &[
            "sign-worker",
            m.path(),
            csr.to_str().unwrap(),
            "--cert-validity",
            "2",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no unit"), "{err}");
    let mut w4 = TestWorker::at(dir);
    w4.start();
    m.wait_connected("w4");

    // worker.crt and worker.key from another master's CA, ca.crt from this one.
    let other = TestMaster::create(&Backend::Sqlite, CONFIG);
    let mut foreign = m.make_worker("w1", &other.dir);
    foreign.start();
    wait_worker_log(&m, &foreign, "refused the connection");
    m.wait_for("the master to log the refusal", LONG, || {
        m.log()
            .contains("refused a worker connection during the TLS handshake")
            .then_some(())
    });
    assert!(!connected(&m, "w1"));
}

#[test]
fn a_connected_worker_renews_its_certificate_before_it_expires() {
    let m = started();
    // A third of the lifetime before expiry, i.e. after about 16 s.
    let token = m.worker_token("w4", &["--cert-validity", "24s"]);
    let mut w = TestWorker::enroll(&m, "w4", &token).unwrap();
    let first = std::fs::read_to_string(w.dir.join("worker.crt")).unwrap();
    let enrolled_at = std::time::Instant::now();
    w.start();
    m.wait_connected("w4");
    wait_worker_log(&m, &w, "stored the renewed certificate");
    let renewed = std::fs::read_to_string(w.dir.join("worker.crt")).unwrap();
    assert_ne!(first, renewed, "worker.crt was replaced");
    assert!(m.log().contains("renewed the worker's certificate"));

    // Past the first certificate's expiry, a restarted worker connects with
    // the renewed one.
    std::thread::sleep(Duration::from_secs(26).saturating_sub(enrolled_at.elapsed()));
    w.kill();
    m.wait_for("w4 to disconnect", LONG, || {
        (!connected(&m, "w4")).then_some(())
    });
    w.start();
    m.wait_connected("w4");
    let builderid = m.builderid("ok");
    let done = m.wait_request_done(m.force(builderid), LONG);
    assert_eq!(done["results"], 0, "{done}");
}
