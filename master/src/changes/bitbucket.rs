//! Bitbucket's webhook events as changes, for both products, which send
//! different bodies under similar event keys (`X-Event-Key`):
//!
//! - **Cloud** (bitbucket.org, `read_cloud`): `repo:push` lists, per ref
//!   that moved, its commits newest first (at most five, `truncated` beyond):
//!   one change per commit, oldest first; a new tag or branch is one change
//!   for its head (its list holds commits other branches have, and the body
//!   cannot say which are new). `pullrequest:created` and `pullrequest:updated` are one change for
//!   the source commit, read from `pullrequest.source` / `destination`.
//! - **Server / Data Center** (`read_server`, its native events):
//!   `repo:refs_changed` gives each ref's `fromHash` and `toHash` and no
//!   commits: one change for the new head, by the pusher. `pr:opened` and
//!   `pr:from_ref_updated` are one change for `fromRef.latestCommit`.
//!
//! A pull request's change is on `refs/pull-requests/N/from` (the ref
//! Bitbucket Server keeps for it), so two pull requests into one branch never
//! collapse, with `bitbucket.*` properties naming its number, title, source
//! and destination, and `pullrequesturl`. Branches and tags are named as the
//! other dialects and the git poller name them (`main`, `v1.0`), so one
//! change filter serves every source; Buildbot's Bitbucket hooks used
//! `refs/heads/main`. A deleted ref, a merged or declined pull request and a
//! comment make no change (a merge comes as a push anyway), and `[ci skip]` /
//! `[skip ci]` is honoured. Buildbot 4.3 fails on every real Cloud
//! pull-request body and every native Server event; these read them.

use super::PayloadError;
use super::{HookOutcome, HookSettings, rfc3339_seconds, skips_ci, str_at};
use crate::data::changes::NewChange;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn nothing(note: String) -> HookOutcome {
    HookOutcome {
        changes: Vec::new(),
        note,
    }
}

/// A push's outcome: its changes, or why it made none.
fn push_outcome(changes: Vec<NewChange>, mut notes: Vec<String>) -> HookOutcome {
    let note = if changes.is_empty() {
        notes.push("no change".into());
        notes.join("; ")
    } else {
        format!("{} change(s)", changes.len())
    };
    HookOutcome { changes, note }
}

fn ignored(event: &str) -> HookOutcome {
    nothing(format!(
        "the '{}' event makes no change; ignored",
        event.escape_debug()
    ))
}

/// Read one Bitbucket Cloud delivery: `event` is its `X-Event-Key`.
pub fn read_cloud(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    let missing = PayloadError::missing_in(event);
    match event {
        "repo:push" => {
            cloud_push(payload, settings).ok_or_else(|| missing("push.changes or repository"))
        }
        "pullrequest:created" | "pullrequest:updated" => {
            cloud_pull_request(event, payload, settings)
                .ok_or_else(|| missing("pullrequest.id, source or destination"))
        }
        other => Ok(ignored(other)),
    }
}

