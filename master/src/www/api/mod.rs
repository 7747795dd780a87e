//! `/api/v2/…`: Buildbot's data API shape. Lists come as
//! `{"<collection>": [...], "meta": {"total": N}}`, `total` being the items
//! in the answer (what Buildbot 4.3 answers for a list it pages in the
//! database); a single object as a list of one. Control actions are JSON-RPC 2.0 POSTs (`force`, `stop`, `rebuild`,
//! `cancel`, `reload`), allowed by the rules of [`super::auth`].

use super::Request;
use super::actions::{self, Action, ActionError, ActionKind, Outcome};
use super::auth;
use crate::data::DataError;
use crate::data::changes::NewChange;
use crate::data::query::ListQuery;
use crate::schedulers::force::{ForceError, ForceRequest};
use crate::shared::Shared;
use serde_json::{Value, json};
use std::sync::Arc;
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};

/// An error answered as JSON.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<auth::Denied> for ApiError {
    fn from(d: auth::Denied) -> Self {
        ApiError::new(d.status, d.message)
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            DataError::Query(e) => ApiError::bad_request(e.to_string()),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                super::database_failed("answering an API request", &other),
            ),
        }
    }
}

fn json_reply(status: StatusCode, value: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn error_reply(e: ApiError) -> Response {
    json_reply(e.status, &json!({"error": e.message}))
}

fn envelope(collection: &str, items: Vec<Value>, total: u64) -> Response {
    json_reply(
        StatusCode::OK,
        &json!({ collection: items, "meta": {"total": total} }),
    )
}

fn one(collection: &str, items: Vec<Value>, what: &str) -> Result<Response, ApiError> {
    if items.is_empty() {
        return Err(ApiError::not_found(format!("{what} not found")));
    }
    Ok(envelope(collection, items, 1))
}

fn id(segment: &str, what: &str) -> Result<i64, ApiError> {
    segment
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{segment}' is not a valid {what} id")))
}

/// Route one request.
/// Files listed for one directory artifact, at most.
const MAX_LISTED_FILES: usize = 10_000;

fn artifact_store(shared: &Shared) -> crate::artifacts::ArtifactStore {
    (shared.running_config().loaded.config.artifacts).store(&shared.dir)
}

async fn artifact_row(
    shared: &Arc<Shared>,
    a: &str,
) -> Result<crate::db::entities::artifacts::Model, ApiError> {
    shared
        .data
        .artifact(id(a, "artifact")?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("artifact {a}")))
}

/// A file of an artifact, streamed as a download (never shown inline: an
/// uploaded HTML file must not run in the master's origin).
async fn serve_file(path: &std::path::Path) -> Result<Response, ApiError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::not_found(format!("artifact file: {e}")))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let reply = warp::reply::with_header(
        warp::reply::stream(body),
        "content-type",
        "application/octet-stream",
    );
    let reply = warp::reply::with_header(reply, "content-length", len.to_string());
    let reply = warp::reply::with_header(
        reply,
        "content-disposition",
        format!("attachment; filename=\"{name}\""),
    );
    Ok(reply.into_response())
}

