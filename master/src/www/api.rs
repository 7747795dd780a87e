//! `/api/v2/…`: Buildbot's data API shape. Lists come as
//! `{"<collection>": [...], "meta": {"total": N}}`; a single object as a list of
//! one. Control actions are JSON-RPC 2.0 POSTs (`force`, `stop`, `rebuild`,
//! `cancel`, `reload`), allowed by the rules of [`super::auth`].

use super::Request;
use super::auth;
use crate::data::DataError;
use crate::data::query::ListQuery;
use crate::reconfig::{self, Trigger};
use crate::running_builds::StopKind;
use crate::schedulers::force::{self, ForceError, ForceRequest};
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
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
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
pub async fn dispatch(shared: &Arc<Shared>, request: &Request) -> Response {
    match route(shared, request).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn route(shared: &Arc<Shared>, request: &Request) -> Result<Response, ApiError> {
    let path = request.path.as_str();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v2", rest @ ..] = segments.as_slice() else {
        return Err(ApiError::not_found(format!("no API endpoint at {path}")));
    };
    let params = request.params().map_err(ApiError::bad_request)?;
    let q = ListQuery::parse(&params).map_err(ApiError::bad_request)?;
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
    let bad = ApiError::bad_request;
    match rest {
        [] => Ok(json_reply(
            StatusCode::OK,
            &json!({"api_version": 2, "collections": ["builders", "builds", "buildrequests", "buildsets", "changes", "steps", "logs", "workers", "forceschedulers", "masters", "config"]}),
        )),
        ["builders"] => {
            let (items, total) = data
                .list_builders(&q, &running.builder_ids)
                .await
                .map_err(bad)?;
            Ok(envelope("builders", items, total))
        }
        ["builders", b] => {
            let q = q.with_eq("builderid", id(b, "builder")?);
            let (items, _) = data
                .list_builders(&q, &running.builder_ids)
                .await
                .map_err(bad)?;
            one("builders", items, &format!("builder {b}"))
        }
        ["builders", b, "builds"] => {
            let q = q.with_eq("builderid", id(b, "builder")?);
            let (items, total) = data.list_builds(&q, with_props).await.map_err(bad)?;
            Ok(envelope("builds", items, total))
        }
        ["builds"] => {
            let (items, total) = data.list_builds(&q, with_props).await.map_err(bad)?;
            Ok(envelope("builds", items, total))
        }
        ["builds", b] => {
            let q = q.with_eq("buildid", id(b, "build")?);
            let (items, _) = data.list_builds(&q, with_props).await.map_err(bad)?;
            one("builds", items, &format!("build {b}"))
        }
        ["builds", b, "properties"] => {
            let buildid = id(b, "build")?;
            let (found, _) = data
                .list_builds(&ListQuery::default().with_eq("buildid", buildid), false)
                .await
                .map_err(bad)?;
            if found.is_empty() {
                return Err(ApiError::not_found(format!("build {b} not found")));
            }
            let props = data.build_properties(buildid).await?;
            Ok(envelope("properties", vec![props], 1))
        }
        ["builds", b, "steps"] => {
            let q = q.with_eq("buildid", id(b, "build")?);
            let (items, total) = data.list_steps(&q).await.map_err(bad)?;
            Ok(envelope("steps", items, total))
        }
        ["steps", s] => {
            let q = q.with_eq("stepid", id(s, "step")?);
            let (items, _) = data.list_steps(&q).await.map_err(bad)?;
            one("steps", items, &format!("step {s}"))
        }
        ["steps", s, "logs"] => {
            let q = q.with_eq("stepid", id(s, "step")?);
            let (items, total) = data.list_logs(&q).await.map_err(bad)?;
            Ok(envelope("logs", items, total))
        }
        ["logs", l] => {
            let q = q.with_eq("logid", id(l, "log")?);
            let (items, _) = data.list_logs(&q).await.map_err(bad)?;
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
            let (items, total) = data
                .list_workers(&q, &running.worker_ids)
                .await
                .map_err(bad)?;
            Ok(envelope("workers", items, total))
        }
        ["workers", w] => {
            let q = q.with_eq("workerid", id(w, "worker")?);
            let (items, _) = data
                .list_workers(&q, &running.worker_ids)
                .await
                .map_err(bad)?;
            one("workers", items, &format!("worker {w}"))
        }
        ["buildrequests"] => {
            let (items, total) = data.list_buildrequests(&q).await.map_err(bad)?;
            Ok(envelope("buildrequests", items, total))
        }
        ["buildrequests", r] => {
            let q = q.with_eq("buildrequestid", id(r, "build request")?);
            let (items, _) = data.list_buildrequests(&q).await.map_err(bad)?;
            one("buildrequests", items, &format!("build request {r}"))
        }
        ["buildrequests", r, "builds"] => {
            let q = q.with_eq("buildrequestid", id(r, "build request")?);
            let (items, total) = data.list_builds(&q, with_props).await.map_err(bad)?;
            Ok(envelope("builds", items, total))
        }
        ["buildsets"] => {
            let (items, total) = data.list_buildsets(&q).await.map_err(bad)?;
            Ok(envelope("buildsets", items, total))
        }
        ["buildsets", s] => {
            let q = q.with_eq("bsid", id(s, "buildset")?);
            let (items, _) = data.list_buildsets(&q).await.map_err(bad)?;
            one("buildsets", items, &format!("buildset {s}"))
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
                .await
                .map_err(bad)?;
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
            let (items, total) = data.list_reloads(&q).await.map_err(bad)?;
            Ok(envelope("reloads", items, total))
        }
        ["changes"] => {
            let (items, total) = data.list_changes(&q).await.map_err(bad)?;
            Ok(envelope("changes", items, total))
        }
        ["changes", c] => {
            let q = q.with_eq("changeid", id(c, "change")?);
            let (items, _) = data.list_changes(&q).await.map_err(bad)?;
            one("changes", items, &format!("change {c}"))
        }
        ["masters"] => {
            let items = data.masters_json().await?;
            let total = items.len() as u64;
            Ok(envelope("masters", items, total))
        }
        _ => Err(ApiError::not_found(format!("no API endpoint at {path}"))),
    }
}

