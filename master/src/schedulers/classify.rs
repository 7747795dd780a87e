//! Whether a change scheduler takes a change, and whether the change is
//! important: its codebases, its `change_filter` (values, lists, patterns,
//! Lua functions, `filter_fn`), then `file_is_important`. Lua functions run
//! in the generation that defined them; one that fails is logged with where
//! it was defined, and the change is not taken (as Buildbot drops a change
//! whose filter raised).

use crate::config::{ChangeSchedulerConfig, LuaFn, LuaGeneration, Matcher};
use crate::lua::RawValue;
use serde_json::Value;
use tracing::warn;

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
pub async fn classify(
    config: &ChangeSchedulerConfig,
    lua: &LuaGeneration,
    change: &Value,
) -> Verdict {
    let codebase = change["codebase"].as_str().unwrap_or("");
    if !config.codebases.contains_key(codebase) {
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
                call_truth(config, lua, function, argument).await
            }
        };
        if !taken {
            return Verdict::Ignored;
        }
    }
    if let Some(function) = &config.change_filter.filter_fn
        && !call_truth(config, lua, function, change.clone()).await
    {
        return Verdict::Ignored;
    }
    match &config.file_is_important {
        Some(function) if !call_truth(config, lua, function, change.clone()).await => {
            Verdict::Unimportant
        }
        _ => Verdict::Important,
    }
}

/// Call a Lua function and read its answer as Lua would (nil and false are
/// false); an error is logged and counts as false.
async fn call_truth(
    config: &ChangeSchedulerConfig,
    lua: &LuaGeneration,
    function: &LuaFn,
    argument: Value,
) -> bool {
    match lua.call(function, argument).await {
        Ok(RawValue::Nil | RawValue::Bool(false)) => false,
        Ok(_) => true,
        Err(e) => {
            warn!(scheduler = %config.name, "a change filter function failed, so the change is not taken: {e}");
            false
        }
    }
}