pub async fn dispatch(shared: &Arc<Shared>, request: &Request) -> Response {
    match route(shared, request).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn route(shared: &Arc<Shared>, request: &Request) -> Result<Response, ApiError> {
    let path = request.path.as_str();
    let decoded = super::paths::decoded_segments(path)
        .ok_or_else(|| ApiError::bad_request(format!("{path} is not UTF-8 once decoded")))?;
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let ["api", "v2", rest @ ..] = segments.as_slice() else {
        return Err(ApiError::not_found(format!("no API endpoint at {path}")));
    };
    let params = request
        .params()
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let q = ListQuery::parse(&params).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let with_props = params.iter().any(|(k, _)| k == "property");

    if request.method == Method::POST {
        return control(shared, request, rest).await;
    }
    if request.method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not supported", request.method),
        ));
    }

    let data = &shared.data;
    let running = shared.running_config();
    match rest {
        [] => Ok(json_reply(
            StatusCode::OK,
            &json!({"api_version": 2, "collections": ["builders", "builds", "buildrequests", "buildsets", "changes", "sourcestamps", "steps", "logs", "workers", "schedulers", "changesources", "forceschedulers", "masters", "config", "artifacts", "test_result_sets"]}),
        )),
        ["builders"] => {
            let (items, total) = data.list_builders(&q, &running.builder_ids).await?;
            Ok(envelope("builders", items, total))
        }
        ["builders", b] => {
            let q = q.with_eq("builderid", id(b, "builder")?).whole();
            let (items, _) = data.list_builders(&q, &running.builder_ids).await?;
            one("builders", items, &format!("builder {b}"))
        }
        ["builders", b, "builds"] => {
            let q = q.with_eq("builderid", id(b, "builder")?);
            let (items, total) = data.list_builds(&q, with_props).await?;
            Ok(envelope("builds", items, total))
        }
        ["builds"] => {
            let (items, total) = data.list_builds(&q, with_props).await?;
            Ok(envelope("builds", items, total))
        }
        ["builds", b] => {
            let q = q.with_eq("buildid", id(b, "build")?).whole();
            let (items, _) = data.list_builds(&q, with_props).await?;
            one("builds", items, &format!("build {b}"))
        }
        ["builds", b, "changes"] => {
            let items = data
                .changes_of_build(id(b, "build")?, q)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("build {b}")))?;
            let total = items.len() as u64;
            Ok(envelope("changes", items, total))
        }
        ["builds", b, "triggered_builds"] => {
            let buildid = id(b, "build")?;
            let exists = data
                .list_builds(&ListQuery::default().with_eq("buildid", buildid), false)
                .await?
                .0;
            if exists.is_empty() {
                return Err(ApiError::not_found(format!("build {b}")));
            }
            let items = data.triggered_builds(buildid, q).await?;
            let total = items.len() as u64;
            Ok(envelope("builds", items, total))
        }
        ["builds", b, "properties"] => {
            let buildid = id(b, "build")?;
            let (found, _) = data
                .list_builds(&ListQuery::default().with_eq("buildid", buildid), false)
                .await?;
            if found.is_empty() {
                return Err(ApiError::not_found(format!("build {b} not found")));
            }
            let props = data.build_properties(buildid).await?;
            Ok(envelope("properties", vec![props], 1))
        }
        ["builds", b, "steps"] => {
            let q = q.with_eq("buildid", id(b, "build")?);
            let (items, total) = data.list_steps(&q).await?;
            Ok(envelope("steps", items, total))
        }
        ["steps", s] => {
            let q = q.with_eq("stepid", id(s, "step")?).whole();
            let (items, _) = data.list_steps(&q).await?;
            one("steps", items, &format!("step {s}"))
        }
        ["steps", s, "logs"] => {
            let q = q.with_eq("stepid", id(s, "step")?);
            let (items, total) = data.list_logs(&q).await?;
            Ok(envelope("logs", items, total))
        }
        ["logs", l] => {
            let q = q.with_eq("logid", id(l, "log")?).whole();
            let (items, _) = data.list_logs(&q).await?;
            one("logs", items, &format!("log {l}"))
        }
        ["logs", l, "raw"] => {
            let (slug, pieces) = data.log_raw(id(l, "log")?).await?;
            let body = futures_util::stream::unfold(pieces, |mut pieces| async move {
                pieces.recv().await.map(|piece| (piece, pieces))
            });
            let reply = warp::reply::with_header(
                warp::reply::stream(body),
                "content-type",
                "text/plain; charset=utf-8",
            );
            let reply = warp::reply::with_header(
                reply,
                "content-disposition",
                format!("attachment; filename=\"{slug}.txt\""),
            );
            Ok(reply.into_response())
        }
        ["builds", b, "artifacts"] => {
            let q = q.with_eq("buildid", id(b, "build")?);
            let (items, total) = data.list_artifacts(&q).await?;
            Ok(envelope("artifacts", items, total))
        }
        ["artifacts"] => {
            let (items, total) = data.list_artifacts(&q).await?;
            Ok(envelope("artifacts", items, total))
        }
        ["artifacts", a] => {
            let q = q.with_eq("artifactid", id(a, "artifact")?).whole();
            let (items, _) = data.list_artifacts(&q).await?;
            one("artifacts", items, &format!("artifact {a}"))
        }
        ["artifacts", a, "files"] => {
            let artifact = artifact_row(shared, a).await?;
            let items: Vec<Value> = artifact_store(shared)
                .list(&artifact.path, MAX_LISTED_FILES)
                .into_iter()
                .map(|(name, size)| {
                    json!({"name": name, "size": size,
                           "url": format!("/api/v2/artifacts/{}/raw/{}", artifact.id, super::paths::segment(&name))})
                })
                .collect();
            let total = items.len() as u64;
            Ok(envelope("files", items, total))
        }
        ["artifacts", a, "raw", sub @ ..] => {
            let artifact = artifact_row(shared, a).await?;
            let sub = (!sub.is_empty()).then(|| sub.join("/"));
            let file = artifact_store(shared)
                .file(&artifact.path, sub.as_deref())
                .ok_or_else(|| {
                    ApiError::not_found(format!("artifact {a} has no such file (expired?)"))
                })?;
            serve_file(&file).await
        }
        ["test_result_sets"] => {
            let (items, total) = data.list_test_result_sets(&q).await?;
            Ok(envelope("test_result_sets", items, total))
        }
        ["test_result_sets", t] => {
            let q = q
                .with_eq("test_result_setid", id(t, "test result set")?)
                .whole();
            let (items, _) = data.list_test_result_sets(&q).await?;
            one("test_result_sets", items, &format!("test result set {t}"))
        }
        ["test_result_sets", t, "results"] => {
            let q = q.with_eq("test_result_setid", id(t, "test result set")?);
            let (items, total) = data.list_test_results(&q).await?;
            Ok(envelope("test_results", items, total))
        }
        ["builds", b, "test_result_sets"] => {
            let q = q.with_eq("buildid", id(b, "build")?);
            let (items, total) = data.list_test_result_sets(&q).await?;
            Ok(envelope("test_result_sets", items, total))
        }
        ["steps", s, "test_result_sets"] => {
            let q = q.with_eq("stepid", id(s, "step")?);
            let (items, total) = data.list_test_result_sets(&q).await?;
            Ok(envelope("test_result_sets", items, total))
        }
        ["logs", l, "contents"] => {
            let logid = id(l, "log")?;
            let offset = q.offset.unwrap_or(0) as i64;
            let limit = q.limit.map(|l| l as i64);
            let (firstline, content) = data.log_lines(logid, offset, limit).await?;
            Ok(envelope(
                "logchunks",
                vec![json!({"logid": logid, "firstline": firstline, "content": content})],
                1,
            ))
        }
        ["workers"] => {
            let (items, total) = data.list_workers(&q, &running.worker_ids).await?;
            Ok(envelope("workers", items, total))
        }
        ["workers", w] => {
            let q = q.with_eq("workerid", id(w, "worker")?).whole();
            let (items, _) = data.list_workers(&q, &running.worker_ids).await?;
            one("workers", items, &format!("worker {w}"))
        }
        ["buildrequests"] => {
            let (items, total) = data.list_buildrequests(&q).await?;
            Ok(envelope("buildrequests", items, total))
        }
        ["buildrequests", r] => {
            let q = q.with_eq("buildrequestid", id(r, "build request")?).whole();
            let (items, _) = data.list_buildrequests(&q).await?;
            one("buildrequests", items, &format!("build request {r}"))
        }
        ["buildrequests", r, "builds"] => {
            let q = q.with_eq("buildrequestid", id(r, "build request")?);
            let (items, total) = data.list_builds(&q, with_props).await?;
            Ok(envelope("builds", items, total))
        }
        ["buildsets"] => {
            let (items, total) = data.list_buildsets(&q).await?;
            Ok(envelope("buildsets", items, total))
        }
        ["buildsets", s] => {
            let q = q.with_eq("bsid", id(s, "buildset")?).whole();
            let (items, _) = data.list_buildsets(&q).await?;
            one("buildsets", items, &format!("buildset {s}"))
        }
        ["buildsets", s, "sourcestamps"] => {
            let items = data.buildset_sourcestamps(id(s, "buildset")?).await?;
            let total = items.len() as u64;
            Ok(envelope("sourcestamps", items, total))
        }
        ["buildsets", s, "properties"] => {
            let bsid = id(s, "buildset")?;
            let q = ListQuery::default().with_eq("bsid", bsid).whole();
            if data.list_buildsets(&q).await?.0.is_empty() {
                return Err(ApiError::not_found(format!("buildset {s} not found")));
            }
            // Buildbot's shape: one object, name → [value, source].
            let props: serde_json::Map<String, Value> = data
                .buildset_properties(bsid)
                .await?
                .into_iter()
                .map(|(name, (value, source))| (name, json!([value, source])))
                .collect();
            Ok(envelope("properties", vec![Value::Object(props)], 1))
        }
        ["schedulers"] => {
            let (items, total) = data
                .list_schedulers(&q, &running_schedulers(&running))
                .await?;
            Ok(envelope("schedulers", items, total))
        }
        ["schedulers", n] => {
            let q = q.with_eq("schedulerid", id(n, "scheduler")?).whole();
            let (items, _) = data
                .list_schedulers(&q, &running_schedulers(&running))
                .await?;
            one("schedulers", items, &format!("scheduler {n}"))
        }
        ["changesources"] => {
            let names = running_sources(&running);
            let (items, total) = data.list_changesources(&q, &names).await?;
            Ok(envelope("changesources", items, total))
        }
        ["changesources", n] => {
            let q = q.with_eq("changesourceid", id(n, "change source")?).whole();
            let (items, _) = data
                .list_changesources(&q, &running_sources(&running))
                .await?;
            one("changesources", items, &format!("change source {n}"))
        }
        ["forceschedulers"] => {
            let items = force_schedulers(&running);
            let total = items.len() as u64;
            Ok(envelope("forceschedulers", items, total))
        }
        ["forceschedulers", name] => {
            let items: Vec<Value> = force_schedulers(&running)
                .into_iter()
                .filter(|s| s["name"] == *name)
                .collect();
            one("forceschedulers", items, &format!("force scheduler {name}"))
        }
        ["config"] => {
            let (last, _) = data
                .list_reloads(&ListQuery {
                    limit: Some(1),
                    ..Default::default()
                })
                .await?;
            let cfg = &running.loaded.config;
            let files: Vec<String> = running
                .loaded
                .lua
                .files
                .iter()
                .map(|f| {
                    f.strip_prefix(&shared.dir)
                        .unwrap_or(f)
                        .display()
                        .to_string()
                })
                .collect();
            let item = json!({
                "title": cfg.title,
                "summary": cfg.summary(),
                "workers": cfg.workers.iter().map(|w| &w.name).collect::<Vec<_>>(),
                "builders": cfg.builders.iter().map(|b| &b.name).collect::<Vec<_>>(),
                "schedulers": cfg.schedulers.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "files": files,
                "watch": cfg.reconfig.watch,
                "last_reload": last.into_iter().next(),
            });
            Ok(envelope("config", vec![item], 1))
        }
        ["config", "reloads"] => {
            let (items, total) = data.list_reloads(&q).await?;
            Ok(envelope("reloads", items, total))
        }
        ["changes"] => {
            let (items, total) = data.list_changes(&q).await?;
            Ok(envelope("changes", items, total))
        }
        ["changes", c] => {
            let q = q.with_eq("changeid", id(c, "change")?).whole();
            let (items, _) = data.list_changes(&q).await?;
            one("changes", items, &format!("change {c}"))
        }
        ["changes", c, "builds"] => {
            let whole = ListQuery::default().with_eq("changeid", id(c, "change")?);
            let (found, _) = data.list_changes(&whole).await?;
            let change = found
                .first()
                .ok_or_else(|| ApiError::not_found(format!("change {c}")))?;
            let ssids: Vec<i64> = change["sourcestamp"]["ssid"].as_i64().into_iter().collect();
            let items = data.builds_of_sourcestamps(&ssids, q, with_props).await?;
            let total = items.len() as u64;
            Ok(envelope("builds", items, total))
        }
        ["sourcestamps"] => {
            let (items, total) = data.list_sourcestamps(&q).await?;
            Ok(envelope("sourcestamps", items, total))
        }
        ["sourcestamps", s] => {
            let q = q.with_eq("ssid", id(s, "source stamp")?).whole();
            let (items, _) = data.list_sourcestamps(&q).await?;
            one("sourcestamps", items, &format!("source stamp {s}"))
        }
        ["sourcestamps", s, "changes"] => {
            let q = q.with_eq("sourcestampid", id(s, "source stamp")?);
            let (items, total) = data.list_changes(&q).await?;
            Ok(envelope("changes", items, total))
        }
        ["janitor_passes"] => {
            let (items, total) = data.list_janitor_passes(&q).await?;
            Ok(envelope("janitor_passes", items, total))
        }
        ["masters"] => {
            let items = data.masters_json().await?;
            let total = items.len() as u64;
            Ok(envelope("masters", items, total))
        }
        _ => Err(ApiError::not_found(format!("no API endpoint at {path}"))),
    }
}

