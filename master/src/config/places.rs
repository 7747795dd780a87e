//! Lines for errors about master.lua's top-level sections.
//!
//! Why: a constructor (`mb.builder{…}`) records the line it was called on,
//! but the plain tables of the top level (`www = { … }`, `db`, `auth`,
//! `secrets` …) carry no position, so their errors would name only the file.
//! The path an error names (`www.change_hooks.github: …`, `configuration:
//! unknown field 'titel'`) is looked up in master.lua's text instead: each
//! segment's `name =` after the previous one's, the last one found giving
//! the line.

use super::ConfigError;
use crate::lua::CONFIG_FILE;

/// Give each error that names only master.lua the line of the field it is about.
pub fn place_on_lines(errors: &mut [ConfigError], source: &str) {
    let lines: Vec<&str> = source.lines().collect();
    for e in errors.iter_mut().filter(|e| e.location == CONFIG_FILE) {
        if let Some(line) = line_of(&lines, &path_of(&e.message)) {
            e.location = format!("{CONFIG_FILE}:{line}");
        }
    }
}

/// The field path an error's message names: `configuration: unknown field
/// 'x'` names `x`; `www.change_hooks.github: …` names those three.
fn path_of(message: &str) -> Vec<String> {
    let (head, rest) = message.split_once(": ").unwrap_or((message, ""));
    if head == "configuration" {
        return rest
            .split('\'')
            .nth(1)
            .map(|key| vec![key.to_string()])
            .unwrap_or_default();
    }
    head.split(['.', '[', ' '])
        .map(|s| s.trim_end_matches(']'))
        .take_while(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .filter(|s| !s.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// The 1-based line of the last segment of `path` found, each searched after
/// the line of the one before.
fn line_of(lines: &[&str], path: &[String]) -> Option<usize> {
    let mut from = 0;
    let mut found = None;
    for key in path {
        let Some(offset) = lines[from..].iter().position(|l| assigns(l, key)) else {
            break;
        };
        from += offset;
        found = Some(from + 1);
    }
    found
}

/// Whether `line` assigns the field `key` (`key =`, `["key"] =`, `t.key =`),
/// not a `local key =` nor `key ==`.
fn assigns(line: &str, key: &str) -> bool {
    let code = line.split("--").next().unwrap_or("");
    let mut rest = code;
    while let Some(at) = rest.find(key) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + key.len()..].trim_start_matches(['"', '\'', ']']);
        let boundary = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && !rest[..at].trim_end().ends_with("local");
        let after = after.trim_start();
        if boundary && after.starts_with('=') && !after.starts_with("==") {
            return true;
        }
        rest = &rest[at + key.len()..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = r#"local mb = require "moonbot"
local title = "x"  -- title = "not this"
return {
  titel = "typo",
  www = {
    port = 8010,
    change_hooks = {
      github = { secret = 1 },
    },
  },
  db = { url = 3 },
}
"#;

    fn placed(message: &str) -> String {
        let mut errors = vec![ConfigError::whole_file(message.to_string())];
        place_on_lines(&mut errors, SOURCE);
        errors[0].location.clone()
    }

    #[test]
    fn top_level_errors_get_the_line_of_their_field() {
        assert_eq!(
            placed("configuration: unknown field 'titel'"),
            "master.lua:4"
        );
        assert_eq!(placed("www: 'port' must be …"), "master.lua:5");
        assert_eq!(
            placed("www.change_hooks.github: 'secret' must be a string"),
            "master.lua:8"
        );
        assert_eq!(placed("db: 'url' must be a string"), "master.lua:11");
        // A local of the same name is not the field.
        assert_eq!(
            placed("configuration: 'title' must be a string"),
            "master.lua"
        );
        assert_eq!(placed("secrets: nothing like it"), "master.lua");
    }
}