fn force_schedulers(running: &crate::shared::RunningConfig) -> Vec<Value> {
    running
        .loaded
        .config
        .schedulers
        .iter()
        .map(|s| match s {
            crate::config::SchedulerConfig::Force {
                name,
                builders,
                label,
                ..
            } => json!({
                "name": name,
                "label": label,
                "builder_names": builders,
                "enabled": true,
                "all_fields": [
                    {"name": "reason", "type": "text", "fullName": "reason"},
                    {"name": "owner", "type": "text", "fullName": "owner"},
                ],
            }),
        })
        .collect()
}

/// A parsed JSON-RPC 2.0 call.
struct RpcCall {
    method: String,
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
        method: method.to_string(),
        params: body.get("params").cloned().unwrap_or_else(|| json!({})),
    };
    let action = match (rest, method) {
        (["forceschedulers", _], "force") => "force",
        (["builds", _], "stop") => "stop",
        (["builds", _], "rebuild") => "rebuild",
        (["buildrequests", _], "cancel") => "cancel",
        (["config"], "reload" | "diff") => "reload",
        (["workers", _], "pause" | "unpause") => "pause",
        (
            ["forceschedulers", _]
            | ["builds", _]
            | ["buildrequests", _]
            | ["workers", _]
            | ["config"],
            _,
        ) => {
            let known = match rest[0] {
                "forceschedulers" => "'force'",
                "builds" => "'stop' and 'rebuild'",
                "buildrequests" => "'cancel'",
                "workers" => "'pause' and 'unpause'",
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
    let running = shared.running_config();
    auth::authorize(
        &shared.session_key,
        running.loaded.config.auth.as_ref(),
        &identity,
        action,
        None,
    )?;
    let user = identity.user.as_ref().map(|u| u.name.as_str());
    let result = match rest {
        ["forceschedulers", name] => force_call(shared, name, call, user).await,
        ["config"] => config_call(shared, call).await,
        ["builds", b] => {
            let buildid = id(b, "build")?;
            if action == "stop" {
                stop_call(shared, buildid, call, user).await
            } else {
                rebuild_call(shared, buildid, user).await
            }
        }
        ["buildrequests", r] => cancel_call(shared, id(r, "build request")?).await,
        ["workers", w] => super::actions::set_worker_paused(shared, w, method == "pause")
            .await
            .map_err(|e| invalid_params(e.to_string())),
        _ => unreachable!("matched above"),
    };
    Ok(rpc_answer(rpc_id, result))
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

fn str_param(params: &Value, key: &str) -> Result<Option<String>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_params(format!("'{key}' must be a string"))),
    }
}