/// The names of the schedulers the running configuration lists.
fn running_schedulers(running: &crate::shared::RunningConfig) -> Vec<&str> {
    running
        .loaded
        .config
        .schedulers
        .iter()
        .map(|s| s.name())
        .collect()
}

/// The names of the change sources the running configuration lists.
fn running_sources(running: &crate::shared::RunningConfig) -> Vec<&str> {
    let config = &running.loaded.config;
    config.change_sources.iter().map(|s| s.name()).collect()
}

fn force_schedulers(running: &crate::shared::RunningConfig) -> Vec<Value> {
    running
        .loaded
        .config
        .schedulers
        .iter()
        .filter_map(|s| match s {
            crate::config::SchedulerConfig::Changes(_)
            | crate::config::SchedulerConfig::Timed(_)
            | crate::config::SchedulerConfig::Dependent { .. }
            | crate::config::SchedulerConfig::Triggerable { .. } => None,
            crate::config::SchedulerConfig::Force {
                name,
                builders,
                label,
                form,
                ..
            } => Some(json!({
                "name": name,
                "label": label,
                "button_name": form.button_name,
                "builder_names": builders,
                "enabled": true,
                "all_fields": crate::schedulers::force_params::describe(form),
            })),
        })
        .collect()
}

/// A parsed JSON-RPC 2.0 call.
struct RpcCall {
    params: Value,
}

