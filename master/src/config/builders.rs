//! `mb.builder{…}`: a builder's workers, directory, properties and steps, and
//! what every step has whatever its kind (name, result flags, description).
//! The kind-specific part of each step is compiled by [`crate::steps`].

use super::FILE;
use super::locks::{LockAccess, compile_accesses};
use crate::lua::fields::{MAX_LABEL_CHARS, tagged, valid_label};
use crate::lua::{ConfigError, Fields, LuaFn, RawKey, RawValue};
use crate::render::{self, Renderable};
use crate::steps::{self, StepKind};
use std::collections::BTreeMap;

/// A builder: steps, and the workers that may run them.
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderConfig {
    pub name: String,
    pub workernames: Vec<String>,
    /// Directory for this builder under the worker's `builds/`.
    pub builddir: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub properties: BTreeMap<String, serde_json::Value>,
    pub steps: Vec<StepConfig>,
    /// `None`: the master's `collapse_requests`.
    pub collapse_requests: Option<CollapseRequests>,
    /// A new request for a newer revision of a branch cancels this
    /// builder's older ones (and stops their builds).
    pub cancel_superseded: bool,
    /// Locks every build of this builder holds while it runs.
    pub locks: Vec<LockAccess>,
    /// Higher goes first when builders compete for workers.
    pub priority: i64,
    /// Which free worker a request goes to (Buildbot's `nextWorker`).
    pub next_worker: Option<LuaFn>,
    /// Which pending request is built next (Buildbot's `nextBuild`).
    pub next_build: Option<LuaFn>,
    /// A veto on starting a request on a worker (Buildbot's `canStartBuild`).
    pub can_start_build: Option<LuaFn>,
    /// Builds of a request that ended RETRY before it ends EXCEPTION
    /// (`None`: the master's `max_retries`).
    pub max_retries: Option<u32>,
    pub defined_at: String,
}

/// `collapse_requests`, on a builder or for the whole master: whether
/// pending requests of one builder merge into one build.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CollapseRequests {
    /// Each request is its own build.
    Off,
    /// Requests whose source stamps are compatible merge (Buildbot's default).
    #[default]
    Compatible,
    /// A Lua function of (builder, new, old) decides.
    Lua(crate::lua::LuaFn),
}

/// The directory a builder named `name` gets on the worker when master.lua
/// gives none: the name itself when it is a plain file name (letters,
/// digits, `.`, `_`, `-`, not starting with `.`), else the name with every
/// other character made `_` and a hash of the whole name appended, so
/// `x86/64` and `x86_64` get different directories.
pub fn dir_name(name: &str) -> String {
    let plain = !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        return name.to_string();
    }
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    format!(
        "{}-{}",
        safe.trim_start_matches('.'),
        &hex::encode(digest.as_ref())[..8]
    )
}

/// Reads `collapse_requests` from `f`: a boolean or a function.
pub(super) fn collapse_requests(f: &mut Fields<'_>) -> Option<CollapseRequests> {
    match f.get("collapse_requests")? {
        RawValue::Bool(true) => Some(CollapseRequests::Compatible),
        RawValue::Bool(false) => Some(CollapseRequests::Off),
        RawValue::Function(function) => Some(CollapseRequests::Lua(function.clone())),
        other => {
            let message = format!(
                "{}: 'collapse_requests' must be a boolean or a function(builder, new, old), not a {}",
                f.what,
                other.type_name()
            );
            f.error(message);
            None
        }
    }
}

/// One step of a builder.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Unique within the builder.
    pub name: String,
    pub kind: StepKind,
    pub flags: StepFlags,
    /// Shown while the step runs (default: what the kind says it does).
    pub description: Option<Renderable>,
    /// Shown once it is done (default: `description`).
    pub description_done: Option<Renderable>,
    /// Whether the step runs; a step that does not is SKIPPED.
    pub do_step_if: StepCondition,
    /// Whether the finished step is hidden (a function gets its result).
    pub hide_step_if: StepCondition,
    /// Exit code → result, for the step's commands (`None`: 0 is SUCCESS,
    /// anything else FAILURE).
    pub decode_rc: Option<BTreeMap<i64, i32>>,
    /// Locks the step holds while it runs (besides its build's).
    pub locks: Vec<LockAccess>,
    /// Run the step again in the same build when it fails this way.
    pub retry: Option<StepRetry>,
    /// It came from the repository being built (a pipeline file, or a step
    /// such a step added): it may not run commands on the master, read the
    /// master's files or use secrets.
    pub from_repository: bool,
    pub defined_at: String,
}

/// `retry = { on = { "worker_lost", "timeout", rc = { 128, 137 } }, max = 2, delay = 10 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRetry {
    pub worker_lost: bool,
    pub timeout: bool,
    pub rcs: Vec<i64>,
    /// Attempts after the first.
    pub max: u32,
    pub delay_s: u64,
}

/// `do_step_if` / `hide_step_if`: a fixed answer or a Lua function.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCondition {
    Fixed(bool),
    Lua(LuaFn),
}

