//! The record of every worker certificate this CA signed, one file per worker
//! name: `MASTERDIR/pki/issued/NAME.json`, a JSON array of serial and validity.
//!
//! The CA keeps no other memory of what it signed; without this record,
//! `moonbot revoke-worker NAME` could not say which certificates to refuse.
//! Certificates are recorded as they are signed, by `sign-worker`, enrollment
//! and renewal alike.

use super::{PkiError, PkiPaths, io, read_json_or_default, write_json};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// Validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// When it was signed.
    pub issued_at: i64,
}

/// Serializes read-modify-write of the record files within this process (the
/// master signs enrollments and renewals from many tasks).
static RECORD_LOCK: Mutex<()> = Mutex::new(());

fn file(master_dir: &Path, name: &str) -> PathBuf {
    // `name` passed `valid_worker_name`: no '/' and no leading '.'.
    PkiPaths::new(master_dir)
        .issued()
        .join(format!("{name}.json"))
}

/// Every certificate recorded for `name`, oldest first (empty when none).
pub fn list(master_dir: &Path, name: &str) -> Result<Vec<IssuedCert>, PkiError> {
    read_json_or_default(&file(master_dir, name))
}

/// Add a certificate to `name`'s record.
pub fn record(master_dir: &Path, name: &str, cert: &IssuedCert) -> Result<(), PkiError> {
    let _guard = RECORD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PkiPaths::new(master_dir).issued();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut all = list(master_dir, name)?;
    all.push(cert.clone());
    write_json(&file(master_dir, name), &all)
}
