//! `mb.schedulers.*{…}`: what turns requests or events into build requests.
//! `force` builds on request; `single_branch` and `any_branch` build the
//! changes their filter takes (Buildbot's `SingleBranchScheduler` and
//! `AnyBranchScheduler`); `triggerable` builds when a `trigger` step asks.

use super::FILE;
use super::change_filter::{ChangeFilter, compile_change_filter};
use super::force::{ForceForm, compile_force_form};
use super::timing::{Timing, compile_nightly};
use crate::lua::fields::{MAX_LABEL_CHARS, tagged, valid_label};
use crate::lua::{ConfigError, Fields, LuaFn, RawKey, RawValue};
use serde_json::Value;
use std::collections::BTreeMap;

/// A scheduler: turns requests or events into build requests.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    /// Builds on request (API, web form).
    Force {
        name: String,
        builders: Vec<String>,
        label: String,
        /// Its typed parameters.
        form: Box<ForceForm>,
        defined_at: String,
    },
    /// Builds the changes its filter takes.
    Changes(Box<ChangeSchedulerConfig>),
    /// Builds on a schedule (`periodic`, `nightly`).
    Timed(Box<TimedSchedulerConfig>),
    /// Builds when a build's `trigger` step names it.
    Triggerable {
        name: String,
        builders: Vec<String>,
        reason: Option<String>,
        properties: BTreeMap<String, Value>,
        priority: i64,
        defined_at: String,
    },
    /// Builds what `upstream`'s buildsets built, when one succeeds.
    Dependent {
        name: String,
        builders: Vec<String>,
        upstream: String,
        reason: Option<String>,
        properties: BTreeMap<String, Value>,
        priority: i64,
        defined_at: String,
    },
}

/// `mb.schedulers.periodic{…}` and `mb.schedulers.nightly{…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedSchedulerConfig {
    pub name: String,
    pub builders: Vec<String>,
    pub timing: Timing,
    /// The branch its builds build (none: the repository's default).
    pub branch: Option<String>,
    /// Build only when a change (on `branch`, through `change_filter` and
    /// `file_is_important`) came since the last build.
    pub only_if_changed: bool,
    pub change_filter: ChangeFilter,
    pub file_is_important: Option<LuaFn>,
    pub reason: Option<String>,
    pub properties: BTreeMap<String, Value>,
    pub priority: i64,
    pub defined_at: String,
}

/// How a change scheduler groups the changes it waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// `single_branch`: one tree-stable timer for every change taken.
    SingleBranch,
    /// `any_branch`: one timer per branch (per codebase, repository,
    /// project and branch), so each branch builds on its own.
    AnyBranch,
}

impl Grouping {
    /// Buildbot's class name, used in the default reason and the API.
    pub fn class_name(self) -> &'static str {
        match self {
            Grouping::SingleBranch => "SingleBranchScheduler",
            Grouping::AnyBranch => "AnyBranchScheduler",
        }
    }
}

/// What a codebase of a scheduler builds when no change names it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CodebaseDefaults {
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub revision: Option<String>,
}

/// `mb.schedulers.single_branch{…}` and `mb.schedulers.any_branch{…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSchedulerConfig {
    pub name: String,
    pub grouping: Grouping,
    pub builders: Vec<String>,
    pub change_filter: ChangeFilter,
    /// Seconds without a new important change before building; `None`
    /// builds each important change at once (unimportant ones are dropped,
    /// as in Buildbot).
    pub tree_stable_timer: Option<u64>,
    /// A Lua function of the change; false means the change alone does not
    /// call for a build.
    pub file_is_important: Option<LuaFn>,
    /// Build only the important changes, dropping the others.
    pub only_important: bool,
    pub reason: Option<String>,
    pub properties: BTreeMap<String, Value>,
    pub priority: i64,
    /// A newer change on a branch cancels the older changes' pending
    /// requests and stops their running builds.
    pub cancel_superseded: bool,
    /// The codebases this scheduler builds (changes of others are ignored),
    /// with what to build for one no change names. Buildbot's default: `""`.
    pub codebases: BTreeMap<String, CodebaseDefaults>,
    pub defined_at: String,
}

impl SchedulerConfig {
    pub fn name(&self) -> &str {
        match self {
            SchedulerConfig::Force { name, .. } => name,
            SchedulerConfig::Changes(c) => &c.name,
            SchedulerConfig::Timed(t) => &t.name,
            SchedulerConfig::Dependent { name, .. } => name,
            SchedulerConfig::Triggerable { name, .. } => name,
        }
    }

