//! GitLab's webhook events as changes, read from the payloads GitLab
//! documents (`object_kind` decides; old bodies without it are read by their
//! `X-Gitlab-Event`):
//! - `push` and `tag_push`: one change per commit, in the payload's order
//!   (oldest first), on the branch or the tag's name; a tag created on an
//!   existing commit (no commits listed) is one change for its
//!   `checkout_sha`; a deleted branch or tag (`after` all zeros) makes none;
//!   a commit whose message says `[ci skip]` or `[skip ci]` makes none;
//! - `merge_request` `open`, `reopen`, and `update` with new commits
//!   (`oldrev` set): one change for the last commit, on the merge request's
//!   own ref `refs/merge-requests/IID/head`. Buildbot puts it on the target
//!   branch, so two merge requests into `main` collapse together; here they
//!   never do. Its source and target branches and repositories, number,
//!   title and URL are properties.
//!
//! Anything else (comments, pipelines, a description edit, a close or
//! merge) is answered and ignored: a comment is not new code. The notes it
//! leaves show what the payload named with control characters escaped.

use super::{HookOutcome, HookSettings, person, rfc3339_seconds, skips_ci, str_at};
use crate::data::changes::NewChange;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub use super::PayloadError;

fn nothing(note: String) -> Option<HookOutcome> {
    Some(HookOutcome {
        changes: Vec::new(),
        note,
    })
}

/// Read one delivery: `event` is its `X-Gitlab-Event` header.
pub fn read(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    let kind = payload
        .get("object_kind")
        .and_then(Value::as_str)
        .unwrap_or(match event {
            "Push Hook" => "push",
            "Tag Push Hook" => "tag_push",
            "Merge Request Hook" => "merge_request",
            _ => "",
        });
    let missing = PayloadError::missing_in(kind);
    match kind {
        "push" | "tag_push" => {
            push(kind, payload, settings).ok_or_else(|| missing("ref or commits"))
        }
        "merge_request" => {
            merge_request(payload, settings).ok_or_else(|| missing("object_attributes or project"))
        }
        other => Ok(HookOutcome {
            changes: Vec::new(),
            note: format!(
                "the '{}' event makes no change; ignored",
                if other.is_empty() { event } else { other }.escape_debug()
            ),
        }),
    }
}

/// The repository a change names: the project's clonable https URL, else
/// the old bodies' `repository.url`.
fn repository(payload: &Value) -> Option<String> {
    str_at(payload, &["project", "git_http_url"])
        .or_else(|| str_at(payload, &["repository", "git_http_url"]))
        .or_else(|| str_at(payload, &["repository", "url"]))
        .map(str::to_string)
}

fn project(payload: &Value, settings: &HookSettings) -> String {
    settings
        .project
        .clone()
        .or_else(|| str_at(payload, &["project", "path_with_namespace"]).map(str::to_string))
        .or_else(|| str_at(payload, &["repository", "name"]).map(str::to_string))
        .unwrap_or_default()
}

