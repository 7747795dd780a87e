//! The worker's side of mutual TLS: turning the files of a worker directory
//! into the QUIC client configuration, and explaining TLS failures.
//!
//! The worker trusts exactly one root, the master's CA in `WDIR/ca.crt`, and
//! proves who it is with `WDIR/worker.crt` + `WDIR/worker.key`. Problems with
//! these files are found here, at start-up, with the file named, instead of
//! showing up later as an opaque handshake failure.

use crate::protocol::ALPN;
use crate::workdir::WorkerDir;
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// QUIC keep-alive: a PING when the connection has sent nothing for this
/// long, so a NAT mapping stays open (Linux keeps an unanswered UDP mapping
/// 30 s, most home routers 30 s or more) and the idle timeout does not close a
/// healthy connection. The control stream's keep-alives (every third of the
/// master's idle or missing timeout, 10 s by default) usually come first. It
/// was 2 s: with 10,000 workers that was 5,000 packets a second for the master
/// to answer, 17% of a core for nothing (`moonbot-bench --only workers`).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// The worker's idle timeout; the master's (shorter) one wins when it sets one.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the worker's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file is unreadable or malformed.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// `worker.crt` does not certify `worker.key`.
    #[error(
        "{} does not belong to {}: the certificate was signed for a different key \
         (was the worker directory re-created after signing?)",
        cert.display(),
        key.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS configuration cannot be used for QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

fn bad_file(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::BadFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|e| bad_file(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad_file(path, "contains no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|e| bad_file(path, e))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad_file(path, format!("no usable private key: {e}")))
}

/// The QUIC client configuration for this worker directory.
pub fn client_config(dir: &WorkerDir) -> Result<quinn::ClientConfig, TlsSetupError> {
    let ca_path = dir.ca_path();
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certificates(&ca_path)? {
        roots
            .add(cert)
            .map_err(|e| bad_file(&ca_path, format!("not a usable CA certificate: {e}")))?;
    }
    let chain = read_certificates(&dir.cert_path())?;
    let key = read_private_key(&dir.key_path())?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsSetupError::KeyMismatch {
                cert: dir.cert_path(),
                key: dir.key_path(),
            },
            other => TlsSetupError::Rustls(other),
        })?;
    tls.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(MAX_IDLE_TIMEOUT).expect("60 s is a valid idle timeout"),
    ));
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// TLS alert numbers (RFC 8446 §6) that mean "your certificate is not accepted".
fn certificate_alert_meaning(alert: u8) -> Option<&'static str> {
    Some(match alert {
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        116 => "certificate required",
        _ => return None,
    })
}

/// Did the connection fail in the TLS handshake (either side rejecting the
/// other's certificate, no common protocol)? Such failures need a person.
pub fn is_tls_failure(err: &quinn::ConnectionError) -> bool {
    let code = match err {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(transport) => transport.code,
        _ => return false,
    };
    (0x100..0x200).contains(&u64::from(code))
}

/// A sentence about a failed connection that says plainly when it was the
/// worker's certificate (closed by the master with a certificate alert) or the
/// master's (rejected here), with the underlying error appended.
pub fn explain_connection_error(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            let alert = (0x100..0x200)
                .contains(&code)
                .then_some((code & 0xff) as u8);
            match alert.and_then(certificate_alert_meaning) {
                Some(meaning) => format!(
                    "the master rejected this worker's certificate ({meaning}); is worker.crt \
                     signed by this master's CA and still valid? ({err})"
                ),
                None if alert == Some(120) => format!(
                    "the master does not speak the moonbot/1 protocol (no common ALPN) ({err})"
                ),
                None => err.to_string(),
            }
        }
        quinn::ConnectionError::TransportError(transport) => {
            let reason = transport.to_string();
            if reason.contains("certificate") || reason.contains("UnknownIssuer") {
                format!(
                    "the master's certificate was rejected: it is not valid for this address or \
                     not signed by the CA in ca.crt ({err})"
                )
            } else {
                err.to_string()
            }
        }
        other => other.to_string(),
    }
}
