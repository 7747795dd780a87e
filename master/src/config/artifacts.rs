//! `artifacts = { dir = "artifacts", keep_days = 30, max_size = 8 * 2^30 }`:
//! where uploads are kept on the master, for how long, and how large an
//! upload may be when its step sets no `max_size`. Every field is optional.

use super::FILE;
use super::settings::plain_section;
use crate::lua::{ConfigError, Fields, RawValue};

/// Where artifacts live and how long they stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsConfig {
    /// Relative to the master's directory (or absolute).
    pub dir: String,
    /// Days an artifact is kept after its upload.
    pub keep_days: u64,
    /// Bytes an upload may hold when its step sets no `max_size`.
    pub max_size: u64,
}

impl ArtifactsConfig {
    /// The store these settings name, for a master in `master_dir`.
    pub fn store(&self, master_dir: &std::path::Path) -> crate::artifacts::ArtifactStore {
        crate::artifacts::ArtifactStore::new(master_dir.join(&self.dir))
    }
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            dir: "artifacts".into(),
            keep_days: 30,
            max_size: 8 << 30,
        }
    }
}

pub(super) fn compile_artifacts(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<ArtifactsConfig> {
    let defaults = ArtifactsConfig::default();
    if raw.is_none() {
        return Some(defaults);
    }
    let entries = plain_section(raw, "artifacts", errors)?;
    let mut f = Fields::new("artifacts", FILE.to_string(), entries);
    let config = ArtifactsConfig {
        dir: f.string("dir").unwrap_or(defaults.dir),
        keep_days: f
            .integer("keep_days", 1, 100 * 365)
            .map_or(defaults.keep_days, |n| n as u64),
        max_size: f
            .integer("max_size", 1, i64::MAX)
            .map_or(defaults.max_size, |n| n as u64),
    };
    if config.dir.is_empty() {
        f.error("artifacts: 'dir' is empty".into());
    }
    f.finish(errors);
    Some(config)
}
