//! Asking a forge's API what its webhook body leaves out: the files a pull
//! request changes. No forge's pull-request event names them,
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
//! - Bitbucket Cloud: "List changes in a pull request",
//!   `GET /2.0/repositories/{workspace}/{repo_slug}/pullrequests/{id}/diffstat`,
//!   500 a page following `next`, `Authorization: Bearer` (an access
//!   token); each entry's `new.path` (`old.path` for a removal).
//! - Bitbucket Server / Data Center: "Gets changes in pull request",
//!   `GET /rest/api/1.0/projects/{key}/repos/{slug}/pull-requests/{id}/changes`,
//!   pages by `start` and `limit` until `isLastPage`, `Authorization: Bearer`
//!   (an HTTP access token); each change's `path.toString`. Its webhooks do
//!   not say where the server is: `api_url` does (`https://HOST`).

use serde_json::Value;
use std::time::Duration;

/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Bitbucket Cloud's API, unless `api_url` says otherwise.
const BITBUCKET_CLOUD_API: &str = "https://api.bitbucket.org/2.0";

/// GitHub lists at most 3,000 files; the same bound serves the others.
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
    BitbucketCloud,
    BitbucketServer,
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
    let listing = listing(forge, api_url, token, event, payload)?;
    Some(fetch_pages(listing).await)
}

