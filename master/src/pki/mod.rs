//! The master's certificate authority: creating it, the master's QUIC server
//! certificate, signing worker CSRs, and the TLS configuration that admits only
//! workers whose certificate this CA signed.
//!
//! Files live in `MASTERDIR/pki/`: `ca.crt`, `ca.key`, `master.crt`, `master.key`.
//! Private keys are written with mode 0600. Worker keys never come here: a worker
//! sends a CSR and gets back a certificate.
//!
//! Around the CA, one module per concept: [`issued`] records every worker
//! certificate signed (so it can be revoked), [`revoke`] is the revocation list,
//! [`enroll`] the one-time enrollment tokens and their redemption over QUIC,
//! [`renew`] the renewal of a worker's certificate before it expires.

pub mod enroll;
pub mod issued;
pub mod renew;
pub mod revoke;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a worker certificate is valid unless the admin says otherwise.
pub const WORKER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86400);

/// A worker certificate's `not_before` is this long before it was signed, so a
/// worker whose clock is a little behind the master's can use it at once.
pub const CLOCK_SKEW_ALLOWANCE: Duration = moonbot_worker::protocol::CERTIFICATE_BACKDATE;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file under `pki/` failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// rcgen could not build, parse or sign something.
    #[error("{what}: {source}")]
    Cert { what: String, source: rcgen::Error },
    /// The CA already exists; refusing to replace it would lock out every worker.
    #[error("{0} already exists; refusing to overwrite the master's CA")]
    Exists(PathBuf),
    /// The CSR does not name a usable worker.
    #[error("the CSR's subject has no usable worker name: {0}")]
    BadName(String),
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A certificate (presented or stored) could not be read.
    #[error("unreadable certificate: {0}")]
    BadCert(String),
    /// A request the master refuses (renewal of a revoked certificate, a key change …).
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_string(),
        source,
    }
}

/// Paths of the master's PKI files.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(master_dir: &Path) -> Self {
        PkiPaths {
            dir: master_dir.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn master_cert(&self) -> PathBuf {
        self.dir.join("master.crt")
    }
    pub fn master_key(&self) -> PathBuf {
        self.dir.join("master.key")
    }
    /// One file per outstanding (or used) enrollment token.
    pub fn enrollments(&self) -> PathBuf {
        self.dir.join("enrollments")
    }
    /// `NAME.json`: the worker certificates issued for NAME.
    pub fn issued(&self) -> PathBuf {
        self.dir.join("issued")
    }
    /// The revocation list.
    pub fn revoked(&self) -> PathBuf {
        self.dir.join("revoked.json")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `2025-06-01 12:00:00 UTC` for a Unix time.
pub fn format_unix(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(t) => format!(
            "{} {:02}:{:02}:{:02} UTC",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => t.to_string(),
    }
}

/// Write `contents` to `path` through a temporary file and a rename, mode 0600,
/// so a reader sees the old or the new file, never half of one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Write `value` as pretty JSON to `path` with [`write_atomic`] (the PKI's
/// records: issued certificates, revocations, enrollment tokens).
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), PkiError> {
    let json = serde_json::to_vec_pretty(value).expect("PKI records serialize");
    write_atomic(path, &json)
}

/// The JSON record at `path`, or `T::default()` when there is no such file.
pub(crate) fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
) -> Result<T, PkiError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| PkiError::BadCert(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io(path)(e)),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Create the CA and the master's server certificate for `localhost`, `127.0.0.1`,
/// `::1` and every extra host name or address.
pub fn create(master_dir: &Path, extra_hosts: &[String]) -> Result<PkiPaths, PkiError> {
    let paths = PkiPaths::new(master_dir);
    if paths.ca_key().exists() {
        return Err(PkiError::Exists(paths.ca_key()));
    }
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;

    let ca_key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
    let mut ca_params = CertificateParams::default();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("moonbot CA ({host})"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params, 20 * 365);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
        .map_err(cert_err("self-signing the CA"))?;

    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    for h in extra_hosts {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    let mut master_params =
        CertificateParams::new(hosts).map_err(cert_err("master certificate names"))?;
    master_params
        .distinguished_name
        .push(DnType::CommonName, format!("moonbot master ({host})"));
    master_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    master_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut master_params, 5 * 365);
    let master_key = KeyPair::generate().map_err(cert_err("generating the master key"))?;
    let master_cert = master_params
        .signed_by(&master_key, &ca)
        .map_err(cert_err("signing the master certificate"))?;

    std::fs::write(paths.ca_cert(), ca.pem()).map_err(io(&paths.ca_cert()))?;
    write_private(&paths.ca_key(), &ca.key().serialize_pem())?;
    std::fs::write(paths.master_cert(), master_cert.pem()).map_err(io(&paths.master_cert()))?;
    write_private(&paths.master_key(), &master_key.serialize_pem())?;
    Ok(paths)
}

