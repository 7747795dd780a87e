//! The worker's connection loop: dial the master, introduce itself, serve the
//! commands the master sends, and reconnect when the connection goes away.
//!
//! The worker always dials out (it is often behind NAT), so this loop owns the
//! worker's whole relationship with the master: one QUIC connection at a time,
//! a control stream for hello / keep-alive / shutdown, one task per command
//! stream (output out, interrupts in), and exponential backoff between
//! attempts. Running a command is [`crate::runner`]'s business; this module only
//! moves its output and its interrupt over the wire, and makes sure a command
//! whose master went away is stopped.

use crate::dial::{AttemptFailure, Endpoints, dial_master};
use crate::protocol::{
    CommandOpen, CommandOutcome, Frame, MasterMessage, PROTOCOL_VERSION, WorkerMessage,
};
use crate::session::{Attachment, CommandTable, refuse_resume};
use crate::tls::{self, TlsSetupError, explain_connection_error};
use crate::transport::{FrameReader, StreamError, write_frame};
use crate::workdir::WorkerDir;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, sleep, timeout};

/// First delay before reconnecting.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Each delay is randomly up to this fraction shorter or longer, so that many
/// workers cut off at once do not all come back at the same instant.
pub const BACKOFF_JITTER: f64 = 0.2;

/// How long the master may take to answer the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a keep-alive may wait for room on the control stream.
const KEEPALIVE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the master's keep-alive interval (protects the timer arithmetic).
const MAX_KEEPALIVE_INTERVAL_S: u64 = 3600;

/// Why the worker could not run at all (connection problems are retried, not
/// returned).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The worker's key, certificate or CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The builds directory could not be created.
    #[error("could not create the builds directory {}: {source}", path.display())]
    BuildsDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the worker was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Take no new builds, finish the running ones, then exit
    /// (`moonbot-worker stop`).
    Graceful,
    /// Stop every running command and exit (`moonbot-worker stop --now`).
    Now,
}

/// Connect to the master of `dir` and serve it until `shutdown` resolves,
/// then stop at once (see [`run_with`]).
pub async fn run(dir: WorkerDir, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(None);
    let worker = run_with(dir, stop_rx);
    tokio::pin!(worker);
    tokio::select! {
        result = &mut worker => return result,
        _ = shutdown => {}
    }
    let _ = stop_tx.send(Some(StopMode::Now));
    worker.await
}

/// Connect to the master of `dir` and serve it until `stop` says so,
/// reconnecting whenever the connection ends or cannot be made.
///
/// [`StopMode::Now`]: the connection is closed, every running command is
/// stopped (its process group killed) and awaited. [`StopMode::Graceful`]: the
/// master is asked for no new builds and the worker exits when the master says
/// its last build has finished (or at once when nothing runs and there is no
/// connection).
pub async fn run_with(
    dir: WorkerDir,
    mut stop: watch::Receiver<Option<StopMode>>,
) -> Result<(), RunError> {
    let builds_dir = dir.builds_dir();
    std::fs::create_dir_all(&builds_dir).map_err(|source| RunError::BuildsDir {
        path: builds_dir.clone(),
        source,
    })?;
    // Checked once up front so a broken directory is an error, not a retry loop.
    tls::client_config(&dir)?;

    let mut endpoints = Endpoints::default();
    let mut commands = JoinSet::new();
    let table = CommandTable::default();
    // Turned to true to stop every command now.
    let (kill_tx, kill_rx) = watch::channel(false);
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() == Some(StopMode::Graceful) && table.is_empty() {
            tracing::info!("graceful stop: no command is running");
            break;
        }
        // Re-read every time: the certificate may have been renewed.
        let client_config = tls::client_config(&dir)?;
        if backoff.failures == 0 {
            tracing::info!("connecting to the master at {}", dir.master);
        } else {
            tracing::debug!("connecting to the master at {}", dir.master);
        }
        let attempt = connect(&dir, &client_config, &mut endpoints);
        let attempted = tokio::select! {
            _ = stop_now(&mut stop) => break,
            attempted = attempt => attempted,
        };
        let delay = match attempted {
            Ok(session) => {
                backoff.reset();
                tracing::info!(
                    "connected to master {} at {} as {}",
                    session.master_name,
                    session.remote,
                    dir.name
                );
                let remote = session.remote;
                table.reconnected();
                let context = CommandContext {
                    table: table.clone(),
                    builds_dir: builds_dir.clone(),
                    keep: session.keep_detached,
                    kill: kill_rx.clone(),
                };
                match serve(session, &dir, &mut commands, &context, &mut stop).await {
                    SessionEnd::Shutdown => break,
                    SessionEnd::Lost(reason) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            "lost the connection to the master at {remote}: {reason}; \
                             reconnecting in {:.1} s",
                            delay.as_secs_f64()
                        );
                        delay
                    }
                }
            }
            Err(failure) => {
                let delay = backoff.next_delay();
                let retry = format!("retrying in {:.1} s", delay.as_secs_f64());
                if failure.refused {
                    tracing::error!("{}; {retry}", failure.message);
                } else {
                    tracing::warn!("{}; {retry}", failure.message);
                }
                delay
            }
        };
        tokio::select! {
            _ = stop_now(&mut stop) => break,
            _ = sleep(delay) => {}
        }
    }

    tracing::info!("worker shutting down");
    let _ = kill_tx.send(true);
    while let Some(joined) = commands.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            tracing::error!("a command task panicked: {e}");
        }
    }
    endpoints.close(b"worker shutting down").await;
    Ok(())
}

