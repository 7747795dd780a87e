//! Enrollment: turning a one-time token from the master's admin into a signed
//! worker directory, without copying files between the machines.
//!
//! A volunteer behind NAT cannot be reached by the master, and asking them to
//! mail a CSR back and forth is where people give up. Instead the admin runs
//! `moonbot worker-token` and hands over one line; `moonbot-worker
//! create-worker WDIR --token TOKEN` makes the key here, dials the master
//! without a client certificate, and gets its certificate over QUIC.
//!
//! # The token
//!
//! `mbw1.` + base64url(JSON `{"m": "HOST:PORT", "n": "NAME", "f": "HEX"}`) +
//! `.` + base64url(32 random bytes), no padding. `m` is the master's QUIC
//! address, `n` the worker name, `f` the SHA-256 of the master's CA certificate
//! (DER). The last part is the secret: the master stores only its SHA-256, and
//! honours it once, before it expires.
//!
//! # Trust
//!
//! The token is the only thing the worker trusts: the master's TLS chain must
//! include a CA certificate with the token's fingerprint (the master sends
//! `master.crt` + `ca.crt`), and the master's certificate must be valid for the
//! token's host under that CA ([`PinnedCaVerifier`]). The CA the master returns
//! must be the same one.

use crate::dial::{Endpoints, dial_master};
use crate::protocol::{ALPN, Frame, MasterMessage, WorkerMessage};
use crate::tls::explain_connection_error;
use crate::transport::{FrameReader, write_frame};
use crate::workdir::{self, CreateOptions, MasterAddress, WorkdirError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What every enrollment token starts with (format version 1).
pub const TOKEN_PREFIX: &str = "mbw1.";
/// Length of the secret, in bytes.
pub const SECRET_LEN: usize = 32;
/// How long the master may take to answer the enrollment.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token is not one `moonbot worker-token` made (or was cut short).
    #[error(
        "this is not a valid enrollment token ({0}); copy the whole last line `moonbot worker-token` printed"
    )]
    BadToken(String),
    /// The worker directory cannot be made (exists, bad name …).
    #[error(transparent)]
    Workdir(#[from] WorkdirError),
    /// Key or CSR generation failed.
    #[error("could not generate the worker's key or certificate request: {0}")]
    Crypto(#[from] rcgen::Error),
    /// The master could not be reached or the TLS handshake failed.
    #[error("{0}")]
    Connect(String),
    /// The master answered no.
    #[error("the master refused the enrollment: {0}")]
    Refused(String),
    /// The master answered something that cannot be used.
    #[error("the master's answer is unusable: {0}")]
    BadAnswer(String),
}

/// The parts of an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// The master's QUIC address, `HOST:PORT`.
    pub master: String,
    /// The worker name the token is for.
    pub name: String,
    /// SHA-256 of the master's CA certificate (DER), lower-case hex.
    pub ca_fingerprint: String,
    /// The secret, base64url without padding.
    pub secret: String,
}

#[derive(Serialize, Deserialize)]
struct TokenHeader {
    m: String,
    n: String,
    f: String,
}

impl EnrollmentToken {
    /// A token with a fresh random secret.
    pub fn generate(master: &str, name: &str, ca_fingerprint: &str) -> EnrollmentToken {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; SECRET_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .expect("the system random number generator failed");
        EnrollmentToken {
            master: master.to_string(),
            name: name.to_string(),
            ca_fingerprint: ca_fingerprint.to_string(),
            secret: URL_SAFE_NO_PAD.encode(secret),
        }
    }

    /// The one-line text form.
    pub fn encode(&self) -> String {
        let header = TokenHeader {
            m: self.master.clone(),
            n: self.name.clone(),
            f: self.ca_fingerprint.clone(),
        };
        let json = serde_json::to_vec(&header).expect("token header serializes");
        format!(
            "{TOKEN_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(json),
            self.secret
        )
    }