pub(crate) fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// A worker certificate made by [`sign_worker_csr`].
#[derive(Debug)]
pub struct SignedWorker {
    pub name: String,
    pub cert_pem: String,
    /// The day it expires (`2026-06-01`), for messages.
    pub not_after: String,
    /// When it expires, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
}

/// Whether `name` is acceptable as a worker name (the rule the worker itself
/// checks, `moonbot_worker::workdir::validate_name`).
pub fn valid_worker_name(name: &str) -> bool {
    moonbot_worker::workdir::validate_name(name).is_ok()
}

/// A parsed CSR and the worker name its subject gives.
pub(crate) struct WorkerCsr {
    pub(crate) params: CertificateSigningRequestParams,
    pub(crate) name: String,
}

/// Read a worker's CSR and check the name in its subject.
pub(crate) fn parse_worker_csr(csr_pem: &str) -> Result<WorkerCsr, PkiError> {
    let params =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(cert_err("reading the CSR"))?;
    let name = match params.params.distinguished_name.get(&DnType::CommonName) {
        Some(value) => dn_text(value),
        None => return Err(PkiError::BadName("no common name".into())),
    };
    if !valid_worker_name(&name) {
        return Err(PkiError::BadName(format!("'{name}'")));
    }
    Ok(WorkerCsr { params, name })
}

/// Sign a worker's CSR with the master's CA, valid for `validity` from now
/// (and [`CLOCK_SKEW_ALLOWANCE`] before). The certificate keeps only the CSR's
/// subject (the worker name) and public key; everything else is set here. The
/// certificate is recorded in `pki/issued/NAME.json` so it can be revoked.
pub fn sign_worker_csr(
    master_dir: &Path,
    csr_pem: &str,
    validity: Duration,
) -> Result<SignedWorker, PkiError> {
    sign_parsed(master_dir, parse_worker_csr(csr_pem)?, validity)
}

pub(crate) fn sign_parsed(
    master_dir: &Path,
    csr: WorkerCsr,
    validity: Duration,
) -> Result<SignedWorker, PkiError> {
    let paths = PkiPaths::new(master_dir);
    let ca_key = KeyPair::from_pem(&read(&paths.ca_key())?).map_err(cert_err("reading ca.key"))?;
    let issuer = Issuer::from_ca_cert_pem(&read(&paths.ca_cert())?, ca_key)
        .map_err(cert_err("reading ca.crt"))?;
    let WorkerCsr {
        params: mut csr,
        name,
    } = csr;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.clone());
    let params = &mut csr.params;
    params.distinguished_name = dn;
    params.subject_alt_names = Vec::<SanType>::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let serial = random_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now
        + time::Duration::try_from(validity)
            .map_err(|_| PkiError::Refused("certificate validity too long".into()))?;
    let not_before = params.not_before.unix_timestamp();
    let not_after = params.not_after;
    let cert = csr
        .signed_by(&issuer)
        .map_err(cert_err("signing the worker certificate"))?;
    let signed = SignedWorker {
        name,
        cert_pem: cert.pem(),
        not_after: not_after.date().to_string(),
        not_after_unix: not_after.unix_timestamp(),
        serial: hex::encode(serial),
    };
    issued::record(
        master_dir,
        &signed.name,
        &issued::IssuedCert {
            serial: signed.serial.clone(),
            not_before,
            not_after: signed.not_after_unix,
            issued_at: unix_now(),
        },
    )?;
    Ok(signed)
}

