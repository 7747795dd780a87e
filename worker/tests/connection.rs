//! Integration tests of the worker's connection loop against a minimal fake
//! master in the same process: real QUIC, real mutual TLS, real processes.
//! They check the hello / welcome exchange, command streams (output, outcome,
//! interrupt), that a lost connection stops running commands, reconnection,
//! refusals, certificate rejection, and shutdown.

use moonbot_worker::protocol::{
    ALPN, CommandControl, CommandLine, CommandOpen, CommandOutcome, CommandRequest, Frame,
    MasterMessage, PROTOCOL_VERSION, RemoteCommand, ShellCommand, WorkerMessage,
};
use moonbot_worker::transport::{FrameReader, write_frame};
use moonbot_worker::workdir::{self, CreateOptions, WorkerDir};
use quinn::{Connection, Endpoint, SendStream, VarInt};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A master with a CA, a server certificate for 127.0.0.1 and a QUIC listener
/// that demands client certificates signed by its CA.
struct FakeMaster {
    ca: CertifiedIssuer<'static, KeyPair>,
    endpoint: Endpoint,
    addr: SocketAddr,
}

impl FakeMaster {
    fn start() -> FakeMaster {
        let ca = new_ca("fake master CA");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        FakeMaster { ca, endpoint, addr }
    }

    /// A signed worker directory for `name`, its certificate issued by `signer`.
    fn worker_dir(
        &self,
        name: &str,
        signer: &CertifiedIssuer<'static, KeyPair>,
    ) -> (tempfile::TempDir, WorkerDir) {
        let tmp = tempfile::tempdir().unwrap();
        let csr_path = workdir::create(
            tmp.path(),
            &CreateOptions {
                master: self.addr.to_string(),
                name: name.into(),
                ca_pem: self.ca.pem(),
                admin: Some("test admin".into()),
                host_description: None,
            },
        )
        .unwrap();
        let mut csr =
            CertificateSigningRequestParams::from_pem(&std::fs::read_to_string(csr_path).unwrap())
                .unwrap();
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = csr.signed_by(signer).unwrap();
        std::fs::write(tmp.path().join("worker.crt"), cert.pem()).unwrap();
        let dir = WorkerDir::load(tmp.path()).unwrap();
        (tmp, dir)
    }

    /// Accept the next worker connection and read its hello.
    async fn accept(&self) -> (Connection, SendStream, FrameReader, WorkerMessage) {
        let incoming = timeout(STEP, self.endpoint.accept())
            .await
            .expect("a worker connects")
            .unwrap();
        let conn = incoming.await.expect("the handshake succeeds");
        let (send, recv) = timeout(STEP, conn.accept_bi()).await.unwrap().unwrap();
        let mut reader = FrameReader::new(recv);
        let hello = reader.next().await.unwrap().unwrap().parse().unwrap();
        (conn, send, reader, hello)
    }

    /// Accept and welcome the next worker.
    async fn welcome(&self) -> (Connection, SendStream, FrameReader) {
        let (conn, mut send, reader, hello) = self.accept().await;
        assert!(matches!(hello, WorkerMessage::Hello { .. }), "{hello:?}");
        let welcome = MasterMessage::Welcome {
            master: "fake".into(),
            keepalive_interval_s: 1,
            reattach_grace_s: 0,
        };
        write_frame(&mut send, &Frame::json(&welcome))
            .await
            .unwrap();
        (conn, send, reader)
    }
}

fn shell(script: &str) -> RemoteCommand {
    RemoteCommand::Shell(ShellCommand {
        command: CommandLine::Shell(script.into()),
        workdir: "wd".into(),
        env: BTreeMap::new(),
        timeout_s: None,
        max_time_s: None,
        sigterm_grace_s: 1,
        io: Default::default(),
    })
}

/// Send a command on a new stream; returns the stream halves.
async fn send_command(
    conn: &Connection,
    id: u64,
    command: RemoteCommand,
) -> (SendStream, FrameReader) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        &Frame::json(&CommandOpen::Run(CommandRequest { id, command })),
    )
    .await
    .unwrap();
    (send, FrameReader::new(recv))
}

