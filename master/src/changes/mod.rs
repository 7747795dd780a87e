//! Change sources: what turns a commit somewhere into a change here. They
//! only produce changes ([`crate::data::Data::add_change`]); schedulers
//! decide what to build.
//!
//! Each forge's webhook dialect is a module that reads that forge's payload
//! into [`NewChange`]s, with no I/O, so its semantics are tested on the
//! forges' own example bodies; `www/hooks.rs` verifies the request and
//! stores what the dialect read.

pub mod gitea;
pub mod github;
pub mod gitlab;

use crate::data::changes::NewChange;

/// What a hook delivery asks of the master.
#[derive(Debug, Default, PartialEq)]
pub struct HookOutcome {
    /// The changes to store, oldest first.
    pub changes: Vec<NewChange>,
    /// What was done or ignored, for the answer and the log.
    pub note: String,
}

pub use crate::config::HookSettings;

/// Whether a commit message asks not to be built (`[ci skip]` or
/// `[skip ci]`, as Buildbot and the forges read it).
pub fn skips_ci(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("[ci skip]") || lower.contains("[skip ci]")
}

/// Seconds since 1970 of an RFC 3339 time (`2019-05-15T15:19:25Z`).
pub fn rfc3339_seconds(text: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}
