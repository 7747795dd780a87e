//! `mb.reporters.http_push`: a JSON POST of each reported build (Buildbot's
//! `HttpStatusPush`). The body is the build as the API shows it, with its
//! properties, builder, URL and `event` (`started` or `finished`), or what
//! the reporter's `format_fn` returns for it (a table, sent as JSON, or a
//! string, sent as it is), or its `template` (sent as JSON when it renders
//! JSON, else as text). With `hmac_secret`, the body is signed as GitHub
//! signs its webhooks: `X-Hub-Signature-256: sha256=<hex>`.

use super::format::{Written, write};
use super::generators::Report;
use crate::config::reporters::{HttpAuth, HttpPushConfig};
use crate::data::reports::NewDelivery;
use crate::lua::RawValue;
use crate::shared::Shared;
use base64::Engine;

/// The headers that may carry secrets (`Authorization`, master.lua's
/// `headers`), added as each request is sent, so no secret is stored in
/// the queue.
pub fn secret_headers(config: &HttpPushConfig) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match &config.auth {
        Some(HttpAuth::Bearer(token)) => {
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
        Some(HttpAuth::Basic { user, password }) => {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("Authorization".into(), format!("Basic {pair}")));
        }
        None => {}
    }
    for (name, value) in &config.headers {
        headers.push((name.clone(), value.clone()));
    }
    headers
}

/// The request that delivers `report` (made of event `eventid`).
pub async fn request(
    shared: &Shared,
    config: &HttpPushConfig,
    report: &Report,
    eventid: i64,
) -> Result<NewDelivery, String> {
    let json = "application/json";
    let (body, content_type) =
        match write(shared, &config.format, report, || report.table()).await? {
            None => (report.table().to_string(), json),
            Some(Written::Lua(RawValue::Str(text))) => (text, "text/plain; charset=utf-8"),
            Some(Written::Lua(value)) => (
                value
                    .to_json()
                    .map_err(|e| format!("format_fn returned what is not JSON: {e}"))?
                    .to_string(),
                json,
            ),
            // What renders as JSON goes as JSON.
            Some(Written::Template { body, .. }) => {
                let text = body.unwrap_or_default();
                if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                    (text, json)
                } else {
                    (text, "text/plain; charset=utf-8")
                }
            }
        };
    let mut headers = vec![
        ("Content-Type".to_string(), content_type.to_string()),
        ("User-Agent".to_string(), "moonbot".to_string()),
    ];
    if let Some(secret) = &config.hmac_secret {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let mac = hex::encode(ring::hmac::sign(&key, body.as_bytes()));
        headers.push(("X-Hub-Signature-256".into(), format!("sha256={mac}")));
    }
    Ok(NewDelivery {
        eventid,
        // A build's start goes before its end.
        order_key: report.subject_key(),
        method: "POST".into(),
        url: config.url.clone(),
        headers,
        body,
    })
}
