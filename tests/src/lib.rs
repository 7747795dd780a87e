//! Test kit for end-to-end tests: starts real `moonbot` and `moonbot-worker`
//! processes on ephemeral ports with a throwaway CA, talks to them through the
//! CLI and the REST API, and tears everything down.
//!
//! PostgreSQL: set `MOONBOT_TEST_POSTGRES_URL` (each test gets its own database,
//! dropped afterwards). Without it the PostgreSQL variants skip with a message,
//! unless `MOONBOT_REQUIRE_POSTGRES=1` (as in CI), where they fail.

pub mod forged;

use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where `name` was built: beside the running binary (the bench runner in
/// `target/release`), or one directory up (test binaries in `target/*/deps`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("binary directory");
    let candidates = [here.join(name), here.parent().unwrap_or(here).join(name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing beside {}: run the tests with `cargo test --workspace` \
                 (or the bench with `cargo run --release -p moonbot-bench`), which builds it",
                exe.display()
            )
        })
}

/// Run a CLI command to completion; returns (exit code, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a CLI command that must succeed.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let (code, out, err) = run(program, args);
    assert_eq!(code, 0, "{program} {args:?} failed:\n{out}\n{err}");
    out
}

/// Which database a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, or None (with a message) when not configured.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("MOONBOT_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                if std::env::var("MOONBOT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("MOONBOT_REQUIRE_POSTGRES=1 but MOONBOT_TEST_POSTGRES_URL is not set");
                }
                eprintln!("skipped: set MOONBOT_TEST_POSTGRES_URL to run the PostgreSQL variant");
                None
            }
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

fn pg_admin(base: &str, sql: &str) {
    block_on(async {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(base)
            .await
            .expect("connect to PostgreSQL");
        db.execute_unprepared(sql).await.expect(sql);
        db.close().await.ok();
    });
}

/// Declare tests that run each scenario function (`fn name(backend: &Backend)`)
/// once on SQLite and once on PostgreSQL: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&$crate::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                if let Some(backend) = $crate::Backend::postgres() {
                    super::$name(&backend);
                }
            }
        }
    )*};
}

/// How long a test waits for something that should take a few seconds.
pub const LONG: Duration = Duration::from_secs(60);

/// A master directory with its own CA and database, and the processes started from it.
pub struct TestMaster {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub db_url: String,
    pg: Option<(String, String)>,
    child: Option<Child>,
    pub www: String,
    pub quic: String,
    quic_port: u16,
}

impl TestMaster {
    /// Create a master directory (CA included) whose master.lua is `lua` with
    /// `@DB@` replaced by this test's database URL and `@QUIC_PORT@` by 0.
    pub fn create(backend: &Backend, lua: &str) -> TestMaster {
        TestMaster::create_for_hosts(backend, lua, &[])
    }

    /// [`TestMaster::create`] and start it, with worker `worker` (signed by
    /// this master's CA) started and connected.
    pub fn started_with_worker(
        backend: &Backend,
        lua: &str,
        worker: &str,
    ) -> (TestMaster, TestWorker) {
        let mut m = TestMaster::create(backend, lua);
        m.start();
        let mut w = m.make_worker(worker, &m.dir.clone());
        w.start();
        m.wait_connected(worker);
        (m, w)
    }

