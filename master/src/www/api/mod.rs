//! `/api/v2/…`: Buildbot's data API. Every path of Buildbot 4.3's data API
//! answers (the table in [`routes`], matched by [`router`]), in Buildbot's
//! shapes ([`spec`]): lists come as `{"<plural>": [...], "meta": {"total":
//! N}}`, `total` being the items in the answer (what Buildbot 4.3 answers
//! for a list it pages in the database); a single object as a list of one.
//! Every GET takes `field=`, filters (`__eq/ne/lt/le/gt/ge/contains`),
//! `order`, `limit`, `offset`, and on builds `property=`.
//!
//! Control actions are JSON-RPC 2.0 POSTs to the object's path, with the
//! methods its route lists (Buildbot's: `force`, `stop`, `rebuild`, `cancel`,
//! `set_priority`, a worker's `stop`, `kill`, `pause`, `unpause`, a
//! scheduler's `enable`; moonbot's `reload`, `diff` and `add`), allowed by
//! the rules of [`super::auth`].

mod router;
mod routes;
pub(crate) mod spec;

use super::Request;
use super::actions::{self, Action, ActionError, ActionKind, Outcome};
use super::auth;
use crate::data::DataError;
use crate::data::changes::NewChange;
use crate::data::query::ListQuery;
use crate::schedulers::force::{ForceError, ForceRequest};
use crate::shared::Shared;
use router::{Answer, Kind};
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

fn id(segment: &str, what: &str) -> Result<i64, ApiError> {
    segment
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{segment}' is not a valid {what} id")))
}

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

    if request.method == Method::POST {
        return control(shared, request, rest).await;
    }
    if request.method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not supported", request.method),
        ));
    }
    // An artifact's files: a path of any depth after `raw`.
    if let ["artifacts", a, "raw", sub @ ..] = rest {
        let artifact = artifact_row(shared, a).await?;
        let sub = (!sub.is_empty()).then(|| sub.join("/"));
        let file = artifact_store(shared)
            .file(&artifact.path, sub.as_deref())
            .ok_or_else(|| {
                ApiError::not_found(format!("artifact {a} has no such file (expired?)"))
            })?;
        return serve_file(&file).await;
    }
    let (route, args) = router::find(routes::ROUTES, rest)
        .ok_or_else(|| ApiError::not_found(format!("no API endpoint at {path}")))?;
    let entity = spec::entity(route.entity);
    let options = Options::parse(&params, entity)?;
    let call = Call {
        shared,
        args,
        q: ListQuery::parse(&params).map_err(|e| ApiError::bad_request(e.to_string()))?,
        with_props: options.properties.is_some(),
        route_kind: route.kind,
    };
    let plural = entity.and_then(|e| e.plural).unwrap_or(route.entity);
    match (route.handler)(&call).await? {
        Answer::Raw(response) => Ok(response),
        Answer::One(None) => Err(ApiError::not_found(format!("nothing at {path}"))),
        Answer::One(Some(item)) => Ok(envelope(plural, vec![options.shape(item)], 1)),
        Answer::List(items, total) => Ok(envelope(
            plural,
            items.into_iter().map(|i| options.shape(i)).collect(),
            total,
        )),
    }
}

/// What every GET takes besides filters and paging: `field=` (only these
/// fields of each item) and, on builds, `property=` (the named properties,
/// or `*` for all).
struct Options {
    fields: Option<Vec<String>>,
    properties: Option<Vec<String>>,
}

impl Options {
    fn parse(
        params: &[(String, String)],
        entity: Option<&spec::EntityType>,
    ) -> Result<Options, ApiError> {
        let mut options = Options {
            fields: None,
            properties: None,
        };
        for (key, value) in params {
            let values = value
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            match key.as_str() {
                "field" => options.fields.get_or_insert_with(Vec::new).extend(values),
                "property" => options
                    .properties
                    .get_or_insert_with(Vec::new)
                    .extend(values),
                _ => {}
            }
        }
        if let (Some(fields), Some(entity)) = (&options.fields, entity)
            && !entity.fields.is_empty()
            && let Some(unknown) = fields
                .iter()
                .find(|f| !entity.fields.iter().any(|(n, _)| n == f))
        {
            return Err(ApiError::bad_request(format!(
                "no such field '{}'",
                unknown.escape_debug()
            )));
        }
        Ok(options)
    }