    pub fn builder_names(&self) -> &[String] {
        match self {
            SchedulerConfig::Force { builders, .. } => builders,
            SchedulerConfig::Changes(c) => &c.builders,
            SchedulerConfig::Timed(t) => &t.builders,
            SchedulerConfig::Dependent { builders, .. } => builders,
            SchedulerConfig::Triggerable { builders, .. } => builders,
        }
    }

    pub fn defined_at(&self) -> &str {
        match self {
            SchedulerConfig::Force { defined_at, .. } => defined_at,
            SchedulerConfig::Changes(c) => &c.defined_at,
            SchedulerConfig::Timed(t) => &t.defined_at,
            SchedulerConfig::Dependent { defined_at, .. } => defined_at,
            SchedulerConfig::Triggerable { defined_at, .. } => defined_at,
        }
    }

    /// Buildbot's class name, shown by the API.
    pub fn class_name(&self) -> &'static str {
        match self {
            SchedulerConfig::Force { .. } => "ForceScheduler",
            SchedulerConfig::Changes(c) => c.grouping.class_name(),
            SchedulerConfig::Timed(t) => t.timing.class_name(),
            SchedulerConfig::Dependent { .. } => "Dependent",
            SchedulerConfig::Triggerable { .. } => "Triggerable",
        }
    }

    /// The same scheduler placed elsewhere in master.lua compares equal.
    pub fn unplaced(&self) -> SchedulerConfig {
        let mut s = self.clone();
        match &mut s {
            SchedulerConfig::Force { defined_at, .. } => defined_at.clear(),
            SchedulerConfig::Changes(c) => c.defined_at.clear(),
            SchedulerConfig::Timed(t) => t.defined_at.clear(),
            SchedulerConfig::Dependent { defined_at, .. } => defined_at.clear(),
            SchedulerConfig::Triggerable { defined_at, .. } => defined_at.clear(),
        }
        s
    }
}

pub(super) fn compile_scheduler(
    raw: &RawValue,
    errors: &mut Vec<ConfigError>,
) -> Option<SchedulerConfig> {
    let (kind, at, entries) = tagged(
        raw,
        "a scheduler (mb.schedulers.*{…})",
        "schedulers",
        FILE,
        errors,
    )?;
    let mut f = Fields::new("scheduler", at.clone(), entries);
    let name = f.required_string("name");
    if let Some(n) = &name
        && !valid_label(n)
    {
        f.error(format!(
            "scheduler: name {n:?} must be 1-{MAX_LABEL_CHARS} characters, not blank, without control characters"
        ));
    }
    let builders = f.string_list("builders");
    let scheduler = match kind {
        "scheduler.force" => {
            let label = f.string("label");
            let form = compile_force_form(&mut f, &at, errors);
            name.map(|name| SchedulerConfig::Force {
                label: label.unwrap_or_else(|| name.clone()),
                name,
                builders,
                form: Box::new(form),
                defined_at: at,
            })
        }
        "scheduler.single_branch" | "scheduler.any_branch" => {
            let grouping = if kind == "scheduler.single_branch" {
                Grouping::SingleBranch
            } else {
                Grouping::AnyBranch
            };
            compile_change_scheduler(&mut f, grouping, &at, errors).and_then(|mut c| {
                c.name = name?;
                c.builders = builders;
                Some(SchedulerConfig::Changes(Box::new(c)))
            })
        }
        "scheduler.dependent" => {
            let upstream = f.required_string("upstream");
            let reason = f.string("reason");
            let properties = f.properties("properties");
            let priority = f.integer("priority", -1_000_000, 1_000_000).unwrap_or(0);
            match (name, upstream) {
                (Some(name), Some(upstream)) => Some(SchedulerConfig::Dependent {
                    name,
                    builders,
                    upstream,
                    reason,
                    properties,
                    priority,
                    defined_at: at,
                }),
                _ => None,
            }
        }
        "scheduler.triggerable" => {
            let reason = f.string("reason");
            let properties = f.properties("properties");
            let priority = f.integer("priority", -1_000_000, 1_000_000).unwrap_or(0);
            name.map(|name| SchedulerConfig::Triggerable {
                name,
                builders,
                reason,
                properties,
                priority,
                defined_at: at,
            })
        }
        "scheduler.periodic" | "scheduler.nightly" => {
            let timing = if kind == "scheduler.periodic" {
                let period = f.duration_s("period");
                if period.is_none() {
                    f.error(
                        "periodic: 'period' (seconds, or a string such as \"1h\") is required"
                            .into(),
                    );
                }
                period.map(Timing::Every)
            } else {
                compile_nightly(&mut f)
            };
            let change_filter = match f.get("change_filter") {
                None => Some(ChangeFilter::default()),
                Some(raw) => compile_change_filter(raw, &at, errors),
            };
            let file_is_important = match f.get("file_is_important") {
                Some(RawValue::Function(function)) => Some(function.clone()),
                None => None,
                Some(other) => {
                    f.error(format!(
                        "scheduler: 'file_is_important' must be a function of the change, not a {}",
                        other.type_name()
                    ));
                    None
                }
            };
            let config = TimedSchedulerConfig {
                name: name.clone().unwrap_or_default(),
                builders,
                timing: timing.unwrap_or(Timing::Every(0)),
                branch: f.string("branch"),
                only_if_changed: f.boolean("only_if_changed", false),
                change_filter: change_filter.unwrap_or_default(),
                file_is_important,
                reason: f.string("reason"),
                properties: f.properties("properties"),
                priority: f.integer("priority", -1_000_000, 1_000_000).unwrap_or(0),
                defined_at: at,
            };
            name.map(|_| SchedulerConfig::Timed(Box::new(config)))
        }
        other => {
            f.error(format!(
                "schedulers: expected a scheduler (mb.schedulers.*{{…}}), got a {other}"
            ));
            None
        }
    };
    f.finish(errors);
    scheduler
}

