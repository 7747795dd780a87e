//! `mb.reporters.mail`: a mail per reported build (Buildbot's
//! `MailNotifier`), to `extra_recipients` and, with
//! `send_to_interested_users`, the authors of the build's changes (an
//! author without an address gets one from `lookup`: a domain, or a Lua
//! function of the name). The subject names the builder, the result and the
//! branch; the body has the link, the reason, the changes, the failing
//! steps and the last lines of the first failing step's log. A buildset's
//! mail holds each of its builds' messages; a missing worker's goes to its
//! `notify_on_missing` addresses too. A `format_fn` may return
//! `{ subject = …, body = … }` instead, or a `template` and a `subject`
//! (Jinja2, [`super::format`]) replace the default body and subject.
//!
//! The message is built with lettre when the report is queued and stored
//! whole (its envelope in the row's headers); it is sent through SMTP (no
//! TLS, STARTTLS or TLS; user and password added at send time) with
//! lettre. A transient SMTP answer (4xx) or a connection failure is tried
//! again; a permanent one (5xx) is given up.

use super::format::{Written, write};
use super::generators::Report;
use crate::config::reporters::{AddLogs, Lookup, MailConfig, SmtpTls};
use crate::data::DataError;
use crate::data::query::ListQuery;
use crate::data::reports::{Attempt, NewDelivery};
use crate::lua::RawValue;
use crate::results;
use crate::shared::Shared;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, Message, SmtpTransport, Transport};
use serde_json::Value;
use std::time::Duration;

/// Lines of the failing step's log in the body.
const LOG_TAIL_LINES: i64 = 40;
/// Lines of a log attached (its last ones; the read caps the bytes too).
const ATTACHED_LINES: i64 = 10_000;

/// The mail that reports `report`, or `None` when it has no recipient.
pub async fn request(
    shared: &Shared,
    config: &MailConfig,
    report: &Report,
    eventid: i64,
) -> Result<Option<NewDelivery>, String> {
    let mut recipients: Vec<Mailbox> = Vec::new();
    for r in &config.extra_recipients {
        recipients.push(
            r.parse()
                .map_err(|e| format!("extra_recipients: '{r}': {e}"))?,
        );
    }
    // The builds the mail is about (a buildset's; none for a missing
    // worker), and each one's changes.
    let builds: Vec<Value> = match report.event {
        "buildset" => report.build["builds"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        "worker_missing" => Vec::new(),
        _ => vec![report.build.clone()],
    };
    let mut changes = Vec::with_capacity(builds.len());
    for b in &builds {
        changes.push(
            shared
                .data
                .changes_of_build(b["buildid"].as_i64().unwrap_or(0), ListQuery::default())
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default(),
        );
    }
    let mut interested = Vec::new();
    if config.send_to_interested_users {
        for c in changes.iter().flatten() {
            let author = c["author"].as_str().unwrap_or_default();
            if let Some(mailbox) = address_of(shared, config, author).await {
                interested.push(mailbox);
            }
        }
    }
    // A missing worker's mail goes to its `notify_on_missing` too.
    for n in report.build["notify"].as_array().into_iter().flatten() {
        if let Some(mailbox) = n.as_str().and_then(|a| a.parse::<Mailbox>().ok()) {
            interested.push(mailbox);
        }
    }
    for mailbox in interested {
        if !recipients.iter().any(|r| r.email == mailbox.email) {
            recipients.push(mailbox);
        }
    }
    if recipients.is_empty() {
        return Ok(None);
    }
    // What a formatter gets: the report with its changes.
    let table = || {
        let mut table = report.table();
        match report.event {
            "buildset" => {
                for (i, c) in changes.iter().enumerate() {
                    table["builds"][i]["changes"] = Value::Array(c.clone());
                }
            }
            "worker_missing" => {}
            _ => table["changes"] = Value::Array(changes.concat()),
        }
        table
    };
    let written = write(shared, &config.format, report, table).await?;
    let (subject, body) = match written {
        Some(Written::Lua(value)) => {
            let RawValue::Table(_) = &value else {
                return Err(format!(
                    "format_fn must return {{ subject = …, body = … }}, not a {}",
                    value.type_name()
                ));
            };
            let v = value.to_json().map_err(|e| e.to_string())?;
            (
                v["subject"].as_str().unwrap_or_default().to_string(),
                v["body"].as_str().unwrap_or_default().to_string(),
            )
        }
        Some(Written::Template {
            body: Some(body),
            subject: Some(subject),
        }) => (subject, body),
        // The defaults, but for what a template gives.
        written => {
            let (subject, body) = match report.event {
                "worker_missing" => worker_message(&report.build),
                "buildset" => buildset_message(shared, &report.build, &builds, &changes)
                    .await
                    .map_err(|e| e.to_string())?,
                event => build_message(shared, &report.build, event, &changes.concat())
                    .await
                    .map_err(|e| e.to_string())?,
            };
            match written {
                Some(Written::Template {
                    body: b,
                    subject: s,
                }) => (s.unwrap_or(subject), b.unwrap_or(body)),
                _ => (subject, body),
            }
        }
    };
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|e| format!("from: '{}': {e}", config.from))?;
    let mut message = Message::builder().from(from).subject(subject);
    for r in &recipients {
        message = message.to(r.clone());
    }
    let attachments = logs_to_attach(shared, &config.add_logs, &builds)
        .await
        .map_err(|e| e.to_string())?;
    let mut message = if attachments.is_empty() {
        message
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())?
    } else {
        let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(body));
        for (filename, text) in attachments {
            parts = parts.singlepart(Attachment::new(filename).body(text, ContentType::TEXT_PLAIN));
        }
        message.multipart(parts).map_err(|e| e.to_string())?
    };
    for (name, value) in &config.extra_headers {
        message
            .headers_mut()
            .insert_raw(lettre::message::header::HeaderValue::new(
                lettre::message::header::HeaderName::new_from_ascii(name.clone())
                    .map_err(|e| format!("extra_headers: '{name}': {e}"))?,
                value.clone(),
            ));
    }
    let envelope: Vec<(String, String)> =
        std::iter::once(("from".to_string(), config.from.clone()))
            .chain(
                recipients
                    .iter()
                    .map(|r| ("to".to_string(), r.email.to_string())),
            )
            .collect();
    Ok(Some(NewDelivery {
        eventid,
        order_key: format!("mail:{}", report.subject_key()),
        method: "SMTP".into(),
        url: format!("smtp://{}:{}", config.smtp.host, config.smtp.port),
        headers: envelope,
        body: String::from_utf8_lossy(&message.formatted()).into_owned(),
    }))
}

