//! `mb.reporters.github_comment`: a comment on the pull request a build
//! builds (its `github.number` property, which GitHub's hook sets), with the
//! build's result and link (Buildbot's `GitHubCommentPush`). A build of no
//! pull request gets none.

use super::commit_status::repo_path;
use super::format::{Written, write};
use super::generators::Report;
use crate::config::reporters::CommentConfig;
use crate::data::reports::NewDelivery;
use crate::lua::RawValue;
use crate::results;
use crate::shared::Shared;
use serde_json::json;

/// The comment that reports `report`, if it builds a pull request.
pub async fn request(
    shared: &Shared,
    config: &CommentConfig,
    report: &Report,
    eventid: i64,
) -> Result<Option<NewDelivery>, String> {
    let b = &report.build;
    let Some(number) = b["properties"]["github.number"][0].as_i64() else {
        return Ok(None);
    };
    let Some(repo) = report
        .sourcestamps
        .iter()
        .find_map(|s| s["repository"].as_str().and_then(repo_path))
    else {
        return Ok(None);
    };
    let text = match write(shared, &config.format, report, || report.table()).await? {
        None => format!(
            "Build {} #{} {}: {}",
            b["builder"]["name"].as_str().unwrap_or_default(),
            b["number"],
            match report.event {
                "finished" => results::name(b["results"].as_i64().unwrap_or(0) as i32),
                other => other,
            },
            b["url"].as_str().unwrap_or_default()
        ),
        Some(Written::Lua(RawValue::Str(text))) => text,
        Some(Written::Lua(RawValue::Nil)) => return Ok(None),
        Some(Written::Lua(other)) => {
            return Err(format!(
                "format_fn must return a string (or nil: no comment), not a {}",
                other.type_name()
            ));
        }
        Some(Written::Template { body, .. }) => body.unwrap_or_default(),
    };
    // An empty comment is no comment.
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(NewDelivery {
        eventid,
        order_key: format!("comment:{repo}#{number}"),
        method: "POST".into(),
        url: format!(
            "{}/repos/{repo}/issues/{number}/comments",
            config.base_url.trim_end_matches('/')
        ),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), "moonbot".into()),
            ("Accept".into(), "application/vnd.github+json".into()),
        ],
        body: json!({"body": text}).to_string(),
    }))
}

/// The token, added as each request is sent.
pub fn secret_headers(config: &CommentConfig) -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {}", config.token))]
}
