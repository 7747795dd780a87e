//! `change_filter = { … }`: which changes a scheduler takes, Buildbot's
//! `ChangeFilter`. Each of a change's `project`, `repository`, `branch`,
//! `category` and `codebase` may be required to equal a value, be one of a
//! list, match a regular expression (`branch_re`, matched from the start as
//! Python's `re.match` does, so Buildbot patterns keep their meaning), or
//! satisfy a Lua function; `filter_fn` sees the whole change. Only the model
//! and its compilation live here: `schedulers::classify` applies it.

use crate::lua::{ConfigError, Fields, LuaFn, RawKey, RawValue};

/// The change attributes a filter can test, in Buildbot's names.
pub const FILTER_ATTRIBUTES: [&str; 5] =
    ["project", "repository", "branch", "category", "codebase"];

/// What one attribute must be.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Equal to this value.
    Exact(String),
    /// Equal to one of these.
    OneOf(Vec<String>),
    /// Matched (from its start) by one of these (`*_re`).
    Pattern(Vec<regex::Regex>),
    /// A Lua function of the value that returns true to take the change.
    Lua(LuaFn),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Matcher::Exact(a), Matcher::Exact(b)) => a == b,
            (Matcher::OneOf(a), Matcher::OneOf(b)) => a == b,
            (Matcher::Pattern(a), Matcher::Pattern(b)) => a
                .iter()
                .map(|r| r.as_str())
                .eq(b.iter().map(|r| r.as_str())),
            (Matcher::Lua(a), Matcher::Lua(b)) => a == b,
            _ => false,
        }
    }
}

impl Matcher {
    /// Whether a plain value passes; `None` for a Lua function, which only
    /// the Lua state can answer.
    pub fn matches_value(&self, value: Option<&str>) -> Option<bool> {
        Some(match self {
            Matcher::Exact(want) => value == Some(want.as_str()),
            Matcher::OneOf(wanted) => value.is_some_and(|v| wanted.iter().any(|w| w == v)),
            Matcher::Pattern(patterns) => {
                value.is_some_and(|v| patterns.iter().any(|p| p.is_match(v)))
            }
            Matcher::Lua(_) => return None,
        })
    }
}

/// A scheduler's change filter; the default takes every change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangeFilter {
    /// (attribute, matcher), in [`FILTER_ATTRIBUTES`] order.
    pub attributes: Vec<(&'static str, Matcher)>,
    /// A Lua function of the whole change (as the API shows it).
    pub filter_fn: Option<LuaFn>,
}

impl ChangeFilter {
    /// The matcher for one attribute, if the filter tests it.
    pub fn matcher(&self, attribute: &str) -> Option<&Matcher> {
        self.attributes
            .iter()
            .find_map(|(a, m)| (*a == attribute).then_some(m))
    }
}

/// Compile the `change_filter` field of a scheduler defined at `at`.
pub fn compile_change_filter(
    raw: &RawValue,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ChangeFilter> {
    let RawValue::Table(entries) = raw else {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!(
                "scheduler: 'change_filter' must be a table, not a {}",
                raw.type_name()
            ),
        });
        return None;
    };
    let mut f = Fields::new("change_filter", at.to_string(), entries);
    let mut filter = ChangeFilter::default();
    for attribute in FILTER_ATTRIBUTES {
        let plain = f.get(attribute).map(|v| matcher_of(attribute, v));
        let pattern_key = pattern_key(attribute);
        let pattern = f.get(pattern_key).map(|v| patterns_of(pattern_key, v));
        let matcher = match (plain, pattern) {
            (Some(_), Some(_)) => {
                f.error(format!(
                    "change_filter: give '{attribute}' or '{pattern_key}', not both"
                ));
                continue;
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => continue,
        };
        match matcher {
            Ok(m) => filter.attributes.push((attribute, m)),
            Err(message) => f.error(format!("change_filter: {message}")),
        }
    }
    match f.get("filter_fn") {
        None => {}
        Some(RawValue::Function(function)) => filter.filter_fn = Some(function.clone()),
        Some(other) => f.error(format!(
            "change_filter: 'filter_fn' must be a function of the change, not a {}",
            other.type_name()
        )),
    }
    let before = errors.len();
    f.finish(errors);
    (errors.len() == before).then_some(filter)
}