/// An error answered in JSON-RPC form.
struct RpcError {
    code: i64,
    message: String,
}

/// A JSON-RPC POST: check the body, find the action its method names, check
/// the caller may do it, then do it.
async fn control(
    shared: &Arc<Shared>,
    request: &Request,
    rest: &[&str],
) -> Result<Response, ApiError> {
    let is_json = request
        .headers
        .get(warp::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        // Also what stops another web site's page from posting here: a
        // cross-site request with this content type needs a CORS preflight,
        // which this server never grants.
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "control calls are JSON-RPC: send them with Content-Type: application/json",
        ));
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}}),
            ));
        }
    };
    let rpc_id = body.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = body.get("method").and_then(Value::as_str) else {
        return Ok(json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32600, "message": "invalid request: 'method' is missing"}}),
        ));
    };
    let call = RpcCall {
        params: body.get("params").cloned().unwrap_or_else(|| json!({})),
    };
    let kind = match (rest, method) {
        (["forceschedulers", _], "force") => ActionKind::Force,
        (["builds", _], "stop") => ActionKind::Stop,
        (["builds", _], "rebuild") => ActionKind::Rebuild,
        (["buildrequests", _], "cancel") => ActionKind::Cancel,
        (["buildrequests", _], "set_priority") => ActionKind::SetPriority,
        (["config"], "reload") => ActionKind::Reload,
        (["config"], "diff") => ActionKind::Diff,
        (["workers", _], "pause") => ActionKind::Pause,
        (["workers", _], "unpause") => ActionKind::Unpause,
        (["changes"], "add") => ActionKind::SendChange,
        (
            ["forceschedulers", _]
            | ["builds", _]
            | ["buildrequests", _]
            | ["workers", _]
            | ["changes"]
            | ["config"],
            _,
        ) => {
            let known = match rest[0] {
                "forceschedulers" => "'force'",
                "builds" => "'stop' and 'rebuild'",
                "buildrequests" => "'cancel' and 'set_priority'",
                "workers" => "'pause' and 'unpause'",
                "changes" => "'add'",
                _ => "'reload' and 'diff'",
            };
            return Ok(rpc_answer(
                rpc_id,
                Err(RpcError {
                    code: -32601,
                    message: format!("unknown method '{method}' ({} know {known})", rest[0]),
                }),
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("POST is not supported on {}", request.path),
            ));
        }
    };
    let identity = request.identity(shared);
    let authorized = actions::authorize(shared, &identity, kind, None)?;
    let target = match rest {
        ["builds", b] => Some(id(b, "build")?),
        ["buildrequests", r] => Some(id(r, "build request")?),
        _ => None,
    };
    let action = match parse_action(kind, rest, target, &call, authorized.user.as_deref()) {
        Ok(action) => action,
        Err(e) => return Ok(rpc_answer(rpc_id, Err(e))),
    };
    let result = actions::perform(shared, authorized, action)
        .await
        .map(outcome_json)
        .map_err(rpc_error);
    Ok(rpc_answer(rpc_id, result))
}