/// Read one Bitbucket Server / Data Center delivery.
pub fn read_server(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Result<HookOutcome, PayloadError> {
    let missing = PayloadError::missing_in(event);
    match event {
        "repo:refs_changed" => {
            server_push(payload, settings).ok_or_else(|| missing("changes or repository"))
        }
        "pr:opened" | "pr:from_ref_updated" => server_pull_request(event, payload, settings)
            .ok_or_else(|| missing("pullRequest.id, fromRef or toRef")),
        "diagnostics:ping" => Ok(nothing("ping received".into())),
        other => Ok(ignored(other)),
    }
}

fn cloud_push(payload: &Value, settings: &HookSettings) -> Option<HookOutcome> {
    let repository = str_at(payload, &["repository", "links", "html", "href"])?.to_string();
    let project = settings
        .project
        .clone()
        .or_else(|| str_at(payload, &["repository", "full_name"]).map(str::to_string))
        .unwrap_or_default();
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for moved in payload.get("push")?.get("changes")?.as_array()? {
        let new = match moved.get("new") {
            Some(new) if !new.is_null() => new,
            _ => {
                let name = str_at(moved, &["old", "name"]).unwrap_or("a ref");
                notes.push(format!("{} was deleted: no change", name.escape_debug()));
                continue;
            }
        };
        let Some(name) = str_at(new, &["name"]) else {
            continue;
        };
        let created = moved.get("created").and_then(Value::as_bool) == Some(true);
        let listed: Vec<&Value> = match moved.get("commits").and_then(Value::as_array) {
            // A new ref's list holds commits other branches already have
            // (Bitbucket cannot say which are new): its head is the change.
            Some(commits) if !commits.is_empty() && !created => commits.iter().rev().collect(),
            _ => new.get("target").into_iter().collect(),
        };
        for commit in listed {
            let message = commit.get("message").and_then(Value::as_str).unwrap_or("");
            let Some(hash) = commit.get("hash").and_then(Value::as_str) else {
                continue;
            };
            if skips_ci(message) {
                notes.push(format!("{hash} asks [ci skip]: no change"));
                continue;
            }
            changes.push(NewChange {
                author: str_at(commit, &["author", "raw"])
                    .or_else(|| str_at(commit, &["author", "user", "display_name"]))
                    .unwrap_or("")
                    .to_string(),
                committer: None,
                comments: message.trim_end().to_string(),
                branch: Some(name.to_string()),
                revision: Some(hash.to_string()),
                revlink: str_at(commit, &["links", "html", "href"]).map(str::to_string),
                when_timestamp: commit
                    .get("date")
                    .and_then(Value::as_str)
                    .and_then(rfc3339_seconds),
                category: Some("push".into()),
                repository: repository.clone(),
                codebase: settings.codebase.clone(),
                project: project.clone(),
                files: Vec::new(),
                properties: BTreeMap::from([("event".to_string(), json!("repo:push"))]),
            });
        }
    }
    Some(push_outcome(changes, notes))
}

fn cloud_pull_request(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Option<HookOutcome> {
    let pr = payload.get("pullrequest")?;
    let number = pr.get("id")?.as_i64()?;
    let title = pr.get("title").and_then(Value::as_str).unwrap_or("");
    let revision = str_at(pr, &["source", "commit", "hash"])?;
    let source = str_at(pr, &["source", "branch", "name"])?;
    let destination = str_at(pr, &["destination", "branch", "name"])?;
    let url = str_at(pr, &["links", "html", "href"]).unwrap_or("");
    let repository = str_at(pr, &["destination", "repository", "links", "html", "href"])
        .or_else(|| str_at(payload, &["repository", "links", "html", "href"]))?;
    let project = settings
        .project
        .clone()
        .or_else(|| str_at(payload, &["repository", "full_name"]).map(str::to_string))
        .unwrap_or_default();
    let author = str_at(pr, &["author", "display_name"])
        .or_else(|| str_at(pr, &["author", "nickname"]))
        .unwrap_or("");
    let properties = pr_properties(
        event,
        number,
        title,
        (
            source,
            str_at(pr, &["source", "repository", "full_name"]).unwrap_or(""),
        ),
        destination,
        url,
    );
    Some(one_pr_change(PrChange {
        author,
        number,
        title,
        body: pr.get("description").and_then(Value::as_str).unwrap_or(""),
        revision,
        url,
        when: str_at(pr, &["updated_on"]).and_then(rfc3339_seconds),
        repository,
        project,
        settings,
        properties,
    }))
}

fn server_push(payload: &Value, settings: &HookSettings) -> Option<HookOutcome> {
    let repo = payload.get("repository")?;
    let (key, slug) = (str_at(repo, &["project", "key"])?, str_at(repo, &["slug"])?);
    let repository = server_repository(repo).unwrap_or_else(|| format!("{key}/{slug}"));
    let project = settings
        .project
        .clone()
        .unwrap_or_else(|| format!("{key}/{slug}"));
    let author = server_person(payload.get("actor"));
    let when = str_at(payload, &["date"]).and_then(server_time);
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for moved in payload.get("changes")?.as_array()? {
        let Some(name) = str_at(moved, &["ref", "displayId"]) else {
            continue;
        };
        if str_at(moved, &["type"]) == Some("DELETE") {
            notes.push(format!("{} was deleted: no change", name.escape_debug()));
            continue;
        }
        let Some(hash) = str_at(moved, &["toHash"]) else {
            continue;
        };
        changes.push(NewChange {
            author: author.clone(),
            committer: None,
            comments: format!("Bitbucket Server push of {name} to {hash}"),
            branch: Some(name.to_string()),
            revision: Some(hash.to_string()),
            revlink: None,
            when_timestamp: when,
            category: Some("push".into()),
            repository: repository.clone(),
            codebase: settings.codebase.clone(),
            project: project.clone(),
            files: Vec::new(),
            properties: BTreeMap::from([
                ("event".to_string(), json!("repo:refs_changed")),
                (
                    "bitbucket.before".to_string(),
                    json!(str_at(moved, &["fromHash"]).unwrap_or("")),
                ),
            ]),
        });
    }
    Some(push_outcome(changes, notes))
}

fn server_pull_request(
    event: &str,
    payload: &Value,
    settings: &HookSettings,
) -> Option<HookOutcome> {
    let pr = payload.get("pullRequest")?;
    let number = pr.get("id")?.as_i64()?;
    let title = pr.get("title").and_then(Value::as_str).unwrap_or("");
    let revision = str_at(pr, &["fromRef", "latestCommit"])?;
    let source = str_at(pr, &["fromRef", "displayId"])?;
    let destination = str_at(pr, &["toRef", "displayId"])?;
    let target_repo = pr.get("toRef")?.get("repository")?;
    let (key, slug) = (
        str_at(target_repo, &["project", "key"])?,
        str_at(target_repo, &["slug"])?,
    );
    let repository = server_repository(target_repo).unwrap_or_else(|| format!("{key}/{slug}"));
    let url = pr
        .get("links")
        .and_then(|l| l.get("self"))
        .and_then(|s| s.get(0))
        .and_then(|s| s.get("href"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let source_repo = pr.get("fromRef").and_then(|r| r.get("repository"));
    let source_name = source_repo
        .and_then(|r| {
            Some(format!(
                "{}/{}",
                str_at(r, &["project", "key"])?,
                str_at(r, &["slug"])?
            ))
        })
        .unwrap_or_default();
    let author = server_person(pr.get("author").and_then(|a| a.get("user")));
    let properties = pr_properties(
        event,
        number,
        title,
        (source, &source_name),
        destination,
        url,
    );
    Some(one_pr_change(PrChange {
        author: &author,
        number,
        title,
        body: pr.get("description").and_then(Value::as_str).unwrap_or(""),
        revision,
        url,
        when: str_at(payload, &["date"]).and_then(server_time),
        repository: &repository,
        project: settings
            .project
            .clone()
            .unwrap_or_else(|| format!("{key}/{slug}")),
        settings,
        properties,
    }))
}

/// What a pull request's one change is made of.
struct PrChange<'a> {
    author: &'a str,
    number: i64,
    title: &'a str,
    body: &'a str,
    revision: &'a str,
    url: &'a str,
    when: Option<f64>,
    repository: &'a str,
    project: String,
    settings: &'a HookSettings,
    properties: BTreeMap<String, Value>,
}

/// The change of a pull request, unless its title asks `[ci skip]`.
fn one_pr_change(pr: PrChange<'_>) -> HookOutcome {
    let number = pr.number;
    if skips_ci(pr.title) {
        return nothing(format!("pull request #{number} asks [ci skip]: no change"));
    }
    HookOutcome {
        changes: vec![NewChange {
            author: pr.author.to_string(),
            committer: None,
            comments: format!(
                "Bitbucket Pull Request #{number}\n{}\n{}",
                pr.title, pr.body
            ),
            branch: Some(format!("refs/pull-requests/{number}/from")),
            revision: Some(pr.revision.to_string()),
            revlink: Some(pr.url.to_string()).filter(|u| !u.is_empty()),
            when_timestamp: pr.when,
            category: Some("pull".into()),
            repository: pr.repository.to_string(),
            codebase: pr.settings.codebase.clone(),
            project: pr.project,
            files: Vec::new(),
            properties: pr.properties,
        }],
        note: format!("pull request #{number}: 1 change"),
    }
}

fn pr_properties(
    event: &str,
    number: i64,
    title: &str,
    (source, source_repository): (&str, &str),
    destination: &str,
    url: &str,
) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("event".to_string(), json!(event)),
        ("pullrequesturl".to_string(), json!(url)),
        ("bitbucket.number".to_string(), json!(number)),
        ("bitbucket.title".to_string(), json!(title)),
        ("bitbucket.source.branch".to_string(), json!(source)),
        (
            "bitbucket.source.repository".to_string(),
            json!(source_repository),
        ),
        (
            "bitbucket.destination.branch".to_string(),
            json!(destination),
        ),
    ])
}