/// An author's address: `Name <a@b>` as it is, a bare address, or the name
/// through `lookup`.
async fn address_of(shared: &Shared, config: &MailConfig, author: &str) -> Option<Mailbox> {
    if let Ok(mailbox) = author.parse::<Mailbox>() {
        return Some(mailbox);
    }
    let name = author.trim();
    let address = match config.lookup.as_ref()? {
        Lookup::Domain(domain) => format!("{name}@{domain}"),
        Lookup::Function(function) => {
            let lua = shared.running_config().loaded.lua.clone();
            match lua.call(function, name.into()).await {
                Ok(RawValue::Str(a)) => a,
                _ => return None,
            }
        }
    };
    address
        .parse::<Address>()
        .ok()
        .map(|a| Mailbox::new(None, a))
}

/// The logs `add_logs` names of `builds`' steps, as (file name, text): each
/// one's last [`ATTACHED_LINES`] lines at most.
async fn logs_to_attach(
    shared: &Shared,
    add_logs: &AddLogs,
    builds: &[Value],
) -> Result<Vec<(String, String)>, DataError> {
    let mut out = Vec::new();
    if *add_logs == AddLogs::No {
        return Ok(out);
    }
    for b in builds {
        let buildid = b["buildid"].as_i64().unwrap_or(0);
        let (steps, _) = shared
            .data
            .list_steps(&ListQuery::default().with_eq("buildid", buildid).whole())
            .await?;
        for step in &steps {
            let step_name = step["name"].as_str().unwrap_or_default();
            let (logs, _) = shared
                .data
                .list_logs(
                    &ListQuery::default()
                        .with_eq("stepid", step["stepid"].clone())
                        .whole(),
                )
                .await?;
            for log in &logs {
                let log_name = log["name"].as_str().unwrap_or_default();
                let wanted = match add_logs {
                    AddLogs::Named(names) => names
                        .iter()
                        .any(|n| n == log_name || *n == format!("{step_name}.{log_name}")),
                    _ => true,
                };
                if !wanted {
                    continue;
                }
                let lines = log["num_lines"].as_i64().unwrap_or(0);
                let (_, text) = shared
                    .data
                    .log_lines(
                        log["logid"].as_i64().unwrap_or(0),
                        (lines - ATTACHED_LINES).max(0),
                        Some(ATTACHED_LINES),
                    )
                    .await?;
                let text: String = text
                    .lines()
                    .map(|l| format!("{}\n", without_stream(log, l)))
                    .collect();
                let builder = b["builder"]["name"].as_str().unwrap_or_default();
                let filename = format!("{builder}-{}-{step_name}-{log_name}.txt", b["number"])
                    .chars()
                    .map(|c| {
                        if c.is_alphanumeric() || "-_.".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                out.push((filename, text));
            }
        }
    }
    Ok(out)
}

/// A log line without its stream (`o`, `e` or `h`, the first character of
/// each line of a stream log, type `s`).
fn without_stream<'a>(log: &Value, line: &'a str) -> &'a str {
    if log["type"] == "s" {
        line.get(1..).unwrap_or_default()
    } else {
        line
    }
}

