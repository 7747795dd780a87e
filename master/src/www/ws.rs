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

use crate::shared::Shared;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use warp::ws::{Message, WebSocket};

/// Most paths one connection may consume at once.
const MAX_PATHS: usize = 64;

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

/// Serve one WebSocket until the client leaves or the master stops.
pub(super) async fn session(socket: WebSocket, shared: Arc<Shared>) {
    let (mut tx, mut rx) = socket.split();
    let mut events = shared.data.bus.subscribe();
    let mut paths: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            incoming = rx.next() => {
                let Some(Ok(message)) = incoming else { break };
                if message.is_close() {
                    break;
                }
                let Some(answer) = message.to_str().ok().map(|text| command(text, &mut paths).to_string()) else {
                    continue;
                };
                if tx.send(Message::text(answer)).await.is_err() {
                    break;
                }
            }
            event = events.recv() => {
                let out = match event {
                    Ok(event) if paths.iter().any(|p| path_matches(p, &event.key)) => {
                        json!({"k": *event.key, "m": *event.payload})
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => json!({"k": "lagged", "m": {"missed": missed}}),
                    Err(RecvError::Closed) => break,
                };
                if tx.send(Message::text(out.to_string())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tx.close().await;
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