    /// Read a token (surrounding white space is ignored).
    pub fn parse(text: &str) -> Result<EnrollmentToken, EnrollError> {
        let bad = |why: &str| EnrollError::BadToken(why.to_string());
        let rest = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| bad("it does not start with mbw1."))?;
        let (header, secret) = rest
            .split_once('.')
            .ok_or_else(|| bad("the secret part is missing"))?;
        let json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| bad("the header is not base64url"))?;
        let header: TokenHeader =
            serde_json::from_slice(&json).map_err(|_| bad("the header is malformed"))?;
        if secret_hash(secret).is_none() {
            return Err(bad("the secret is not 32 bytes of base64url"));
        }
        if header.f.len() != 64 || !header.f.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA fingerprint is not a SHA-256"));
        }
        Ok(EnrollmentToken {
            master: header.m,
            name: header.n,
            ca_fingerprint: header.f.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }
}

/// SHA-256 of a secret (base64url text as in the token), or `None` when it is
/// not [`SECRET_LEN`] bytes of base64url.
pub fn secret_hash(secret: &str) -> Option<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
    if bytes.len() != SECRET_LEN {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().try_into().ok()
}

/// SHA-256 of a certificate (DER), lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies the master's certificate against the CA certificate in the
/// presented chain whose SHA-256 is the pinned fingerprint; the rest (validity,
/// the host name) is webpki's usual check with that CA as the only root.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    pub fn new(fingerprint: &str, provider: Arc<CryptoProvider>) -> PinnedCaVerifier {
        PinnedCaVerifier {
            fingerprint: fingerprint.to_ascii_lowercase(),
            provider,
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c.as_ref()) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the master did not present the CA certificate the token names \
                     (a different master, or one too old to enroll workers)"
                        .into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// QUIC client configuration for enrolling: no client certificate, the
/// master checked by [`PinnedCaVerifier`].
pub fn client_config(ca_fingerprint: &str) -> Result<quinn::ClientConfig, EnrollError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EnrollError::Connect(format!("TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(ca_fingerprint, provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls)
        .map_err(|e| EnrollError::Connect(format!("TLS configuration unusable for QUIC: {e}")))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// What [`enroll`] made.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub name: String,
    pub dir: PathBuf,
    /// The master's address, as stored in worker.json.
    pub master: String,
}

/// Enroll a new worker in `dir` with `token`: make its key, have the master
/// sign it, and write the worker directory. Nothing is written unless the
/// master signed, so a refused token leaves `dir` as it was (a retry with a
/// new token works).
pub async fn enroll(
    dir: &Path,
    token: &str,
    admin: Option<String>,
    host_description: Option<String>,
) -> Result<Enrolled, EnrollError> {
    let token = EnrollmentToken::parse(token)?;
    let mut options = CreateOptions {
        master: token.master.clone(),
        name: token.name.clone(),
        // The CA the master sends, once checked against the token.
        ca_pem: String::new(),
        admin,
        host_description,
    };
    workdir::validate_name(&token.name)?;
    let address = MasterAddress::parse(&token.master)?;
    let key_path = dir.join("worker.key");
    if key_path.exists() {
        return Err(WorkdirError::AlreadyExists(key_path).into());
    }

    let key = rcgen::KeyPair::generate()?;
    let csr = workdir::certificate_request(&key, &token.name)?;
    let mut info = workdir::machine_info(dir);
    info.admin = options.admin.clone();
    info.host_description = options.host_description.clone();
    let request = WorkerMessage::Enroll {
        token: token.secret.clone(),
        csr: csr.clone(),
        info,
    };
    let (certificate, ca) = exchange(&address, &token, &request).await?;

    // The CA must be the pinned one, and the certificate ours.
    let ca_der = CertificateDer::from_pem_slice(ca.as_bytes())
        .map_err(|e| EnrollError::BadAnswer(format!("the CA certificate: {e}")))?;
    if fingerprint(ca_der.as_ref()) != token.ca_fingerprint {
        return Err(EnrollError::BadAnswer(
            "the CA certificate it sent is not the one the token names".into(),
        ));
    }
    check_certificate(&certificate, &key, &token.name)
        .map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    options.ca_pem = ca;
    workdir::write_new(dir, &options, &key, &csr)?;
    workdir::write_file(&dir.join("worker.crt"), certificate.as_bytes())?;
    Ok(Enrolled {
        name: token.name,
        dir: dir.to_path_buf(),
        master: token.master,
    })
}

/// Why a certificate the master sent is not this worker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateMismatch {
    #[error("the certificate: {0}")]
    Unreadable(String),
    #[error("the certificate is for '{found}', not for worker '{expected}'")]
    OtherName { found: String, expected: String },
    #[error("the certificate is for a different key")]
    OtherKey,
}