/// The action a JSON-RPC call asks for, with its parameters read.
fn parse_action(
    kind: ActionKind,
    rest: &[&str],
    target: Option<i64>,
    call: &RpcCall,
    user: Option<&str>,
) -> Result<Action, RpcError> {
    let params = &call.params;
    let target = || target.ok_or_else(|| invalid_params("no id in the path"));
    Ok(match kind {
        ActionKind::SendChange => Action::SendChange {
            change: change_param(params)?,
        },
        ActionKind::Force => {
            if !params.is_object() {
                return Err(invalid_params("'params' must be an object"));
            }
            let mut properties = std::collections::BTreeMap::new();
            match params.get("properties") {
                None | Some(Value::Null) => {}
                Some(Value::Object(props)) => {
                    for (k, v) in props {
                        properties.insert(k.clone(), v.clone());
                    }
                }
                Some(_) => return Err(invalid_params("'properties' must be an object")),
            }
            // Buildbot's shape: the form's fields beside `builderid`.
            let mut fields = params.as_object().cloned().unwrap_or_default();
            fields.remove("builderid");
            fields.remove("properties");
            Action::Force {
                scheduler: rest[1].to_string(),
                request: ForceRequest {
                    builderid: int_param(params, "builderid")?,
                    fields,
                    // A logged-in user is the owner, whatever the call said.
                    user: user.map(str::to_string),
                    properties,
                },
            }
        }
        ActionKind::Stop => Action::Stop {
            buildid: target()?,
            reason: str_param(params, "reason")?
                .unwrap_or_else(|| format!("stopped by {}", user.unwrap_or("a user"))),
        },
        ActionKind::Rebuild => Action::Rebuild { buildid: target()? },
        ActionKind::Cancel => Action::Cancel { brid: target()? },
        ActionKind::SetPriority => Action::SetPriority {
            brid: target()?,
            priority: int_param(params, "priority")?
                .filter(|p| (-1_000_000..=1_000_000).contains(p))
                .ok_or_else(|| {
                    invalid_params("'priority' must be an integer from -1000000 to 1000000")
                })?,
        },
        ActionKind::Pause => Action::Pause {
            worker: rest[1].to_string(),
        },
        ActionKind::Unpause => Action::Unpause {
            worker: rest[1].to_string(),
        },
        ActionKind::Reload => Action::Reload,
        ActionKind::Diff => Action::Diff,
    })
}