/// A missing worker's default message.
fn worker_message(worker: &Value) -> (String, String) {
    let name = worker["name"].as_str().unwrap_or_default();
    let subject = format!("[moonbot] worker {name} missing");
    let body = format!(
        "Worker {name} has been away for more than {} s (its missing_timeout).\n\n{}\n",
        worker["missing_timeout"],
        worker["url"].as_str().unwrap_or_default()
    );
    (subject, body)
}

/// A buildset's default message: its result, then each build's message.
async fn buildset_message(
    shared: &Shared,
    set: &Value,
    builds: &[Value],
    changes: &[Vec<Value>],
) -> Result<(String, String), DataError> {
    let result = results::name(set["results"].as_i64().unwrap_or(0) as i32);
    let subject = format!("[moonbot] buildset #{} {result}", set["bsid"]);
    let mut body = format!(
        "Buildset #{} ({}): {result}, {} build(s).\n",
        set["bsid"],
        set["reason"].as_str().unwrap_or_default(),
        builds.len()
    );
    for (b, c) in builds.iter().zip(changes) {
        let (title, text) = build_message(shared, b, "finished", c).await?;
        body.push_str(&format!(
            "\n== {}\n\n{text}",
            title.trim_start_matches("[moonbot] ")
        ));
    }
    Ok((subject, body))
}