    /// [`TestMaster::create`], with a certificate also valid for `hosts`
    /// (`moonbot create-master --host`).
    pub fn create_for_hosts(backend: &Backend, lua: &str, hosts: &[&str]) -> TestMaster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("master");
        let mut args = vec!["create-master", dir.to_str().unwrap()];
        for host in hosts {
            args.extend(["--host", host]);
        }
        run_ok("moonbot", &args);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (db_url, pg) = match backend {
            Backend::Sqlite => ("sqlite:state.sqlite".to_string(), None),
            Backend::Postgres(base) => {
                let name = format!("moonbot_test_{}_{n}", std::process::id());
                pg_admin(base, &format!("CREATE DATABASE {name}"));
                let (prefix, _) = base.rsplit_once('/').expect("URL with a database");
                (format!("{prefix}/{name}"), Some((base.clone(), name)))
            }
        };
        let m = TestMaster {
            tmp,
            dir,
            db_url,
            pg,
            child: None,
            www: String::new(),
            quic: String::new(),
            quic_port: 0,
        };
        m.write_config(lua);
        m
    }

    /// Replace master.lua (placeholders as in [`TestMaster::create`]).
    pub fn write_config(&self, lua: &str) {
        let text = lua
            .replace("@DB@", &self.db_url)
            .replace("@QUIC_PORT@", &self.quic_port.to_string())
            .replace("@TMP@", self.tmp.path().to_str().unwrap());
        std::fs::write(self.dir.join("master.lua"), text).unwrap();
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// The URL of this master's database as a client outside the master opens it.
    pub fn database_url(&self) -> String {
        if self.db_url.starts_with("sqlite:") {
            format!("sqlite:{}?mode=rw", self.dir.join("state.sqlite").display())
        } else {
            self.db_url.clone()
        }
    }

    /// Run SQL on this master's database, as an admin would with `sqlite3` or
    /// `psql` (to age history for the janitor, say); returns the rows changed.
    pub fn sql(&self, sql: &str) -> u64 {
        let url = self.database_url();
        block_on(async {
            use sea_orm::ConnectionTrait;
            let db = sea_orm::Database::connect(&url).await.expect("connect");
            let n = db.execute_unprepared(sql).await.expect(sql).rows_affected();
            db.close().await.ok();
            n
        })
    }

    /// The first column of the first row of a query, as a number.
    pub fn sql_i64(&self, sql: &str) -> i64 {
        let url = self.database_url();
        block_on(async {
            use sea_orm::ConnectionTrait;
            let db = sea_orm::Database::connect(&url).await.expect("connect");
            let backend = db.get_database_backend();
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(backend, sql))
                .await
                .expect(sql)
                .expect("a row");
            let value = row.try_get_by_index::<i64>(0).expect("a number");
            db.close().await.ok();
            value
        })
    }

    /// Keep the QUIC port of the running master for later starts (so workers
    /// find a restarted master), rewriting master.lua from `lua`.
    pub fn pin_quic_port(&mut self, lua: &str) {
        self.quic_port = self.quic.rsplit(':').next().unwrap().parse().unwrap();
        self.write_config(lua);
    }

    /// Start `moonbot start` and wait until it has bound its ports.
    pub fn start(&mut self) {
        self.start_with(Command::new(bin("moonbot")));
    }

    /// Start the master allowed at most `files` open files (`prlimit`, as a
    /// shell's `ulimit -n` would).
    pub fn start_with_open_files(&mut self, files: u64) {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(bin("moonbot"));
        self.start_with(command);
    }

    fn start_with(&mut self, mut command: Command) {
        let ports = self.dir.join("moonbot.ports");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::File::create(self.tmp.path().join("master.stderr")).unwrap();
        let child = command
            .args(["start", self.path()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                self.www = format!("http://{}", v["www"].as_str().unwrap());
                self.quic = v["quic"].as_str().unwrap().to_string();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("master exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "master did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The master's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What the master wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("master.stderr")).unwrap_or_default()
    }

    /// `moonbot stop [--clean]`, and wait for the process.
    pub fn stop(&mut self, clean: bool) {
        let mut args = vec!["stop"];
        if clean {
            args.push("--clean");
        }
        args.push(self.path());
        run_ok("moonbot", &args);
        if let Some(mut c) = self.child.take() {
            c.wait().unwrap();
        }
    }

    /// SIGKILL the master, as a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let url = format!("{}{}", self.www, path);
        match ureq::get(&url).call() {
            Ok(r) => r.into_json().unwrap(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("GET {path}: {code} {}", r.into_string().unwrap_or_default())
            }
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// GET returning (status, body) without failing on 4xx.
    pub fn get_status(&self, path: &str) -> (u16, String) {
        let url = format!("{}{}", self.www, path);
        match ureq::get(&url).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let url = format!("{}{}", self.www, path);
        let mut out = Vec::new();
        ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_reader()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// A JSON-RPC call; returns the whole answer and the HTTP status.
    pub fn rpc(&self, path: &str, method: &str, params: Value) -> (u16, Value) {
        let url = format!("{}{}", self.www, path);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        match ureq::post(&url).send_json(body) {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    /// Force `builderid` through the scheduler `force`; returns the build request id.
    pub fn force(&self, builderid: i64) -> i64 {
        let (status, answer) = self.rpc(
            "/api/v2/forceschedulers/force",
            "force",
            json!({"builderid": builderid, "reason": "test", "owner": "tester"}),
        );
        assert_eq!(status, 200, "force failed: {answer}");
        answer["result"][1][builderid.to_string()].as_i64().unwrap()
    }

    /// Builds of a request, oldest first.
    pub fn builds_of(&self, brid: i64) -> Vec<Value> {
        self.get(&format!(
            "/api/v2/buildrequests/{brid}/builds?order=buildid"
        ))["builds"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Wait until `check` returns Some, polling; panics with the master log on timeout.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- master log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for the request to be complete and return its last build.
    pub fn wait_request_done(&self, brid: i64, timeout: Duration) -> Value {
        self.wait_for(
            &format!("build request {brid} to complete"),
            timeout,
            || {
                let br = &self.get(&format!("/api/v2/buildrequests/{brid}"))["buildrequests"][0];
                if br["complete"] == true {
                    self.builds_of(brid).pop()
                } else {
                    None
                }
            },
        )
    }

    /// The id of the builder called `name` (panics when the API lists none).
    pub fn builderid(&self, name: &str) -> i64 {
        self.get(&format!("/api/v2/builders?name={}", encode(name)))["builders"][0]["builderid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no builder {name}"))
    }

    /// Wait until the API shows worker `name` connected.
    pub fn wait_connected(&self, name: &str) {
        self.wait_for(&format!("worker {name} to connect"), LONG, || {
            let workers = self.get(&format!("/api/v2/workers?name={name}"));
            let w = &workers["workers"][0];
            (!w["connected_to"].as_array()?.is_empty()).then_some(())
        });
    }

    /// The steps of a build, in order.
    pub fn steps(&self, buildid: i64) -> Vec<Value> {
        self.get(&format!("/api/v2/builds/{buildid}/steps"))["steps"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The whole stdio log of a step.
    pub fn stdio_of(&self, stepid: i64) -> String {
        let logs = self.get(&format!("/api/v2/steps/{stepid}/logs"));
        let logid = logs["logs"][0]["logid"].as_i64().unwrap();
        String::from_utf8(self.get_bytes(&format!("/api/v2/logs/{logid}/raw"))).unwrap()
    }

    /// The whole log `name` of a step (panics when the step has none).
    pub fn log_of(&self, stepid: i64, name: &str) -> String {
        let logs = self.get(&format!("/api/v2/steps/{stepid}/logs"))["logs"].clone();
        let logid = logs
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no log {name} of step {stepid}: {logs}"))["logid"]
            .as_i64()
            .unwrap();
        String::from_utf8(self.get_bytes(&format!("/api/v2/logs/{logid}/raw"))).unwrap()
    }

    /// Send a signal to the master process (e.g. `SIGHUP` to reload).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("master running").id() as i32;
        moonbot_worker::signal::signal_process(pid, sig).unwrap();
    }

    /// Create a worker directory for `name` trusting `ca`, signed by `signer`'s CA.
    pub fn make_worker(&self, name: &str, signer: &Path) -> TestWorker {
        self.make_worker_dialing(name, signer, &self.quic)
    }

    /// [`TestMaster::make_worker`] for a worker that dials `master` (HOST:PORT).
    pub fn make_worker_dialing(&self, name: &str, signer: &Path, master: &str) -> TestWorker {
        let dir = self.tmp.path().join(format!(
            "worker-{name}-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let ca = self.dir.join("pki/ca.crt");
        run_ok(
            "moonbot-worker",
            &[
                "create-worker",
                dir.to_str().unwrap(),
                "--master",
                master,
                "--name",
                name,
                "--ca",
                ca.to_str().unwrap(),
                "--admin",
                "Test Admin <admin@example.org>",
            ],
        );
        run_ok(
            "moonbot",
            &[
                "sign-worker",
                signer.to_str().unwrap(),
                dir.join("worker.csr").to_str().unwrap(),
            ],
        );
        TestWorker {
            dir,
            child: None,
            netns: None,
        }
    }

    /// `moonbot worker-token DIR NAME --master QUIC EXTRA…`: the token (the
    /// last line of its output).
    pub fn worker_token(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["worker-token", self.path(), name, "--master", &self.quic];
        args.extend_from_slice(extra);
        let out = run_ok("moonbot", &args);
        out.lines()
            .last()
            .unwrap_or_else(|| panic!("worker-token printed nothing"))
            .to_string()
    }

    /// A fresh path for a worker directory of `name` (not created).
    pub fn new_worker_dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!(
            "worker-{name}-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ))
    }
}

impl Drop for TestMaster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((base, name)) = &self.pg {
            pg_admin(
                base,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A worker directory and its process.
#[derive(Debug)]
pub struct TestWorker {
    pub dir: PathBuf,
    child: Option<Child>,
    /// The network namespace the worker runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

/// What `moonbot-worker create-worker` said when it failed.
#[derive(Debug)]
pub struct CliFailure {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TestWorker {
    /// A worker for an existing directory (not started).
    pub fn at(dir: PathBuf) -> TestWorker {
        TestWorker {
            dir,
            child: None,
            netns: None,
        }
    }

    /// `moonbot-worker create-worker DIR --token TOKEN` in a fresh directory of
    /// `master`'s; the worker, or what the command said when it failed.
    pub fn enroll(master: &TestMaster, name: &str, token: &str) -> Result<TestWorker, CliFailure> {
        TestWorker::enroll_in(master.new_worker_dir(name), token)
    }

    /// `moonbot-worker create-worker DIR --token TOKEN` in `dir`.
    pub fn enroll_in(dir: PathBuf, token: &str) -> Result<TestWorker, CliFailure> {
        let (code, stdout, stderr) = run(
            "moonbot-worker",
            &[
                "create-worker",
                dir.to_str().unwrap(),
                "--token",
                token,
                "--admin",
                "Volunteer <v@example.org>",
            ],
        );
        if code != 0 {
            return Err(CliFailure {
                code,
                stdout,
                stderr,
            });
        }
        assert!(
            stdout.contains(&format!(
                "start it with: moonbot-worker start {}",
                dir.display()
            )),
            "{stdout}"
        );
        Ok(TestWorker {
            dir,
            child: None,
            netns: None,
        })
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .unwrap();
        let worker = bin("moonbot-worker");
        let mut command = match &self.netns {
            // `ip netns exec` execs the program: the child is the worker itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(worker);
                c
            }
            None => Command::new(worker),
        };
        self.child = Some(
            command
                .args(["start", self.dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// The worker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL the worker process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Is a process with this pid still there (zombies count as gone)?
pub use moonbot_worker::signal::process_alive;

pub mod netns;

/// `text` percent-encoded for a URL (everything but RFC 3986's unreserved
/// characters), for names with spaces and slashes.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Run `git -C dir ARGS` as a fixed author and committer at a fixed date,
/// so commits are reproducible; its trimmed stdout. Panics when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.org")
        .env("GIT_COMMITTER_NAME", "Cy")
        .env("GIT_COMMITTER_EMAIL", "cy@example.org")
        .env("GIT_AUTHOR_DATE", "2026-12-01T10:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-12-01T10:00:00Z")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