/// Whether `cert_pem` is a certificate for `name` and `key`'s public key.
pub fn check_certificate(
    cert_pem: &str,
    key: &rcgen::KeyPair,
    name: &str,
) -> Result<(), CertificateMismatch> {
    use rcgen::PublicKeyData;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| CertificateMismatch::Unreadable(e.to_string()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertificateMismatch::Unreadable(e.to_string()))?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    if cn != name {
        return Err(CertificateMismatch::OtherName {
            found: cn.to_string(),
            expected: name.to_string(),
        });
    }
    if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(CertificateMismatch::OtherKey);
    }
    Ok(())
}

/// Dial the token's master (each address in turn), send the request, and
/// return the certificate and CA of its `Enrolled` answer.
async fn exchange(
    address: &MasterAddress,
    token: &EnrollmentToken,
    request: &WorkerMessage,
) -> Result<(String, String), EnrollError> {
    let config = client_config(&token.ca_fingerprint)?;
    let mut endpoints = Endpoints::default();
    let (conn, addr) = dial_master(address, &token.master, &config, &mut endpoints)
        .await
        .map_err(|failure| EnrollError::Connect(failure.message))?;
    let result = tokio::time::timeout(ANSWER_TIMEOUT, ask(&conn, request)).await;
    conn.close(0u32.into(), b"enrollment done");
    endpoints.close(b"enrollment done").await;
    match result {
        Ok(answer) => answer,
        Err(_) => Err(EnrollError::Connect(format!(
            "the master at {addr} did not answer within {} s",
            ANSWER_TIMEOUT.as_secs()
        ))),
    }
}

async fn ask(
    conn: &quinn::Connection,
    request: &WorkerMessage,
) -> Result<(String, String), EnrollError> {
    let failed = |fallback: String| match conn.close_reason() {
        Some(reason) => EnrollError::Connect(format!(
            "the master closed the connection: {}",
            explain_connection_error(&reason)
        )),
        None => EnrollError::Connect(fallback),
    };
    let (mut send, recv) = conn.open_bi().await.map_err(|e| failed(e.to_string()))?;
    write_frame(&mut send, &Frame::json(request))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let _ = send.finish();
    let mut reader = FrameReader::new(recv);
    let frame = reader
        .next()
        .await
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("the master closed the stream without answering".into()))?;
    match frame.parse::<MasterMessage>() {
        Ok(MasterMessage::Enrolled { certificate, ca }) => Ok((certificate, ca)),
        Ok(MasterMessage::Refused { reason }) => Err(EnrollError::Refused(reason)),
        Ok(other) => Err(EnrollError::BadAnswer(format!("unexpected {other:?}"))),
        Err(e) => Err(EnrollError::BadAnswer(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_damage() {
        let fp = "ab".repeat(32);
        let token = EnrollmentToken::generate("ci.example.org:9989", "arm-1", &fp);
        let text = token.encode();
        assert!(text.starts_with("mbw1."), "{text}");
        assert_eq!(
            EnrollmentToken::parse(&format!("  {text}\n")).unwrap(),
            token
        );
        let other = EnrollmentToken::generate("ci.example.org:9989", "arm-1", &fp);
        assert_ne!(other.secret, token.secret);
        assert!(secret_hash(&token.secret).is_some());
        assert_ne!(secret_hash(&token.secret), secret_hash(&other.secret));

        for bad in [
            String::new(),
            "mbw2.x.y".into(),
            text[..text.len() - 5].to_string(),
            text.replace('.', ""),
            format!("mbw1.{}", token.secret),
        ] {
            assert!(
                matches!(EnrollmentToken::parse(&bad), Err(EnrollError::BadToken(_))),
                "{bad:?}"
            );
        }
    }
}
