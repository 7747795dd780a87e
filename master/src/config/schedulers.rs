//! `mb.schedulers.*{…}`: what turns requests or events into build requests.

use super::FILE;
use crate::lua::fields::{tagged, valid_name};
use crate::lua::{ConfigError, Fields, RawValue};

/// A scheduler: turns requests or events into build requests.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    /// Builds on request (API, web form).
    Force {
        name: String,
        builders: Vec<String>,
        label: String,
        defined_at: String,
    },
}

impl SchedulerConfig {
    pub fn name(&self) -> &str {
        match self {
            SchedulerConfig::Force { name, .. } => name,
        }
    }

    pub fn builder_names(&self) -> &[String] {
        match self {
            SchedulerConfig::Force { builders, .. } => builders,
        }
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
        && !valid_name(n)
    {
        f.error(format!(
            "scheduler: name '{n}' must be 1-64 letters, digits, '.', '_' or '-'"
        ));
    }
    let builders = f.string_list("builders");
    let scheduler = match kind {
        "scheduler.force" => {
            let label = f.string("label");
            name.map(|name| SchedulerConfig::Force {
                label: label.unwrap_or_else(|| name.clone()),
                name,
                builders,
                defined_at: at,
            })
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