/// How a step's result affects the build (Buildbot's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFlags {
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub flunk_on_warnings: bool,
    pub warn_on_warnings: bool,
    pub always_run: bool,
}

impl Default for StepFlags {
    fn default() -> Self {
        StepFlags {
            halt_on_failure: false,
            flunk_on_failure: true,
            warn_on_failure: false,
            flunk_on_warnings: false,
            warn_on_warnings: false,
            always_run: false,
        }
    }
}

pub(super) fn compile_builder(
    raw: &RawValue,
    errors: &mut Vec<ConfigError>,
) -> Option<BuilderConfig> {
    let (kind, at, entries) = tagged(raw, "mb.builder{…}", "builders", FILE, errors)?;
    if kind != "builder" {
        errors.push(ConfigError {
            location: at,
            message: format!("builders: expected mb.builder{{…}}, got a {kind}"),
        });
        return None;
    }
    let mut f = Fields::new("builder", at.clone(), entries);
    let name = f.required_string("name");
    if let Some(n) = &name
        && !valid_label(n)
    {
        f.error(format!(
            "builder: name {n:?} must be 1-{MAX_LABEL_CHARS} characters, not blank, without control characters"
        ));
    }
    let what = format!("builder '{}'", name.as_deref().unwrap_or("?"));
    f.what = what.clone();
    let workernames = f.string_list("workernames");
    let builddir = f
        .string("builddir")
        .or_else(|| name.as_deref().map(dir_name))
        .unwrap_or_default();
    let description = f.string("description");
    let tags = f.string_list("tags");
    let properties = f.properties("properties");
    let collapse_requests = collapse_requests(&mut f);
    let cancel_superseded = f.boolean("cancel_superseded", false);
    let locks = compile_accesses(&mut f, &what);
    let priority = f.integer("priority", -1_000_000, 1_000_000).unwrap_or(0);
    let next_worker = function(&mut f, "next_worker");
    let next_build = function(&mut f, "next_build");
    let can_start_build = function(&mut f, "can_start_build");
    let max_retries = f.integer("max_retries", 0, 1000).map(|n| n as u32);
    let workerbuilddir = f.string("workerbuilddir");
    let steps_raw = f.list_skipping_holes("steps").unwrap_or_default();
    if workernames.is_empty() && f.get("workernames").is_none() {
        f.error(format!("{what}: 'workernames' is required"));
    }
    f.finish(errors);
    let mut steps = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for raw_step in steps_raw {
        if let Some(mut step) = compile_step(raw_step, &what, &at, errors) {
            step.name = unique_step_name(&mut names, &step.name);
            steps.push(step);
        }
    }
    Some(BuilderConfig {
        name: name?,
        workernames,
        // Buildbot's worker-side name wins; moonbot has no master-side
        // builder directory, so `builddir` means the same without it.
        builddir: workerbuilddir.unwrap_or(builddir),
        description,
        tags,
        properties,
        steps,
        collapse_requests,
        cancel_superseded,
        locks,
        priority,
        next_worker,
        next_build,
        can_start_build,
        max_retries,
        defined_at: at,
    })
}

/// Buildbot's rule for a build's step names: a repeated one gets `_1`,
/// `_2` … (`names` counts those taken so far). For master.lua's steps and
/// those a build adds at run time.
pub fn unique_step_name(names: &mut BTreeMap<String, usize>, name: &str) -> String {
    let count = names.entry(name.to_string()).or_insert(0);
    *count += 1;
    if *count > 1 {
        format!("{name}_{}", *count - 1)
    } else {
        name.to_string()
    }
}

