//! One-time enrollment tokens: `moonbot worker-token` makes them, a new worker
//! redeems one over QUIC for its certificate.
//!
//! Volunteers run workers behind NAT on machines the admin never touches, so
//! the CSR-by-mail dance of `sign-worker` does not scale. A token is one line
//! the admin hands over; it names the master, the worker and the CA (see
//! [`moonbot_worker::enroll`] for the format) and carries a 256-bit secret.
//!
//! The master stores only SHA-256 of the secret, with the worker name, the
//! expiry and the validity of the certificate to issue, one file per token in
//! `MASTERDIR/pki/enrollments/` (mode 0600). Redeeming renames the file to
//! `….used` under a lock before signing, so a token works once even when two
//! workers race with it; a used, expired, unknown or forged token gets a
//! refusal that says which, and the master's log never shows the secret.
//!
//! The QUIC side (a connection without a client certificate, which may do
//! nothing but enroll) is `crate::workers::enrollment`; this module does no I/O
//! but the token files.

use super::{
    PkiError, PkiPaths, SignedWorker, format_unix, io, parse_worker_csr, sign_parsed, unix_now,
    valid_worker_name, write_json,
};
use moonbot_worker::enroll::{EnrollmentToken, secret_hash};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tracing::warn;

/// Suffix of a token file that has been redeemed.
const USED_SUFFIX: &str = ".used";

/// What the master keeps of a token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The worker the token enrolls.
    pub name: String,
    /// SHA-256 of the secret's bytes, hex.
    pub secret_sha256: String,
    pub created: i64,
    /// Unix time after which the token is refused.
    pub expires: i64,
    /// Lifetime of the certificate it gets, in seconds.
    pub cert_validity_s: u64,
    /// When it was redeemed, and from where.
    #[serde(default)]
    pub used_at: Option<i64>,
    #[serde(default)]
    pub used_from: Option<String>,
}

/// A token just made by [`create_token`].
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The text to give to the worker's owner.
    pub token: String,
    pub name: String,
    pub master: String,
    pub expires: i64,
    /// The record's file.
    pub file: PathBuf,
}