/// Force builds; a logged-in user is the owner, whatever the form said.
async fn force_call(
    shared: &Shared,
    scheduler: &str,
    call: RpcCall,
    user: Option<&str>,
) -> Result<Value, RpcError> {
    if !call.params.is_object() {
        return Err(invalid_params("'params' must be an object"));
    }
    let mut properties = std::collections::BTreeMap::new();
    if let Some(Value::Object(props)) = call.params.get("properties") {
        for (k, v) in props {
            properties.insert(k.clone(), v.clone());
        }
    }
    let request = ForceRequest {
        builderid: int_param(&call.params, "builderid")?,
        reason: str_param(&call.params, "reason")?,
        owner: match user {
            Some(u) => Some(u.to_string()),
            None => str_param(&call.params, "owner")?,
        },
        properties,
    };
    match force::force(shared, scheduler, request).await {
        Ok((bsid, brids)) => {
            let map: serde_json::Map<String, Value> = brids
                .into_iter()
                .map(|(builderid, brid)| (builderid.to_string(), json!(brid)))
                .collect();
            Ok(json!([bsid, map]))
        }
        Err(e @ (ForceError::UnknownScheduler(_) | ForceError::NotAllowed { .. })) => {
            Err(invalid_params(e.to_string()))
        }
        Err(e) => Err(RpcError {
            code: -32000,
            message: e.to_string(),
        }),
    }
}

/// `reload` applies master.lua and answers with the stored outcome; `diff` is
/// the dry run (`moonbot checkconfig --diff`): what a reload would change, or
/// its errors, with nothing applied or recorded.
async fn config_call(shared: &Arc<Shared>, call: RpcCall) -> Result<Value, RpcError> {
    match call.method.as_str() {
        "reload" => reconfig::reload(shared, Trigger::Api)
            .await
            .map_err(|e| RpcError {
                code: -32000,
                message: e.to_string(),
            }),
        "diff" => {
            let running = shared.running_config();
            Ok(
                match reconfig::prepare(&shared.dir, Some(&running.loaded.config)).await {
                    Ok((_, changes)) => json!({"success": true, "errors": [], "changes": changes}),
                    Err(errors) => json!({"success": false, "errors": errors, "changes": null}),
                },
            )
        }
        other => Err(RpcError {
            code: -32601,
            message: format!("unknown method '{other}' (config knows 'reload' and 'diff')"),
        }),
    }
}

async fn stop_call(
    shared: &Shared,
    buildid: i64,
    call: RpcCall,
    user: Option<&str>,
) -> Result<Value, RpcError> {
    let reason = str_param(&call.params, "reason")?
        .unwrap_or_else(|| format!("stopped by {}", user.unwrap_or("a user")));
    if shared.builds.stop(buildid, StopKind::Cancel, &reason) {
        Ok(Value::Null)
    } else {
        Err(invalid_params(format!(
            "build {buildid} is not running on this master"
        )))
    }
}

/// Build again what a build built: a new request with the same properties.
/// Answers `[bsid, brid]`.
async fn rebuild_call(
    shared: &Shared,
    buildid: i64,
    user: Option<&str>,
) -> Result<Value, RpcError> {
    super::actions::rebuild(shared, buildid, user)
        .await
        .map(|r| json!([r.bsid, r.brid]))
        .map_err(|e| invalid_params(e.to_string()))
}

/// Cancel a request that has not started yet.
async fn cancel_call(shared: &Shared, brid: i64) -> Result<Value, RpcError> {
    super::actions::cancel(shared, brid)
        .await
        .map(|()| Value::Null)
        .map_err(|e| invalid_params(e.to_string()))
}
