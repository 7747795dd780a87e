//! `/reporters`: each reporter's queue, last success and last error, so an
//! admin sees at a glance that mail (or a status push) is failing.

use super::html::{esc, when};
use super::{Ctx, PageResult};

const WATCH: &[&str] = &["builds/*/finished"];

pub(super) async fn list(ctx: &Ctx<'_>) -> PageResult {
    let mut rows = String::new();
    for r in &ctx.running.loaded.config.reporters {
        let record = ctx.shared.data.reporter_record(&r.name).await?;
        let error = match &record["last_error"] {
            serde_json::Value::Object(e) => format!(
                "{} ({}, {} attempt(s))",
                esc(e.get("error").and_then(|v| v.as_str()).unwrap_or("")),
                esc(e.get("state").and_then(|v| v.as_str()).unwrap_or("")),
                e.get("attempts").and_then(|v| v.as_i64()).unwrap_or(0),
            ),
            _ => "none".into(),
        };
        rows.push_str(&format!(
            "<tr data-reporter=\"{}\"><td>{}</td><td>{}</td><td class=\"generators\">{}</td><td class=\"queued\">{}</td><td>{}</td><td class=\"failed\">{}</td><td>{}</td><td class=\"error\">{error}</td></tr>\n",
            esc(&r.name),
            esc(&r.name),
            esc(r.class_name()),
            r.generators
                .iter()
                .map(|g| esc(&g.describe()))
                .collect::<Vec<_>>()
                .join("<br>"),
            record["queued"],
            record["delivered"],
            record["failed"],
            when(record["last_success_at"].as_f64()),
        ));
    }
    let body = if rows.is_empty() {
        "<p id=\"no-reporters\">No <code>reporters</code> in master.lua.</p>".to_string()
    } else {
        format!(
            "<div id=\"live\"><table id=\"reporters\"><tr><th>reporter</th><th>kind</th><th>reports</th><th>queued</th><th>delivered</th><th>failed</th><th>last success</th><th>last error</th></tr>\n{rows}</table>\
<p class=\"hint\"><a href=\"/api/v2/reporters\">/api/v2/reporters</a></p></div>"
        )
    };
    ctx.page("Reporters", "", WATCH, &body).await
}