/// Read output frames up to the outcome; checks the stream ends right after it.
async fn read_outcome(reader: &mut FrameReader) -> (Vec<u8>, Vec<u8>, CommandOutcome) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let frame = timeout(STEP, reader.next())
            .await
            .expect("the command ends")
            .unwrap()
            .expect("an outcome before the end of the stream");
        match frame {
            Frame::Stdout(b) => stdout.extend(b),
            Frame::Stderr(b) => stderr.extend(b),
            Frame::LogFile(_) => panic!("no command here follows a log file"),
            Frame::Data(_) => panic!("no command here uploads"),
            json @ Frame::Json(_) => {
                let outcome = json.parse().unwrap();
                assert!(
                    reader.next().await.unwrap().is_none(),
                    "stream finished after the outcome"
                );
                return (stdout, stderr, outcome);
            }
        }
    }
}

async fn wait_for_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Is `pid` gone (or a zombie)?
fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
    }
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + STEP;
    while !is_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Start the worker loop in the background; send on the returned sender to shut it down.
fn start_worker(
    dir: WorkerDir,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), moonbot_worker::connection::RunError>>,
) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(moonbot_worker::run(dir, async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, task)
}

/// Log lines captured from the worker (tests run on a current-thread runtime,
/// so a thread-local subscriber sees every task).
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let log = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || log.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    async fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn worker_serves_commands_reconnects_and_shuts_down() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log = CapturedLog::default();
    let _log_guard = log.install();
    let master = FakeMaster::start();
    let (_tmp, dir) = master.worker_dir("w1", &master.ca);
    let builds = dir.builds_dir();
    let (stop, worker) = start_worker(dir);

    // Hello carries the name, protocol version and machine facts.
    let (conn, mut control_send, mut control) = {
        let (conn, mut send, reader, hello) = master.accept().await;
        let WorkerMessage::Hello {
            name,
            protocol,
            info,
        } = hello
        else {
            panic!("expected a hello, got {hello:?}");
        };
        assert_eq!(name, "w1");
        assert_eq!(protocol, PROTOCOL_VERSION);
        assert_eq!(info.admin.as_deref(), Some("test admin"));
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        let welcome = MasterMessage::Welcome {
            master: "fake".into(),
            keepalive_interval_s: 1,
            reattach_grace_s: 0,
        };
        write_frame(&mut send, &Frame::json(&welcome))
            .await
            .unwrap();
        (conn, send, reader)
    };
    log.wait_for(&format!(
        "connected to master fake at {} as w1",
        master.addr
    ))
    .await;

    // Keep-alives arrive at the announced interval.
    let keepalive = timeout(Duration::from_secs(3), control.next())
        .await
        .expect("a keep-alive within 3 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        keepalive.parse::<WorkerMessage>().unwrap(),
        WorkerMessage::KeepAlive
    );
    write_frame(&mut control_send, &Frame::json(&MasterMessage::KeepAlive))
        .await
        .unwrap();

    // A command: output frames, then the outcome, then the end of the stream.
    let (_send, mut reader) =
        send_command(&conn, 1, shell("echo hello; echo oops >&2; exit 3")).await;
    let (stdout, stderr, outcome) = read_outcome(&mut reader).await;
    assert_eq!(stdout, b"hello\n");
    assert_eq!(stderr, b"oops\n");
    assert_eq!(outcome.rc, Some(3));
    assert!(!outcome.interrupted);

    // Two commands at once, one of them interrupted by the master.
    let (mut send_a, mut reader_a) =
        send_command(&conn, 2, shell("sleep 300 & echo $! > pids; sleep 300")).await;
    let (_send_b, mut reader_b) =
        send_command(&conn, 3, RemoteCommand::Stat { path: "wd".into() }).await;
    let background = wait_for_pid(&builds.join("wd/pids")).await;
    let (_, _, stat) = read_outcome(&mut reader_b).await;
    assert!(stat.stat.unwrap().is_dir);
    let interrupt = CommandControl::Interrupt {
        reason: "build cancelled".into(),
    };
    write_frame(&mut send_a, &Frame::json(&interrupt))
        .await
        .unwrap();
    let (_, _, outcome) = read_outcome(&mut reader_a).await;
    assert!(outcome.interrupted, "{outcome:?}");
    assert!(outcome.failure.is_none());
    assert!(is_gone(background), "the background process was killed");

    // The master goes away while a command runs: the command is stopped, the
    // worker comes back (after about a second) and says hello again.
    std::fs::remove_file(builds.join("wd/pids")).unwrap();
    let (_send_c, _reader_c) =
        send_command(&conn, 4, shell("sleep 300 & echo $! > pids; sleep 300")).await;
    let orphan = wait_for_pid(&builds.join("wd/pids")).await;
    conn.close(VarInt::from_u32(0), b"master restarting");
    wait_gone(orphan).await;
    log.wait_for("reconnecting in").await;
    let (conn, _control_send, _control) = master.welcome().await;

    // Shutdown with a command running: the connection is closed with a reason,
    // the command's process group is killed, and run returns Ok.
    std::fs::remove_file(builds.join("wd/pids")).unwrap();
    let (_send_d, _reader_d) =
        send_command(&conn, 5, shell("sleep 300 & echo $! > pids; sleep 300")).await;
    let last = wait_for_pid(&builds.join("wd/pids")).await;
    stop.send(()).unwrap();
    let result = timeout(STEP, worker)
        .await
        .expect("the worker stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(is_gone(last), "running commands are killed on shutdown");
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(&close.reason[..], b"worker shutting down");
        }
        other => panic!("unexpected close: {other}"),
    }
}