/// A Server repository's clone URL (HTTP first), when the body has links.
fn server_repository(repo: &Value) -> Option<String> {
    let clones = repo.get("links")?.get("clone")?.as_array()?;
    let href = |name: &str| {
        clones
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|c| c.get("href"))
            .and_then(Value::as_str)
    };
    href("http").or_else(|| href("ssh")).map(str::to_string)
}

/// `Display Name <email>` of a Server user.
fn server_person(user: Option<&Value>) -> String {
    let Some(user) = user else {
        return String::new();
    };
    let name = str_at(user, &["displayName"])
        .or_else(|| str_at(user, &["name"]))
        .unwrap_or("");
    match str_at(user, &["emailAddress"]) {
        Some(email) if !email.is_empty() => format!("{name} <{email}>"),
        _ => name.to_string(),
    }
}

/// Server's times: `2018-07-05T18:22:00+0000` (no colon in the offset).
fn server_time(text: &str) -> Option<f64> {
    rfc3339_seconds(text).or_else(|| {
        let (head, offset) = text.split_at(text.len().checked_sub(5)?);
        let (sign, digits) = offset.split_at(1);
        if !matches!(sign, "+" | "-") || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rfc3339_seconds(&format!("{head}{sign}{}:{}", &digits[..2], &digits[2..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{check_fixtures, fixture};

    #[test]
    fn cloud_bodies_from_bitbucket_org() {
        check_fixtures(
            "bitbucket",
            read_cloud,
            &[
                ("goscm-cloud-push", "repo:push", 1, "master"),
                ("goscm-cloud-push_branch_create", "repo:push", 1, "develop"),
                ("goscm-cloud-push_branch_delete", "repo:push", 0, ""),
                ("goscm-cloud-push_tag_create", "repo:push", 1, "feature/x"),
                ("goscm-cloud-push_tag_delete", "repo:push", 0, ""),
                (
                    "goscm-cloud-pr_created",
                    "pullrequest:created",
                    1,
                    "refs/pull-requests/1/from",
                ),
                (
                    "goscm-cloud-pr_updated",
                    "pullrequest:updated",
                    1,
                    "refs/pull-requests/1/from",
                ),
                ("goscm-cloud-pr_fulfilled", "pullrequest:fulfilled", 0, ""),
                ("goscm-cloud-pr_declined", "pullrequest:rejected", 0, ""),
                (
                    "goscm-cloud-pr_comment_created",
                    "pullrequest:comment_created",
                    0,
                    "",
                ),
            ],
        );
        let push = read_cloud(
            "repo:push",
            &fixture("bitbucket", "goscm-cloud-push"),
            &HookSettings::default(),
        )
        .unwrap();
        let c = &push.changes[0];
        assert_eq!(
            c.revision.as_deref(),
            Some("141977fedf5cf35aa290ac87d4b5177ac4cd9de1")
        );
        assert_eq!(c.author, "Brad Rydzewski <brad.rydzewski@gmail.com>");
        assert_eq!(c.comments, "Update README");
        assert_eq!(c.repository, "https://bitbucket.org/brydzewski/foo");
        assert_eq!(c.project, "brydzewski/foo");
        assert_eq!(
            c.revlink.as_deref(),
            Some(
                "https://bitbucket.org/brydzewski/foo/commits/141977fedf5cf35aa290ac87d4b5177ac4cd9de1"
            )
        );
        assert_eq!(
            c.when_timestamp,
            rfc3339_seconds("2018-07-02T20:26:56+00:00")
        );

        // go-scm's normalised view is the oracle for the pull request.
        let expected = fixture("bitbucket", "goscm-cloud-pr_created.expected");
        let pr = read_cloud(
            "pullrequest:created",
            &fixture("bitbucket", "goscm-cloud-pr_created"),
            &HookSettings::default(),
        )
        .unwrap();
        let c = &pr.changes[0];
        assert_eq!(
            c.revision.as_deref(),
            expected["PullRequest"]["Sha"].as_str()
        );
        assert_eq!(
            c.revlink.as_deref(),
            expected["PullRequest"]["Link"].as_str()
        );
        assert_eq!(
            c.properties["bitbucket.number"],
            expected["PullRequest"]["Number"]
        );
        assert_eq!(
            c.properties["bitbucket.source.branch"],
            expected["PullRequest"]["Source"]
        );
        assert_eq!(
            c.properties["bitbucket.destination.branch"],
            expected["PullRequest"]["Target"]
        );
        assert_eq!(
            c.properties["bitbucket.title"],
            expected["PullRequest"]["Title"]
        );
        assert_eq!(c.repository, "https://bitbucket.org/brydzewski/foo");
    }

    #[test]
    fn server_native_events() {
        check_fixtures(
            "bitbucket",
            read_server,
            &[
                ("goscm-server-push", "repo:refs_changed", 1, "master"),
                (
                    "goscm-server-push_v5",
                    "repo:refs_changed",
                    1,
                    "trangineni/devtfvars-1685475548410",
                ),
                (
                    "goscm-server-push_branch_create",
                    "repo:refs_changed",
                    1,
                    "develop",
                ),
                (
                    "goscm-server-push_branch_delete",
                    "repo:refs_changed",
                    0,
                    "",
                ),
                (
                    "goscm-server-push_tag_create",
                    "repo:refs_changed",
                    1,
                    "v1.1.0",
                ),
                ("goscm-server-push_tag_delete", "repo:refs_changed", 0, ""),
                (
                    "goscm-server-pr_open",
                    "pr:opened",
                    1,
                    "refs/pull-requests/2/from",
                ),
                (
                    "goscm-server-pr_from_ref_updated",
                    "pr:from_ref_updated",
                    1,
                    "refs/pull-requests/2/from",
                ),
                ("goscm-server-pr_modified_toref", "pr:modified", 0, ""),
                ("goscm-server-pr_merged", "pr:merged", 0, ""),
                ("goscm-server-pr_declined", "pr:declined", 0, ""),
                ("goscm-server-pr_deleted", "pr:deleted", 0, ""),
            ],
        );
        let expected = fixture("bitbucket", "goscm-server-push.expected");
        let push = read_server(
            "repo:refs_changed",
            &fixture("bitbucket", "goscm-server-push"),
            &HookSettings::default(),
        )
        .unwrap();
        let c = &push.changes[0];
        assert_eq!(c.revision.as_deref(), expected["After"].as_str());
        assert_eq!(c.properties["bitbucket.before"], expected["Before"]);
        assert_eq!(c.author, "Jane Citizen <jane@example.com>");
        assert_eq!(c.project, "PRJ/my-repo");
        assert_eq!(c.when_timestamp, rfc3339_seconds("2018-07-05T18:22:00Z"));

        let updated = read_server(
            "pr:from_ref_updated",
            &fixture("bitbucket", "goscm-server-pr_from_ref_updated"),
            &HookSettings::default(),
        )
        .unwrap();
        assert_eq!(
            updated.changes[0].revision.as_deref(),
            Some("c00d0f269a9844dd168f72f6a9d78a9cff49a318")
        );
        assert_eq!(
            updated.changes[0].properties["bitbucket.destination.branch"],
            "master"
        );
    }
}