/// Resolves when an immediate stop is asked for.
async fn stop_now(stop: &mut watch::Receiver<Option<StopMode>>) {
    if stop.wait_for(|m| *m == Some(StopMode::Now)).await.is_err() {
        // Nobody can ask any more: never.
        std::future::pending::<()>().await;
    }
}

/// The reconnection delay after `failures` consecutive failures (0 for the
/// first): [`INITIAL_BACKOFF`] doubling up to [`MAX_BACKOFF`], then scaled by
/// `1 + BACKOFF_JITTER * jitter`, where `jitter` is in `[-1, 1]`.
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    let base = INITIAL_BACKOFF
        .saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    base.mul_f64(1.0 + BACKOFF_JITTER * jitter.clamp(-1.0, 1.0))
}

/// Consecutive connection failures, and the delay they call for.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = backoff_delay(self.failures, clock_jitter());
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A number in `[-1, 1]` from the clock's nanoseconds: random enough to spread
/// reconnecting workers apart.
fn clock_jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 2001) / 1000.0 - 1.0
}

/// A connection the master has welcomed.
struct Session {
    conn: Connection,
    remote: SocketAddr,
    master_name: String,
    control_send: SendStream,
    control_reader: FrameReader,
    keepalive_interval: Duration,
    /// How long a command whose stream broke waits to be re-attached.
    keep_detached: Duration,
}

/// How long to keep a detached command: the master's grace period, plus the
/// time the master may take to notice the break (it can notice later than this
/// worker does), plus a margin. Zero when the master does not re-attach.
fn keep_detached(grace_s: u64, keepalive_s: u64) -> Duration {
    if grace_s == 0 {
        return Duration::ZERO;
    }
    let keepalive_s = keepalive_s.clamp(1, MAX_KEEPALIVE_INTERVAL_S);
    Duration::from_secs(grace_s.saturating_add(keepalive_s * 3).saturating_add(10))
}

/// Resolve the master, dial each of its addresses until one answers, and go
/// through hello / welcome.
async fn connect(
    dir: &WorkerDir,
    client_config: &quinn::ClientConfig,
    endpoints: &mut Endpoints,
) -> Result<Session, AttemptFailure> {
    let (conn, addr) =
        dial_master(&dir.master_address, &dir.master, client_config, endpoints).await?;
    handshake(dir, conn, addr).await
}

