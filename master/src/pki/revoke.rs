//! Revoking worker certificates: `MASTERDIR/pki/revoked.json`, written by
//! `moonbot revoke-worker`, read by the listener for every connecting worker.
//!
//! A certificate is revoked when its serial is listed, or when it names a
//! revoked worker and was signed before the revocation (its `not_before` is
//! earlier than the revocation time minus [`CLOCK_SKEW_ALLOWANCE`], the
//! backdating every worker certificate gets). The second rule covers
//! certificates signed before the master kept [`super::issued`] records, and
//! lets the same name enroll again at once with a fresh certificate
//! (`not_before` has whole seconds: a certificate signed earlier in the second
//! of the revocation is caught by its serial, one signed later is not revoked).
//!
//! The listener holds one [`Revocations`]: it re-reads the file only when its
//! modification time or size changed, so a thousand reconnecting workers cost
//! a thousand `stat`s, not a thousand parses.

use super::{
    CLOCK_SKEW_ALLOWANCE, PkiError, PkiPaths, io, issued, read_json_or_default, unix_now,
    write_json,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    pub name: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// When the certificate would have expired (it can be dropped from the list after).
    pub not_after: i64,
    pub revoked_at: i64,
}

/// The contents of `revoked.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    #[serde(default)]
    pub certificates: Vec<RevokedCert>,
    /// Worker name → Unix time: certificates of that worker signed before it are revoked.
    #[serde(default)]
    pub names: BTreeMap<String, i64>,
}

/// What the revocation rules look at in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub name: String,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Read the worker name, serial and validity of a certificate (DER).
pub fn cert_facts(cert_der: &[u8]) -> Result<CertFacts, PkiError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::BadCert(e.to_string()))?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| PkiError::BadCert("no common name".into()))?
        .to_string();
    Ok(CertFacts {
        name,
        serial: hex::encode(parsed.raw_serial()),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

impl RevocationList {
    /// The list in `master_dir` (empty when there is no file).
    pub fn load(master_dir: &Path) -> Result<RevocationList, PkiError> {
        read_json_or_default(&PkiPaths::new(master_dir).revoked())
    }

    /// Whether the list revokes this certificate.
    pub fn revokes(&self, cert: &CertFacts) -> bool {
        if self
            .certificates
            .iter()
            .any(|r| r.serial == cert.serial && r.name == cert.name)
        {
            return true;
        }
        match self.names.get(&cert.name) {
            Some(&before) => cert.not_before < before - CLOCK_SKEW_ALLOWANCE.as_secs() as i64,
            None => false,
        }
    }
}

/// What [`revoke_worker`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Unexpired certificates of the worker found in the issued records and revoked now.
    pub certificates: usize,
    /// How many certificates the issued records hold for this name in all.
    pub recorded: usize,
}

static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Revoke every certificate of worker `name` signed until now: the unexpired
/// ones the issued records know by serial, and any other (older, unrecorded)
/// by name and signing time.
pub fn revoke_worker(master_dir: &Path, name: &str) -> Result<RevokeOutcome, PkiError> {
    let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let now = unix_now();
    let mut list = RevocationList::load(master_dir)?;
    let issued = issued::list(master_dir, name)?;
    let mut revoked = 0;
    for cert in issued.iter().filter(|c| c.not_after > now) {
        if !list.certificates.iter().any(|r| r.serial == cert.serial) {
            list.certificates.push(RevokedCert {
                name: name.to_string(),
                serial: cert.serial.clone(),
                not_after: cert.not_after,
                revoked_at: now,
            });
        }
        revoked += 1;
    }
    // Recorded certificates of this very second are listed by serial above.
    list.names.insert(name.to_string(), now);
    // Expired certificates need no listing.
    list.certificates.retain(|r| r.not_after > now);
    let dir = PkiPaths::new(master_dir).dir;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_json(&PkiPaths::new(master_dir).revoked(), &list)?;
    Ok(RevokeOutcome {
        certificates: revoked,
        recorded: issued.len(),
    })
}

/// The modification time and size of `revoked.json`, or `None` when it is absent.
type Stamp = Option<(SystemTime, u64)>;

/// A loaded list, or why it could not be read.
type Loaded = Arc<Result<RevocationList, String>>;

/// The revocation list as the listener sees it: re-read only when the file changed.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    master_dir: PathBuf,
    cache: Mutex<Option<(Stamp, Loaded)>>,
}

impl Revocations {
    pub fn new(master_dir: &Path) -> Revocations {
        Revocations {
            path: PkiPaths::new(master_dir).revoked(),
            master_dir: master_dir.to_path_buf(),
            cache: Mutex::new(None),
        }
    }

