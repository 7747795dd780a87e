//! `/sse/…`: live events as server-sent events, Buildbot's other event
//! protocol beside `/ws`, with the same routing keys and payloads.
//!
//! - `GET /sse/listen/<path>` opens a stream. Its first event is
//!   `event: handshake` with the stream's id as `data`; then each bus event
//!   whose key matches a path listened to comes as `event: event` with
//!   `data: {"key": ["builds", "42", "finished"], "message": {…}}`.
//! - `GET /sse/add/<id>/<path>` and `GET /sse/remove/<id>/<path>` change
//!   what an open stream listens to (`400 unknown uuid` for an unknown id).
//!
//! A client that stops reading loses its stream once [`MAX_QUEUED`] events
//! wait for it, rather than the master holding every event since.

use super::Request;
use super::ws::path_matches;
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast::error::RecvError;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// Events that may wait for one slow client.
const MAX_QUEUED: usize = 4096;
/// Most paths one stream may listen to.
const MAX_PATHS: usize = 64;

/// The paths one stream listens to.
type Paths = Arc<Mutex<Vec<String>>>;

/// The open streams of this master process: id → the paths each listens to.
fn streams() -> &'static Mutex<HashMap<String, Paths>> {
    static STREAMS: OnceLock<Mutex<HashMap<String, Paths>>> = OnceLock::new();
    STREAMS.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn text(status: StatusCode, body: &'static str) -> Response {
    warp::reply::with_status(body, status).into_response()
}

pub(super) async fn dispatch(shared: &Arc<Shared>, request: &Request) -> Response {
    let Some(segments) = super::paths::decoded_segments(&request.path) else {
        return text(StatusCode::BAD_REQUEST, "not UTF-8 once decoded");
    };
    let segments: Vec<&str> = segments
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["sse", "listen", path @ ..] => listen(shared, path.join("/")),
        ["sse", command @ ("add" | "remove"), id, path @ ..] => {
            let Some(paths) = lock(streams()).get(*id).cloned() else {
                return text(StatusCode::BAD_REQUEST, "unknown uuid");
            };
            let path = path.join("/");
            let mut paths = lock(&paths);
            if *command == "add" {
                if paths.len() >= MAX_PATHS {
                    return text(StatusCode::BAD_REQUEST, "too many paths on this stream");
                }
                paths.push(path);
            } else if let Some(i) = paths.iter().position(|p| *p == path) {
                paths.remove(i);
            } else {
                return text(
                    StatusCode::NOT_FOUND,
                    "consumer is not listening to this event",
                );
            }
            text(StatusCode::OK, "ok")
        }
        ["sse", "add" | "remove"] => text(StatusCode::BAD_REQUEST, "need uuid"),
        _ => text(StatusCode::NOT_FOUND, "no such event stream command"),
    }
}

/// A new stream, listening to `path` if it is not empty.
fn listen(shared: &Arc<Shared>, path: String) -> Response {
    let id = stream_id();
    let paths = Arc::new(Mutex::new(if path.is_empty() {
        Vec::new()
    } else {
        vec![path]
    }));
    lock(streams()).insert(id.clone(), paths.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(MAX_QUEUED);
    let _ = tx.try_send(format!("event: handshake\ndata: {id}\n\n"));
    let mut events = shared.data.bus.subscribe();
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                () = tx.closed() => break,
                event = events.recv() => match event {
                    Ok(event) if lock(&paths).iter().any(|p| path_matches(p, &event.key)) => {
                        let key: Vec<&str> = event.key.split('/').collect();
                        let data = serde_json::json!({"key": key, "message": *event.payload});
                        format!("event: event\ndata: {data}\n\n")
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => format!("event: lagged\ndata: {{\"missed\": {missed}}}\n\n"),
                    Err(RecvError::Closed) => break,
                },
            };
            if tx.try_send(chunk).is_err() {
                tracing::info!("closing an event stream: its client is not reading");
                break;
            }
        }
        lock(streams()).remove(&id);
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let reply = warp::reply::with_header(
        warp::reply::stream(body),
        "content-type",
        "text/event-stream",
    );
    warp::reply::with_header(reply, "cache-control", "no-cache").into_response()
}

/// A random id in the form of a UUID (version 4).
fn stream_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // The system's generator does not fail where moonbot runs; if it did,
    // the clock still tells one stream's id from another's.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
