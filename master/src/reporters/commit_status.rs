//! Commit statuses: `github_status`, `gitlab_status`, `gitea_status` and
//! `bitbucket_status` set a state on each commit a build builds, with a
//! link to the build and the context `moonbot/<builder>` (configurable):
//! pending as soon as the request is queued (Buildbot waits for the build to
//! start, so GitLab's "merge when pipeline succeeds" merged early), then
//! running (GitHub and Gitea have no such state: pending, "Build started"),
//! then the result. The forge and the commit come from the source stamp's
//! repository URL and revision; a source stamp without a revision, or of
//! another host's repository, gets no status.
//!
//! GitLab refuses some transitions ("Cannot transition status via :run from
//! :running"): a state equal to the last one queued for the same commit and
//! context is not sent again, nor pending after running (a retried build).

use super::generators::Report;
use crate::config::reporters::{Forge, StatusConfig};
use crate::data::reports::NewDelivery;
use crate::results;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The statuses `report` sets (one per commit it builds), each with its
/// state; `last` holds the last state queued per order key (GitLab's).
pub fn requests(
    config: &StatusConfig,
    report: &Report,
    eventid: i64,
    last: &HashMap<String, String>,
) -> Vec<(NewDelivery, String)> {
    let context = context(&config.context, &report.build);
    let mut out = Vec::new();
    for stamp in &report.sourcestamps {
        let (Some(sha), Some(repo)) = (
            stamp["revision"].as_str().filter(|s| !s.is_empty()),
            stamp["repository"].as_str().and_then(repo_path),
        ) else {
            continue;
        };
        let state = state(config.forge, report);
        let key = format!("status:{repo}@{sha}:{context}");
        if config.forge == Forge::GitLab {
            let before = last.get(&key).map(String::as_str);
            if before == Some(state) || (state == "pending" && before == Some("running")) {
                continue;
            }
        }
        let description = match report.event {
            "queued" => "Build queued".to_string(),
            "started" => "Build started".to_string(),
            _ => format!(
                "Build done: {}",
                results::name(report.build["results"].as_i64().unwrap_or(0) as i32)
            ),
        };
        let url = report.build["url"].as_str().unwrap_or_default();
        let (path, body) = match config.forge {
            Forge::GitHub => (
                format!("/repos/{repo}/statuses/{sha}"),
                json!({"state": state, "target_url": url, "description": description, "context": context}),
            ),
            Forge::Gitea => (
                format!("/api/v1/repos/{repo}/statuses/{sha}"),
                json!({"state": state, "target_url": url, "description": description, "context": context}),
            ),
            Forge::GitLab => {
                let mut body = json!({"state": state, "target_url": url, "description": description, "name": context});
                if let Some(branch) = stamp["branch"].as_str().filter(|b| !b.is_empty()) {
                    body["ref"] = branch.into();
                }
                (
                    format!("/api/v4/projects/{}/statuses/{sha}", encode(&repo)),
                    body,
                )
            }
            Forge::BitbucketCloud => (
                format!("/2.0/repositories/{repo}/commit/{sha}/statuses/build"),
                json!({"state": state, "key": bitbucket_key(&context), "name": context, "url": url, "description": description}),
            ),
        };
        let delivery = NewDelivery {
            eventid,
            order_key: key,
            method: "POST".into(),
            url: format!("{}{path}", config.base_url.trim_end_matches('/')),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("User-Agent".into(), "moonbot".into()),
            ],
            body: body.to_string(),
        };
        out.push((delivery, state.to_string()));
    }
    out
}

/// The headers with the token, added as each request is sent.
pub fn secret_headers(config: &StatusConfig) -> Vec<(String, String)> {
    let token = &config.token;
    match config.forge {
        Forge::GitHub => vec![
            ("Authorization".into(), format!("Bearer {token}")),
            ("Accept".into(), "application/vnd.github+json".into()),
        ],
        Forge::Gitea => vec![("Authorization".into(), format!("token {token}"))],
        Forge::GitLab => vec![("PRIVATE-TOKEN".into(), token.clone())],
        Forge::BitbucketCloud => vec![("Authorization".into(), format!("Bearer {token}"))],
    }
}