    /// One item as asked: only the named properties, only the named fields.
    fn shape(&self, mut item: Value) -> Value {
        if let Some(names) = &self.properties
            && !names.iter().any(|n| n == "*")
            && let Some(props) = item.get_mut("properties").and_then(Value::as_object_mut)
        {
            props.retain(|name, _| names.contains(name));
        }
        if let (Some(fields), Some(object)) = (&self.fields, item.as_object_mut()) {
            object.retain(|name, _| fields.contains(name));
        }
        item
    }
}

/// What a route's handler gets: the master, the path's captures and the
/// listing query.
pub(crate) struct Call<'a> {
    pub shared: &'a Arc<Shared>,
    pub args: router::Args,
    pub q: ListQuery,
    /// Whether builds carry their properties (`property=`).
    pub with_props: bool,
    pub route_kind: Kind,
}

/// A log's text, streamed: as a download (`raw`), or shown in the browser
/// (`raw_inline`; plain text, so nothing in it runs).
fn log_text(
    slug: String,
    pieces: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, DataError>>,
    download: bool,
) -> Response {
    let body = futures_util::stream::unfold(pieces, |mut pieces| async move {
        pieces.recv().await.map(|piece| (piece, pieces))
    });
    let mut response = warp::reply::with_header(
        warp::reply::stream(body),
        "content-type",
        "text/plain; charset=utf-8",
    )
    .into_response();
    if download {
        let disposition = format!("attachment; filename=\"{slug}.txt\"");
        if let Ok(value) = warp::http::HeaderValue::from_str(&disposition) {
            response
                .headers_mut()
                .insert(warp::http::header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

/// The files of a directory artifact, each with its download URL.
async fn artifact_files(shared: &Arc<Shared>, artifactid: i64) -> Result<Vec<Value>, ApiError> {
    let artifact = artifact_row(shared, &artifactid.to_string()).await?;
    Ok(artifact_store(shared)
        .list(&artifact.path, MAX_LISTED_FILES)
        .into_iter()
        .map(|(name, size)| {
            json!({"name": name, "size": size,
                   "url": format!("/api/v2/artifacts/{}/raw/{}", artifact.id, super::paths::segment(&name))})
        })
        .collect())
}

/// `/config`: the running configuration in brief, and its last reload.
async fn config_json(shared: &Arc<Shared>) -> Result<Value, ApiError> {
    let (last, _) = shared
        .data
        .list_reloads(&ListQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    let running = shared.running_config();
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
    Ok(json!({
        "title": cfg.title,
        "summary": cfg.summary(),
        "workers": cfg.workers.iter().map(|w| &w.name).collect::<Vec<_>>(),
        "builders": cfg.builders.iter().map(|b| &b.name).collect::<Vec<_>>(),
        "schedulers": cfg.schedulers.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "files": files,
        "watch": cfg.reconfig.watch,
        "last_reload": last.into_iter().next(),
    }))
}

fn force_schedulers(shared: &Shared, running: &crate::shared::RunningConfig) -> Vec<Value> {
    let enabled = |name: &str| {
        running
            .scheduler_ids
            .get(name)
            .is_none_or(|id| !shared.data.scheduler_disabled(*id))
    };
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
                "enabled": enabled(name),
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
    let Some((route, args)) = router::find(routes::ROUTES, rest) else {
        return Err(ApiError::not_found(format!(
            "no API endpoint at {}",
            request.path
        )));
    };
    if route.actions.is_empty() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST is not supported on {}", request.path),
        ));
    }
    let Some(kind) = route
        .actions
        .contains(&method)
        .then(|| action_kind(route.entity, method))
        .flatten()
    else {
        let message = format!(
            "unknown method '{}' ({} takes {})",
            method.escape_debug(),
            route.pattern,
            route.actions.join(", ")
        );
        return Ok(rpc_answer(
            rpc_id,
            Err(RpcError {
                code: -32601,
                message,
            }),
        ));
    };
    let identity = request.identity(shared);
    let authorized = actions::authorize(shared, &identity, kind, None)?;
    let target = Call {
        shared,
        args,
        q: ListQuery::default(),
        with_props: false,
        route_kind: route.kind,
    };
    let target = match route.entity {
        "build" => Target::Id(routes::build_id(&target).await?.unwrap_or(0)),
        "buildrequest" => Target::Id(target.args.num("buildrequestid").unwrap_or(0)),
        "scheduler" => Target::Id(target.args.num("schedulerid").unwrap_or(0)),
        // A worker not configured here is the action's error to answer
        // (JSON-RPC, naming it), not a 404.
        "worker" => match routes::worker_name(&target, &shared.running_config()) {
            Ok(Some((name, _))) => Target::Name(name),
            _ => match (target.args.text("name"), target.args.num("workerid")) {
                (Some(name), _) => Target::Name(name.to_string()),
                (None, Some(id)) => Target::Name(id.to_string()),
                (None, None) => Target::None,
            },
        },
        "forcescheduler" => Target::Name(
            target
                .args
                .text("schedulername")
                .unwrap_or_default()
                .to_string(),
        ),
        _ => Target::None,
    };
    let action = match parse_action(kind, target, &call, authorized.user.as_deref()) {
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
/// What a control call's path names.
enum Target {
    Id(i64),
    Name(String),
    None,
}

/// The action an entity's JSON-RPC method is (the route lists the methods
/// it takes).
fn action_kind(entity: &str, method: &str) -> Option<ActionKind> {
    Some(match (entity, method) {
        ("forcescheduler", "force") => ActionKind::Force,
        ("build", "stop") => ActionKind::Stop,
        ("build", "rebuild") => ActionKind::Rebuild,
        ("buildrequest", "cancel") => ActionKind::Cancel,
        ("buildrequest", "set_priority") => ActionKind::SetPriority,
        ("worker", "pause") => ActionKind::Pause,
        ("worker", "unpause") => ActionKind::Unpause,
        ("worker", "stop") => ActionKind::StopWorker,
        ("worker", "kill") => ActionKind::KillWorker,
        ("scheduler", "enable") => ActionKind::EnableScheduler,
        ("config", "reload") => ActionKind::Reload,
        ("config", "diff") => ActionKind::Diff,
        ("change", "add") => ActionKind::SendChange,
        _ => return None,
    })
}

fn parse_action(
    kind: ActionKind,
    target: Target,
    call: &RpcCall,
    user: Option<&str>,
) -> Result<Action, RpcError> {
    let params = &call.params;
    let id = match &target {
        Target::Id(id) => Some(*id),
        _ => None,
    };
    let name = match target {
        Target::Name(name) => Some(name),
        _ => None,
    };
    let target = || id.ok_or_else(|| invalid_params("no id in the path"));
    let name = || {
        name.clone()
            .ok_or_else(|| invalid_params("no name in the path"))
    };
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
                scheduler: name()?,
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
        ActionKind::Pause => Action::Pause { worker: name()? },
        ActionKind::Unpause => Action::Unpause { worker: name()? },
        ActionKind::StopWorker => Action::StopWorker {
            worker: name()?,
            kill: false,
        },
        ActionKind::KillWorker => Action::StopWorker {
            worker: name()?,
            kill: true,
        },
        ActionKind::EnableScheduler => Action::EnableScheduler {
            schedulerid: target()?,
            enabled: match params.get("enabled") {
                Some(Value::Bool(b)) => *b,
                _ => return Err(invalid_params("'enabled' must be true or false")),
            },
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
        Outcome::WorkerStopping => Value::Null,
        Outcome::Worker(v) | Outcome::Scheduler(v) | Outcome::Reloaded(v) | Outcome::Diff(v) => v,
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
