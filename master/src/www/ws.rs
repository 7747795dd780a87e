//! `/ws`: live events in Buildbot's WebSocket protocol, so scripts written for
//! Buildbot keep working and the status pages update without reloading.
//!
//! The client sends `{"cmd": "startConsuming", "path": "builds/*/*", "_id": 1}`
//! (or `stopConsuming`, or `ping`); each command is answered with
//! `{"_id": 1, "code": 200, "msg": "OK"}` or an `error`. Every event on the bus
//! whose topic matches a consumed path is sent as `{"k": topic, "m": payload}`,
//! the payload being what the REST API returns for that object. A client too
//! slow to keep up is told `{"k": "lagged", "m": {"missed": N}}` and should
//! re-read what it shows.
//!
//! What waits to be sent to one client is bounded ([`MAX_QUEUED_BYTES`]): a
//! client that stops reading is closed with code 1008 and a reason once its
//! queue is full, instead of holding a copy of every event since.

use super::connections::Slot;
use crate::shared::Shared;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use warp::ws::{Message, WebSocket};

/// Most paths one connection may consume at once.
const MAX_PATHS: usize = 64;
/// Most bytes of messages waiting to be sent to one client.
pub(super) const MAX_QUEUED_BYTES: usize = 4 << 20;
/// How long the close message to a client that fell behind may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Whether a topic (`builds/42/new`) matches a consumed path (`builds/*/*`):
/// the same number of segments, `*` matching any one.
pub(super) fn path_matches(path: &str, topic: &str) -> bool {
    let mut p = path.split('/');
    let mut t = topic.split('/');
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// Serve one WebSocket until the client leaves, falls behind, or the master
/// stops. `slot` is its place among the web port's connections.
pub(super) async fn session(socket: WebSocket, shared: Arc<Shared>, slot: Slot) {
    let (tx, mut rx) = socket.split();
    let mut events = shared.data.bus.subscribe();
    let mut paths: Vec<String> = Vec::new();
    let mut outbox = Outbox::start(tx);
    loop {
        let out = tokio::select! {
            incoming = rx.next() => {
                let Some(Ok(message)) = incoming else { break };
                if message.is_close() {
                    break;
                }
                let Some(answer) = message.to_str().ok().map(|text| command(text, &mut paths).to_string()) else {
                    continue;
                };
                answer
            }
            event = events.recv() => {
                match event {
                    Ok(event) if paths.iter().any(|p| path_matches(p, &event.key)) => {
                        json!({"k": *event.key, "m": *event.payload}).to_string()
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => json!({"k": "lagged", "m": {"missed": missed}}).to_string(),
                    Err(RecvError::Closed) => break,
                }
            }
        };
        if !outbox.push(out) {
            break;
        }
    }
    outbox.finish().await;
    drop(slot);
}

/// Messages on their way to one client, sent by a task of their own so a
/// client that does not read never blocks the session, and bounded in bytes.
struct Outbox {
    queue: tokio::sync::mpsc::UnboundedSender<Message>,
    queued_bytes: Arc<AtomicUsize>,
    close: Option<tokio::sync::oneshot::Sender<String>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Outbox {
    fn start(mut tx: futures_util::stream::SplitSink<WebSocket, Message>) -> Outbox {
        let (queue, mut messages) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let (close, mut closing) = tokio::sync::oneshot::channel::<String>();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let sent = queued_bytes.clone();
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    reason = &mut closing => {
                        if let Ok(reason) = reason {
                            let frame = Message::close_with(1008u16, reason);
                            let _ = tokio::time::timeout(CLOSE_WAIT, tx.send(frame)).await;
                        }
                        break;
                    }
                    message = messages.recv() => {
                        let Some(message) = message else { break };
                        let len = message.as_bytes().len();
                        if tx.send(message).await.is_err() {
                            break;
                        }
                        sent.fetch_sub(len, Ordering::Relaxed);
                    }
                }
            }
            let _ = tokio::time::timeout(CLOSE_WAIT, tx.close()).await;
        });
        Outbox {
            queue,
            queued_bytes,
            close: Some(close),
            writer,
        }
    }

    /// Queue a message; false (and the client is being closed) when it does
    /// not fit, or the client is gone.
    fn push(&mut self, text: String) -> bool {
        let queued = self.queued_bytes.fetch_add(text.len(), Ordering::Relaxed) + text.len();
        if queued > MAX_QUEUED_BYTES {
            if let Some(close) = self.close.take() {
                let reason = format!(
                    "too slow: more than {} MiB of events not read",
                    MAX_QUEUED_BYTES >> 20
                );
                tracing::info!("closing a /ws client: {reason}");
                let _ = close.send(reason);
            }
            return false;
        }
        self.queue.send(Message::text(text)).is_ok()
    }

    /// Let the writer send what is queued (and the close message), then end.
    async fn finish(self) {
        drop(self.queue);
        drop(self.close);
        let _ = self.writer.await;
    }
}