/// `branch` → `branch_re`, with a 'static name for the error messages.
fn pattern_key(attribute: &'static str) -> &'static str {
    match attribute {
        "project" => "project_re",
        "repository" => "repository_re",
        "branch" => "branch_re",
        "category" => "category_re",
        _ => "codebase_re",
    }
}

fn matcher_of(key: &str, value: &RawValue) -> Result<Matcher, String> {
    match value {
        RawValue::Str(s) => Ok(Matcher::Exact(s.clone())),
        RawValue::Function(f) => Ok(Matcher::Lua(f.clone())),
        RawValue::Table(_) => strings_of(key, value).map(Matcher::OneOf),
        other => Err(format!(
            "'{key}' must be a string, a list of strings or a function, not a {}",
            other.type_name()
        )),
    }
}

fn patterns_of(key: &str, value: &RawValue) -> Result<Matcher, String> {
    let sources = match value {
        RawValue::Str(s) => vec![s.clone()],
        RawValue::Table(_) => strings_of(key, value)?,
        other => {
            return Err(format!(
                "'{key}' must be a regular expression or a list of them, not a {}",
                other.type_name()
            ));
        }
    };
    sources
        .iter()
        .map(|source| {
            regex::Regex::new(&format!("^(?:{source})"))
                .map_err(|e| format!("'{key}': '{source}' is not a regular expression: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Matcher::Pattern)
}

fn strings_of(key: &str, value: &RawValue) -> Result<Vec<String>, String> {
    let RawValue::Table(entries) = value else {
        return Err(format!("'{key}' must be a list"));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, (k, v))| match (k, v) {
            (RawKey::Int(n), RawValue::Str(s)) if *n == i as i64 + 1 => Ok(s.clone()),
            _ => Err(format!("'{key}' must be a list of strings")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, RawValue)]) -> RawValue {
        RawValue::Table(
            entries
                .iter()
                .map(|(k, v)| (RawKey::Str(k.to_string()), v.clone()))
                .collect(),
        )
    }

    fn list(items: &[&str]) -> RawValue {
        RawValue::Table(
            items
                .iter()
                .enumerate()
                .map(|(i, s)| (RawKey::Int(i as i64 + 1), RawValue::Str(s.to_string())))
                .collect(),
        )
    }

    fn compile(raw: RawValue) -> Result<ChangeFilter, Vec<String>> {
        let mut errors = Vec::new();
        compile_change_filter(&raw, "master.lua:7", &mut errors)
            .ok_or_else(|| errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn values_lists_and_patterns_match_as_buildbot_does() {
        let filter = compile(table(&[
            ("branch", list(&["main", "release"])),
            ("project_re", RawValue::Str("moon".into())),
            ("category", RawValue::Str("push".into())),
        ]))
        .unwrap();
        let branch = filter.matcher("branch").unwrap();
        assert_eq!(branch.matches_value(Some("main")), Some(true));
        assert_eq!(branch.matches_value(Some("mainline")), Some(false));
        assert_eq!(branch.matches_value(None), Some(false));
        // From the start, like re.match: "moonbot" yes, "the-moon" no.
        let project = filter.matcher("project").unwrap();
        assert_eq!(project.matches_value(Some("moonbot")), Some(true));
        assert_eq!(project.matches_value(Some("the-moon")), Some(false));
        let category = filter.matcher("category").unwrap();
        assert_eq!(category.matches_value(Some("push")), Some(true));
        assert_eq!(category.matches_value(Some("pushed")), Some(false));
        assert!(filter.matcher("codebase").is_none());
    }

    #[test]
    fn mistakes_are_errors_at_the_scheduler() {
        let errors = compile(table(&[
            ("branch", RawValue::Str("main".into())),
            ("branch_re", RawValue::Str("ma.*".into())),
            ("project_re", RawValue::Str("(unclosed".into())),
            ("brnach", RawValue::Str("main".into())),
            ("filter_fn", RawValue::Bool(true)),
        ]))
        .unwrap_err();
        let all = errors.join("\n");
        assert!(
            all.contains("master.lua:7: change_filter: give 'branch' or 'branch_re', not both"),
            "{all}"
        );
        assert!(
            all.contains("'project_re': '(unclosed' is not a regular expression"),
            "{all}"
        );
        assert!(
            all.contains("change_filter: unknown field 'brnach'"),
            "{all}"
        );
        assert!(
            all.contains("'filter_fn' must be a function of the change, not a boolean"),
            "{all}"
        );
        assert!(compile(RawValue::Str("main".into())).is_err());
    }
}