    fn current(&self) -> Loaded {
        let stamp: Stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, list)) = cache.as_ref()
            && *cached == stamp
        {
            return list.clone();
        }
        let list = Arc::new(RevocationList::load(&self.master_dir).map_err(|e| e.to_string()));
        *cache = Some((stamp, list.clone()));
        list
    }

    /// `Some(reason)` when the certificate (DER) must be refused. An unreadable
    /// `revoked.json` refuses every certificate: failing open would let a
    /// revoked worker in.
    pub fn check(&self, cert_der: &[u8]) -> Option<String> {
        match cert_facts(cert_der) {
            Ok(facts) => self.check_facts(&facts),
            Err(e) => Some(format!("unreadable certificate: {e}")),
        }
    }

    /// [`Self::check`] for a certificate already read with [`cert_facts`].
    pub fn check_facts(&self, facts: &CertFacts) -> Option<String> {
        match self.current().as_ref() {
            Ok(list) if list.revokes(facts) => Some(format!(
                "certificate of worker '{}' has been revoked",
                facts.name
            )),
            Ok(_) => None,
            Err(e) => Some(format!(
                "the master cannot read its revocation list ({e}); refusing every worker until it is fixed"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{WORKER_CERT_VALIDITY, create, sign_worker_csr};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    fn csr(name: &str) -> String {
        crate::pki::test_csr(name)
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn revoking_a_worker_refuses_its_certificates_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &[]).unwrap();
        let a = sign_worker_csr(dir.path(), &csr("a"), WORKER_CERT_VALIDITY).unwrap();
        let a2 = sign_worker_csr(dir.path(), &csr("a"), WORKER_CERT_VALIDITY).unwrap();
        let b = sign_worker_csr(dir.path(), &csr("b"), WORKER_CERT_VALIDITY).unwrap();
        assert_eq!(a.serial.len(), 32);
        assert_ne!(a.serial, a2.serial);
        let cache = Revocations::new(dir.path());
        assert!(cache.check(&der(&a.cert_pem)).is_none());

        let outcome = revoke_worker(dir.path(), "a").unwrap();
        assert_eq!(
            outcome,
            RevokeOutcome {
                certificates: 2,
                recorded: 2
            }
        );
        for pem in [&a.cert_pem, &a2.cert_pem] {
            let reason = cache.check(&der(pem)).expect("revoked");
            assert_eq!(reason, "certificate of worker 'a' has been revoked");
        }
        assert!(cache.check(&der(&b.cert_pem)).is_none());
        let list = RevocationList::load(dir.path()).unwrap();
        assert_eq!(list.certificates.len(), 2);
        assert!(list.certificates.iter().any(|c| c.serial == a.serial));
    }

    #[test]
    fn an_unrecorded_certificate_is_revoked_by_name_and_age() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &[]).unwrap();
        let old = sign_worker_csr(dir.path(), &csr("legacy"), WORKER_CERT_VALIDITY).unwrap();
        // As if it had been signed before the master kept records.
        std::fs::remove_file(dir.path().join("pki/issued/legacy.json")).unwrap();
        // Unrecorded certificates are caught by the second they were signed in.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let outcome = revoke_worker(dir.path(), "legacy").unwrap();
        assert_eq!(outcome.certificates, 0);
        assert_eq!(outcome.recorded, 0);
        assert!(
            Revocations::new(dir.path())
                .check(&der(&old.cert_pem))
                .is_some()
        );
        // A certificate signed later (even in the same second) for the same name is not.
        let list = RevocationList::load(dir.path()).unwrap();
        let later = CertFacts {
            name: "legacy".into(),
            serial: "00".into(),
            not_before: list.names["legacy"] - CLOCK_SKEW_ALLOWANCE.as_secs() as i64,
            not_after: i64::MAX,
        };
        assert!(!list.revokes(&later));
    }

    #[test]
    fn the_cache_notices_a_new_list_and_a_broken_one_refuses_all() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &[]).unwrap();
        let a = sign_worker_csr(dir.path(), &csr("a"), WORKER_CERT_VALIDITY).unwrap();
        let cache = Revocations::new(dir.path());
        assert!(cache.check(&der(&a.cert_pem)).is_none());
        revoke_worker(dir.path(), "a").unwrap();
        assert!(cache.check(&der(&a.cert_pem)).is_some());
        std::fs::write(dir.path().join("pki/revoked.json"), "{ not json").unwrap();
        let b = sign_worker_csr(dir.path(), &csr("b"), WORKER_CERT_VALIDITY).unwrap();
        assert!(
            cache
                .check(&der(&b.cert_pem))
                .unwrap()
                .contains("cannot read its revocation list")
        );
    }
}
