//! Change sources: what turns a commit somewhere into a change here. They
//! only produce changes ([`crate::data::Data::add_change`]); schedulers
//! decide what to build.
//!
//! The git poller (`git_poller.rs`, with the git command line in `git.rs`)
//! is a service: it runs on its own timer and keeps its position in the
//! database.
//!
//! Each forge's webhook dialect is a module that reads that forge's payload
//! into [`NewChange`]s, with no I/O, so its semantics are tested on the
//! forges' own example bodies; `www/hooks.rs` verifies the request and
//! stores what the dialect read.

pub mod base;
pub mod bitbucket;
pub mod forge_api;
pub mod git;
pub mod git_poller;
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

/// Why a payload cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {event} payload has no {field}")]
pub struct PayloadError {
    pub event: String,
    pub field: &'static str,
}

impl PayloadError {
    /// The error for a `field` missing from an `event` payload, as a
    /// function of the field (each reader's `missing`).
    pub(crate) fn missing_in(event: &str) -> impl Fn(&'static str) -> PayloadError + '_ {
        move |field| PayloadError {
            event: event.to_string(),
            field,
        }
    }
}

/// Whether a commit message asks not to be built (`[ci skip]` or
/// `[skip ci]`, as Buildbot and the forges read it).
pub fn skips_ci(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("[ci skip]") || lower.contains("[skip ci]")
}

/// The string at `path` in a payload.
pub(crate) fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `Name <email>` of a payload's person (`{"name", "email"}`), or the name
/// alone.
pub(crate) fn person(p: &serde_json::Value) -> Option<String> {
    let name = p.get("name")?.as_str()?;
    Some(match p.get("email").and_then(serde_json::Value::as_str) {
        Some(email) if !email.is_empty() => format!("{name} <{email}>"),
        _ => name.to_string(),
    })
}

/// A forge's example body from `tests/fixtures/webhooks/DIALECT/NAME.json`.
#[cfg(test)]
pub(crate) fn fixture(dialect: &str, name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../tests/fixtures/webhooks/{dialect}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Read each `(file, event, changes, branch of the first)` fixture of a
/// dialect with `read`, and check how many changes it makes and on which
/// branch.
#[cfg(test)]
pub(crate) fn check_fixtures(
    dialect: &str,
    read: fn(&str, &serde_json::Value, &HookSettings) -> Result<HookOutcome, PayloadError>,
    cases: &[(&str, &str, usize, &str)],
) {
    for &(file, event, count, branch) in cases {
        let out = read(event, &fixture(dialect, file), &HookSettings::default()).unwrap();
        assert_eq!(out.changes.len(), count, "{file}: {out:?}");
        if let Some(first) = out.changes.first() {
            assert_eq!(first.branch.as_deref(), Some(branch), "{file}");
        }
    }
}

/// Seconds since 1970 of an RFC 3339 time (`2019-05-15T15:19:25Z`).
pub fn rfc3339_seconds(text: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}