/// Buildbot's default message, more or less: what, where, why, and what
/// failed, with its log's last lines.
async fn build_message(
    shared: &Shared,
    b: &Value,
    event: &str,
    changes: &[Value],
) -> Result<(String, String), DataError> {
    let builder = b["builder"]["name"].as_str().unwrap_or_default();
    let result = match event {
        "finished" => results::name(b["results"].as_i64().unwrap_or(0) as i32),
        other => other,
    };
    let branch = b["properties"]["branch"][0]
        .as_str()
        .filter(|s| !s.is_empty());
    let subject = format!(
        "[moonbot] {builder} #{} {result}{}",
        b["number"],
        branch.map(|br| format!(" on {br}")).unwrap_or_default()
    );
    let mut body = format!(
        "Build {} of builder {builder}: {result}.\n\n",
        b["url"].as_str().unwrap_or_default()
    );
    if let Some(reason) = b["properties"]["reason"][0].as_str() {
        body.push_str(&format!("Reason: {reason}\n"));
    }
    if let Some(worker) = b["properties"]["workername"][0].as_str() {
        body.push_str(&format!("Worker: {worker}\n"));
    }
    if !changes.is_empty() {
        body.push_str("\nChanges:\n");
        for c in changes {
            body.push_str(&format!(
                "  {} by {}: {}\n",
                c["revision"]
                    .as_str()
                    .map(|r| &r[..r.len().min(12)])
                    .unwrap_or("-"),
                c["author"].as_str().unwrap_or_default(),
                c["comments"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            ));
        }
    }
    let buildid = b["buildid"].as_i64().unwrap_or(0);
    let (steps, _) = shared
        .data
        .list_steps(&ListQuery::default().with_eq("buildid", buildid))
        .await?;
    let failed: Vec<&Value> = steps
        .iter()
        .filter(|s| {
            s["results"]
                .as_i64()
                .is_some_and(|r| r as i32 == results::FAILURE || r as i32 == results::EXCEPTION)
        })
        .collect();
    if !failed.is_empty() {
        body.push_str("\nFailing steps:\n");
        for s in &failed {
            body.push_str(&format!(
                "  {}: {}\n",
                s["name"].as_str().unwrap_or_default(),
                results::name(s["results"].as_i64().unwrap_or(0) as i32)
            ));
        }
        let stepid = failed[0]["stepid"].as_i64().unwrap_or(0);
        let (logs, _) = shared
            .data
            .list_logs(&ListQuery::default().with_eq("stepid", stepid))
            .await?;
        if let Some(log) = logs.first() {
            let lines = log["num_lines"].as_i64().unwrap_or(0);
            let offset = (lines - LOG_TAIL_LINES).max(0);
            let (_, text) = shared
                .data
                .log_lines(
                    log["logid"].as_i64().unwrap_or(0),
                    offset,
                    Some(LOG_TAIL_LINES),
                )
                .await?;
            body.push_str(&format!(
                "\nThe last lines of {} ({}):\n",
                failed[0]["name"].as_str().unwrap_or_default(),
                log["name"].as_str().unwrap_or_default()
            ));
            for line in text.lines() {
                body.push_str("  ");
                body.push_str(without_stream(log, line));
                body.push('\n');
            }
        }
    }
    Ok((subject, body))
}

/// Send one queued mail through the reporter's SMTP server.
pub async fn send(
    config: &MailConfig,
    d: &crate::db::entities::report_deliveries::Model,
    max_attempts: u32,
) -> Attempt {
    let envelope: Vec<(String, String)> = serde_json::from_str(&d.headers_json).unwrap_or_default();
    let smtp = config.smtp.clone();
    let timeout = Duration::from_secs(config.timeout_s);
    let raw = d.body.clone();
    // Err((permanent, why)).
    let sent = tokio::task::spawn_blocking(move || -> Result<(), (bool, String)> {
        let smtp_err = |e: lettre::transport::smtp::Error| (e.is_permanent(), format!("SMTP: {e}"));
        let builder = match smtp.tls {
            SmtpTls::None => SmtpTransport::builder_dangerous(&smtp.host),
            SmtpTls::StartTls => SmtpTransport::starttls_relay(&smtp.host).map_err(smtp_err)?,
            SmtpTls::Tls => SmtpTransport::relay(&smtp.host).map_err(smtp_err)?,
        };
        let mut builder = builder.port(smtp.port).timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = envelope
            .iter()
            .find(|(k, _)| k == "from")
            .and_then(|(_, v)| v.parse::<Mailbox>().ok());
        let to: Vec<Address> = envelope
            .iter()
            .filter(|(k, _)| k == "to")
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        let envelope = lettre::address::Envelope::new(from.map(|m| m.email), to)
            .map_err(|e| (true, format!("the envelope: {e}")))?;
        builder
            .build()
            .send_raw(&envelope, raw.as_bytes())
            .map(|_| ())
            .map_err(smtp_err)
    })
    .await;
    let tries = d.attempts as u32 + 1;
    match sent {
        Ok(Ok(())) => Attempt::Delivered { status: 250 },
        Ok(Err((true, error))) => Attempt::Failed {
            status: None,
            error,
        },
        Ok(Err((false, error))) if tries < max_attempts => Attempt::Retry {
            status: None,
            error,
            retry_at: crate::data::now() + super::delivery::backoff_s(d.attempts),
        },
        Ok(Err((false, error))) => Attempt::Failed {
            status: None,
            error: format!("{error} (gave up after {tries} attempts)"),
        },
        Err(e) => Attempt::Retry {
            status: None,
            error: format!("the sending thread failed: {e}"),
            retry_at: crate::data::now() + super::delivery::backoff_s(d.attempts),
        },
    }
}
