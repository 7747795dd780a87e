//! The QUIC listener: mutual TLS, the worker's identity, the hello, and the
//! control stream for the life of a connection.
//!
//! The TLS layer admits only certificates the master's CA signed (and
//! connections without any, which go to [`super::enrollment`] and may only
//! enroll); this module then refuses a revoked certificate, takes the worker
//! name from the certificate, checks that the running configuration lists it,
//! and that the hello says the same name. A refusal is logged here and sent to
//! the worker as `Refused` so both sides say why.

use super::last_word::last_word;
use crate::shared::Shared;
use crate::worker_registry::StopRequest;
use moonbot_worker::protocol::{Frame, MasterMessage, PROTOCOL_VERSION, WorkerMessage};
use moonbot_worker::transport::{FrameReader, write_frame};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot set up TLS for the QUIC listener: {0}")]
    Tls(String),
    #[error("cannot listen for workers on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind the QUIC endpoint workers dial.
pub fn bind(
    tls: rustls::ServerConfig,
    addr: SocketAddr,
    idle_timeout: Duration,
) -> Result<quinn::Endpoint, ListenError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        idle_timeout
            .try_into()
            .map_err(|_| ListenError::Tls("idle timeout too large".into()))?,
    ));
    transport.keep_alive_interval(Some(idle_timeout / 3));
    // A worker opens one stream, its control stream; command streams are opened
    // by the master (the worker's own limit governs those). quinn allocates
    // state for every stream a peer may open up front, so a generous limit here
    // costs memory on every connection (4096 was ~0.4 MiB per worker).
    transport.max_concurrent_bidi_streams(2u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    let bind_error = |source| ListenError::Bind { addr, source };
    let socket = udp_socket(addr).map_err(bind_error)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_error)
}

/// Ask the kernel for this much receive buffer. When thousands of workers dial
/// a restarted master at once, their first packets arrive faster than the
/// handshakes are done; whatever does not fit is dropped, and each drop costs
/// its worker a retransmission timeout that doubles every time (1, 2, 4, 8 s).
/// Measured with `moonbot-bench --only workers` on 2 cores: 5,000 workers took
/// 18–21 s with 8 MiB (12,000+ drops), 4–5 s with this (none); 10,000 took
/// 39 s, and 10.8 s with this. Memory is used only while packets wait.
const UDP_RECEIVE_BUFFER: usize = 64 << 20;

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    enlarge_receive_buffer(&socket);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// [`UDP_RECEIVE_BUFFER`], or as much as the kernel allows. `SO_RCVBUF` is
/// capped by `net.core.rmem_max` (4 MiB here); a privileged master
/// (`CAP_NET_ADMIN`) goes past the cap with `SO_RCVBUFFORCE`; any other says
/// how to raise it.
fn enlarge_receive_buffer(socket: &socket2::Socket) {
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        warn!("could not enlarge the QUIC receive buffer: {e}");
    }
    // Linux reports twice what it granted (its bookkeeping overhead).
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted >= UDP_RECEIVE_BUFFER {
        return;
    }
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    if setsockopt(socket, RcvBufForce, &UDP_RECEIVE_BUFFER).is_ok() {
        return;
    }
    info!(
        "the QUIC receive buffer is {} KiB (capped by net.core.rmem_max): thousands of \
         workers connecting at once will lose handshake packets and wait for \
         retransmissions; `sysctl -w net.core.rmem_max={UDP_RECEIVE_BUFFER}` avoids that",
        granted / 1024
    );
}

/// Accept connections until the endpoint is closed.
pub async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(%addr, "refused a worker connection during the TLS handshake: {e}");
                    return;
                }
            };
            serve_connection(conn, addr, shared).await;
        });
    }
}

/// The client certificate the TLS layer verified; `None` for a connection
/// without one (which may only enroll).
fn peer_certificate(conn: &quinn::Connection) -> Option<rustls_pki_types::CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().cloned()
}

async fn refuse(conn: &quinn::Connection, send: Option<&mut quinn::SendStream>, reason: &str) {
    match send {
        Some(send) => {
            let refused = MasterMessage::Refused {
                reason: reason.to_string(),
            };
            last_word(conn, send, &refused, 1, reason).await;
        }
        None => conn.close(1u32.into(), reason.as_bytes()),
    }
}