fn push(kind: &str, payload: &Value, settings: &HookSettings) -> Option<HookOutcome> {
    let git_ref = payload.get("ref")?.as_str()?;
    if payload
        .get("after")
        .and_then(Value::as_str)
        .is_some_and(|after| !after.is_empty() && after.bytes().all(|b| b == b'0'))
    {
        return nothing(format!("{} was deleted: no change", git_ref.escape_debug()));
    }
    let Some(branch) = git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
    else {
        return nothing(format!(
            "{} is not a branch or a tag: no change",
            git_ref.escape_debug()
        ));
    };
    let repository = repository(payload)?;
    let project = project(payload, settings);
    let commits = payload.get("commits")?.as_array()?;
    let pusher = payload
        .get("user_name")
        .and_then(Value::as_str)
        .map(
            |name| match payload.get("user_email").and_then(Value::as_str) {
                Some(email) if !email.is_empty() => format!("{name} <{email}>"),
                _ => name.to_string(),
            },
        );
    let mut changes = Vec::new();
    let mut skipped = 0;
    let change = |revision: String, author: String, commit: Option<&Value>| {
        let mut files = Vec::new();
        for list in ["added", "modified", "removed"] {
            if let Some(names) = commit.and_then(|c| c.get(list)).and_then(Value::as_array) {
                files.extend(names.iter().filter_map(Value::as_str).map(str::to_string));
            }
        }
        let mut properties = BTreeMap::new();
        properties.insert("event".to_string(), json!(kind));
        NewChange {
            author,
            committer: None,
            comments: commit
                .and_then(|c| c.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            branch: Some(branch.to_string()),
            revision: Some(revision),
            revlink: commit
                .and_then(|c| c.get("url"))
                .and_then(Value::as_str)
                .map(str::to_string),
            when_timestamp: commit
                .and_then(|c| c.get("timestamp"))
                .and_then(Value::as_str)
                .and_then(rfc3339_seconds),
            category: Some(kind.to_string()),
            repository: repository.clone(),
            codebase: settings.codebase.clone(),
            project: project.clone(),
            files,
            properties,
        }
    };
    if commits.is_empty() {
        // A tag (or branch) created on a commit the repository had.
        if let Some(sha) = payload.get("checkout_sha").and_then(Value::as_str) {
            changes.push(change(
                sha.to_string(),
                pusher.clone().unwrap_or_default(),
                None,
            ));
        }
    }
    for commit in commits {
        let message = commit.get("message").and_then(Value::as_str).unwrap_or("");
        if skips_ci(message) {
            skipped += 1;
            continue;
        }
        let author = commit
            .get("author")
            .and_then(person)
            .or_else(|| pusher.clone())?;
        changes.push(change(
            commit.get("id")?.as_str()?.to_string(),
            author,
            Some(commit),
        ));
    }
    let mut note = format!("{} change(s) on {}", changes.len(), branch.escape_debug());
    if skipped > 0 {
        note.push_str(&format!("; {skipped} commit(s) skipped by [ci skip]"));
    }
    Some(HookOutcome { changes, note })
}

fn merge_request(payload: &Value, settings: &HookSettings) -> Option<HookOutcome> {
    let mr = payload.get("object_attributes")?;
    let iid = mr.get("iid")?.as_i64()?;
    let action = mr.get("action").and_then(Value::as_str).unwrap_or("");
    let new_commits = mr.get("oldrev").is_some_and(|r| !r.is_null());
    if !(matches!(action, "open" | "reopen") || action == "update" && new_commits) {
        return nothing(format!(
            "merge request !{iid} {}{}: no change",
            action.escape_debug(),
            if action == "update" {
                " without new commits"
            } else {
                ""
            }
        ));
    }
    let title = mr.get("title").and_then(Value::as_str).unwrap_or("");
    if skips_ci(title) {
        return nothing(format!("merge request !{iid} asks [ci skip]: no change"));
    }
    let last = mr.get("last_commit")?;
    let url = mr.get("url").and_then(Value::as_str).unwrap_or("");
    let target_repository = str_at(mr, &["target", "git_http_url"])
        .map(str::to_string)
        .or_else(|| repository(payload))?;
    let mut properties = BTreeMap::new();
    properties.insert("event".to_string(), json!("merge_request"));
    properties.insert("merge_request_iid".to_string(), json!(iid));
    properties.insert("merge_request_title".to_string(), json!(title));
    properties.insert("merge_request_url".to_string(), json!(url));
    for (name, path) in [
        ("source_branch", &["source_branch"][..]),
        ("target_branch", &["target_branch"][..]),
        ("source_repository", &["source", "git_http_url"][..]),
        ("target_repository", &["target", "git_http_url"][..]),
    ] {
        properties.insert(name.to_string(), json!(str_at(mr, path).unwrap_or("")));
    }
    let project = settings
        .project
        .clone()
        .or_else(|| str_at(mr, &["target", "path_with_namespace"]).map(str::to_string))
        .unwrap_or_else(|| project(payload, settings));
    let change = NewChange {
        author: last
            .get("author")
            .and_then(person)
            .or_else(|| str_at(payload, &["user", "username"]).map(str::to_string))?,
        committer: None,
        comments: format!(
            "GitLab Merge Request !{iid}: {title}\n{}",
            mr.get("description").and_then(Value::as_str).unwrap_or("")
        ),
        branch: Some(format!("refs/merge-requests/{iid}/head")),
        revision: Some(last.get("id")?.as_str()?.to_string()),
        revlink: Some(url.to_string()).filter(|u| !u.is_empty()),
        when_timestamp: last
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(rfc3339_seconds),
        category: Some("merge_request".into()),
        repository: target_repository,
        codebase: settings.codebase.clone(),
        project,
        files: Vec::new(),
        properties,
    };
    Some(HookOutcome {
        changes: vec![change],
        note: format!("merge request !{iid} {}: 1 change", action.escape_debug()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_case(event: &str, name: &str) -> HookOutcome {
        let payload = crate::changes::fixture("gitlab", name);
        read(event, &payload, &HookSettings::default()).unwrap()
    }

    #[test]
    fn each_fixture_makes_the_changes_gitlab_meant() {
        // (file, X-Gitlab-Event, changes, branch of the first).
        let cases = [
            ("bb-push", "Push Hook", 2, "master"),
            ("bb-tag-push", "Tag Push Hook", 2, "v1.0.0"),
            ("gitlabdocs-push", "Push Hook", 2, "master"),
            ("gitlabdocs-tag_push", "Tag Push Hook", 1, "v1.0.0"),
            ("goscm-branch_create", "Push Hook", 1, "feature"),
            ("goscm-branch_delete", "Push Hook", 0, ""),
            ("goscm-tag_delete", "Tag Push Hook", 0, ""),
            (
                "bb-mr-open",
                "Merge Request Hook",
                1,
                "refs/merge-requests/6/head",
            ),
            (
                "bb-mr-addcommit",
                "Merge Request Hook",
                1,
                "refs/merge-requests/6/head",
            ),
            (
                "bb-mr-open-forked",
                "Merge Request Hook",
                1,
                "refs/merge-requests/7/head",
            ),
            (
                "gitlabdocs-merge_request",
                "Merge Request Hook",
                1,
                "refs/merge-requests/1/head",
            ),
            ("bb-mr-editdesc", "Merge Request Hook", 0, ""),
            ("bb-mr-close", "Merge Request Hook", 0, ""),
            ("goscm-pull_request_merge", "Merge Request Hook", 0, ""),
            (
                "goscm-pull_request_review_ready",
                "Merge Request Hook",
                0,
                "",
            ),
            // Deliberately none (Buildbot makes one): a comment is not new code.
            ("bb-note-mr", "Note Hook", 0, ""),
            ("gitlabdocs-pipeline", "Pipeline Hook", 0, ""),
        ];
        crate::changes::check_fixtures("gitlab", read, &cases);
    }

    #[test]
    fn a_push_keeps_the_payload_order_and_its_people() {
        let out = read_case("Push Hook", "bb-push");
        let first = &out.changes[0];
        assert_eq!(
            first.revision.as_deref(),
            Some("b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327")
        );
        assert_eq!(first.author, "Jordi Mallach <jordi@softcatala.org>");
        assert_eq!(first.when_timestamp, Some(1_323_692_851.0));
        assert_eq!(first.repository, "git@localhost:diaspora.git");
        assert_eq!(first.project, "Diaspora");
        let docs = read_case("Push Hook", "gitlabdocs-push");
        assert_eq!(
            docs.changes[0].files,
            ["CHANGELOG", "app/controller/application.rb"]
        );
        assert_eq!(docs.changes[0].category.as_deref(), Some("push"));
    }

    #[test]
    fn a_merge_request_names_both_sides() {
        let out = read_case("Merge Request Hook", "bb-mr-open-forked");
        let c = &out.changes[0];
        let p = &c.properties;
        assert_eq!(p["source_branch"], "ms-viewport");
        assert_eq!(p["target_branch"], "master");
        assert_eq!(
            p["source_repository"],
            "https://gitlab.example.com/build/awesome_project.git"
        );
        assert_ne!(p["source_repository"], p["target_repository"]);
        assert_eq!(c.repository, p["target_repository"].as_str().unwrap());
        assert_eq!(p["merge_request_iid"], 7);
    }
}
