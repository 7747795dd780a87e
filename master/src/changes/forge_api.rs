//! Asking a forge's API what its webhook body leaves out: the files a pull
//! request changes. GitHub's and Gitea's `pull_request` events name none,
//! so with a `token` in `www.change_hooks.DIALECT` the hook asks the forge
//! before storing the change, and the scheduler's `file_is_important` sees
//! a pull request's files too. A failing API costs the files, never the
//! change.
//!
//! - GitHub: "List pull requests files",
//!   `GET /repos/{owner}/{repo}/pulls/{number}/files`, 100 a page, at most
//!   3,000 files, `Authorization: Bearer`.
//! - Gitea: `GET /api/v1/repos/{owner}/{repo}/pulls/{index}/files`, 50 a
//!   page, `Authorization: token`.
//! - GitLab: "List merge request diffs",
//!   `GET /api/v4/projects/{id}/merge_requests/{iid}/diffs`, 100 a page,
//!   `PRIVATE-TOKEN`; each diff's `new_path` (`old_path` for a deletion).

use serde_json::Value;
use std::time::Duration;

/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub lists at most 3,000 files; the same bound serves Gitea.
const MAX_FILES: usize = 3000;

/// A forge API request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct ApiError {
    pub url: String,
    pub message: String,
}

/// A forge whose API lists a pull request's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

/// The files of the pull (merge) request a webhook body describes, from
/// its forge's API at `api_url` (empty: the forge's host, from the body);
/// `None` when the event is not a pull request or names too little.
pub async fn pull_request_files(
    forge: Forge,
    api_url: &str,
    token: &str,
    event: &str,
    payload: &Value,
) -> Option<Result<Vec<String>, ApiError>> {
    let text = |path: &[&str]| path.iter().try_fold(payload, |v, k| v.get(k))?.as_str();
    let int = |path: &[&str]| path.iter().try_fold(payload, |v, k| v.get(k))?.as_i64();
    // The API on the host of the repository's web address `web` of `path`.
    let on_host = |web: Option<&str>, path: Option<&str>, api: &str| {
        let host = web?.strip_suffix(path?)?.trim_end_matches('/');
        Some(format!("{host}{api}"))
    };
    let given = |derived: Option<String>| match api_url {
        "" => derived,
        given => Some(given.to_string()),
    };
    Some(match forge {
        Forge::GitHub | Forge::Gitea if event == "pull_request" => {
            let repo = text(&["repository", "full_name"])?;
            let number = int(&["number"])?;
            if forge == Forge::GitHub {
                github_pull_request_files(api_url, token, repo, number).await
            } else {
                let api = given(on_host(
                    text(&["repository", "html_url"]),
                    Some(repo),
                    "/api/v1",
                ))?;
                gitea_pull_request_files(&api, token, repo, number).await
            }
        }
        Forge::GitLab if text(&["object_kind"]) == Some("merge_request") => {
            let project = int(&["object_attributes", "target_project_id"])?;
            let iid = int(&["object_attributes", "iid"])?;
            let api = given(on_host(
                text(&["project", "web_url"]),
                text(&["project", "path_with_namespace"]),
                "/api/v4",
            ))?;
            gitlab_merge_request_files(&api, token, project, iid).await
        }
        _ => return None,
    })
}

/// The files pull request `number` of `repo` (`owner/name`) changes, from
/// GitHub's API at `api_url`.
async fn github_pull_request_files(
    api_url: &str,
    token: &str,
    repo: &str,
    number: i64,
) -> Result<Vec<String>, ApiError> {
    let base = format!(
        "{}/repos/{repo}/pulls/{number}/files",
        api_url.trim_end_matches('/')
    );
    list_files(
        base,
        100,
        "per_page",
        FILENAME,
        vec![
            ("Accept", "application/vnd.github+json".to_string()),
            ("Authorization", format!("Bearer {token}")),
            ("X-GitHub-Api-Version", "2022-11-28".to_string()),
        ],
    )
    .await
}

/// The same from Gitea's API at `api_url` (`https://HOST/api/v1`).
async fn gitea_pull_request_files(
    api_url: &str,
    token: &str,
    repo: &str,
    number: i64,
) -> Result<Vec<String>, ApiError> {
    let base = format!(
        "{}/repos/{repo}/pulls/{number}/files",
        api_url.trim_end_matches('/')
    );
    list_files(
        base,
        50,
        "limit",
        FILENAME,
        vec![
            ("Accept", "application/json".to_string()),
            ("Authorization", format!("token {token}")),
        ],
    )
    .await
}

/// The files merge request `iid` of GitLab project `project_id` changes,
/// from GitLab's API at `api_url` (`https://HOST/api/v4`).
async fn gitlab_merge_request_files(
    api_url: &str,
    token: &str,
    project_id: i64,
    iid: i64,
) -> Result<Vec<String>, ApiError> {
    let base = format!(
        "{}/projects/{project_id}/merge_requests/{iid}/diffs",
        api_url.trim_end_matches('/')
    );
    list_files(
        base,
        100,
        "per_page",
        |diff| {
            let field = if diff.get("deleted_file").and_then(Value::as_bool) == Some(true) {
                "old_path"
            } else {
                "new_path"
            };
            diff.get(field).and_then(Value::as_str).map(str::to_string)
        },
        vec![("PRIVATE-TOKEN", token.to_string())],
    )
    .await
}

/// GitHub's and Gitea's entries name their file `filename`.
const FILENAME: fn(&Value) -> Option<String> = |entry| {
    entry
        .get("filename")
        .and_then(Value::as_str)
        .map(str::to_string)
};

/// Read `base` page by page (`page`, and `size_param` = `page_size`) until
/// a short page, collecting each entry's file (`file_of`).
async fn list_files(
    base: String,
    page_size: usize,
    size_param: &'static str,
    file_of: fn(&Value) -> Option<String>,
    headers: Vec<(&'static str, String)>,
) -> Result<Vec<String>, ApiError> {
    let shown = base.clone();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new().timeout(API_TIMEOUT).build();
        let mut files = Vec::new();
        for page in 1..=MAX_FILES.div_ceil(page_size) {
            let url = format!("{base}?{size_param}={page_size}&page={page}");
            let failed = |message: String| ApiError {
                url: url.clone(),
                message,
            };
            let mut request = agent.get(&url).set("User-Agent", "moonbot");
            for (name, value) in &headers {
                request = request.set(name, value);
            }
            let answer = request.call().map_err(|e| failed(e.to_string()))?;
            let listed: Vec<Value> = answer.into_json().map_err(|e| failed(e.to_string()))?;
            files.extend(listed.iter().filter_map(file_of));
            if listed.len() < page_size {
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