/// Shut a welcomed worker's connection down, saying why.
async fn shut_down(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    code: u32,
    reason: String,
) -> String {
    let message = MasterMessage::Shutdown {
        reason: reason.clone(),
        exit: false,
    };
    last_word(conn, send, &message, code, &reason).await;
    reason
}

/// Let the worker go and tell it to exit (the API's worker `stop` or `kill`).
async fn stop_worker(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reason: String,
) -> String {
    let message = MasterMessage::Shutdown {
        reason: reason.clone(),
        exit: true,
    };
    last_word(conn, send, &message, 5, &reason).await;
    reason
}

/// Sign a renewed certificate for the worker of this connection (file I/O:
/// off the async threads).
async fn renew(shared: &Arc<Shared>, name: &str, presented: &[u8], csr: String) -> MasterMessage {
    let (dir, owned_name, presented) = (shared.dir.clone(), name.to_string(), presented.to_vec());
    let signed = tokio::task::spawn_blocking(move || {
        crate::pki::renew::renew_worker_certificate(&dir, &owned_name, &presented, &csr)
    })
    .await;
    match signed {
        Ok(Ok(certificate)) => {
            info!(worker = %name, "renewed the worker's certificate");
            MasterMessage::RenewedCertificate { certificate }
        }
        Ok(Err(e)) => {
            warn!(worker = %name, "refused to renew the worker's certificate: {e}");
            MasterMessage::Refused {
                reason: format!("certificate renewal refused: {e}"),
            }
        }
        Err(e) => MasterMessage::Refused {
            reason: format!("certificate renewal failed: {e}"),
        },
    }
}

