//! The log viewer: the page itself is small whatever the log's size; the
//! script loads lines a page at a time from `/api/v2/logs/N/contents` as the
//! reader scrolls (or jumps to the end), and tails the log while it grows. The
//! raw download streams from the database with constant memory.

use super::html::{esc, text, when};
use super::{Ctx, PageResult, found_one};
use crate::data::query::ListQuery;

pub(super) async fn viewer(ctx: &Ctx<'_>, logid: i64) -> PageResult {
    let data = &ctx.shared.data;
    let (logs, _) = data
        .list_logs(&ListQuery::default().with_eq("logid", logid))
        .await?;
    let log = found_one(logs, &format!("log {logid}"))?;
    let stepid = log["stepid"].as_i64().unwrap_or(0);
    let (steps, _) = data
        .list_steps(&ListQuery::default().with_eq("stepid", stepid))
        .await?;
    let (step_name, buildid) = steps
        .first()
        .map(|s| {
            (
                text(s, "name").to_string(),
                s["buildid"].as_i64().unwrap_or(0),
            )
        })
        .unwrap_or_default();
    let complete = log["complete"] == true;
    let expired = match log["content_expired_at"].as_f64() {
        Some(at) => format!(
            "<p id=\"expired\" class=\"expired\">The content of this log expired {} and was \
deleted by the janitor (<code>log_horizon</code> in master.lua); the build is kept. \
<a href=\"/janitor\">What is kept</a></p>\n",
            when(Some(at))
        ),
        None => String::new(),
    };
    let body = format!(
        "{expired}<p class=\"logmeta\">step <a href=\"/builds/{buildid}\">{}</a> of build {buildid} · \
<span id=\"num-lines\">{}</span> lines{} · <a id=\"raw\" href=\"/api/v2/logs/{logid}/raw\">download raw</a> · \
<button type=\"button\" id=\"jump-end\">jump to end</button></p>\n\
<div id=\"logview\" class=\"logview\" data-logid=\"{logid}\" data-lines=\"{}\" data-complete=\"{}\"></div>",
        esc(&step_name),
        log["num_lines"],
        if complete {
            ""
        } else {
            " so far (still running)"
        },
        log["num_lines"],
        complete,
    );
    let title = format!("{} log of {}", text(&log, "name"), step_name);
    let watch = [format!("logs/{logid}/*")];
    let watch: Vec<&str> = watch.iter().map(String::as_str).collect();
    ctx.page(&title, "builders", &watch, &body).await
}
