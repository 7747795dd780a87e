//! GitHub's webhook events (`X-GitHub-Event`) as changes, read from the
//! payloads GitHub documents:
//! - `push`: one change per new, distinct commit of a branch or tag, oldest
//!   first, with its files (added, modified and removed), author, committer,
//!   message, time and link; a tag created on an existing commit is one change
//!   for that commit; a deleted ref makes none; a commit whose message says
//!   `[ci skip]` or `[skip ci]` makes none;
//! - `pull_request` (`opened`, `reopened`, `synchronize`): one change for the
//!   pull request's head commit, on the pull request's own ref
//!   (`refs/pull/N/head`, so two pull requests into `main` never merge), with
//!   its number, title, base and head branches and URL as properties;
//! - `ping`: nothing, answered.
//!
//! Any other event or action is answered and ignored. The notes it leaves
//! (answer and log) show what the payload named with control characters
//! escaped.

use super::{HookOutcome, HookSettings, PayloadError, person, rfc3339_seconds, skips_ci, str_at};
use crate::data::changes::NewChange;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// How a forge that speaks GitHub's webhook dialect differs from GitHub.
pub(super) struct Forge {
    /// As the change's message names it (`GitHub Pull Request #2`).
    name: &'static str,
    /// The prefix of the pull request's properties (`github.number`).
    prefix: &'static str,
    /// Whether a push lists its commits newest first (Gitea does).
    newest_first: bool,
}

const GITHUB: Forge = Forge {
    name: "GitHub",
    prefix: "github",
    newest_first: false,
};

/// Gitea: GitHub's payloads, its commits newest first, and its own word
/// for a pull request's new commits (`synchronized`).
pub(super) const GITEA: Forge = Forge {
    name: "Gitea",
    prefix: "gitea",
    newest_first: true,
};

/// Read one event's payload.
pub fn read(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    read_as(&GITHUB, event, payload, settings)
}

/// Read one event's payload from a forge that speaks GitHub's dialect.
pub(super) fn read_as(
    forge: &Forge,
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    let missing = PayloadError::missing_in(event);
    match event {
        "ping" => Ok(HookOutcome {
            changes: Vec::new(),
            note: "ping received".into(),
        }),
        "push" => {
            push(forge, payload, settings).ok_or_else(|| missing("ref, repository or commits"))
        }
        "pull_request" => pull_request(forge, payload, settings)
            .ok_or_else(|| missing("action, number, pull_request or repository")),
        other => Ok(HookOutcome {
            changes: Vec::new(),
            note: format!(
                "the '{}' event makes no change; ignored",
                other.escape_debug()
            ),
        }),
    }
}

fn push(forge: &Forge, payload: &Value, settings: &HookSettings) -> Option<HookOutcome> {
    let git_ref = payload.get("ref")?.as_str()?;
    let repository = str_at(payload, &["repository", "html_url"])?.to_string();
    let project = settings
        .project
        .clone()
        .or_else(|| str_at(payload, &["repository", "full_name"]).map(str::to_string))
        .unwrap_or_default();
    let nothing = |note: String| {
        Some(HookOutcome {
            changes: Vec::new(),
            note,
        })
    };
    let after_is_zero = payload
        .get("after")
        .and_then(Value::as_str)
        .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b == b'0'));
    if payload.get("deleted").and_then(Value::as_bool) == Some(true) || after_is_zero {
        return nothing(format!("{} was deleted: no change", git_ref.escape_debug()));
    }
    let branch = match git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
    {
        Some(name) => name.to_string(),
        None => {
            return nothing(format!(
                "{} is not a branch or a tag: no change",
                git_ref.escape_debug()
            ));
        }
    };
    let commits = payload.get("commits")?.as_array()?;
    // A ref created on commits it does not add (a tag on an existing commit)
    // lists none: its head commit is the change.
    let mut listed: Vec<&Value> = if commits.is_empty() {
        payload
            .get("head_commit")
            .filter(|c| !c.is_null())
            .into_iter()
            .collect()
    } else {
        commits
            .iter()
            .filter(|c| c.get("distinct").and_then(Value::as_bool) != Some(false))
            .collect()
    };
    if forge.newest_first {
        listed.reverse();
    }
    let mut changes = Vec::new();
    let mut skipped = 0;
    for commit in listed {
        let message = commit.get("message").and_then(Value::as_str).unwrap_or("");
        if skips_ci(message) {
            skipped += 1;
            continue;
        }
        let mut files = Vec::new();
        for kind in ["added", "modified", "removed"] {
            if let Some(list) = commit.get(kind).and_then(Value::as_array) {
                files.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
            }
        }
        let mut properties = BTreeMap::new();
        properties.insert("event".to_string(), json!("push"));
        changes.push(NewChange {
            author: commit.get("author").and_then(person)?,
            committer: commit.get("committer").and_then(person),
            comments: message.to_string(),
            branch: Some(branch.clone()),
            revision: Some(commit.get("id")?.as_str()?.to_string()),
            revlink: commit
                .get("url")
                .and_then(Value::as_str)
                .map(str::to_string),
            when_timestamp: commit
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(rfc3339_seconds),
            category: Some("push".into()),
            repository: repository.clone(),
            codebase: settings.codebase.clone(),
            project: project.clone(),
            files,
            properties,
        });
    }
    let mut note = format!("{} change(s) on {}", changes.len(), branch.escape_debug());
    if skipped > 0 {
        note.push_str(&format!("; {skipped} commit(s) skipped by [ci skip]"));
    }
    Some(HookOutcome { changes, note })
}

