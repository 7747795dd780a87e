//! `POST /change_hook/DIALECT`: forge webhooks, at Buildbot's paths so a
//! forge's existing webhook settings keep working. Only the dialects listed
//! in master.lua's `www.change_hooks` answer (404 otherwise).
//!
//! A delivery is checked before anything is stored:
//! - with a secret configured, GitHub's or Gitea's HMAC-SHA256 signature
//!   (`X-Hub-Signature-256`, `X-Gitea-Signature`) must match, or GitLab's `X-Gitlab-Token` must be
//!   the secret, compared in constant time; a delivery without it, or with
//!   another, gets 403 (Buildbot accepts unsigned ones);
//! - a malformed body gets 400, an oversized one 413 (before it is read);
//! - a delivery id already seen (`X-GitHub-Delivery`, GitLab's
//!   `Idempotency-Key` or `X-Gitlab-Event-UUID`: the forge redelivered) makes
//!   no change again.
//!
//! The dialect (in [`crate::changes`]) reads the payload; each change is
//! stored with [`crate::data::Data::add_change`]. An event that makes no change
//! is answered 200 and leaves one log line.

use super::Request;
use crate::changes::PayloadError;
use crate::changes::{
    HookOutcome, HookSettings, base, bitbucket, forge_api, gitea, github, gitlab,
};
use crate::config::ChangeHookConfig;
use crate::shared::Shared;
use serde_json::{Value, json};
use std::sync::Arc;
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};

/// A refused delivery: its status and why.
struct Refused(StatusCode, String);

pub(super) async fn dispatch(shared: &Arc<Shared>, request: &Request) -> Response {
    let (status, body) = match receive(shared, request).await {
        Ok(answer) => (StatusCode::OK, answer),
        Err(Refused(status, message)) => {
            tracing::warn!(
                path = %request.path.escape_debug(),
                "refused a change hook delivery: {message}"
            );
            (status, json!({ "error": message }))
        }
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

async fn receive(shared: &Arc<Shared>, request: &Request) -> Result<Value, Refused> {
    let dialect = request
        .path
        .strip_prefix("/change_hook/")
        .filter(|d| !d.is_empty() && !d.contains('/'))
        .ok_or_else(|| Refused(StatusCode::NOT_FOUND, "no such change hook".into()))?;
    let running = shared.running_config();
    let Some(hook) = running.loaded.config.www.change_hooks.get(dialect).cloned() else {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            format!(
                "no change hook '{}' here (master.lua's www.change_hooks lists the ones that answer)",
                dialect.escape_debug()
            ),
        ));
    };
    drop(running);
    if request.method != Method::POST {
        return Err(Refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "a change hook takes POST".into(),
        ));
    }
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(dialect_of) = dialect_named(dialect) else {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            format!("no change hook '{}' here", dialect.escape_debug()),
        ));
    };
    let Dialect {
        event_header,
        read,
        delivery_headers,
        proof,
        api,
    } = dialect_of;
    match proof {
        Proof::Signature {
            header: name,
            prefix,
        } => {
            let hex_mac = header(name).map(|v| v.strip_prefix(prefix).unwrap_or("").to_string());
            check_signature(&hook, name, hex_mac.as_deref(), &request.body)?
        }
        Proof::Token(name) => check_token(&hook, name, header(name).as_deref())?,
    }
    let payload = payload(
        header("content-type").as_deref().unwrap_or(""),
        &request.body,
    )?;
    let event = match event_header {
        "" => String::new(),
        name => header(name)
            .ok_or_else(|| Refused(StatusCode::BAD_REQUEST, format!("no {name} header")))?,
    };
    let mut outcome = read(&event, &payload, &hook.settings)
        .map_err(|e| Refused(StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Some(forge) = api {
        add_pull_request_files(forge, &hook, &event, &payload, &mut outcome).await;
    }
    let delivery = delivery_headers.iter().find_map(|name| header(name));
    store(shared, dialect, delivery, outcome).await
}

type Reader = fn(&str, &Value, &HookSettings) -> Result<HookOutcome, PayloadError>;

/// How a forge proves a delivery is its own.
enum Proof {
    /// An HMAC-SHA256 of the body under the secret, in hex after `prefix`.
    Signature {
        header: &'static str,
        prefix: &'static str,
    },
    /// The secret itself.
    Token(&'static str),
}

/// What differs from one forge's webhook to another's.
struct Dialect {
    /// The header naming the event (none: `""`).
    event_header: &'static str,
    read: Reader,
    /// The headers the forge identifies a delivery by (the first present wins).
    delivery_headers: &'static [&'static str],
    proof: Proof,
    /// The forge whose API lists a pull request's files (with a `token`).
    api: Option<forge_api::Forge>,
}

/// Both Bitbucket products sign with the webhook's secret as GitHub once did.
const BITBUCKET_SIGNATURE: Proof = Proof::Signature {
    header: "x-hub-signature",
    prefix: "sha256=",
};

fn dialect_named(name: &str) -> Option<Dialect> {
    Some(match name {
        "github" => Dialect {
            event_header: "X-GitHub-Event",
            read: github::read,
            delivery_headers: &["x-github-delivery"],
            proof: Proof::Signature {
                header: "x-hub-signature-256",
                prefix: "sha256=",
            },
            api: Some(forge_api::Forge::GitHub),
        },
        "gitea" => Dialect {
            event_header: "X-Gitea-Event",
            read: gitea::read,
            delivery_headers: &["x-gitea-delivery"],
            proof: Proof::Signature {
                header: "x-gitea-signature",
                prefix: "",
            },
            api: Some(forge_api::Forge::Gitea),
        },
        "gitlab" => Dialect {
            event_header: "X-Gitlab-Event",
            read: gitlab::read,
            delivery_headers: &["idempotency-key", "x-gitlab-event-uuid"],
            proof: Proof::Token("x-gitlab-token"),
            api: Some(forge_api::Forge::GitLab),
        },
        "base" => Dialect {
            event_header: "",
            read: base::read,
            delivery_headers: &[],
            proof: Proof::Token("x-moonbot-token"),
            api: None,
        },
        "bitbucketcloud" => Dialect {
            event_header: "X-Event-Key",
            read: bitbucket::read_cloud,
            delivery_headers: &["x-request-uuid"],
            proof: BITBUCKET_SIGNATURE,
            api: Some(forge_api::Forge::BitbucketCloud),
        },
        "bitbucketserver" => Dialect {
            event_header: "X-Event-Key",
            read: bitbucket::read_server,
            delivery_headers: &["x-request-id"],
            proof: BITBUCKET_SIGNATURE,
            api: Some(forge_api::Forge::BitbucketServer),
        },
        _ => return None,
    })
}

/// Refuse a delivery whose signature (`hex_mac`, from the `header`) does not
/// match the configured secret.
fn check_signature(
    hook: &ChangeHookConfig,
    header: &str,
    hex_mac: Option<&str>,
    body: &[u8],
) -> Result<(), Refused> {
    let Some(secret) = &hook.secret else {
        return Ok(());
    };
    let forbidden = |why: String| Err(Refused(StatusCode::FORBIDDEN, why));
    let Some(hex_mac) = hex_mac else {
        return forbidden(format!(
            "the delivery is not signed ({header}), and a secret is set"
        ));
    };
    let Ok(mac) = hex::decode(hex_mac.trim()) else {
        return forbidden(format!("{header} is not the hex digest it should be"));
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    match ring::hmac::verify(&key, body, &mac) {
        Ok(()) => Ok(()),
        Err(_) => forbidden("the signature does not match the secret".into()),
    }
}

/// Refuse a delivery whose token (GitLab's `X-Gitlab-Token`, from `header`)
/// is not the secret. The two are compared as SHA-256 digests, so the
/// comparison's time says nothing about how much of the token was right.
fn check_token(hook: &ChangeHookConfig, header: &str, token: Option<&str>) -> Result<(), Refused> {
    let Some(secret) = &hook.secret else {
        return Ok(());
    };
    let digest = |text: &str| ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    match token {
        Some(token) if digest(token).as_ref() == digest(secret).as_ref() => Ok(()),
        Some(_) => Err(Refused(
            StatusCode::FORBIDDEN,
            format!("{header} is not the secret"),
        )),
        None => Err(Refused(
            StatusCode::FORBIDDEN,
            format!("the delivery has no {header}, and a secret is set"),
        )),
    }
}

/// The payload: a JSON body, or the `payload` field of a form (GitHub's
/// `application/x-www-form-urlencoded` content type).
fn payload(content_type: &str, body: &[u8]) -> Result<Value, Refused> {
    let bad = |why: String| Refused(StatusCode::BAD_REQUEST, why);
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| bad(format!("malformed form: {e}")))?;
        match form.iter().find(|(k, _)| k == "payload") {
            Some((_, text)) => {
                serde_json::from_str(text).map_err(|e| bad(format!("the payload is not JSON: {e}")))
            }
            // The base dialect's fields are the form's own.
            None => Ok(Value::Object(
                form.into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )),
        }
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))
    }
}

