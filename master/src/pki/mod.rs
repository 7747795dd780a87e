//! The master's certificate authority: creating it, the master's QUIC server
//! certificate, signing worker CSRs, and the TLS configuration that admits only
//! workers whose certificate this CA signed.
//!
//! Files live in `MASTERDIR/pki/`: `ca.crt`, `ca.key`, `master.crt`, `master.key`.
//! Private keys are written with mode 0600. Worker keys never come here: a worker
//! sends a CSR and gets back a certificate.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a worker certificate is valid.
pub const WORKER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86400);

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
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

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// A worker certificate made by [`sign_worker_csr`].
#[derive(Debug)]
pub struct SignedWorker {
    pub name: String,
    pub cert_pem: String,
    pub not_after: String,
}

/// Whether `name` is acceptable as a worker name.
pub fn valid_worker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Sign a worker's CSR with the master's CA. The certificate keeps only the CSR's
/// subject (the worker name) and public key; everything else is set here.
pub fn sign_worker_csr(master_dir: &Path, csr_pem: &str) -> Result<SignedWorker, PkiError> {
    let paths = PkiPaths::new(master_dir);
    let ca_key = KeyPair::from_pem(&read(&paths.ca_key())?).map_err(cert_err("reading ca.key"))?;
    let issuer = Issuer::from_ca_cert_pem(&read(&paths.ca_cert())?, ca_key)
        .map_err(cert_err("reading ca.crt"))?;
    let mut csr =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(cert_err("reading the CSR"))?;
    let name = match csr.params.distinguished_name.get(&DnType::CommonName) {
        Some(value) => dn_text(value),
        None => return Err(PkiError::BadName("no common name".into())),
    };
    if !valid_worker_name(&name) {
        return Err(PkiError::BadName(format!("'{name}'")));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.clone());
    let params = &mut csr.params;
    params.distinguished_name = dn;
    params.subject_alt_names = Vec::<SanType>::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(params, (WORKER_CERT_VALIDITY.as_secs() / 86400) as i64);
    let not_after = params.not_after;
    let cert = csr
        .signed_by(&issuer)
        .map_err(cert_err("signing the worker certificate"))?;
    Ok(SignedWorker {
        name,
        cert_pem: cert.pem(),
        not_after: not_after.date().to_string(),
    })
}

fn dn_text(value: &DnValue) -> String {
    match value {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_string(),
        // Other string types are not produced by moonbot-worker; an empty name is refused.
        _ => String::new(),
    }
}

/// The rustls server configuration of the QUIC listener: the master's certificate,
/// and client certificates required and checked against the CA.
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
    .build()
    .map_err(|e| PkiError::Tls(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(paths.master_cert())
        .map_err(|e| PkiError::Tls(format!("{}: {e}", paths.master_cert().display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::Tls(format!("{}: {e}", paths.master_cert().display())))?;
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

/// The worker name (subject common name) of a certificate the TLS layer already verified.
pub fn worker_name_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(name)
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
        let signed = sign_worker_csr(dir.path(), &csr).unwrap();
        assert_eq!(signed.name, "arm-1");
        let der = CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
        assert_eq!(worker_name_of(&der).as_deref(), Some("arm-1"));
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
            sign_worker_csr(dir.path(), &csr),
            Err(PkiError::BadName(_))
        ));
    }
}
