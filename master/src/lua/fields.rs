//! Reading the tables master.lua's constructors make: each field with its
//! type checked, every unknown field reported (usually a typo), every error at
//! the `file:line` of the constructor call. Every config section and step kind
//! compiles through these.

use super::error::ConfigError;
use super::value::{RawKey, RawValue};
use std::collections::{BTreeMap, BTreeSet};

/// Reads the fields of one tagged table and remembers which ones were used.
pub struct Fields<'a> {
    pub(crate) what: String,
    pub(crate) at: String,
    entries: &'a [(RawKey, RawValue)],
    pub(crate) used: BTreeSet<&'a str>,
    errors: Vec<ConfigError>,
}

impl<'a> Fields<'a> {
    pub fn new(what: impl Into<String>, at: String, entries: &'a [(RawKey, RawValue)]) -> Self {
        let mut used = BTreeSet::new();
        used.insert("_kind");
        used.insert("_where");
        Fields {
            what: what.into(),
            at,
            entries,
            used,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, message: String) {
        self.errors.push(ConfigError {
            location: self.at.clone(),
            message,
        });
    }

    /// An error at another place than the table's (a constructor inside it).
    pub fn error_at(&mut self, location: String, message: String) {
        self.errors.push(ConfigError { location, message });
    }

    pub fn get(&mut self, key: &'a str) -> Option<&'a RawValue> {
        self.used.insert(key);
        self.entries.iter().find_map(|(k, v)| match k {
            RawKey::Str(s) if s == key && *v != RawValue::Nil => Some(v),
            _ => None,
        })
    }

    pub fn string(&mut self, key: &'a str) -> Option<String> {
        match self.get(key)? {
            RawValue::Str(s) => Some(s.clone()),
            other => {
                let msg = format!(
                    "{}: '{key}' must be a string, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &'a str) -> Option<String> {
        let present = self.get(key).is_some();
        if !present {
            let msg = format!("{}: '{key}' is required", self.what);
            self.error(msg);
            return None;
        }
        self.string(key)
    }

    pub fn boolean(&mut self, key: &'a str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(RawValue::Bool(b)) => *b,
            Some(other) => {
                let msg = format!(
                    "{}: '{key}' must be true or false, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                default
            }
        }
    }

    pub fn integer(&mut self, key: &'a str, min: i64, max: i64) -> Option<i64> {
        let value = match self.get(key)? {
            RawValue::Int(i) => *i,
            RawValue::Num(n) if n.fract() == 0.0 => *n as i64,
            other => {
                let msg = format!(
                    "{}: '{key}' must be a whole number, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                return None;
            }
        };
        if value < min || value > max {
            let msg = format!(
                "{}: '{key}' must be between {min} and {max}, not {value}",
                self.what
            );
            self.error(msg);
            return None;
        }
        Some(value)
    }

    /// A duration in whole seconds: a number of seconds, or a string with one
    /// unit (`"90s"`, `"30m"`, `"24h"`, `"180d"`).
    pub fn duration_s(&mut self, key: &'a str) -> Option<u64> {
        match self.get(key)? {
            RawValue::Int(i) if *i > 0 => Some(*i as u64),
            RawValue::Str(s) => match crate::duration::parse(s) {
                Ok(d) => Some(d.as_secs()),
                Err(e) => {
                    let msg = format!("{}: '{key}': {e}", self.what);
                    self.error(msg);
                    None
                }
            },
            other => {
                let msg = format!(
                    "{}: '{key}' must be a duration (seconds, or a string such as \"30d\"), not {}",
                    self.what,
                    match other {
                        RawValue::Int(i) => i.to_string(),
                        other => format!("a {}", other.type_name()),
                    }
                );
                self.error(msg);
                None
            }
        }
    }

    /// A list field's entries; `None` (reported) when it is no table.
    fn list_entries(&mut self, key: &'a str) -> Option<&'a [(RawKey, RawValue)]> {
        match self.get(key)? {
            RawValue::Table(entries) => Some(entries),
            other => {
                let msg = format!(
                    "{}: '{key}' must be a list, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                None
            }
        }
    }

    /// The non-list key error for `key`.
    fn not_a_list(&mut self, key: &str, k: &RawKey) {
        let msg = format!("{}: '{key}' must be a list, but has the key {k}", self.what);
        self.error(msg);
    }

    pub fn list(&mut self, key: &'a str) -> Option<Vec<&'a RawValue>> {
        let entries = self.list_entries(key)?;
        let mut items = Vec::new();
        for (i, (k, v)) in entries.iter().enumerate() {
            if *k != RawKey::Int(i as i64 + 1) {
                self.not_a_list(key, k);
                return None;
            }
            items.push(v);
        }
        Some(items)
    }

    /// A list whose holes (`nil`, or `false` from `cond and x`) are left
    /// out, in order: `{ a, cond and b or nil, c }` is `{ a, c }` or
    /// `{ a, b, c }`.
    pub fn list_skipping_holes(&mut self, key: &'a str) -> Option<Vec<&'a RawValue>> {
        let entries = self.list_entries(key)?;
        let mut items: Vec<(i64, &'a RawValue)> = Vec::new();
        for (k, v) in entries {
            let RawKey::Int(i) = k else {
                self.not_a_list(key, k);
                return None;
            };
            if !matches!(v, RawValue::Nil | RawValue::Bool(false)) {
                items.push((*i, v));
            }
        }
        items.sort_by_key(|(i, _)| *i);
        Some(items.into_iter().map(|(_, v)| v).collect())
    }

    pub fn string_list(&mut self, key: &'a str) -> Vec<String> {
        let Some(items) = self.list(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                RawValue::Str(s) => out.push(s.clone()),
                other => {
                    let msg = format!(
                        "{}: '{key}' must list strings, found a {}",
                        self.what,
                        other.type_name()
                    );
                    self.error(msg);
                }
            }
        }
        out
    }

    pub fn properties(&mut self, key: &'a str) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        match self.get(key) {
            None => {}
            Some(RawValue::Table(entries)) => {
                for (k, v) in entries {
                    let RawKey::Str(name) = k else {
                        let msg = format!("{}: '{key}' must have string keys", self.what);
                        self.error(msg);
                        continue;
                    };
                    match v.to_json() {
                        Ok(json) => {
                            out.insert(name.clone(), json);
                        }
                        Err(e) => {
                            let msg = format!("{}: property '{name}': {e}", self.what);
                            self.error(msg);
                        }
                    }
                }
            }
            Some(other) => {
                let msg = format!(
                    "{}: '{key}' must be a table, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
            }
        }
        out
    }

    /// Report keys nobody asked for (usually typos).
    pub fn finish(mut self, out: &mut Vec<ConfigError>) {
        for (k, _) in self.entries {
            let name = k.to_string();
            if !self.used.contains(name.as_str()) {
                self.errors.push(ConfigError {
                    location: self.at.clone(),
                    message: format!("{}: unknown field '{name}'", self.what),
                });
            }
        }
        out.append(&mut self.errors);
    }
}

/// The entries of a Lua table.
pub type Entries = [(RawKey, RawValue)];

/// A table made by one of the `moonbot` constructors: its kind, position, fields.
pub fn tagged<'a>(
    value: &'a RawValue,
    expected: &str,
    context: &str,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<(&'a str, String, &'a Entries)> {
    let RawValue::Table(entries) = value else {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!(
                "{context}: expected {expected}, got a {}",
                value.type_name()
            ),
        });
        return None;
    };
    let (Some(RawValue::Str(kind)), Some(RawValue::Str(place))) =
        (value.get("_kind"), value.get("_where"))
    else {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!("{context}: expected {expected}, got a plain table"),
        });
        return None;
    };
    Some((kind.as_str(), place.clone(), entries))
}

/// A name usable for workers and users (it goes into certificates and
/// paths): the worker name rule of `moonbot_worker::workdir::validate_name`.
pub fn valid_name(name: &str) -> bool {
    moonbot_worker::workdir::validate_name(name).is_ok()
}

/// The longest builder, scheduler or change source name.
pub const MAX_LABEL_CHARS: usize = 200;

/// A builder, scheduler or change source name, as Buildbot allows: any
/// non-empty text without control characters (CPython's "AMD64 Fedora
/// Rawhide 3.x", OpenWrt's "x86/64"), at most [`MAX_LABEL_CHARS`]. Wherever
/// it goes into a URL, a path on disk or HTML it is escaped there.
pub fn valid_label(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= MAX_LABEL_CHARS
        && !name.chars().any(char::is_control)
}
