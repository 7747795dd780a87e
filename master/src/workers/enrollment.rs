//! Enrollment over QUIC: a connection that came without a client certificate
//! may send one `Enroll` request (a one-time token and a CSR), gets one answer
//! (`Enrolled` with its certificate, or `Refused` saying why) and is closed.
//! The token rules and the signing are [`crate::pki::enroll`]'s.

use super::last_word::last_word;
use crate::pki;
use moonbot_worker::protocol::{MasterMessage, WorkerMessage};
use moonbot_worker::transport::FrameReader;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tracing::{info, warn};

/// How long an enrolling worker may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve a connection that came without a client certificate: it may enroll
/// and nothing else. Answers `Enrolled` or `Refused`, then closes.
pub(super) async fn serve_enrollment(conn: quinn::Connection, addr: SocketAddr, master_dir: &Path) {
    let (mut send, recv) = match tokio::time::timeout(REQUEST_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            warn!(%addr, "a connection without a certificate ended before enrolling: {e}");
            return;
        }
        Err(_) => {
            warn!(%addr, "a connection without a certificate sent nothing; closing");
            conn.close(1u32.into(), b"no enrollment request");
            return;
        }
    };
    let mut reader = FrameReader::new(recv);
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(frame))) => frame.parse::<WorkerMessage>().ok(),
        _ => None,
    };
    let answer = match request {
        Some(WorkerMessage::Enroll { token, csr, info }) => {
            let dir = master_dir.to_path_buf();
            let peer = addr.to_string();
            let redeemed =
                tokio::task::spawn_blocking(move || pki::enroll::redeem(&dir, &token, &csr, &peer))
                    .await;
            match redeemed {
                Ok(Ok(pki::enroll::Redeemed { signed, ca_pem })) => {
                    info!(
                        worker = %signed.name, %addr, host = %info.hostname.escape_debug(), serial = %signed.serial,
                        "enrolled a worker; its certificate is valid until {}",
                        pki::format_unix(signed.not_after_unix)
                    );
                    MasterMessage::Enrolled {
                        certificate: signed.cert_pem,
                        ca: ca_pem,
                    }
                }
                Ok(Err(pki::enroll::Refusal(reason))) => {
                    warn!(%addr, host = %info.hostname.escape_debug(), "refused an enrollment: {reason}");
                    MasterMessage::Refused { reason }
                }
                Err(e) => {
                    warn!(%addr, "enrollment task failed: {e}");
                    MasterMessage::Refused {
                        reason: "the master failed while enrolling (see its log)".into(),
                    }
                }
            }
        }
        Some(other) => {
            let what = match other {
                WorkerMessage::Hello { .. } => "a hello",
                _ => "a control message",
            };
            warn!(%addr, "refused a connection without a certificate: it sent {what}, not an enrollment");
            MasterMessage::Refused {
                reason: "this connection has no client certificate: it may only enroll \
                         (is worker.crt missing from the worker directory?)"
                    .into(),
            }
        }
        None => {
            warn!(%addr, "refused a connection without a certificate: no valid enrollment request");
            MasterMessage::Refused {
                reason: "expected an enrollment request".into(),
            }
        }
    };
    last_word(&conn, &mut send, &answer, 0, "enrollment done").await;
}