/// Where a forge lists a pull request's files, and how to read the list.
struct Listing {
    first: String,
    paging: Paging,
    /// An entry's file.
    file_of: fn(&Value) -> Option<String>,
    headers: Vec<(&'static str, String)>,
}

impl Listing {
    /// A list of JSON arrays, `page` by `page` with `size_param` = `page_size`,
    /// a short page the last.
    fn numbered(
        base: String,
        size_param: &'static str,
        page_size: usize,
        file_of: fn(&Value) -> Option<String>,
        headers: Vec<(&'static str, String)>,
    ) -> Listing {
        Listing {
            first: format!("{base}?{size_param}={page_size}&page=1"),
            paging: Paging::Numbered {
                base,
                size_param,
                page_size,
            },
            file_of,
            headers,
        }
    }
}

/// The listing of the pull request `payload` describes, on `forge`'s API.
fn listing(
    forge: Forge,
    api_url: &str,
    token: &str,
    event: &str,
    payload: &Value,
) -> Option<Listing> {
    let text = |path: &[&str]| path.iter().try_fold(payload, |v, k| v.get(k))?.as_str();
    let int = |path: &[&str]| path.iter().try_fold(payload, |v, k| v.get(k))?.as_i64();
    // The API on the host of the repository's web address `web` of `path`.
    let on_host = |web: Option<&str>, path: Option<&str>, api: &str| {
        let host = web?.strip_suffix(path?)?.trim_end_matches('/');
        Some(format!("{host}{api}"))
    };
    // `api_url` when given, else `derived`; without a trailing slash.
    let api = |derived: Option<String>| {
        let api = match api_url {
            "" => derived?,
            given => given.to_string(),
        };
        Some(api.trim_end_matches('/').to_string())
    };
    let bearer = || ("Authorization", format!("Bearer {token}"));
    let json = || ("Accept", "application/json".to_string());
    Some(match forge {
        Forge::GitHub if event == "pull_request" => {
            let repo = text(&["repository", "full_name"])?;
            let number = int(&["number"])?;
            Listing::numbered(
                format!("{}/repos/{repo}/pulls/{number}/files", api(None)?),
                "per_page",
                100,
                filename,
                vec![
                    ("Accept", "application/vnd.github+json".to_string()),
                    bearer(),
                    ("X-GitHub-Api-Version", "2022-11-28".to_string()),
                ],
            )
        }
        Forge::Gitea if event == "pull_request" => {
            let repo = text(&["repository", "full_name"])?;
            let number = int(&["number"])?;
            let api = api(on_host(
                text(&["repository", "html_url"]),
                Some(repo),
                "/api/v1",
            ))?;
            Listing::numbered(
                format!("{api}/repos/{repo}/pulls/{number}/files"),
                "limit",
                50,
                filename,
                vec![json(), ("Authorization", format!("token {token}"))],
            )
        }
        Forge::GitLab if text(&["object_kind"]) == Some("merge_request") => {
            let project = int(&["object_attributes", "target_project_id"])?;
            let iid = int(&["object_attributes", "iid"])?;
            let api = api(on_host(
                text(&["project", "web_url"]),
                text(&["project", "path_with_namespace"]),
                "/api/v4",
            ))?;
            Listing::numbered(
                format!("{api}/projects/{project}/merge_requests/{iid}/diffs"),
                "per_page",
                100,
                gitlab_file,
                vec![("PRIVATE-TOKEN", token.to_string())],
            )
        }
        Forge::BitbucketCloud if matches!(event, "pullrequest:created" | "pullrequest:updated") => {
            let repo = text(&["repository", "full_name"])?;
            let id = int(&["pullrequest", "id"])?;
            let api = api(Some(BITBUCKET_CLOUD_API.to_string()))?;
            Listing {
                first: format!("{api}/repositories/{repo}/pullrequests/{id}/diffstat?pagelen=500"),
                paging: Paging::NextLink { origin: api },
                file_of: cloud_file,
                headers: vec![json(), bearer()],
            }
        }
        // Server's webhooks do not say where the server is: `api_url` does.
        Forge::BitbucketServer if matches!(event, "pr:opened" | "pr:from_ref_updated") => {
            let repository = ["pullRequest", "toRef", "repository"];
            let slug = text(&[&repository[..], &["slug"]].concat())?;
            let key = text(&[&repository[..], &["project", "key"]].concat())?;
            let id = int(&["pullRequest", "id"])?;
            let api = api(None)?;
            Listing {
                first: format!(
                    "{api}/rest/api/1.0/projects/{key}/repos/{slug}/pull-requests/{id}/changes?limit=500"
                ),
                paging: Paging::StartLimit,
                file_of: |change| {
                    change
                        .pointer("/path/toString")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                },
                headers: vec![json(), bearer()],
            }
        }
        _ => return None,
    })
}

/// GitHub's and Gitea's entries name their file `filename`.
fn filename(entry: &Value) -> Option<String> {
    entry
        .get("filename")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A GitLab diff's file: its new path, or the old one for a deletion.
fn gitlab_file(diff: &Value) -> Option<String> {
    let field = if diff.get("deleted_file").and_then(Value::as_bool) == Some(true) {
        "old_path"
    } else {
        "new_path"
    };
    diff.get(field).and_then(Value::as_str).map(str::to_string)
}

/// A Bitbucket Cloud diffstat entry's file: its new path, or the old one
/// when the file was removed.
fn cloud_file(entry: &Value) -> Option<String> {
    let side = if entry.get("status").and_then(Value::as_str) == Some("removed") {
        "/old/path"
    } else {
        "/new/path"
    };
    entry
        .pointer(side)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// How a forge's API says where the next page is.
enum Paging {
    /// A JSON array a page; a short page is the last (GitHub, Gitea, GitLab).
    Numbered {
        base: String,
        size_param: &'static str,
        page_size: usize,
    },
    /// `{"values": […], "next": URL}`, no `next` on the last (Bitbucket
    /// Cloud). The token goes only where the API is: a `next` elsewhere
    /// ends the listing.
    NextLink { origin: String },
    /// `{"values": […], "isLastPage", "nextPageStart"}` (Bitbucket Server).
    StartLimit,
}

impl Paging {
    /// The entries of an answer, and the URL of the page after it.
    fn read(&self, url: &str, page: usize, answer: Value) -> (Vec<Value>, Option<String>) {
        match self {
            Paging::Numbered {
                base,
                size_param,
                page_size,
            } => {
                let entries = match answer {
                    Value::Array(entries) => entries,
                    _ => Vec::new(),
                };
                let next = (entries.len() >= *page_size)
                    .then(|| format!("{base}?{size_param}={page_size}&page={}", page + 1));
                (entries, next)
            }
            Paging::NextLink { origin } => {
                let next = answer
                    .get("next")
                    .and_then(Value::as_str)
                    .filter(|next| next.starts_with(&format!("{origin}/")))
                    .map(str::to_string);
                (values(answer), next)
            }
            Paging::StartLimit => {
                let last = answer.get("isLastPage").and_then(Value::as_bool) != Some(false);
                let next = answer.get("nextPageStart").and_then(Value::as_i64);
                let next = match (last, next) {
                    (false, Some(start)) => {
                        let without = url.split("&start=").next().unwrap_or(url);
                        Some(format!("{without}&start={start}"))
                    }
                    _ => None,
                };
                (values(answer), next)
            }
        }
    }
}

fn values(answer: Value) -> Vec<Value> {
    match answer {
        Value::Object(mut map) => match map.remove("values") {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Read a listing's pages from its first on, as its paging says,
/// collecting each entry's file, up to [`MAX_FILES`].
async fn fetch_pages(listing: Listing) -> Result<Vec<String>, ApiError> {
    let Listing {
        first,
        paging,
        file_of,
        headers,
    } = listing;
    let shown = first.clone();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new().timeout(API_TIMEOUT).build();
        let mut files = Vec::new();
        let mut next = Some(first);
        let mut page = 1;
        while let Some(url) = next.take() {
            let failed = |message: String| ApiError {
                url: url.clone(),
                message,
            };
            let mut request = agent.get(&url).set("User-Agent", "moonbot");
            for (name, value) in &headers {
                request = request.set(name, value);
            }
            let answer = request.call().map_err(|e| failed(e.to_string()))?;
            let answer: Value = answer.into_json().map_err(|e| failed(e.to_string()))?;
            let (entries, after) = paging.read(&url, page, answer);
            files.extend(entries.iter().filter_map(file_of));
            if files.len() >= MAX_FILES || entries.is_empty() {
                break;
            }
            next = after;
            page += 1;
        }
        files.truncate(MAX_FILES);
        Ok(files)
    })
    .await
    .map_err(|e| ApiError {
        url: shown,
        message: e.to_string(),
    })?
}