/// Carry out one client command; the answer to send back.
fn command(text: &str, paths: &mut Vec<String>) -> Value {
    let request: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return json!({"_id": null, "code": 400, "error": format!("not JSON: {e}")}),
    };
    let id = request.get("_id").cloned().unwrap_or(Value::Null);
    let path = request.get("path").and_then(Value::as_str);
    match (request.get("cmd").and_then(Value::as_str), path) {
        (Some("ping"), _) => json!({"_id": id, "code": 200, "msg": "pong"}),
        (Some("startConsuming"), Some(path)) => {
            if !paths.iter().any(|p| p == path) {
                if paths.len() >= MAX_PATHS {
                    return json!({"_id": id, "code": 400, "error": format!("at most {MAX_PATHS} paths at once")});
                }
                paths.push(path.to_string());
            }
            json!({"_id": id, "code": 200, "msg": "OK"})
        }
        (Some("stopConsuming"), Some(path)) => {
            if !paths.iter().any(|p| p == path) {
                return json!({"_id": id, "code": 400, "error": format!("path '{path}' is not being consumed")});
            }
            paths.retain(|p| p != path);
            json!({"_id": id, "code": 200, "msg": "OK"})
        }
        (Some("startConsuming" | "stopConsuming"), None) => {
            json!({"_id": id, "code": 400, "error": "'path' is missing"})
        }
        (Some(other), _) => {
            json!({"_id": id, "code": 404, "error": format!("no such command '{other}'")})
        }
        (None, _) => json!({"_id": id, "code": 400, "error": "'cmd' is missing"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_by_segment() {
        assert!(path_matches("builds/*/*", "builds/42/new"));
        assert!(path_matches("builds/42/*", "builds/42/finished"));
        assert!(!path_matches("builds/42/*", "builds/43/finished"));
        assert!(!path_matches("builds/*", "builds/42/new"));
        assert!(!path_matches("steps/*/*", "builds/42/new"));
    }

    #[test]
    fn commands_are_answered() {
        let mut paths = Vec::new();
        let ok = command(
            r#"{"cmd":"startConsuming","path":"builds/*/*","_id":1}"#,
            &mut paths,
        );
        assert_eq!(ok, json!({"_id": 1, "code": 200, "msg": "OK"}));
        assert_eq!(paths, ["builds/*/*"]);
        let pong = command(r#"{"cmd":"ping","_id":2}"#, &mut paths);
        assert_eq!(pong["msg"], "pong");
        assert_eq!(command("{nope", &mut paths)["code"], 400);
        assert_eq!(command(r#"{"cmd":"fly","_id":3}"#, &mut paths)["code"], 404);
        command(
            r#"{"cmd":"stopConsuming","path":"builds/*/*","_id":4}"#,
            &mut paths,
        );
        assert!(paths.is_empty());
    }
}
