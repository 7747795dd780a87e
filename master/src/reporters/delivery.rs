//! Sending one queued request, and what its answer means: delivered (2xx),
//! try again later (5xx, 429, a timeout, no connection; `Retry-After`
//! honoured, else exponential backoff), or given up (any other 4xx: a bad
//! token is not retried forever; or `max_attempts` used up).
//!
//! Requests go out with ureq (already the master's HTTP client for forge
//! APIs), a turn's requests on one blocking thread, through one agent per
//! reporter, which keeps its connections open for the next request.

use crate::data::reports::Attempt;
use crate::db::entities::report_deliveries;
use std::io::Read;
use std::time::Duration;
use tracing::{debug, warn};

/// The first retry's wait; each next one doubles, up to [`MAX_BACKOFF_S`].
const FIRST_BACKOFF_S: f64 = 1.0;
const MAX_BACKOFF_S: f64 = 600.0;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER_S: f64 = 3600.0;
/// How much of a successful answer is read so its connection is reused; a
/// longer one's connection is closed instead.
const KEPT_ANSWER_BYTES: u64 = 1 << 20;

/// One request to send: a queued delivery, with its URL and the headers
/// that carry secrets (added now, never stored).
pub struct Outgoing {
    pub delivery: report_deliveries::Model,
    pub url: String,
    pub extra: Vec<(String, String)>,
}

/// How a request was answered: a 2xx status, or (status, `Retry-After`,
/// the answer's first line) with no status when nothing answered.
type Answer = Result<u16, (Option<u16>, Option<f64>, String)>;

/// Send a turn's requests, in order, on one blocking thread (a slow
/// receiver holds no async thread, and a turn is one hand-off however many
/// it sends), and say how each went. Once a receiver does not answer at
/// all (down, or timing out), the rest wait for the next turn untried
/// rather than each waiting out its own timeout.
pub async fn attempt_all(
    agent: &ureq::Agent,
    outgoing: Vec<Outgoing>,
    max_attempts: u32,
    timeout: Duration,
) -> Vec<(report_deliveries::Model, Attempt)> {
    let agent = agent.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let mut answered = Vec::with_capacity(outgoing.len());
        let mut held = Held::default();
        for o in outgoing {
            if held.holds(&o.delivery) {
                continue;
            }
            let answer = send(&agent, &o, timeout);
            let unreachable = matches!(answer, Err((None, _, _)));
            if answer.is_err() {
                held.hold(&o.delivery);
            }
            answered.push((o.delivery, answer));
            if unreachable {
                break;
            }
        }
        answered
    })
    .await;
    match sent {
        Ok(answered) => answered
            .into_iter()
            .map(|(d, answer)| {
                let attempt = judge(&d, answer, max_attempts);
                (d, attempt)
            })
            .collect(),
        // The thread panicked: nothing is recorded, so all stay pending
        // and are tried again next turn.
        Err(e) => {
            warn!("the sending thread failed: {e}");
            Vec::new()
        }
    }
}

/// The order keys of a turn whose earlier delivery was not delivered: a
/// later one of the same key waits (one commit's statuses stay in order).
#[derive(Default)]
pub struct Held(std::collections::HashSet<String>);

impl Held {
    pub fn holds(&self, d: &report_deliveries::Model) -> bool {
        self.0.contains(&d.order_key)
    }

    pub fn hold(&mut self, d: &report_deliveries::Model) {
        self.0.insert(d.order_key.clone());
    }
}

fn send(agent: &ureq::Agent, o: &Outgoing, timeout: Duration) -> Answer {
    let d = &o.delivery;
    let mut headers: Vec<(String, String)> =
        serde_json::from_str(&d.headers_json).unwrap_or_default();
    headers.extend(o.extra.iter().cloned());
    let mut request = agent.request(&d.method, &o.url).timeout(timeout);
    for (name, value) in &headers {
        request = request.set(name, value);
    }
    match request.send_string(&d.body) {
        Ok(answer) => {
            // Read the answer to its end: only then does ureq keep the
            // connection for the next request (dropped unread, it is closed,
            // and every message paid a new connection, and TLS handshake).
            let status = answer.status();
            let _ = std::io::copy(
                &mut answer.into_reader().take(KEPT_ANSWER_BYTES),
                &mut std::io::sink(),
            );
            Ok(status)
        }
        Err(ureq::Error::Status(status, answer)) => {
            let retry_after = answer
                .header("retry-after")
                .and_then(|v| v.trim().parse::<f64>().ok());
            let text = answer.into_string().unwrap_or_default();
            Err((Some(status), retry_after, first_line(&text)))
        }
        Err(ureq::Error::Transport(e)) => Err((None, None, e.kind().to_string())),
    }
}

/// What an answer to delivery `d` means: delivered, try again later, or
/// given up.
fn judge(d: &report_deliveries::Model, answer: Answer, max_attempts: u32) -> Attempt {
    let tries = d.attempts as u32 + 1;
    let backoff = || backoff_s(d.attempts);
    match answer {
        Ok(status) => Attempt::Delivered { status },
        Err((status, retry_after, text)) => {
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

/// One log line per outcome; a delivery given up is a warning, once. A
/// delivery is named by what it is about (`build:42`, a commit's status)
/// and its event: one sent before it is stored has no id yet.
pub fn log(reporter: &str, d: &report_deliveries::Model, attempt: &Attempt) {
    let about = d.order_key.as_str();
    let event = d.eventid;
    match attempt {
        Attempt::Delivered { status } => {
            debug!(reporter, about, event, status, "delivered");
        }
        Attempt::Retry {
            error, retry_at, ..
        } => {
            debug!(
                reporter,
                about,
                event,
                "not delivered ({error}); trying again in {:.0} s",
                retry_at - crate::data::now()
            );
        }
        Attempt::Failed { error, .. } => {
            warn!(reporter, about, event, "delivery given up: {error}");
        }
    }
}
