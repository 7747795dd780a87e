//! `janitor = { build_horizon = "180d", log_horizon = "30d", change_horizon =
//! "90d", every = "1h" }`: how long history is kept. Buildbot's
//! `JanitorConfigurator`, and more: builds (with their steps, logs and
//! properties) and changes go too, not only log chunks. Every horizon is
//! optional; without one, that kind of history is kept forever. Without the
//! section there is no janitor.

use super::FILE;
use super::settings::plain_section;
use crate::lua::{ConfigError, Fields, RawValue};

/// The janitor's settings; horizons and the interval in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanitorConfig {
    /// Builds that completed longer ago are deleted, with their steps, logs
    /// and properties.
    pub build_horizon_s: Option<u64>,
    /// The content of logs of builds that completed longer ago is deleted
    /// (the log's row stays and says so).
    pub log_horizon_s: Option<u64>,
    /// Changes older than this are deleted, with their files and properties.
    pub change_horizon_s: Option<u64>,
    /// Time between two passes (default one hour); the first pass comes one
    /// interval after the master starts.
    pub every_s: u64,
}

/// Default time between two passes.
pub const DEFAULT_EVERY_S: u64 = 3600;

pub(super) fn compile_janitor(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<JanitorConfig>> {
    if raw.is_none() {
        return Some(None);
    }
    let entries = plain_section(raw, "janitor", errors)?;
    let mut f = Fields::new("janitor", FILE.to_string(), entries);
    let config = JanitorConfig {
        build_horizon_s: f.duration_s("build_horizon"),
        log_horizon_s: f.duration_s("log_horizon"),
        change_horizon_s: f.duration_s("change_horizon"),
        every_s: f.duration_s("every").unwrap_or(DEFAULT_EVERY_S),
    };
    if config.build_horizon_s.is_none()
        && config.log_horizon_s.is_none()
        && config.change_horizon_s.is_none()
    {
        f.error(
            "janitor: give at least one of 'build_horizon', 'log_horizon' and 'change_horizon'"
                .into(),
        );
    }
    f.finish(errors);
    Some(Some(config))
}