/// 16 random bytes with the top bit cleared (a positive DER integer) and the
/// next one set (no leading zero byte to trim).
fn random_serial() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .expect("the system random number generator failed");
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// SHA-256 of the CA certificate (DER), lower-case hex: what an enrollment
/// token pins.
pub fn ca_fingerprint(master_dir: &Path) -> Result<String, PkiError> {
    let paths = PkiPaths::new(master_dir);
    let der = CertificateDer::from_pem_file(paths.ca_cert())
        .map_err(|e| PkiError::Tls(format!("{}: {e}", paths.ca_cert().display())))?;
    Ok(hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        der.as_ref(),
    )))
}

/// The DNS names and addresses the master's certificate is valid for.
pub fn master_cert_hosts(master_dir: &Path) -> Result<Vec<String>, PkiError> {
    let paths = PkiPaths::new(master_dir);
    let der = CertificateDer::from_pem_file(paths.master_cert())
        .map_err(|e| PkiError::Tls(format!("{}: {e}", paths.master_cert().display())))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| PkiError::BadCert(format!("master.crt: {e}")))?;
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => hosts.push(dns.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*ip) {
                        hosts.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*ip) {
                        hosts.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(hosts)
}

fn dn_text(value: &DnValue) -> String {
    match value {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_string(),
        // Other string types are not produced by moonbot-worker; an empty name is refused.
        _ => String::new(),
    }
}

/// The rustls server configuration of the QUIC listener: the master's
/// certificate followed by the CA's (an enrolling worker finds the CA its token
/// pins in that chain), and client certificates checked against the CA. A
/// client without a certificate gets through the handshake, but the listener
/// lets it do nothing but enroll; a certificate the CA did not sign (or an
/// expired one) still fails the handshake.
pub fn server_tls_config(master_dir: &Path) -> Result<rustls::ServerConfig, PkiError> {
    let paths = PkiPaths::new(master_dir);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(paths.ca_cert())
        .map_err(|e| PkiError::Tls(format!("{}: {e}", paths.ca_cert().display())))?
    {
        let cert =
            cert.map_err(|e| PkiError::Tls(format!("{}: {e}", paths.ca_cert().display())))?;
        roots
            .add(cert)
            .map_err(|e| PkiError::Tls(format!("ca.crt: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| PkiError::Tls(e.to_string()))?;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for file in [paths.master_cert(), paths.ca_cert()] {
        for cert in CertificateDer::pem_file_iter(&file)
            .map_err(|e| PkiError::Tls(format!("{}: {e}", file.display())))?
        {
            chain.push(cert.map_err(|e| PkiError::Tls(format!("{}: {e}", file.display())))?);
        }
    }
    let key = PrivateKeyDer::from_pem_file(paths.master_key())
        .map_err(|e| PkiError::Tls(format!("{}: {e}", paths.master_key().display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![moonbot_worker::protocol::ALPN.to_vec()];
    Ok(config)
}

/// A CSR for `name` from a fresh key, for tests.
#[cfg(test)]
pub(crate) fn test_csr(name: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_worker_csr_with_the_name_from_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &["ci.example.org".into()]).unwrap();
        assert!(matches!(create(dir.path(), &[]), Err(PkiError::Exists(_))));
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "arm-1");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let signed = sign_worker_csr(dir.path(), &csr, WORKER_CERT_VALIDITY).unwrap();
        assert_eq!(signed.name, "arm-1");
        let der = CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
        assert_eq!(revoke::cert_facts(der.as_ref()).unwrap().name, "arm-1");
        server_tls_config(dir.path()).unwrap();
    }

    #[test]
    fn refuses_a_csr_without_a_usable_name() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &[]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "../evil");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(
            sign_worker_csr(dir.path(), &csr, WORKER_CERT_VALIDITY),
            Err(PkiError::BadName(_))
        ));
    }
}