/// Send the hello on a new control stream and wait for the master's verdict.
/// With TLS 1.3 a master that rejects this worker's certificate lets the
/// handshake finish and closes the connection only now, so this is where that
/// refusal shows.
async fn handshake(
    dir: &WorkerDir,
    conn: Connection,
    addr: SocketAddr,
) -> Result<Session, AttemptFailure> {
    // A failure before the master's first message: if the master closed the
    // connection, it refused us (typically our certificate); otherwise the
    // connection broke.
    let failed_early = |conn: &Connection, fallback: String| match conn.close_reason() {
        Some(
            reason @ (quinn::ConnectionError::ConnectionClosed(_)
            | quinn::ConnectionError::ApplicationClosed(_)),
        ) => AttemptFailure {
            message: format!(
                "the master at {addr} refused the connection: {}",
                explain_connection_error(&reason)
            ),
            refused: true,
        },
        Some(reason) => AttemptFailure::unreachable(format!(
            "the connection to the master at {addr} failed during the hello: {}",
            explain_connection_error(&reason)
        )),
        None => AttemptFailure::unreachable(format!(
            "the connection to the master at {addr} failed during the hello: {fallback}"
        )),
    };
    let exchange = async {
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| failed_early(&conn, e.to_string()))?;
        let hello = WorkerMessage::Hello {
            name: dir.name.clone(),
            protocol: PROTOCOL_VERSION,
            info: dir.info(),
        };
        write_frame(&mut send, &Frame::json(&hello))
            .await
            .map_err(|e| failed_early(&conn, e.to_string()))?;
        let mut reader = FrameReader::new(recv);
        let first = reader
            .next()
            .await
            .map_err(|e| failed_early(&conn, e.to_string()))?;
        Ok((send, reader, first))
    };
    let (send, reader, first) = match timeout(WELCOME_TIMEOUT, exchange).await {
        Ok(result) => result?,
        Err(_) => {
            conn.close(VarInt::from_u32(0), b"no welcome");
            return Err(AttemptFailure::unreachable(format!(
                "the master at {addr} did not answer the hello within {} s",
                WELCOME_TIMEOUT.as_secs()
            )));
        }
    };
    let protocol_error = |what: String| {
        conn.close(VarInt::from_u32(0), b"protocol error");
        AttemptFailure::unreachable(format!("the master at {addr} {what}"))
    };
    let Some(first) = first else {
        return Err(match conn.close_reason() {
            Some(_) => failed_early(&conn, String::new()),
            None => protocol_error("closed the control stream without answering".into()),
        });
    };
    match first.parse::<MasterMessage>() {
        Ok(MasterMessage::Welcome {
            master,
            keepalive_interval_s,
            reattach_grace_s,
        }) => Ok(Session {
            keep_detached: keep_detached(reattach_grace_s, keepalive_interval_s),
            conn,
            remote: addr,
            master_name: master,
            control_send: send,
            control_reader: reader,
            keepalive_interval: Duration::from_secs(
                keepalive_interval_s.clamp(1, MAX_KEEPALIVE_INTERVAL_S),
            ),
        }),
        Ok(MasterMessage::Refused { reason }) => {
            conn.close(VarInt::from_u32(0), b"refused");
            Err(AttemptFailure {
                message: format!(
                    "the master at {addr} refused this worker ({}): {reason}",
                    dir.name
                ),
                refused: true,
            })
        }
        Ok(other) => Err(protocol_error(format!(
            "answered the hello with {other:?} instead of a welcome"
        ))),
        Err(e) => Err(protocol_error(format!(
            "sent a malformed answer to the hello: {e}"
        ))),
    }
}

/// How a welcomed connection ended.
enum SessionEnd {
    /// The worker is shutting down; the connection is closed.
    Shutdown,
    /// The connection is gone; reconnect.
    Lost(String),
}

/// What a command stream needs from the worker.
#[derive(Clone)]
struct CommandContext {
    table: CommandTable,
    builds_dir: PathBuf,
    keep: Duration,
    kill: watch::Receiver<bool>,
}