/// Make a token for worker `name` that dials `master` (`HOST:PORT`), valid for
/// `expires_in`, whose certificate will be valid for `cert_validity`.
pub fn create_token(
    master_dir: &Path,
    name: &str,
    master: &str,
    expires_in: Duration,
    cert_validity: Duration,
) -> Result<NewToken, PkiError> {
    if !valid_worker_name(name) {
        return Err(PkiError::BadName(format!(
            "'{name}' (use 1-64 letters, digits, '.', '_' or '-', not starting with '-' or '.')"
        )));
    }
    let fingerprint = super::ca_fingerprint(master_dir)?;
    let token = EnrollmentToken::generate(master, name, &fingerprint);
    let hash = secret_hash(&token.secret).expect("a generated secret has the right length");
    let now = unix_now();
    let record = TokenRecord {
        name: name.to_string(),
        secret_sha256: hex::encode(hash),
        created: now,
        expires: now.saturating_add(expires_in.as_secs() as i64),
        cert_validity_s: cert_validity.as_secs(),
        used_at: None,
        used_from: None,
    };
    let dir = PkiPaths::new(master_dir).enrollments();
    create_private_dir(&dir)?;
    let file = dir.join(format!("{name}-{}.json", hex::encode(&hash[..6])));
    write_json(&file, &record)?;
    Ok(NewToken {
        token: token.encode(),
        name: name.to_string(),
        master: master.to_string(),
        expires: record.expires,
        file,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Why a redemption was refused: the text for the worker (and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// A successful redemption.
#[derive(Debug)]
pub struct Redeemed {
    pub signed: SignedWorker,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

/// Held from finding a token to renaming it, so it is redeemed once.
static REDEEM_LOCK: Mutex<()> = Mutex::new(());

/// Redeem the token whose secret is `secret` (base64url) for a certificate
/// signed from `csr_pem`, whose CN must be the token's worker name. `peer` is
/// recorded with the used token.
pub fn redeem(
    master_dir: &Path,
    secret: &str,
    csr_pem: &str,
    peer: &str,
) -> Result<Redeemed, Refusal> {
    let refuse = |s: String| Err(Refusal(s));
    let Some(hash) = secret_hash(secret) else {
        return refuse("this is not a valid enrollment token".into());
    };
    let csr = match parse_worker_csr(csr_pem) {
        Ok(csr) => csr,
        Err(e) => return refuse(format!("the certificate request is unusable: {e}")),
    };
    let dir = PkiPaths::new(master_dir).enrollments();
    let (used_path, mut record) = {
        let _guard = REDEEM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let Some((path, record)) = find(&dir, &hash) else {
            return refuse(
                "unknown enrollment token: this master never issued it (was it mistyped, or \
                 made by another master?)"
                    .into(),
            );
        };
        let name = &record.name;
        if path.to_string_lossy().ends_with(USED_SUFFIX) {
            let when = record.used_at.map(format_unix).unwrap_or_default();
            return refuse(format!(
                "the enrollment token for worker '{name}' has already been used{}; ask the \
                 master's admin for a new one",
                if when.is_empty() {
                    String::new()
                } else {
                    format!(" (at {when})")
                }
            ));
        }
        if unix_now() >= record.expires {
            return refuse(format!(
                "the enrollment token for worker '{name}' expired at {}; ask the master's admin \
                 for a new one",
                format_unix(record.expires)
            ));
        }
        if csr.name != *name {
            return refuse(format!(
                "the token is for worker '{name}' but the certificate request names '{}'",
                // The request's text, logged: its control characters shown escaped.
                csr.name.escape_debug()
            ));
        }
        let used_path = PathBuf::from(format!("{}{USED_SUFFIX}", path.display()));
        // The rename is the redemption: whoever renames first has it.
        if let Err(e) = std::fs::rename(&path, &used_path) {
            warn!(
                "could not mark enrollment token {} used: {e}",
                path.display()
            );
            return refuse(
                "the enrollment token could not be redeemed (see the master's log)".into(),
            );
        }
        (used_path, record)
    };
    record.used_at = Some(unix_now());
    record.used_from = Some(peer.to_string());
    if let Err(e) = write_json(&used_path, &record) {
        warn!("could not note the use of {}: {e}", used_path.display());
    }
    let signed = sign_parsed(master_dir, csr, Duration::from_secs(record.cert_validity_s))
        .map_err(|e| {
            warn!(worker = %record.name, "signing an enrolled worker's certificate failed: {e}");
            Refusal("the master could not sign the certificate (see its log)".into())
        })?;
    let ca_pem = super::read(&PkiPaths::new(master_dir).ca_cert()).map_err(|e| {
        warn!("reading ca.crt: {e}");
        Refusal("the master could not read its CA certificate (see its log)".into())
    })?;
    Ok(Redeemed { signed, ca_pem })
}

/// The token file (active or used) whose secret hash is `hash`.
fn find(dir: &Path, hash: &[u8; 32]) -> Option<(PathBuf, TokenRecord)> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let file_name = path.file_name()?.to_string_lossy().into_owned();
        if !(file_name.ends_with(".json") || file_name.ends_with(&format!(".json{USED_SUFFIX}"))) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<TokenRecord>(&bytes) else {
            warn!("{}: not a token record; ignored", path.display());
            continue;
        };
        let Ok(stored) = hex::decode(&record.secret_sha256) else {
            continue;
        };
        // Comparing SHA-256 digests: how long a mismatch takes says nothing
        // an attacker could use to guess the 256-bit secret behind them.
        if stored == hash {
            return Some((path, record));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{WORKER_CERT_VALIDITY, create};

    fn csr(name: &str) -> String {
        crate::pki::test_csr(name)
    }

    fn master() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &[]).unwrap();
        dir
    }

    fn token(dir: &Path, name: &str, expires: Duration) -> EnrollmentToken {
        let made = create_token(
            dir,
            name,
            "ci.example.org:9989",
            expires,
            WORKER_CERT_VALIDITY,
        )
        .unwrap();
        EnrollmentToken::parse(&made.token).unwrap()
    }

    #[test]
    fn a_token_names_the_master_the_worker_and_the_ca_and_stores_no_secret() {
        let dir = master();
        let made = create_token(
            dir.path(),
            "arm-1",
            "ci.example.org:9989",
            Duration::from_secs(3600),
            Duration::from_secs(86400),
        )
        .unwrap();
        let parsed = EnrollmentToken::parse(&made.token).unwrap();
        assert_eq!(parsed.master, "ci.example.org:9989");
        assert_eq!(parsed.name, "arm-1");
        assert_eq!(
            parsed.ca_fingerprint,
            crate::pki::ca_fingerprint(dir.path()).unwrap()
        );
        let stored = std::fs::read_to_string(&made.file).unwrap();
        assert!(!stored.contains(&parsed.secret), "{stored}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&made.file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            create_token(
                dir.path(),
                "../x",
                "h:1",
                Duration::from_secs(1),
                Duration::from_secs(1)
            ),
            Err(PkiError::BadName(_))
        ));
    }

    #[test]
    fn a_token_works_once() {
        let dir = master();
        let t = token(dir.path(), "w1", Duration::from_secs(3600));
        let redeemed = redeem(dir.path(), &t.secret, &csr("w1"), "127.0.0.1:1").unwrap();
        assert_eq!(redeemed.signed.name, "w1");
        assert!(redeemed.ca_pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(crate::pki::issued::list(dir.path(), "w1").unwrap().len(), 1);
        let again = redeem(dir.path(), &t.secret, &csr("w1"), "127.0.0.1:2").unwrap_err();
        assert!(again.0.contains("already been used"), "{again:?}");
    }

    #[test]
    fn expired_forged_and_misnamed_tokens_are_refused() {
        let dir = master();
        let expired = token(dir.path(), "w1", Duration::from_secs(0));
        let e = redeem(dir.path(), &expired.secret, &csr("w1"), "p").unwrap_err();
        assert!(e.0.contains("expired"), "{e:?}");

        let good = token(dir.path(), "w2", Duration::from_secs(3600));
        let mut forged: Vec<char> = good.secret.chars().collect();
        forged[10] = if forged[10] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        let e = redeem(dir.path(), &forged, &csr("w2"), "p").unwrap_err();
        assert!(e.0.contains("unknown enrollment token"), "{e:?}");
        let e = redeem(dir.path(), "short", &csr("w2"), "p").unwrap_err();
        assert!(e.0.contains("not a valid enrollment token"), "{e:?}");

        let e = redeem(dir.path(), &good.secret, &csr("w3"), "p").unwrap_err();
        assert!(e.0.contains("names 'w3'"), "{e:?}");
        // A refused request does not use the token up.
        redeem(dir.path(), &good.secret, &csr("w2"), "p").unwrap();
        assert!(!e.0.contains(&good.secret));
    }

    #[test]
    fn racing_redemptions_succeed_once() {
        let dir = master();
        let t = token(dir.path(), "w1", Duration::from_secs(3600));
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (path, secret) = (path.clone(), t.secret.clone());
                std::thread::spawn(move || redeem(&path, &secret, &csr("w1"), "p").is_ok())
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(wins, 1);
    }
}
