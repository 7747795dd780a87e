//! `POST /change_hook/base`: Buildbot's plain dialect, for scripts. The
//! fields come as a form (`author=…&revision=…`) or as a JSON object with the
//! same names: `author` (or `who`), `comments`, `branch`, `category`,
//! `revision`, `revlink`, `repository`, `project`, `codebase`,
//! `when_timestamp` (or `when`, seconds since 1970), `files` (a JSON list)
//! and `properties` (a JSON object). One delivery is one change.

use super::PayloadError;
use super::{HookOutcome, HookSettings};
use crate::data::changes::NewChange;
use serde_json::Value;
use std::collections::BTreeMap;

/// Read one delivery (`_event` is unused: the base dialect has no events).
pub fn read(
    _event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    let missing = PayloadError::missing_in("change");
    let text = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let author = text("author")
        .or_else(|| text("who"))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing("author"))?;
    // A form sends lists and objects as JSON text; a JSON body as themselves.
    let structured = |name: &str| match payload.get(name) {
        Some(Value::String(s)) if !s.is_empty() => serde_json::from_str::<Value>(s).ok(),
        Some(Value::String(_)) | None => Some(Value::Null),
        Some(other) => Some(other.clone()),
    };
    let files = match structured("files").ok_or_else(|| missing("files (a JSON list)"))? {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .into_iter()
            .map(|f| f.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| missing("files (a JSON list of strings)"))?,
        _ => return Err(missing("files (a JSON list)")),
    };
    let properties: BTreeMap<String, Value> =
        match structured("properties").ok_or_else(|| missing("properties (a JSON object)"))? {
            Value::Null => BTreeMap::new(),
            Value::Object(map) => map.into_iter().collect(),
            _ => return Err(missing("properties (a JSON object)")),
        };
    let when = match payload
        .get("when_timestamp")
        .or_else(|| payload.get("when"))
    {
        None => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.parse().map_err(|_| missing("when_timestamp (seconds)"))?),
        Some(_) => return Err(missing("when_timestamp (seconds)")),
    };
    let change = NewChange {
        author,
        committer: text("committer"),
        comments: text("comments").unwrap_or_default(),
        branch: text("branch").filter(|b| !b.is_empty()),
        revision: text("revision").filter(|r| !r.is_empty()),
        revlink: text("revlink").filter(|r| !r.is_empty()),
        when_timestamp: when,
        category: text("category").filter(|c| !c.is_empty()),
        repository: text("repository").unwrap_or_default(),
        codebase: text("codebase").unwrap_or_else(|| settings.codebase.clone()),
        project: text("project")
            .or_else(|| settings.project.clone())
            .unwrap_or_default(),
        files,
        properties,
    };
    Ok(HookOutcome {
        changes: vec![change],
        note: "1 change".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_fields_and_json_bodies_make_one_change() {
        let form = json!({
            "author": "Ann <ann@example.org>", "revision": "abc", "branch": "main",
            "files": "[\"a.c\", \"b.c\"]", "properties": "{\"pr\": 7}", "when": "1700000000",
            "comments": "fix", "repository": "https://example.org/r.git", "project": "p",
        });
        let out = read("", &form, &HookSettings::default()).unwrap();
        let c = &out.changes[0];
        assert_eq!(c.files, vec!["a.c", "b.c"]);
        assert_eq!(c.properties["pr"], json!(7));
        assert_eq!(c.when_timestamp, Some(1_700_000_000.0));
        assert_eq!(
            (c.branch.as_deref(), c.revision.as_deref()),
            (Some("main"), Some("abc"))
        );
        let body = json!({ "who": "Bo", "files": ["x"], "properties": { "k": "v" } });
        assert_eq!(
            read("", &body, &HookSettings::default()).unwrap().changes[0].files,
            vec!["x"]
        );
        for bad in [
            json!({ "comments": "no author" }),
            json!({ "author": "a", "files": "not json" }),
            json!({ "author": "a", "properties": "[1]" }),
            json!({ "author": "a", "when": "yesterday" }),
        ] {
            assert!(read("", &bad, &HookSettings::default()).is_err(), "{bad}");
        }
    }
}