/// An action's outcome as the JSON-RPC `result` (Buildbot's shapes: `[bsid,
/// {builderid: brid}]` for force, `[bsid, brid]` for rebuild).
fn outcome_json(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Forced { bsid, brids } => {
            let map: serde_json::Map<String, Value> = brids
                .into_iter()
                .map(|(builderid, brid)| (builderid.to_string(), json!(brid)))
                .collect();
            json!([bsid, map])
        }
        Outcome::Rebuilt(r) => json!([r.bsid, r.brid]),
        Outcome::Stopped | Outcome::Cancelled | Outcome::PrioritySet => Value::Null,
        Outcome::Worker(v) | Outcome::Reloaded(v) | Outcome::Diff(v) => v,
        Outcome::ChangeAdded(changeid) => json!(changeid),
    }
}

/// A failed action as a JSON-RPC error: the caller's mistake is "invalid
/// params" (-32602), the master's failure a server error (-32000).
fn rpc_error(e: ActionError) -> RpcError {
    match e {
        ActionError::Force(ForceError::Data(_))
        | ActionError::Reload(_)
        | ActionError::WrongAuthorization => RpcError {
            code: -32000,
            message: e.to_string(),
        },
        other => invalid_params(other.to_string()),
    }
}

fn rpc_answer(rpc_id: Value, result: Result<Value, RpcError>) -> Response {
    match result {
        Ok(result) => json_reply(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": rpc_id, "result": result}),
        ),
        Err(e) => json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": e.code, "message": e.message}}),
        ),
    }
}