/// The parts every step has; the kind-specific fields go to [`steps::compile`].
/// Also what a build's steps added at run time are compiled with.
pub fn compile_step(
    raw: &RawValue,
    builder: &str,
    builder_at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<StepConfig> {
    let context = format!("{builder}: steps");
    let (kind, at, entries) = tagged(raw, "a step (mb.steps.*{…})", &context, builder_at, errors)?;
    let mut f = Fields::new(format!("{builder}: step"), at.clone(), entries);
    let explicit_name = f.string("name");
    let flags = StepFlags {
        halt_on_failure: f.boolean("halt_on_failure", steps::halts_on_failure(kind)),
        flunk_on_failure: f.boolean("flunk_on_failure", true),
        warn_on_failure: f.boolean("warn_on_failure", false),
        flunk_on_warnings: f.boolean("flunk_on_warnings", false),
        warn_on_warnings: f.boolean("warn_on_warnings", false),
        always_run: f.boolean("always_run", false),
    };
    let description = render::field(&mut f, "description");
    let description_done = render::field(&mut f, "description_done");
    let do_step_if = condition(&mut f, "do_step_if", true);
    let hide_step_if = condition(&mut f, "hide_step_if", false);
    let decode_rc = decode_rc(&mut f);
    let locks = compile_accesses(&mut f, &format!("{builder}: step"));
    let retry = step_retry(&mut f);
    let Some(compiled) = steps::compile(kind, &mut f, builder) else {
        errors.push(ConfigError {
            location: at,
            message: format!("{context}: expected a step (mb.steps.*{{…}}), got a {kind}"),
        });
        return None;
    };
    f.finish(errors);
    Some(StepConfig {
        name: explicit_name.unwrap_or(compiled.default_name),
        kind: compiled.kind?,
        flags,
        description,
        description_done,
        do_step_if,
        hide_step_if,
        decode_rc,
        locks,
        retry,
        from_repository: false,
        defined_at: at,
    })
}

/// A boolean or a Lua function.
fn condition(f: &mut Fields<'_>, key: &'static str, default: bool) -> StepCondition {
    match f.get(key) {
        None => StepCondition::Fixed(default),
        Some(RawValue::Bool(b)) => StepCondition::Fixed(*b),
        Some(RawValue::Function(func)) => StepCondition::Lua(func.clone()),
        Some(other) => {
            let message = format!(
                "{}: '{key}' must be a boolean or a function, not a {}",
                f.what,
                other.type_name()
            );
            f.error(message);
            StepCondition::Fixed(default)
        }
    }
}

/// An optional Lua function field.
fn function(f: &mut Fields<'_>, key: &'static str) -> Option<LuaFn> {
    match f.get(key)? {
        RawValue::Function(function) => Some(function.clone()),
        other => {
            let msg = format!(
                "{}: '{key}' must be a function, not a {}",
                f.what,
                other.type_name()
            );
            f.error(msg);
            None
        }
    }
}

/// A step's `retry = { on = { … }, max = N, delay = S }`.
fn step_retry(f: &mut Fields<'_>) -> Option<StepRetry> {
    let RawValue::Table(entries) = f.get("retry")? else {
        let msg = format!(
            "{}: 'retry' must be a table {{ on = {{ … }}, max = N, delay = S }}",
            f.what
        );
        f.error(msg);
        return None;
    };
    let mut r = Fields::new(format!("{}: retry", f.what), f.at.clone(), entries);
    let mut retry = StepRetry {
        worker_lost: false,
        timeout: false,
        rcs: Vec::new(),
        max: r.integer("max", 1, 100).unwrap_or(1) as u32,
        delay_s: r.integer("delay", 0, 86400).unwrap_or(0) as u64,
    };
    match r.get("on") {
        Some(RawValue::Table(on)) => {
            for (k, v) in on {
                match (k, v) {
                    (RawKey::Int(_), RawValue::Str(s)) if s == "worker_lost" => retry.worker_lost = true,
                    (RawKey::Int(_), RawValue::Str(s)) if s == "timeout" => retry.timeout = true,
                    (RawKey::Str(key), RawValue::Table(codes)) if key == "rc" => {
                        for (_, code) in codes {
                            match code {
                                RawValue::Int(n) => retry.rcs.push(*n),
                                _ => r.error("retry: 'rc' lists exit codes".into()),
                            }
                        }
                    }
                    _ => r.error(format!(
                        "retry: 'on' lists \"worker_lost\", \"timeout\" and rc = {{ codes }}, not {k} = {}",
                        v.type_name()
                    )),
                }
            }
        }
        _ => r.error("retry: 'on' (what to retry on) is required".into()),
    }
    let mut errors = Vec::new();
    r.finish(&mut errors);
    for e in errors {
        f.error_at(e.location, e.message);
    }
    Some(retry)
}

/// `decode_rc = { [0] = mb.results.SUCCESS, [5] = mb.results.WARNINGS }`.
fn decode_rc(f: &mut Fields<'_>) -> Option<BTreeMap<i64, i32>> {
    let entries = match f.get("decode_rc")? {
        RawValue::Table(entries) => entries,
        other => {
            let message = format!(
                "{}: 'decode_rc' must be a table of exit code = result, not a {}",
                f.what,
                other.type_name()
            );
            f.error(message);
            return None;
        }
    };
    let mut map = BTreeMap::new();
    for (k, v) in entries {
        match (k, v) {
            (RawKey::Int(rc), RawValue::Int(result))
                if crate::results::ORDER.contains(&(*result as i32)) =>
            {
                map.insert(*rc, *result as i32);
            }
            _ => {
                let message = format!(
                    "{}: 'decode_rc' maps exit codes to results (mb.results.*), not {k} = {}",
                    f.what,
                    v.type_name()
                );
                f.error(message);
            }
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::dir_name;

    #[test]
    fn a_builder_gets_a_directory_a_file_system_takes_and_none_shares() {
        assert_eq!(dir_name("linux-x86_64.gcc"), "linux-x86_64.gcc");
        let spaced = dir_name("AMD64 Fedora Rawhide 3.x");
        assert!(spaced.starts_with("AMD64_Fedora_Rawhide_3.x-"), "{spaced}");
        let slashed = dir_name("x86/64");
        assert!(slashed.starts_with("x86_64-"), "{slashed}");
        assert_ne!(slashed, dir_name("x86_64"));
        assert_ne!(dir_name("a b"), dir_name("a/b"));
        assert!(!dir_name(".hidden").starts_with('.'));
        assert!(!dir_name("..").contains('/'));
        assert!(dir_name("ünï").is_ascii());
    }
}
