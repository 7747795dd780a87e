//! The HTTP side: the REST API (`/api/v2/…`, Buildbot's data API shape) and a
//! minimal home page. Served by warp on a listener the runtime bound.
//!
//! One filter takes method, path, query, client address and a size-limited body,
//! and [`api::dispatch`] routes by path segments, so every malformed request gets
//! a JSON error with a 4xx status instead of warp's default rejection.

pub mod api;
mod home;

use crate::runtime::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use warp::Filter;

/// Largest request body accepted (JSON-RPC calls are small).
const MAX_BODY: u64 = 1 << 20;

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let with_shared = warp::any().map(move || shared.clone());
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::addr::remote())
        .and(
            // Only POSTs carry a body; one without a length or over the limit
            // arrives empty and is refused by the JSON-RPC parser.
            warp::post()
                .and(warp::body::content_length_limit(MAX_BODY))
                .and(warp::body::bytes())
                .or(warp::any().map(bytes::Bytes::new))
                .unify(),
        )
        .and(with_shared)
        .then(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             query: String,
             remote: Option<SocketAddr>,
             body: bytes::Bytes,
             shared: Arc<Shared>| async move {
                api::dispatch(&shared, &method, path.as_str(), &query, remote, &body).await
            },
        );
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move {
            let _ = shutdown.changed().await;
        })
        .run()
        .await;
}