async fn serve_connection(conn: quinn::Connection, addr: SocketAddr, shared: Arc<Shared>) {
    let Some(cert) = peer_certificate(&conn) else {
        super::enrollment::serve_enrollment(conn, addr, &shared.dir).await;
        return;
    };
    // Read once: the revocation check runs again at every keep-alive.
    let facts = match crate::pki::revoke::cert_facts(cert.as_ref()) {
        Ok(facts) => facts,
        Err(e) => {
            warn!(%addr, "refused a worker: {e}");
            refuse(&conn, None, "certificate has no worker name").await;
            return;
        }
    };
    let cert_name = facts.name.clone();
    let revoked = shared.revocations.check_facts(&facts);
    let (mut send, recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            warn!(%addr, worker = %cert_name, "connection ended before the hello: {e}");
            return;
        }
        Err(_) => {
            warn!(%addr, worker = %cert_name, "no hello within {HELLO_TIMEOUT:?}; closing");
            conn.close(1u32.into(), b"no hello");
            return;
        }
    };
    if let Some(reason) = revoked {
        warn!(%addr, worker = %cert_name, "refused a worker: {reason}");
        refuse(&conn, Some(&mut send), &reason).await;
        return;
    }
    let mut reader = FrameReader::new(recv);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(frame))) => frame.parse::<WorkerMessage>(),
        other => {
            warn!(%addr, worker = %cert_name, "no valid hello: {other:?}");
            conn.close(1u32.into(), b"no hello");
            return;
        }
    };
    let (name, info) = match hello {
        Ok(WorkerMessage::Hello {
            name,
            info,
            protocol,
        }) if protocol == PROTOCOL_VERSION => (name, info),
        Ok(WorkerMessage::Hello { protocol, .. }) => {
            let reason = format!(
                "worker speaks protocol {protocol}, this master speaks {PROTOCOL_VERSION}: upgrade the older side"
            );
            warn!(%addr, worker = %cert_name, "refused a worker: {reason}");
            refuse(&conn, Some(&mut send), &reason).await;
            return;
        }
        Ok(other) => {
            warn!(%addr, worker = %cert_name, "expected a hello, got {other:?}");
            refuse(&conn, Some(&mut send), "expected a hello").await;
            return;
        }
        Err(e) => {
            warn!(%addr, worker = %cert_name, "malformed hello: {e}");
            refuse(&conn, Some(&mut send), "malformed hello").await;
            return;
        }
    };
    if name != cert_name {
        let reason =
            format!("the hello names worker '{name}' but the certificate is for '{cert_name}'");
        warn!(%addr, "refused a worker: {reason}");
        refuse(&conn, Some(&mut send), &reason).await;
        return;
    }
    let running = shared.running_config();
    let (Some(worker_config), Some(&workerid)) = (
        running.loaded.config.worker(&name),
        running.worker_ids.get(&name),
    ) else {
        let reason = format!("worker '{name}' is not in this master's configuration");
        warn!(%addr, "refused a worker: {reason}");
        refuse(&conn, Some(&mut send), &reason).await;
        return;
    };
    let missing_timeout = Duration::from_secs(worker_config.missing_timeout_s);
    let reconnect_grace_s = worker_config.reconnect_grace_s;
    drop(running);

    let paused = match shared.data.worker_paused(workerid).await {
        Ok(paused) => paused,
        Err(e) => {
            warn!(worker = %name, "could not read whether the worker is paused: {e}");
            false
        }
    };
    // Keep-alives often enough that a missing worker is noticed in time.
    let keepalive_interval_s = (shared.idle_timeout.as_secs() / 3)
        .min(missing_timeout.as_secs() / 3)
        .max(1);
    // A connection heard within one and a half keep-alive intervals (plus a
    // second for the network) is alive: a second one is another process
    // with the same certificate, refused; a silent one is a worker that went
    // away, replaced by its reconnect.
    let alive_within = Duration::from_millis(keepalive_interval_s * 1500) + Duration::from_secs(1);
    let inserted = shared.workers.insert(
        &name,
        workerid,
        conn.clone(),
        info.clone(),
        paused,
        alive_within,
    );
    let (worker, replaced) = match inserted {
        Ok(inserted) => inserted,
        Err(already) => {
            warn!(worker = %name, %addr, "refused a second connection: {already}");
            refuse(&conn, Some(&mut send), &already.to_string()).await;
            return;
        }
    };
    if let Some(old) = replaced {
        info!(worker = %name, silent_s = old.silent_for().as_secs(), "worker reconnected; closing its previous, silent connection");
        old.conn.close(2u32.into(), b"replaced by a new connection");
    }
    if let Err(e) = shared.data.worker_connected(workerid, &info).await {
        warn!(worker = %name, "could not record the connection: {e}");
    }
    let welcome = MasterMessage::Welcome {
        master: shared.master_name.clone(),
        keepalive_interval_s,
        reattach_grace_s: reconnect_grace_s,
    };
    if let Err(e) = write_frame(&mut send, &Frame::json(&welcome)).await {
        warn!(worker = %name, "could not welcome the worker: {e}");
    }
    info!(worker = %name, %addr, os = %info.os.escape_debug(), arch = %info.arch.escape_debug(), "worker connected");

    let mut remote = addr;
    let mut graceful = false;
    let mut freed = shared.workers.slots_freed();
    let mut stop_requests = worker.stop_requests();
    // The API's worker `stop`: once no build is left, the worker exits.
    let mut exit_when_idle = false;
    // Stopped on purpose (from the API, or removed from master.lua): not
    // "missing".
    let mut deliberate = false;
    let reason = loop {
        tokio::select! {
            frame = reader.next() => match frame {
                Ok(Some(frame)) => {
                    worker.heard();
                    if conn.remote_address() != remote {
                        info!(worker = %name, from = %remote, to = %conn.remote_address(), "worker's address changed; the connection moved with it");
                        remote = conn.remote_address();
                    }
                    match frame.parse::<WorkerMessage>() {
                        Ok(WorkerMessage::KeepAlive) => {
                            // A revocation takes effect on live connections too.
                            if let Some(reason) = shared.revocations.check_facts(&facts) {
                                warn!(worker = %name, "dropping the worker: {reason}");
                                break shut_down(&conn, &mut send, 5, reason).await;
                            }
                            let _ = write_frame(&mut send, &Frame::json(&MasterMessage::KeepAlive)).await;
                        }
                        Ok(WorkerMessage::RenewCertificate { csr }) => {
                            let answer = renew(&shared, &name, cert.as_ref(), csr).await;
                            let _ = write_frame(&mut send, &Frame::json(&answer)).await;
                        }
                        Ok(WorkerMessage::GracefulShutdown) => {
                            info!(worker = %name, running = worker.running(), "worker stops after its running builds; no new builds for it");
                            shared.workers.set_graceful(&name, worker.connection_id);
                            graceful = true;
                            // Look at once: there may be no build running.
                            freed.mark_changed();
                            if let Err(e) = shared.data.worker_graceful(workerid).await {
                                warn!(worker = %name, "could not record the graceful stop: {e}");
                            }
                        }
                        Ok(other) => warn!(worker = %name, "unexpected control message {other:?}"),
                        Err(e) => {
                            warn!(worker = %name, "malformed control message, closing: {e}");
                            conn.close(1u32.into(), b"malformed control message");
                        }
                    }
                }
                Ok(None) => break "the worker closed its control stream".to_string(),
                Err(e) => break e.to_string(),
            },
            e = conn.closed() => break e.to_string(),
            // When it was last heard is the registry's record (the same that
            // tells a reconnect from a second copy).
            _ = tokio::time::sleep(missing_timeout.saturating_sub(worker.silent_for())) => {
                let reason = format!("missing: nothing heard for {} s (missing_timeout)", missing_timeout.as_secs());
                conn.close(4u32.into(), reason.as_bytes());
                break reason;
            }
            _ = freed.changed(), if graceful => {
                if worker.running() == 0 {
                    let reason = "graceful stop: no build left on this worker".to_string();
                    deliberate = true;
                    if exit_when_idle {
                        break stop_worker(&conn, &mut send, reason).await;
                    }
                    break shut_down(&conn, &mut send, 3, reason).await;
                }
            }
            Ok(()) = stop_requests.changed() => {
                let request = *stop_requests.borrow_and_update();
                match request {
                    StopRequest::Now => {
                        let reason = "killed from the API".to_string();
                        deliberate = true;
                        break stop_worker(&conn, &mut send, reason).await;
                    }
                    StopRequest::Graceful => {
                        info!(worker = %name, running = worker.running(), "stop from the API: no new builds; the worker exits after its running ones");
                        shared.workers.set_graceful(&name, worker.connection_id);
                        graceful = true;
                        exit_when_idle = true;
                        freed.mark_changed();
                        if let Err(e) = shared.data.worker_graceful(workerid).await {
                            warn!(worker = %name, "could not record the graceful stop: {e}");
                        }
                    }
                    StopRequest::None => {}
                }
            }
            _ = worker.retired() => {
                let reason = format!("worker '{name}' was removed from the master's configuration");
                deliberate = true;
                break shut_down(&conn, &mut send, 3, reason).await;
            }
        }
    };
    if shared.workers.remove(&name, worker.connection_id) {
        info!(worker = %name, "worker disconnected: {reason}");
        if let Err(e) = shared.data.worker_disconnected(workerid).await {
            warn!(worker = %name, "could not record the disconnection: {e}");
        }
        if !deliberate {
            let loss = losses().note(workerid);
            tokio::spawn(tell_if_missing(
                shared.clone(),
                name,
                workerid,
                loss,
                missing_timeout,
            ));
        }
    }
}

