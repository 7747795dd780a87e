//! Asking a forge's API what its webhook body leaves out. GitHub's
//! `pull_request` event names no files, so with a `token` in
//! `www.change_hooks.github` the hook asks "List pull requests files"
//! (`GET /repos/{owner}/{repo}/pulls/{number}/files`, 100 a page, at most
//! 3,000 files as GitHub documents) before storing the change: the
//! scheduler's `file_is_important` then sees a pull request's files too.
//! A failing API costs the files, never the change.

use serde_json::Value;
use std::time::Duration;

/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub lists at most 3,000 files: 30 pages of 100.
const MAX_PAGES: usize = 30;

/// A forge API request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct ApiError {
    pub url: String,
    pub message: String,
}

/// The files pull request `number` of `repo` (`owner/name`) changes.
pub async fn github_pull_request_files(
    api_url: &str,
    token: &str,
    repo: &str,
    number: i64,
) -> Result<Vec<String>, ApiError> {
    let base = format!(
        "{}/repos/{repo}/pulls/{number}/files",
        api_url.trim_end_matches('/')
    );
    let token = token.to_string();
    let shown = base.clone();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new().timeout(API_TIMEOUT).build();
        let mut files = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = format!("{base}?per_page=100&page={page}");
            let failed = |message: String| ApiError {
                url: url.clone(),
                message,
            };
            let answer = agent
                .get(&url)
                .set("Accept", "application/vnd.github+json")
                .set("Authorization", &format!("Bearer {token}"))
                .set("X-GitHub-Api-Version", "2022-11-28")
                .set("User-Agent", "moonbot")
                .call()
                .map_err(|e| failed(e.to_string()))?;
            let listed: Vec<Value> = answer.into_json().map_err(|e| failed(e.to_string()))?;
            let count = listed.len();
            files.extend(
                listed
                    .iter()
                    .filter_map(|f| f.get("filename").and_then(Value::as_str))
                    .map(str::to_string),
            );
            if count < 100 {
                break;
            }
        }
        Ok(files)
    })
    .await
    .map_err(|e| ApiError {
        url: shown,
        message: e.to_string(),
    })?
}
