//! Whether a change scheduler takes a change, and whether the change is
//! important: its codebases, its `change_filter` (values, lists, patterns,
//! Lua functions, `filter_fn`), then `file_is_important`. Lua functions run
//! in the generation that defined them; one that fails is logged with where
//! it was defined, and the change is not taken (as Buildbot drops a change
//! whose filter raised).

use crate::config::{
    ChangeFilter, ChangeSchedulerConfig, CodebaseDefaults, LuaFn, LuaGeneration, Matcher,
    TimedSchedulerConfig,
};
use crate::lua::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;
use tracing::warn;

/// What a scheduler takes changes by.
pub struct Selection<'a> {
    /// For the log.
    pub scheduler: &'a str,
    /// `None`: only the default codebase (`""`).
    pub codebases: Option<&'a BTreeMap<String, CodebaseDefaults>>,
    pub change_filter: &'a ChangeFilter,
    pub file_is_important: Option<&'a LuaFn>,
}

impl<'a> From<&'a ChangeSchedulerConfig> for Selection<'a> {
    fn from(c: &'a ChangeSchedulerConfig) -> Self {
        Selection {
            scheduler: &c.name,
            codebases: Some(&c.codebases),
            change_filter: &c.change_filter,
            file_is_important: c.file_is_important.as_ref(),
        }
    }
}

impl<'a> From<&'a TimedSchedulerConfig> for Selection<'a> {
    fn from(t: &'a TimedSchedulerConfig) -> Self {
        Selection {
            scheduler: &t.name,
            codebases: None,
            change_filter: &t.change_filter,
            file_is_important: t.file_is_important.as_ref(),
        }
    }
}

/// What a scheduler makes of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this scheduler.
    Ignored,
    /// Taken, but does not call for a build by itself.
    Unimportant,
    /// Taken, and calls for a build.
    Important,
}

/// Classify `change` (as the API shows it) for the scheduler `config`.
pub async fn classify(config: Selection<'_>, lua: &LuaGeneration, change: &Value) -> Verdict {
    let codebase = change["codebase"].as_str().unwrap_or("");
    let known = match config.codebases {
        Some(codebases) => codebases.contains_key(codebase),
        None => codebase.is_empty(),
    };
    if !known {
        return Verdict::Ignored;
    }
    for (attribute, matcher) in &config.change_filter.attributes {
        let value = change[*attribute].as_str();
        let taken = match matcher.matches_value(value) {
            Some(taken) => taken,
            None => {
                let Matcher::Lua(function) = matcher else {
                    continue;
                };
                let argument = value.map_or(Value::Null, Value::from);
                call_truth(&config, lua, function, argument).await
            }
        };
        if !taken {
            return Verdict::Ignored;
        }
    }
    if let Some(function) = &config.change_filter.filter_fn
        && !call_truth(&config, lua, function, change.clone()).await
    {
        return Verdict::Ignored;
    }
    match config.file_is_important {
        Some(function) if !call_truth(&config, lua, function, change.clone()).await => {
            Verdict::Unimportant
        }
        _ => Verdict::Important,
    }
}

/// Call a Lua function and read its answer as Lua would (nil and false are
/// false); an error is logged and counts as false.
async fn call_truth(
    config: &Selection<'_>,
    lua: &LuaGeneration,
    function: &LuaFn,
    argument: Value,
) -> bool {
    match lua.call(function, argument).await {
        Ok(RawValue::Nil | RawValue::Bool(false)) => false,
        Ok(_) => true,
        Err(e) => {
            warn!(scheduler = %config.scheduler, "a change filter function failed, so the change is not taken: {e}");
            false
        }
    }
}