/// Serve a welcomed connection: keep-alives, the master's control messages and
/// one task per command stream, until it ends or the worker is told to stop.
async fn serve(
    session: Session,
    dir: &WorkerDir,
    commands: &mut JoinSet<()>,
    context: &CommandContext,
    stop: &mut watch::Receiver<Option<StopMode>>,
) -> SessionEnd {
    let Session {
        conn,
        mut control_send,
        control_reader,
        keepalive_interval,
        ..
    } = session;
    // When the master was last heard from: a master that stops echoing
    // keep-alives is given up on as fast as it gives up on a silent worker
    // (its missing_timeout is three keep-alive intervals), instead of waiting
    // for QUIC's idle timeout.
    let epoch = tokio::time::Instant::now();
    let heard_ms = AtomicU64::new(0);
    let silent_limit = keepalive_interval * 3 + Duration::from_secs(1);
    // One long-lived future reads the control stream, so no select below
    // restarts it.
    // When to ask for a renewed certificate (Unix seconds), read once per
    // connection; `i64::MAX` while a request is out or after a refusal.
    let renew_after = AtomicI64::new(match crate::renew::certificate_validity(dir) {
        Ok(validity) => validity.renew_after(),
        Err(e) => {
            tracing::error!("cannot check the certificate's expiry: {e}");
            i64::MAX
        }
    });
    let control = watch_control_stream(&conn, control_reader, dir, &renew_after, || {
        heard_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed)
    });
    tokio::pin!(control);
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive_interval,
        keepalive_interval,
    );
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut draining = false;

    loop {
        // A graceful stop asked for before or during this connection.
        if !draining && *stop.borrow() == Some(StopMode::Graceful) {
            draining = true;
            tracing::info!(
                "graceful stop: asking the master for no new builds; waiting for the running ones"
            );
            let sent = timeout(
                KEEPALIVE_WRITE_TIMEOUT,
                write_frame(
                    &mut control_send,
                    &Frame::json(&WorkerMessage::GracefulShutdown),
                ),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                close_if_open(&conn, b"control stream stalled");
                return SessionEnd::Lost("could not ask the master for a graceful stop".into());
            }
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() == Some(StopMode::Now) {
                    conn.close(VarInt::from_u32(0), b"worker shutting down");
                    return SessionEnd::Shutdown;
                }
            }
            ending = &mut control => {
                close_if_open(&conn, b"control stream ended");
                return match ending {
                    ControlEnd::Exit => SessionEnd::Shutdown,
                    ControlEnd::Shutdown(_) if draining => {
                        tracing::info!("graceful stop: the master says no build is left");
                        SessionEnd::Shutdown
                    }
                    ControlEnd::Shutdown(reason) | ControlEnd::Lost(reason) => SessionEnd::Lost(reason),
                };
            }
            _ = keepalive.tick() => {
                let heard = epoch + Duration::from_millis(heard_ms.load(Ordering::Relaxed));
                if heard.elapsed() > silent_limit {
                    close_if_open(&conn, b"master silent");
                    return SessionEnd::Lost(format!(
                        "nothing heard from the master for {:.0} s",
                        heard.elapsed().as_secs_f64()
                    ));
                }
                let message = match renewal(dir, &renew_after) {
                    Some(csr) => WorkerMessage::RenewCertificate { csr },
                    None => WorkerMessage::KeepAlive,
                };
                let sent = timeout(
                    KEEPALIVE_WRITE_TIMEOUT,
                    write_frame(&mut control_send, &Frame::json(&message)),
                )
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return SessionEnd::Lost(describe_stream_error(&conn, &e)),
                    Err(_) => {
                        close_if_open(&conn, b"control stream stalled");
                        return SessionEnd::Lost("the master stopped reading keep-alives".into());
                    }
                }
            }
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    while commands.try_join_next().is_some() {}
                    commands.spawn(open_command(send, recv, context.clone()));
                }
                Err(e) => return SessionEnd::Lost(explain_connection_error(&e)),
            }
        }
    }
}

/// Close a connection that is still open (closing one the master already
/// closed would replace the master's reason with "locally closed").
fn close_if_open(conn: &Connection, reason: &[u8]) {
    if conn.close_reason().is_none() {
        conn.close(VarInt::from_u32(0), reason);
    }
}

/// A certificate request once the certificate is due for renewal (checked at
/// every keep-alive; the master answers on the control stream).
fn renewal(dir: &WorkerDir, renew_after: &AtomicI64) -> Option<String> {
    if crate::renew::now() < renew_after.load(Ordering::SeqCst) {
        return None;
    }
    renew_after.store(i64::MAX, Ordering::SeqCst);
    match crate::renew::renewal_request(dir) {
        Ok(csr) => {
            tracing::info!("the certificate is due for renewal; asking the master for a new one");
            Some(csr)
        }
        Err(e) => {
            tracing::error!("cannot ask for a renewed certificate: {e}");
            None
        }
    }
}

/// How the master's control stream ended.
enum ControlEnd {
    /// The master sent `Shutdown`.
    Shutdown(String),
    /// The master sent `Shutdown` telling the worker to exit.
    Exit,
    /// The stream or connection ended.
    Lost(String),
}