/// The state a forge is told for `report`.
fn state(forge: Forge, report: &Report) -> &'static str {
    let result = report.build["results"].as_i64().map(|r| r as i32);
    match (forge, report.event) {
        (Forge::GitLab, "started") => "running",
        (Forge::BitbucketCloud, "queued" | "started") => "INPROGRESS",
        (_, "queued" | "started") => "pending",
        (forge, _) => match (forge, result.unwrap_or(results::EXCEPTION)) {
            (Forge::BitbucketCloud, results::SUCCESS | results::WARNINGS | results::SKIPPED) => {
                "SUCCESSFUL"
            }
            (Forge::BitbucketCloud, results::CANCELLED) => "STOPPED",
            (Forge::BitbucketCloud, results::RETRY) => "INPROGRESS",
            (Forge::BitbucketCloud, _) => "FAILED",
            (Forge::Gitea, results::WARNINGS) => "warning",
            (_, results::SUCCESS | results::WARNINGS | results::SKIPPED) => "success",
            (_, results::RETRY) => "pending",
            (Forge::GitLab, results::CANCELLED) => "canceled",
            (Forge::GitLab, _) => "failed",
            (_, results::FAILURE) => "failure",
            (_, _) => "error",
        },
    }
}

/// The context with `%(prop:NAME)s` filled from the build (`buildername`:
/// its builder's name).
fn context(template: &str, build: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("%(prop:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 7..];
        let Some(end) = after.find(")s") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let value = match name {
            "buildername" => build["builder"]["name"].as_str().map(str::to_string),
            _ => build["properties"][name][0].as_str().map(str::to_string),
        };
        out.push_str(&value.unwrap_or_default());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `owner/repo` (GitLab: `group/sub/project`) of a repository URL:
/// `https://host/owner/repo(.git)`, `git@host:owner/repo.git`,
/// `ssh://git@host(:port)/owner/repo.git`.
pub fn repo_path(url: &str) -> Option<String> {
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/')?.1
    } else {
        url.split_once(':')?.1
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (path.contains('/') && !path.contains("..")).then(|| path.to_string())
}

/// GitLab's project id form of a path: `group%2Fproject`.
fn encode(path: &str) -> String {
    path.replace('%', "%25").replace('/', "%2F")
}

/// Bitbucket's `key` is at most 40 characters: a longer context is cut and
/// ends with a hash of the whole, so two long contexts stay apart.
fn bitbucket_key(context: &str) -> String {
    if context.len() <= 40 {
        return context.to_string();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, context.as_bytes());
    let hash = hex::encode(&digest.as_ref()[..4]);
    let cut: String = context.chars().take(31).collect();
    format!("{cut}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_name_their_project() {
        for (url, path) in [
            ("https://github.com/o/r.git", Some("o/r")),
            ("https://github.com/o/r", Some("o/r")),
            ("git@github.com:o/r.git", Some("o/r")),
            (
                "ssh://git@gitlab.example.org:2222/g/sub/p.git",
                Some("g/sub/p"),
            ),
            ("https://gitlab.com/g/sub/p/", Some("g/sub/p")),
            ("/srv/git/repo", None),
            ("https://host/only", None),
        ] {
            assert_eq!(repo_path(url).as_deref(), path, "{url}");
        }
        assert_eq!(encode("g/sub/p"), "g%2Fsub%2Fp");
    }

    #[test]
    fn contexts_fill_properties() {
        let build = json!({"builder": {"name": "linux"}, "properties": {"branch": ["main", "x"]}});
        assert_eq!(
            context("moonbot/%(prop:buildername)s", &build),
            "moonbot/linux"
        );
        assert_eq!(
            context("ci/%(prop:branch)s/%(prop:nope)s", &build),
            "ci/main/"
        );
        let long = "x".repeat(60);
        assert_eq!(bitbucket_key(&long).len(), 40);
        assert_ne!(bitbucket_key(&long), bitbucket_key(&"y".repeat(60)));
    }
}
