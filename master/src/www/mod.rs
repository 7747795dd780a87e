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
mod pages;
mod ws;

use crate::shared::Shared;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use warp::Filter;
use warp::http::{HeaderMap, Method};

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
    mut shutdown: watch::Receiver<bool>,
) {
    let ws_shared = shared.clone();
    // Matched on the full path rather than with `warp::path("ws")`, whose
    // future is not `Send` for every lifetime under `tokio::spawn`.
    let websocket = warp::path::full().and(warp::ws()).and_then(
        move |path: warp::path::FullPath, socket: warp::ws::Ws| {
            let shared = ws_shared.clone();
            async move {
                if path.as_str() != "/ws" {
                    return Err(warp::reject::not_found());
                }
                Ok(socket
                    .max_message_size(64 * 1024)
                    .on_upgrade(move |socket| ws::session(socket, shared)))
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
        .and(warp::addr::remote())
        .and(warp::header::headers_cloned())
        .and(
            // Only POSTs carry a body; one without a length or over the limit
            // arrives empty and is refused by the parser that reads it.
            warp::post()
                .and(warp::body::content_length_limit(MAX_BODY))
                .and(warp::body::bytes())
                .or(warp::any().map(Bytes::new))
                .unify(),
        )
        .and(with_shared)
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             remote: Option<SocketAddr>,
             headers: HeaderMap,
             body: Bytes,
             shared: Arc<Shared>| async move {
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
                } else {
                    pages::dispatch(&shared, &request).await
                }
            },
        );
    warp::serve(
        websocket
            .or(requests)
            .with(warp::reply::with::headers(security_headers())),
    )
    .incoming(listener)
    .graceful(async move {
        let _ = shutdown.changed().await;
    })
    .run()
    .await;
}
