//! `mb.worker{…}`: the workers that may connect, their build slots and how
//! long the master waits for one that went quiet.

use super::FILE;
use crate::lua::fields::{tagged, valid_name};
use crate::lua::{ConfigError, Fields, RawValue};
use std::collections::BTreeMap;

/// A worker that may connect.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub name: String,
    /// Builds this worker may run at once; `None` is unlimited.
    pub max_builds: Option<u32>,
    /// Seconds without a keep-alive after which the worker counts as gone
    /// (`missing_timeout`, default [`DEFAULT_MISSING_TIMEOUT_S`]).
    pub missing_timeout_s: u64,
    /// Seconds a running build waits for its worker to reconnect and re-attach
    /// the running command before it ends RETRY (`reconnect_grace`, default
    /// [`DEFAULT_RECONNECT_GRACE_S`]; 0: it ends RETRY at once).
    pub reconnect_grace_s: u64,
    pub properties: BTreeMap<String, serde_json::Value>,
    /// Addresses to tell when the worker stays away longer than
    /// `missing_timeout` (`notify_on_missing`, Buildbot's name, or
    /// `notify`): a `worker_missing` generator's mail goes to them.
    pub notify_on_missing: Vec<String>,
    pub defined_at: String,
}

/// Default `missing_timeout` of a worker, in seconds.
pub const DEFAULT_MISSING_TIMEOUT_S: u64 = 30;
/// Default `reconnect_grace` of a worker, in seconds.
pub const DEFAULT_RECONNECT_GRACE_S: u64 = 60;

pub(super) fn compile_worker(
    raw: &RawValue,
    errors: &mut Vec<ConfigError>,
) -> Option<WorkerConfig> {
    let (kind, at, entries) = tagged(raw, "mb.worker{…}", "workers", FILE, errors)?;
    if kind != "worker" {
        errors.push(ConfigError {
            location: at,
            message: format!("workers: expected mb.worker{{…}}, got a {kind}"),
        });
        return None;
    }
    let mut f = Fields::new("worker", at.clone(), entries);
    let name = f.required_string("name");
    let max_builds = f.integer("max_builds", 1, 100_000).map(|n| n as u32);
    let missing_timeout_s = f
        .integer("missing_timeout", 2, 86_400)
        .map_or(DEFAULT_MISSING_TIMEOUT_S, |n| n as u64);
    let reconnect_grace_s = f
        .integer("reconnect_grace", 0, 86_400)
        .map_or(DEFAULT_RECONNECT_GRACE_S, |n| n as u64);
    let properties = f.properties("properties");
    let mut notify_on_missing = f.string_list("notify_on_missing");
    notify_on_missing.extend(f.string_list("notify"));
    if let Some(n) = &name
        && !valid_name(n)
    {
        f.error(format!(
            "worker: name '{n}' must be 1-64 letters, digits, '.', '_' or '-', not starting with '-' or '.'"
        ));
    }
    f.finish(errors);
    Some(WorkerConfig {
        name: name?,
        max_builds,
        missing_timeout_s,
        reconnect_grace_s,
        properties,
        notify_on_missing,
        defined_at: at,
    })
}
