//! Renewing a connected worker's certificate: same name, same key, same
//! lifetime as the certificate it presented.
//!
//! The worker asks on its control stream when a third of its certificate's
//! lifetime is left (`moonbot_worker::renew`); the connection already proved
//! it holds a valid, unrevoked certificate of this CA, so nobody has to hand
//! out a new token. Keeping the key means a stolen connection gains nothing it
//! did not have, and keeping the lifetime means `--cert-validity` holds for the
//! worker's whole life.

use super::revoke::{RevocationList, cert_facts};
use super::{CLOCK_SKEW_ALLOWANCE, PkiError, parse_worker_csr, sign_parsed, unix_now};
use std::path::Path;
use std::time::Duration;

/// Sign a new certificate for worker `name`, which presented `presented_cert_der`
/// (already verified by TLS) and sent `csr_pem`. Returns the certificate (PEM),
/// recorded as issued. Refused when the presented certificate is not `name`'s,
/// is expired or revoked, or the CSR is for another name or key.
pub fn renew_worker_certificate(
    master_dir: &Path,
    name: &str,
    presented_cert_der: &[u8],
    csr_pem: &str,
) -> Result<String, PkiError> {
    let facts = cert_facts(presented_cert_der)?;
    if facts.name != name {
        return Err(PkiError::Refused(format!(
            "the certificate is for '{}', not for worker '{name}'",
            facts.name
        )));
    }
    if facts.not_after <= unix_now() {
        return Err(PkiError::Refused(format!(
            "the certificate of worker '{name}' has expired"
        )));
    }
    if RevocationList::load(master_dir)?.revokes(&facts) {
        return Err(PkiError::Refused(format!(
            "certificate of worker '{name}' has been revoked"
        )));
    }
    let csr = parse_worker_csr(csr_pem)?;
    if csr.name != name {
        return Err(PkiError::Refused(format!(
            "the renewal request names '{}', not worker '{name}'",
            csr.name
        )));
    }
    let (_, presented) = x509_parser::parse_x509_certificate(presented_cert_der)
        .map_err(|e| PkiError::BadCert(e.to_string()))?;
    use rcgen::PublicKeyData;
    if presented.tbs_certificate.subject_pki.raw
        != csr.params.public_key.subject_public_key_info().as_slice()
    {
        return Err(PkiError::Refused(
            "the renewal request is for a different key than the certificate".into(),
        ));
    }
    let lifetime = facts.not_after - facts.not_before - CLOCK_SKEW_ALLOWANCE.as_secs() as i64;
    let validity = Duration::from_secs(lifetime.max(60) as u64);
    Ok(sign_parsed(master_dir, csr, validity)?.cert_pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{create, revoke, sign_worker_csr};
    use moonbot_worker::renew;
    use moonbot_worker::workdir::{self, CreateOptions, WorkerDir};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn a_worker_renews_with_its_key_for_the_same_lifetime() {
        let master = tempfile::tempdir().unwrap();
        create(master.path(), &[]).unwrap();
        let wdir = tempfile::tempdir().unwrap();
        let csr_path = workdir::create(
            wdir.path(),
            &CreateOptions {
                master: "127.0.0.1:9989".into(),
                name: "w1".into(),
                ca_pem: std::fs::read_to_string(master.path().join("pki/ca.crt")).unwrap(),
                admin: None,
                host_description: None,
            },
        )
        .unwrap();
        let csr = std::fs::read_to_string(csr_path).unwrap();
        let first = sign_worker_csr(master.path(), &csr, Duration::from_secs(3 * 86400)).unwrap();
        std::fs::write(wdir.path().join("worker.crt"), &first.cert_pem).unwrap();
        let dir = WorkerDir::load(wdir.path()).unwrap();
        assert!(!renew::renewal_due(&dir).unwrap());

        let request = renew::renewal_request(&dir).unwrap();
        let der = CertificateDer::from_pem_slice(first.cert_pem.as_bytes()).unwrap();
        let renewed =
            renew_worker_certificate(master.path(), "w1", der.as_ref(), &request).unwrap();
        let old = renew::validity_of(&first.cert_pem).unwrap();
        let new = renew::validity_of(&renewed).unwrap();
        assert_eq!(
            new.not_after - new.not_before,
            old.not_after - old.not_before
        );
        assert_eq!(
            crate::pki::issued::list(master.path(), "w1").unwrap().len(),
            2
        );
        renew::store_renewed_certificate(&dir, &renewed).unwrap();
        assert_eq!(std::fs::read_to_string(dir.cert_path()).unwrap(), renewed);

        // Another name, another key, or a revoked certificate: refused.
        assert!(renew_worker_certificate(master.path(), "w2", der.as_ref(), &request).is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        let other_key = workdir::certificate_request(&key, "w1").unwrap();
        let e =
            renew_worker_certificate(master.path(), "w1", der.as_ref(), &other_key).unwrap_err();
        assert!(e.to_string().contains("different key"), "{e}");
        assert!(renew::store_renewed_certificate(&dir, &first.cert_pem).is_ok());
        let stranger =
            sign_worker_csr(master.path(), &other_key, Duration::from_secs(86400)).unwrap();
        assert!(renew::store_renewed_certificate(&dir, &stranger.cert_pem).is_err());
        revoke::revoke_worker(master.path(), "w1").unwrap();
        let e = renew_worker_certificate(master.path(), "w1", der.as_ref(), &request).unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
    }

    #[test]
    fn a_short_lived_certificate_is_due_for_renewal() {
        let master = tempfile::tempdir().unwrap();
        create(master.path(), &[]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = workdir::certificate_request(&key, "w1").unwrap();
        let signed = sign_worker_csr(master.path(), &csr, Duration::from_secs(30)).unwrap();
        let v = renew::validity_of(&signed.cert_pem).unwrap();
        assert_eq!(
            v.not_after - v.not_before,
            30 + CLOCK_SKEW_ALLOWANCE.as_secs() as i64
        );
        // Due in the last third (10 s) of the 30 s lifetime.
        assert!(!v.renewal_due_at(unix_now()));
        assert!(!v.renewal_due_at(v.not_after - 11));
        assert!(v.renewal_due_at(v.not_after - 9));
    }
}