/// Read the master's control messages until the stream ends; returns why.
async fn watch_control_stream(
    conn: &Connection,
    mut reader: FrameReader,
    dir: &WorkerDir,
    renew_after: &AtomicI64,
    heard: impl Fn(),
) -> ControlEnd {
    loop {
        let next = reader.next().await;
        heard();
        match next {
            Ok(Some(frame)) => match frame.parse::<MasterMessage>() {
                Ok(MasterMessage::KeepAlive) => tracing::trace!("keep-alive echoed"),
                Ok(MasterMessage::RenewedCertificate { certificate }) => {
                    match crate::renew::store_renewed_certificate(dir, &certificate) {
                        Ok(()) => {
                            tracing::info!(
                                "stored the renewed certificate in {}; it is used from the next connection",
                                dir.cert_path().display()
                            );
                            if let Ok(validity) = crate::renew::validity_of(&certificate) {
                                renew_after.store(validity.renew_after(), Ordering::SeqCst);
                            }
                        }
                        Err(e) => tracing::error!("could not store the renewed certificate: {e}"),
                    }
                }
                // Only a renewal gets this answer on a welcomed connection; it
                // is not asked again on this connection.
                Ok(MasterMessage::Refused { reason }) => {
                    tracing::error!("the master refused: {reason}")
                }
                Ok(MasterMessage::Shutdown { reason, exit: true }) => {
                    tracing::warn!("the master stopped this worker: {reason}; exiting");
                    return ControlEnd::Exit;
                }
                Ok(MasterMessage::Shutdown {
                    reason,
                    exit: false,
                }) => {
                    tracing::warn!("the master is dropping this worker: {reason}");
                    return ControlEnd::Shutdown(format!(
                        "the master shut the connection down: {reason}"
                    ));
                }
                Ok(other) => tracing::warn!("ignoring unexpected control message {other:?}"),
                Err(e) => tracing::warn!("ignoring a malformed control message: {e}"),
            },
            Ok(None) => return ControlEnd::Lost("the master closed the control stream".into()),
            Err(e) => return ControlEnd::Lost(describe_stream_error(conn, &e)),
        }
    }
}

/// A stream failure, described by the connection's close reason when the
/// whole connection is what failed.
fn describe_stream_error(conn: &Connection, err: &StreamError) -> String {
    match conn.close_reason() {
        Some(reason) => explain_connection_error(&reason),
        None => err.to_string(),
    }
}

/// Serve one command stream: a new command, or a running one re-attached.
async fn open_command(mut send: SendStream, recv: RecvStream, context: CommandContext) {
    let mut reader = FrameReader::new(recv);
    let open = match reader.next().await {
        Ok(Some(frame)) => frame.parse::<CommandOpen>(),
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("a command stream failed before its request: {e}");
            return;
        }
    };
    match open {
        Ok(CommandOpen::Run(request)) => {
            let stream = Attachment {
                send,
                reader,
                received: 0,
            };
            context
                .table
                .start(
                    request,
                    stream,
                    context.builds_dir.clone(),
                    context.keep,
                    context.kill.clone(),
                )
                .await;
        }
        Ok(CommandOpen::Resume { id, received }) => {
            let stream = Attachment {
                send,
                reader,
                received,
            };
            if let Err(stream) = context.table.attach(id, stream).await {
                tracing::warn!(
                    "the master asks to resume command {id}, which this worker does not have"
                );
                refuse_resume(stream, id).await;
            }
        }
        Err(e) => {
            tracing::warn!("the master sent a malformed command request: {e}");
            let outcome = CommandOutcome {
                failure: Some(format!("malformed command request: {e}")),
                ..CommandOutcome::default()
            };
            let _ = write_frame(&mut send, &Frame::json(&outcome)).await;
            let _ = send.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<f64> = (0..10)
            .map(|n| backoff_delay(n, 0.0).as_secs_f64())
            .collect();
        assert_eq!(
            secs,
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
        );
        assert_eq!(backoff_delay(u32::MAX, 0.0), MAX_BACKOFF);
        assert_eq!(backoff_delay(40, 0.0), MAX_BACKOFF);
    }

    #[test]
    fn backoff_jitter_stays_within_twenty_percent() {
        assert_eq!(backoff_delay(0, -1.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(0, 1.0), Duration::from_millis(1200));
        assert_eq!(backoff_delay(10, 1.0), Duration::from_secs(72));
        assert_eq!(backoff_delay(10, -5.0), Duration::from_secs(48), "clamped");
        for _ in 0..1000 {
            let jitter = clock_jitter();
            assert!((-1.0..=1.0).contains(&jitter), "{jitter}");
        }
    }

    #[test]
    fn backoff_grows_per_failure_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for (n, delay) in delays.iter().enumerate() {
            let base = backoff_delay(n as u32, 0.0).as_secs_f64();
            let got = delay.as_secs_f64();
            assert!(
                got >= base * 0.8 - 1e-9 && got <= base * 1.2 + 1e-9,
                "{n}: {got} vs {base}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(1200));
    }
}