/// With a `token` for a forge whose API lists them, give a pull request's
/// change the files it changes; without them if the API fails (logged).
async fn add_pull_request_files(
    forge: forge_api::Forge,
    hook: &ChangeHookConfig,
    event: &str,
    payload: &Value,
    outcome: &mut HookOutcome,
) {
    let Some(token) = &hook.api_token else {
        return;
    };
    if outcome.changes.is_empty() {
        return;
    }
    let Some(files) =
        forge_api::pull_request_files(forge, &hook.api_url, token, event, payload).await
    else {
        return;
    };
    match files {
        Ok(files) => {
            for change in &mut outcome.changes {
                change.files = files.clone();
            }
        }
        Err(e) => tracing::warn!("change hook: the pull request's files are unknown: {e}"),
    }
}

/// Store what a delivery reported, once per delivery id.
async fn store(
    shared: &Shared,
    dialect: &str,
    delivery: Option<String>,
    outcome: HookOutcome,
) -> Result<Value, Refused> {
    let failed = |e: crate::data::DataError| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            super::database_failed("storing a change hook's changes", &e).into(),
        )
    };
    let stored = shared
        .data
        .add_delivered_changes(dialect, delivery.as_deref(), outcome.changes)
        .await
        .map_err(failed)?;
    let Some(ids) = stored else {
        tracing::info!(
            dialect,
            delivery = %delivery.as_deref().unwrap_or("").escape_debug(),
            "change hook: a redelivery; no change made again"
        );
        return Ok(json!({ "changes": [], "note": "this delivery was already received" }));
    };
    tracing::info!(
        dialect,
        delivery = %delivery.as_deref().unwrap_or("").escape_debug(),
        changes = ?ids,
        "change hook: {}",
        outcome.note
    );
    Ok(json!({ "changes": ids, "note": outcome.note }))
}