#[tokio::test]
async fn a_refused_worker_logs_the_reason_and_retries() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log = CapturedLog::default();
    let _log_guard = log.install();
    let master = FakeMaster::start();
    let (_tmp, dir) = master.worker_dir("stranger", &master.ca);
    let (stop, worker) = start_worker(dir);

    let (conn, mut send, _reader, _hello) = master.accept().await;
    let refused = MasterMessage::Refused {
        reason: "worker `stranger` is not in the configuration".into(),
    };
    write_frame(&mut send, &Frame::json(&refused))
        .await
        .unwrap();
    let text = log.wait_for("retrying in").await;
    assert!(
        text.contains(
            "refused this worker (stranger): worker `stranger` is not in the configuration"
        ),
        "{text}"
    );
    assert!(text.contains("ERROR"), "a refusal is an error: {text}");
    assert!(!text.contains("connected to master"), "{text}");
    drop(conn);

    // It tries again, and is welcomed this time.
    let _session = master.welcome().await;
    log.wait_for("connected to master fake").await;
    stop.send(()).unwrap();
    timeout(STEP, worker).await.unwrap().unwrap().unwrap();
}

/// Start a worker from `dir`, check that the TLS handshake with the fake master
/// fails and that the worker schedules a retry; stop it and return its log.
async fn handshake_fails_and_worker_retries(
    master: &FakeMaster,
    dir: WorkerDir,
    log: &CapturedLog,
) -> String {
    let (stop, worker) = start_worker(dir);
    let incoming = timeout(STEP, master.endpoint.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(incoming.await.is_err(), "the handshake must fail");
    let text = log.wait_for("retrying in").await;
    stop.send(()).unwrap();
    timeout(STEP, worker).await.unwrap().unwrap().unwrap();
    text
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_reported_as_rejected() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log = CapturedLog::default();
    let _log_guard = log.install();
    let master = FakeMaster::start();
    let other_ca = new_ca("some other CA");
    let (_tmp, dir) = master.worker_dir("w1", &other_ca);
    let text = handshake_fails_and_worker_retries(&master, dir, &log).await;
    assert!(
        text.contains(&format!(
            "the master at {} refused the connection",
            master.addr
        )),
        "{text}"
    );
    assert!(
        text.contains("rejected this worker's certificate"),
        "{text}"
    );
}

#[tokio::test]
async fn a_master_certificate_from_another_ca_is_reported() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log = CapturedLog::default();
    let _log_guard = log.install();
    let master = FakeMaster::start();
    let (tmp, dir) = master.worker_dir("w1", &master.ca);
    // The worker trusts some other CA than the one that signed the master.
    std::fs::write(
        tmp.path().join("ca.crt"),
        new_ca("not the master's CA").pem(),
    )
    .unwrap();
    let text = handshake_fails_and_worker_retries(&master, dir, &log).await;
    assert!(
        text.contains(&format!(
            "could not connect to the master at {}",
            master.addr
        )),
        "{text}"
    );
    assert!(
        text.contains("the master's certificate was rejected"),
        "{text}"
    );
    assert!(text.contains("ERROR"), "{text}");
}