fn pull_request(forge: &Forge, payload: &Value, settings: &HookSettings) -> Option<HookOutcome> {
    let action = payload.get("action")?.as_str()?;
    let number = payload.get("number")?.as_i64()?;
    let pr = payload.get("pull_request")?;
    if !matches!(
        action,
        "opened" | "reopened" | "synchronize" | "synchronized"
    ) {
        return Some(HookOutcome {
            changes: Vec::new(),
            note: format!(
                "pull request #{number} was {}: no change",
                action.escape_debug()
            ),
        });
    }
    let title = pr.get("title").and_then(Value::as_str).unwrap_or("");
    let body = pr.get("body").and_then(Value::as_str).unwrap_or("");
    if skips_ci(title) {
        return Some(HookOutcome {
            changes: Vec::new(),
            note: format!("pull request #{number} asks [ci skip]: no change"),
        });
    }
    let repository = str_at(pr, &["base", "repo", "html_url"])
        .or_else(|| str_at(payload, &["repository", "html_url"]))?
        .to_string();
    let project = settings
        .project
        .clone()
        .or_else(|| str_at(pr, &["base", "repo", "full_name"]).map(str::to_string))
        .unwrap_or_default();
    let html_url = pr.get("html_url").and_then(Value::as_str).unwrap_or("");
    let commits = pr.get("commits").and_then(Value::as_i64);
    let mut properties = BTreeMap::new();
    properties.insert("event".to_string(), json!("pull_request"));
    properties.insert("pullrequesturl".to_string(), json!(html_url));
    let prefix = forge.prefix;
    properties.insert(format!("{prefix}.number"), json!(number));
    properties.insert(format!("{prefix}.title"), json!(title));
    properties.insert(
        format!("{prefix}.base.ref"),
        json!(str_at(pr, &["base", "ref"]).unwrap_or("")),
    );
    properties.insert(
        format!("{prefix}.head.ref"),
        json!(str_at(pr, &["head", "ref"]).unwrap_or("")),
    );
    let change = NewChange {
        author: str_at(pr, &["user", "login"])?.to_string(),
        committer: None,
        comments: format!(
            "{} Pull Request #{number} ({} commit{})\n{title}\n{body}",
            forge.name,
            commits.unwrap_or(0),
            if commits == Some(1) { "" } else { "s" }
        ),
        branch: Some(format!("refs/pull/{number}/head")),
        revision: Some(str_at(pr, &["head", "sha"])?.to_string()),
        revlink: Some(html_url.to_string()).filter(|u| !u.is_empty()),
        when_timestamp: pr
            .get("updated_at")
            .and_then(Value::as_str)
            .and_then(rfc3339_seconds),
        category: Some("pull".into()),
        repository,
        codebase: settings.codebase.clone(),
        project,
        files: Vec::new(),
        properties,
    };
    Some(HookOutcome {
        changes: vec![change],
        note: format!("pull request #{number} {action}: 1 change"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str) -> Value {
        crate::changes::fixture("github", name)
    }

    fn read_case(event: &str, name: &str) -> HookOutcome {
        read(event, &case(name), &HookSettings::default()).unwrap()
    }

    #[test]
    fn a_pushed_commit_is_a_change_with_its_files_and_people() {
        let out = read_case("push", "push-4");
        assert_eq!(out.changes.len(), 1, "{out:?}");
        let c = &out.changes[0];
        assert_eq!(c.branch.as_deref(), Some("master"));
        assert_eq!(
            c.revision.as_deref(),
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        );
        assert_eq!(
            c.author,
            "Codertocat <21031067+Codertocat@users.noreply.github.com>"
        );
        assert_eq!(c.committer.as_deref(), Some(c.author.as_str()));
        assert_eq!(c.comments, "Initial commit");
        assert_eq!(c.files, ["README.md"]);
        assert_eq!(c.repository, "https://github.com/Codertocat/Hello-World");
        assert_eq!(c.project, "Codertocat/Hello-World");
        assert_eq!(c.when_timestamp, Some(1_557_933_565.0));
        assert_eq!(
            c.revlink.as_deref(),
            Some(
                "https://github.com/Codertocat/Hello-World/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246"
            )
        );
        assert_eq!(c.properties["event"], "push");
    }

    #[test]
    fn a_tag_is_a_change_on_the_tag_and_a_deleted_ref_is_none() {
        let out = read_case("push", "push-0");
        assert_eq!(out.changes.len(), 1, "{out:?}");
        assert_eq!(out.changes[0].branch.as_deref(), Some("simple-tag"));
        assert_eq!(
            out.changes[0].revision.as_deref(),
            Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        );
        let deleted = read_case("push", "push-1");
        assert!(deleted.changes.is_empty());
        assert!(deleted.note.contains("deleted"), "{}", deleted.note);
    }

    #[test]
    fn ci_skip_and_settings_apply() {
        let mut payload = case("push-4");
        payload["commits"][0]["message"] = json!("Tidy [ci skip]");
        let settings = HookSettings {
            codebase: "app".into(),
            project: Some("hello".into()),
        };
        let out = read("push", &payload, &settings).unwrap();
        assert!(
            out.changes.is_empty() && out.note.contains("[ci skip]"),
            "{out:?}"
        );
        let out = read("push", &case("push-4"), &settings).unwrap();
        assert_eq!(out.changes[0].codebase, "app");
        assert_eq!(out.changes[0].project, "hello");
    }

    #[test]
    fn a_pull_request_is_a_change_on_its_own_ref() {
        for (name, action) in [
            ("pull_request-0", "opened"),
            ("pull_request-22", "synchronize"),
        ] {
            let out = read_case("pull_request", name);
            assert_eq!(out.changes.len(), 1, "{action}: {out:?}");
            let c = &out.changes[0];
            assert_eq!(c.branch.as_deref(), Some("refs/pull/2/head"));
            assert_eq!(
                c.revision.as_deref(),
                Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821")
            );
            assert_eq!(c.author, "Codertocat");
            assert!(
                c.comments.starts_with(
                    "GitHub Pull Request #2 (1 commit)\nUpdate the README with new information."
                ),
                "{}",
                c.comments
            );
            assert_eq!(c.properties["github.number"], 2);
            assert_eq!(c.properties["github.base.ref"], "master");
            assert_eq!(c.properties["github.head.ref"], "changes");
            assert_eq!(
                c.properties["pullrequesturl"],
                "https://github.com/Codertocat/Hello-World/pull/2"
            );
        }
        let closed = read_case("pull_request", "pull_request-3");
        assert!(closed.changes.is_empty(), "{closed:?}");
    }

    #[test]
    fn ping_and_other_events_make_nothing_and_bad_payloads_are_refused() {
        assert!(read_case("ping", "ping-0").changes.is_empty());
        let other = read("issues", &json!({}), &HookSettings::default()).unwrap();
        assert!(other.changes.is_empty() && other.note.contains("'issues'"));
        assert!(read("push", &json!({"ref": 1}), &HookSettings::default()).is_err());
        assert!(read("pull_request", &json!([]), &HookSettings::default()).is_err());
    }
}
