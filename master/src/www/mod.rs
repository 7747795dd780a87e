//! The HTTP side: the REST API (`/api/v2/…`, Buildbot's data API shape), the
//! live event socket (`/ws`, Buildbot's protocol), and the server-rendered
//! status pages. Served by warp on a listener the runtime bound.
//!
//! One filter takes every plain HTTP request whole ([`Request`]) and routes it
//! by path segments, so every malformed request gets a clear 4xx answer
//! instead of warp's default rejection. `/ws` is the only other route.

mod actions;
pub mod api;
pub mod auth;
mod connections;
mod hooks;
mod pages;
mod paths;
mod sse;
mod ws;

use crate::shared::Shared;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};

/// Largest request body accepted (JSON-RPC calls and forms are small).
const MAX_BODY: u64 = 1 << 20;

/// One HTTP request, as the routers see it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub remote: Option<SocketAddr>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// Who sent it (see [`auth::identify`]).
    pub fn identity(&self, shared: &Shared) -> auth::Identity {
        let running = shared.running_config();
        auth::identify(
            &shared.session_key,
            &shared.cli_token_hash,
            running.loaded.config.auth.as_ref(),
            &self.headers,
            self.remote.map(|a| a.ip()),
        )
    }

    /// The request's query string, decoded; malformed ones are a client error.
    pub fn params(&self) -> Result<Vec<(String, String)>, serde_urlencoded::de::Error> {
        serde_urlencoded::from_str(&self.query)
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// A request's body, or why it was not read.
enum Body {
    Read(Bytes),
    Refused(StatusCode, String),
}

/// The body of a request the size-limited reader did not take: none for a
/// request that is not a POST; for a POST, over [`MAX_BODY`] is 413 and no
/// length at all (chunked) 411, both refused before anything is read or a
/// password hashed. A POST whose body could not be read for another reason is
/// empty, and its parser says what is missing.
fn unread_body(method: Method, headers: HeaderMap) -> Body {
    if method != Method::POST {
        return Body::Read(Bytes::new());
    }
    let length = headers
        .get(warp::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_BODY => Body::Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {n} bytes; the limit is {MAX_BODY} bytes"),
        ),
        Some(_) => Body::Read(Bytes::new()),
        None => Body::Refused(
            StatusCode::LENGTH_REQUIRED,
            format!(
                "send the request body with a Content-Length (at most {MAX_BODY} bytes), \
                 not chunked"
            ),
        ),
    }
}

/// A request must name this master in `Host` (see
/// [`crate::config::WwwConfig::answers_to`]: DNS rebinding), and one that may
/// change something (a POST) or open `/ws` (`check_origin`) that comes with an
/// `Origin` must come from this same host: a page of another site cannot
/// drive the master, or read its events, through a visitor's browser, with or
/// without `auth`.
fn same_site(shared: &Shared, check_origin: bool, headers: &HeaderMap) -> Result<(), String> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(host) = header(warp::http::header::HOST) else {
        return Ok(());
    };
    let running = shared.running_config();
    if !running.loaded.config.www.answers_to(&host) {
        return Err(format!(
            "this master does not answer to the host name '{}' (add it to www.hosts in master.lua)",
            host.escape_debug()
        ));
    }
    if !check_origin {
        return Ok(());
    }
    match header(warp::http::header::ORIGIN) {
        None => Ok(()),
        Some(origin) => {
            let origin_host = origin
                .split_once("://")
                .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
            if origin_host.eq_ignore_ascii_case(&host) {
                Ok(())
            } else {
                Err(format!(
                    "a request from another site ({}) may not change anything here",
                    origin.escape_debug()
                ))
            }
        }
    }
}

/// What a client is told when the database failed under its request, after
/// the failure is logged: the database's own words describe the master's
/// internals, not the caller's mistake, and stay in the log.
fn database_failed(while_doing: &str, e: &crate::data::DataError) -> &'static str {
    tracing::error!("{while_doing}: {e}");
    "the master could not read or write its database; its log says why"
}

