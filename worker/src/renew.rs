//! Renewing the worker's certificate before it expires, with the same key.
//!
//! Worker certificates have a lifetime (`--cert-validity`, a year by default);
//! a volunteer's worker should not stop working the day it ends. When less than
//! a third of the lifetime is left ([`renewal_due`]), the worker sends the
//! master a CSR made from its existing `worker.key` ([`renewal_request`]) on its
//! control stream, and stores the answer ([`store_renewed_certificate`]) in place
//! of `worker.crt`. The key never changes and never leaves the machine. The
//! connection loop decides when to ask; these functions only do the file work.

use crate::protocol::CERTIFICATE_BACKDATE;
use crate::workdir::{self, WorkerDir};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a renewal step failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// A file of the worker directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `worker.crt`, the new certificate or the key is unusable.
    #[error("{0}")]
    Bad(String),
    /// Making the CSR failed.
    #[error("could not make the renewal request: {0}")]
    Crypto(#[from] rcgen::Error),
    #[error(transparent)]
    Workdir(#[from] workdir::WorkdirError),
}

/// A certificate's validity, seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Whether less than a third of the lifetime (not counting the backdating
    /// for clock skew) is left at `now`.
    pub fn renewal_due_at(&self, now: i64) -> bool {
        let lifetime = self.lifetime();
        if lifetime <= 0 {
            return true;
        }
        (self.not_after - now) * 3 < lifetime
    }

    /// The moment (Unix seconds) from which [`Self::renewal_due_at`] holds.
    pub fn renew_after(&self) -> i64 {
        self.not_after - self.lifetime().max(0) / 3
    }

    /// Seconds the certificate is meant to be used, not counting the
    /// backdating for clock skew.
    fn lifetime(&self) -> i64 {
        self.not_after - self.not_before - CERTIFICATE_BACKDATE.as_secs() as i64
    }
}

fn read(path: &std::path::Path) -> Result<String, RenewError> {
    std::fs::read_to_string(path).map_err(|source| RenewError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Validity of a PEM certificate.
pub fn validity_of(cert_pem: &str) -> Result<Validity, RenewError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| RenewError::Bad(format!("certificate: {e}")))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| RenewError::Bad(format!("certificate: {e}")))?;
    Ok(Validity {
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

/// The validity of `worker.crt`.
pub fn certificate_validity(dir: &WorkerDir) -> Result<Validity, RenewError> {
    validity_of(&read(&dir.cert_path())?)
}

/// Whether `worker.crt` should be renewed now: less than a third of its
/// lifetime remains.
pub fn renewal_due(dir: &WorkerDir) -> Result<bool, RenewError> {
    Ok(certificate_validity(dir)?.renewal_due_at(now()))
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn load_key(dir: &WorkerDir) -> Result<rcgen::KeyPair, RenewError> {
    let pem = read(&dir.key_path())?;
    rcgen::KeyPair::from_pem(&pem)
        .map_err(|e| RenewError::Bad(format!("{}: {e}", dir.key_path().display())))
}

/// A PEM CSR for this worker's name from its existing `worker.key`, for
/// [`crate::protocol::WorkerMessage::RenewCertificate`].
pub fn renewal_request(dir: &WorkerDir) -> Result<String, RenewError> {
    let key = load_key(dir)?;
    Ok(workdir::certificate_request(&key, &dir.name)?)
}

/// Replace `worker.crt` with `cert_pem` (from
/// [`crate::protocol::MasterMessage::RenewedCertificate`]) after checking it is
/// for this worker's name and key. Atomic: a temporary file renamed over the old.
pub fn store_renewed_certificate(dir: &WorkerDir, cert_pem: &str) -> Result<(), RenewError> {
    let key = load_key(dir)?;
    crate::enroll::check_certificate(cert_pem, &key, &dir.name)
        .map_err(|e| RenewError::Bad(e.to_string()))?;
    let path = dir.cert_path();
    let tmp = path.with_extension("crt.tmp");
    let io = |source| RenewError::Io {
        path: tmp.clone(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(cert_pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(|source| RenewError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third_of_the_lifetime() {
        let backdate = CERTIFICATE_BACKDATE.as_secs() as i64;
        let v = Validity {
            not_before: 1000 - backdate,
            not_after: 1000 + 300,
        };
        assert!(!v.renewal_due_at(1000));
        assert!(!v.renewal_due_at(1000 + 200));
        assert!(v.renewal_due_at(1000 + 201));
        assert!(v.renewal_due_at(2000));
        assert_eq!(
            v.renew_after(),
            1000 + 200,
            "the connection loop's schedule agrees"
        );
        let broken = Validity {
            not_before: 10,
            not_after: 10,
        };
        assert!(broken.renewal_due_at(0));
    }
}
