//! Chat: a line per reported build in a channel. `slack` posts to a
//! Slack-compatible incoming webhook (Mattermost and Rocket.Chat take the
//! same), `discord` to a Discord webhook, `matrix` sends a room message
//! through the client-server API (`PUT …/send/m.room.message/{txnId}`, the
//! transaction id fixed per message so a retry is not a second message),
//! and `zulip` posts a stream message with the bot's e-mail and API key.
//!
//! The text is the reporter's `format_fn` of the build, its `template`, or
//! `<builder> #<number> <result> on <branch>: <url>` (`started` while it
//! runs); a buildset's names its result and each build's, a missing
//! worker's its name and page.

use super::format::{Written, write};
use super::generators::Report;
use crate::config::reporters::{ChatConfig, ChatService};
use crate::data::reports::NewDelivery;
use crate::lua::RawValue;
use crate::results;
use crate::shared::Shared;
use base64::Engine;
use serde_json::json;

/// The request that posts `report` (the `index`th of event `eventid`).
pub async fn request(
    shared: &Shared,
    config: &ChatConfig,
    report: &Report,
    eventid: i64,
    index: usize,
) -> Result<NewDelivery, String> {
    let text = match write(shared, &config.format, report, || report.table()).await? {
        None => default_text(report),
        Some(Written::Lua(RawValue::Str(text))) => text,
        Some(Written::Lua(other)) => {
            return Err(format!(
                "format_fn must return a string, not a {}",
                other.type_name()
            ));
        }
        Some(Written::Template { body, .. }) => body.unwrap_or_default(),
    };
    let json_headers = || vec![("Content-Type".to_string(), "application/json".to_string())];
    let (method, url, headers, body) = match &config.service {
        ChatService::Slack { .. } => (
            "POST",
            String::new(),
            json_headers(),
            json!({"text": text}).to_string(),
        ),
        ChatService::Discord { .. } => (
            "POST",
            String::new(),
            json_headers(),
            json!({"content": text.chars().take(2000).collect::<String>()}).to_string(),
        ),
        ChatService::Matrix {
            homeserver, room, ..
        } => (
            "PUT",
            format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/moonbot-{eventid}-{index}",
                homeserver.trim_end_matches('/'),
                encode(room)
            ),
            json_headers(),
            json!({"msgtype": "m.text", "body": text}).to_string(),
        ),
        ChatService::Zulip {
            site,
            stream,
            topic,
            ..
        } => (
            "POST",
            format!("{}/api/v1/messages", site.trim_end_matches('/')),
            vec![(
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            )],
            serde_urlencoded::to_string([
                ("type", "stream"),
                ("to", stream.as_str()),
                ("topic", topic.as_str()),
                ("content", text.as_str()),
            ])
            .map_err(|e| e.to_string())?,
        ),
    };
    Ok(NewDelivery {
        eventid,
        order_key: format!("chat:{}", report.subject_key()),
        method: method.into(),
        // A webhook URL is a secret (it is the credential): added at send time.
        url,
        headers,
        body,
    })
}

/// The URL (for webhooks, where it is the secret) and the credential
/// headers, added as each request is sent; `url` is the stored one.
pub fn secret_parts(config: &ChatConfig, url: &str) -> (String, Vec<(String, String)>) {
    match &config.service {
        ChatService::Slack { webhook } | ChatService::Discord { webhook } => {
            (webhook.clone(), Vec::new())
        }
        ChatService::Matrix { token, .. } => (
            url.to_string(),
            vec![("Authorization".into(), format!("Bearer {token}"))],
        ),
        ChatService::Zulip { email, api_key, .. } => {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{email}:{api_key}"));
            (
                url.to_string(),
                vec![("Authorization".into(), format!("Basic {pair}"))],
            )
        }
    }
}

fn default_text(report: &Report) -> String {
    let b = &report.build;
    match report.event {
        "worker_missing" => {
            return format!(
                "worker {} missing (away for more than {} s): {}",
                b["name"].as_str().unwrap_or_default(),
                b["missing_timeout"],
                b["url"].as_str().unwrap_or_default()
            );
        }
        "buildset" => {
            let builds: Vec<String> = b["builds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|build| {
                    format!(
                        "{} #{} {}",
                        build["builder"]["name"].as_str().unwrap_or_default(),
                        build["number"],
                        results::name(build["results"].as_i64().unwrap_or(0) as i32)
                    )
                })
                .collect();
            return format!(
                "buildset #{} {}: {}",
                b["bsid"],
                results::name(b["results"].as_i64().unwrap_or(0) as i32),
                builds.join(", ")
            );
        }
        _ => {}
    }
    let builder = b["builder"]["name"].as_str().unwrap_or_default();
    let state = match report.event {
        "finished" => results::name(b["results"].as_i64().unwrap_or(0) as i32),
        "started" => "started",
        other => other,
    };
    let branch = b["properties"]["branch"][0]
        .as_str()
        .map(|br| format!(" on {br}"))
        .unwrap_or_default();
    format!(
        "{builder} #{} {state}{branch}: {}",
        b["number"],
        b["url"].as_str().unwrap_or_default()
    )
}

fn encode(room: &str) -> String {
    room.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}