/// Refuse a request before routing it: a JSON error under `/api/`, as the
/// API answers every error, and plain text elsewhere.
fn refused(path: &str, status: StatusCode, message: &str) -> warp::reply::Response {
    use warp::Reply;
    if path.starts_with("/api/") {
        let body = warp::reply::json(&serde_json::json!({ "error": message }));
        warp::reply::with_status(body, status).into_response()
    } else {
        warp::reply::with_status(message.to_string(), status).into_response()
    }
}

/// Sent with every answer. The pages load one script and one stylesheet of
/// their own and nothing inline, so the policy allows only this origin; no
/// other site may frame them, guess a content type, or learn a page's URL
/// from a link's referrer.
fn security_headers() -> HeaderMap {
    use warp::http::header::{self, HeaderValue};
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let www = shared.running_config().loaded.config.www.clone();
    let slots = connections::Slots::new(www.max_connections);
    tracing::info!(
        "web port: at most {} connections, idle timeout {} s",
        slots.cap(),
        www.idle_timeout_s
    );
    let ws_shared = shared.clone();
    let ws_slots = slots.clone();
    // Matched on the full path rather than with `warp::path("ws")`, whose
    // future is not `Send` for every lifetime under `tokio::spawn`.
    let websocket = warp::path::full()
        .and(warp::header::headers_cloned())
        .and(warp::ws())
        .and_then(
            move |path: warp::path::FullPath, headers: HeaderMap, socket: warp::ws::Ws| {
                let shared = ws_shared.clone();
                let slots = ws_slots.clone();
                async move {
                    use warp::Reply;
                    if path.as_str() != "/ws" {
                        return Err(warp::reject::not_found());
                    }
                    if let Err(why) = same_site(&shared, true, &headers) {
                        return Ok(refused("/ws", StatusCode::FORBIDDEN, &why));
                    }
                    let Some(slot) = slots.take(false).await else {
                        return Ok(refused(
                            "/ws",
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the master has too many open web connections; try again shortly",
                        ));
                    };
                    Ok(socket
                        .max_message_size(64 * 1024)
                        .on_upgrade(move |socket| ws::session(socket, shared, slot))
                        .into_response())
                }
            },
        );
    let with_shared = warp::any().map(move || shared.clone());
    // The one body reader, right after its size cap (clippy.toml bans the
    // readers everywhere else).
    #[allow(clippy::disallowed_methods)]
    let requests = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(
            warp::ext::optional::<connections::ClientAddr>()
                .map(|addr: Option<connections::ClientAddr>| addr.map(|a| a.0)),
        )
        .and(warp::header::headers_cloned())
        .and(
            // Only POSTs carry a body. One over the limit, or without a
            // length (chunked), is not read: the fallback says why.
            warp::post()
                .and(warp::body::content_length_limit(MAX_BODY))
                .and(warp::body::bytes())
                .map(Body::Read)
                .or(warp::method()
                    .and(warp::header::headers_cloned())
                    .map(unread_body))
                .unify(),
        )
        .and(with_shared)
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             remote: Option<SocketAddr>,
             headers: HeaderMap,
             body: Body,
             shared: Arc<Shared>| async move {
                let body = match body {
                    Body::Read(bytes) => bytes,
                    Body::Refused(status, message) => {
                        return refused(path.as_str(), status, &message);
                    }
                };
                if let Err(why) = same_site(&shared, method == Method::POST, &headers) {
                    return refused(path.as_str(), StatusCode::FORBIDDEN, &why);
                }
                let request = Request {
                    method,
                    path: path.as_str().to_string(),
                    query,
                    remote,
                    headers,
                    body,
                };
                if request.path.starts_with("/api/") {
                    api::dispatch(&shared, &request).await
                } else if request.path.starts_with("/change_hook/") {
                    hooks::dispatch(&shared, &request).await
                } else if request.path.starts_with("/sse/") {
                    sse::dispatch(&shared, &request).await
                } else {
                    pages::dispatch(&shared, &request).await
                }
            },
        );
    let routes = websocket
        .or(requests)
        .with(warp::reply::with::headers(security_headers()));
    connections::serve(
        listener,
        routes,
        slots,
        std::time::Duration::from_secs(www.idle_timeout_s),
        shutdown,
    )
    .await;
}