fn invalid_params(message: impl Into<String>) -> RpcError {
    RpcError {
        code: -32602,
        message: message.into(),
    }
}

fn int_param(params: &Value, key: &str) -> Result<Option<i64>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid_params(format!("'{key}' must be a whole number"))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid_params(format!("'{key}' must be a whole number, not '{s}'"))),
        Some(_) => Err(invalid_params(format!("'{key}' must be a whole number"))),
    }
}

/// A change as `moonbot sendchange` sends it: Buildbot's change fields
/// (`author`, or `who` as its `sendchange` says; `files`, `comments`,
/// `revision`, `when_timestamp`, `branch`, `category`, `revlink`,
/// `properties`, `repository`, `project`, `codebase`).
fn change_param(params: &Value) -> Result<NewChange, RpcError> {
    let Value::Object(fields) = params else {
        return Err(invalid_params("'params' must be an object"));
    };
    const KNOWN: &[&str] = &[
        "author",
        "who",
        "committer",
        "files",
        "comments",
        "revision",
        "when_timestamp",
        "branch",
        "category",
        "revlink",
        "properties",
        "repository",
        "project",
        "codebase",
    ];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid_params(format!(
            "unknown change field '{unknown}' (known: {})",
            KNOWN.join(", ")
        )));
    }
    let text = |key: &str| -> Result<String, RpcError> {
        let value = str_param(params, key)?.unwrap_or_default();
        if value.contains('\0') {
            return Err(invalid_params(format!("'{key}' contains a NUL character")));
        }
        Ok(value)
    };
    let optional = |key: &str| -> Result<Option<String>, RpcError> {
        Ok(Some(text(key)?).filter(|v| !v.is_empty()))
    };
    let author = optional("author")?
        .or(optional("who")?)
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| invalid_params("a change needs its 'author' ('who')"))?;
    let files = match params.get("files") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(files)) => files
            .iter()
            .map(|f| f.as_str().filter(|f| !f.contains('\0')).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid_params("'files' must be a list of strings"))?,
        Some(_) => return Err(invalid_params("'files' must be a list of strings")),
    };
    let properties = match params.get("properties") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(p)) => p.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(_) => return Err(invalid_params("'properties' must be an object")),
    };
    let when_timestamp = match params.get("when_timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| invalid_params("'when_timestamp' must be seconds since 1970"))?,
        ),
    };
    Ok(NewChange {
        author,
        committer: optional("committer")?,
        comments: text("comments")?,
        branch: optional("branch")?,
        revision: optional("revision")?,
        revlink: optional("revlink")?,
        when_timestamp,
        category: optional("category")?,
        repository: text("repository")?,
        codebase: text("codebase")?,
        project: text("project")?,
        files,
        properties,
    })
}

fn str_param(params: &Value, key: &str) -> Result<Option<String>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_params(format!("'{key}' must be a string"))),
    }
}