/// How many times each worker was lost: a loss is told only if it is the
/// worker's last one (lost, back and lost again counts from the second).
#[derive(Default)]
struct Losses(std::sync::Mutex<std::collections::HashMap<i64, u64>>);

impl Losses {
    /// Count a loss of `workerid`; its number.
    fn note(&self, workerid: i64) -> u64 {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(workerid).or_default();
        *n += 1;
        *n
    }

    fn is_last(&self, workerid: i64, loss: u64) -> bool {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&workerid) == Some(&loss)
    }
}

fn losses() -> &'static Losses {
    static LOSSES: std::sync::OnceLock<Losses> = std::sync::OnceLock::new();
    LOSSES.get_or_init(Losses::default)
}

/// A worker lost (not stopped on purpose) that has not come back within
/// `missing_timeout` of its last loss is missing (Buildbot's
/// `workers/N/missing`): stored for the reporters' `worker_missing`
/// generators.
async fn tell_if_missing(
    shared: Arc<Shared>,
    name: String,
    workerid: i64,
    loss: u64,
    missing_timeout: Duration,
) {
    tokio::time::sleep(missing_timeout).await;
    let configured = shared
        .running_config()
        .loaded
        .config
        .worker(&name)
        .is_some();
    if !configured || shared.workers.is_connected(&name) || !losses().is_last(workerid, loss) {
        return;
    }
    info!(worker = %name, "worker missing: away for more than {} s (missing_timeout)", missing_timeout.as_secs());
    if let Err(e) = shared.data.worker_missing(workerid).await {
        warn!(worker = %name, "could not record that the worker is missing: {e}");
    }
}