/// The fields of `single_branch` and `any_branch` besides name and builders.
fn compile_change_scheduler(
    f: &mut Fields<'_>,
    grouping: Grouping,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ChangeSchedulerConfig> {
    let change_filter = match f.get("change_filter") {
        None => Some(ChangeFilter::default()),
        Some(raw) => compile_change_filter(raw, at, errors),
    };
    let tree_stable_timer = match f.get("tree_stable_timer") {
        Some(RawValue::Int(0)) | None => None,
        Some(_) => f.duration_s("tree_stable_timer"),
    };
    let file_is_important = match f.get("file_is_important") {
        None => None,
        Some(RawValue::Function(function)) => Some(function.clone()),
        Some(other) => {
            f.error(format!(
                "scheduler: 'file_is_important' must be a function of the change, not a {}",
                other.type_name()
            ));
            None
        }
    };
    let only_important = f.boolean("only_important", false);
    let cancel_superseded = f.boolean("cancel_superseded", false);
    let reason = f.string("reason");
    let properties = f.properties("properties");
    let priority = f.integer("priority", -1_000_000, 1_000_000).unwrap_or(0);
    let codebases = match f.get("codebases") {
        None => Some(BTreeMap::from([(
            String::new(),
            CodebaseDefaults::default(),
        )])),
        Some(raw) => compile_codebases(raw).map_err(|e| f.error(e)).ok(),
    };
    Some(ChangeSchedulerConfig {
        name: String::new(),
        grouping,
        builders: Vec::new(),
        change_filter: change_filter?,
        tree_stable_timer,
        file_is_important,
        only_important,
        cancel_superseded,
        reason,
        properties,
        priority,
        codebases: codebases?,
        defined_at: at.to_string(),
    })
}

/// `codebases = { "app", "lib" }` or `{ app = { repository = …, branch = … } }`.
fn compile_codebases(raw: &RawValue) -> Result<BTreeMap<String, CodebaseDefaults>, String> {
    let RawValue::Table(entries) = raw else {
        return Err(format!(
            "scheduler: 'codebases' must be a list of names or a table of name = {{ repository, branch, revision }}, not a {}",
            raw.type_name()
        ));
    };
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let (name, defaults) = match (key, value) {
            (RawKey::Int(_), RawValue::Str(name)) => (name.clone(), CodebaseDefaults::default()),
            (RawKey::Str(name), RawValue::Table(fields)) => {
                let mut defaults = CodebaseDefaults::default();
                for (k, v) in fields {
                    let slot = match k {
                        RawKey::Str(k) if k == "repository" => &mut defaults.repository,
                        RawKey::Str(k) if k == "branch" => &mut defaults.branch,
                        RawKey::Str(k) if k == "revision" => &mut defaults.revision,
                        other => {
                            return Err(format!(
                                "scheduler: codebase '{name}': unknown field '{other}' (repository, branch, revision)"
                            ));
                        }
                    };
                    match v {
                        RawValue::Str(s) => *slot = Some(s.clone()),
                        other => {
                            return Err(format!(
                                "scheduler: codebase '{name}': '{k}' must be a string, not a {}",
                                other.type_name()
                            ));
                        }
                    }
                }
                (name.clone(), defaults)
            }
            _ => {
                return Err(
                    "scheduler: 'codebases' must be a list of names or a table of name = { repository, branch, revision }"
                        .into(),
                );
            }
        };
        out.insert(name, defaults);
    }
    if out.is_empty() {
        return Err("scheduler: 'codebases' must name at least one codebase".into());
    }
    Ok(out)
}
