//! Sending one queued request, and what its answer means: delivered (2xx),
//! try again later (5xx, 429, a timeout, no connection; `Retry-After`
//! honoured, else exponential backoff), or given up (any other 4xx: a bad
//! token is not retried forever; or `max_attempts` used up).
//!
//! Requests go out with ureq (already the master's HTTP client for forge
//! APIs) on a blocking thread, so a slow receiver holds no async thread,
//! through one agent per reporter, which keeps its connections open for the
//! next request.

use crate::data::reports::Attempt;
use crate::db::entities::report_deliveries;
use std::time::Duration;
use tracing::{debug, warn};

/// The first retry's wait; each next one doubles, up to [`MAX_BACKOFF_S`].
const FIRST_BACKOFF_S: f64 = 1.0;
const MAX_BACKOFF_S: f64 = 600.0;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER_S: f64 = 3600.0;

/// Send `d` to `url` (with `extra` headers: the secrets, never stored) and
/// say how it went.
pub async fn attempt(
    agent: &ureq::Agent,
    d: &report_deliveries::Model,
    url: &str,
    extra: Vec<(String, String)>,
    max_attempts: u32,
    timeout: Duration,
) -> Attempt {
    let (method, url, body) = (d.method.clone(), url.to_string(), d.body.clone());
    let mut headers: Vec<(String, String)> =
        serde_json::from_str(&d.headers_json).unwrap_or_default();
    headers.extend(extra);
    let agent = agent.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let mut request = agent.request(&method, &url).timeout(timeout);
        for (name, value) in &headers {
            request = request.set(name, value);
        }
        match request.send_string(&body) {
            Ok(answer) => Ok(answer.status()),
            Err(ureq::Error::Status(status, answer)) => {
                let retry_after = answer
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let text = answer.into_string().unwrap_or_default();
                Err((Some(status), retry_after, first_line(&text)))
            }
            Err(ureq::Error::Transport(e)) => Err((None, None, e.kind().to_string())),
        }
    })
    .await;
    let tries = d.attempts as u32 + 1;
    let backoff = || backoff_s(d.attempts);
    match sent {
        Ok(Ok(status)) => Attempt::Delivered { status },
        Ok(Err((status, retry_after, text))) => {
            let retryable = match status {
                None => true,
                Some(s) => s == 429 || s >= 500,
            };
            let error = match status {
                Some(s) => format!(
                    "HTTP {s}{}",
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                ),
                None => format!("no answer: {text}"),
            };
            if retryable && tries < max_attempts {
                let wait = retry_after.map_or_else(backoff, |s| s.clamp(0.0, MAX_RETRY_AFTER_S));
                Attempt::Retry {
                    status,
                    error,
                    retry_at: crate::data::now() + wait,
                }
            } else if retryable {
                Attempt::Failed {
                    status,
                    error: format!("{error} (gave up after {tries} attempts)"),
                }
            } else {
                Attempt::Failed { status, error }
            }
        }
        Err(e) => Attempt::Retry {
            status: None,
            error: format!("the sending thread failed: {e}"),
            retry_at: crate::data::now() + backoff(),
        },
    }
}

/// Seconds to wait after `attempts` failed tries: 1, 2, 4 … up to 10 minutes.
pub fn backoff_s(attempts: i32) -> f64 {
    (FIRST_BACKOFF_S * 2f64.powi(attempts)).min(MAX_BACKOFF_S)
}

/// The first line of an answer's body, short (it goes in the log and the API).
fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// One log line per outcome; a delivery given up is a warning, once.
pub fn log(reporter: &str, d: &report_deliveries::Model, attempt: &Attempt) {
    match attempt {
        Attempt::Delivered { status } => {
            debug!(reporter, delivery = d.id, status, "delivered");
        }
        Attempt::Retry {
            error, retry_at, ..
        } => {
            debug!(
                reporter,
                delivery = d.id,
                "not delivered ({error}); trying again in {:.0} s",
                retry_at - crate::data::now()
            );
        }
        Attempt::Failed { error, .. } => {
            warn!(reporter, delivery = d.id, "delivery given up: {error}");
        }
    }
}
