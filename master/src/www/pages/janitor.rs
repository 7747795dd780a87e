//! `/janitor`: what master.lua keeps (the janitor's horizons and interval) and
//! what the last passes deleted, newest first, from `janitor_passes`.

use super::html::{esc, when};
use super::{Ctx, PageResult};
use crate::data::query::ListQuery;

const WATCH: &[&str] = &[];
/// Passes listed.
const SHOWN: u64 = 20;

fn horizon(seconds: Option<u64>) -> String {
    match seconds {
        None => "kept forever".into(),
        Some(s) if s % 86400 == 0 => format!("{} days", s / 86400),
        Some(s) if s % 3600 == 0 => format!("{} hours", s / 3600),
        Some(s) => format!("{s} seconds"),
    }
}

pub(super) async fn page(ctx: &Ctx<'_>) -> PageResult {
    let settings = match &ctx.running.loaded.config.janitor {
        None => "<p id=\"janitor-off\">No <code>janitor</code> section in master.lua: all history is kept.</p>".to_string(),
        Some(j) => format!(
            "<table id=\"janitor-settings\"><tr><th>builds</th><td>{}</td></tr>\
<tr><th>log content</th><td>{}</td></tr><tr><th>changes</th><td>{}</td></tr>\
<tr><th>a pass every</th><td>{}</td></tr></table>",
            esc(&horizon(j.build_horizon_s)),
            esc(&horizon(j.log_horizon_s)),
            esc(&horizon(j.change_horizon_s)),
            esc(&horizon(Some(j.every_s))),
        ),
    };
    let q = ListQuery {
        limit: Some(SHOWN),
        count_matches: true,
        ..Default::default()
    };
    let (passes, total) = ctx.shared.data.list_janitor_passes(&q).await?;
    let mut rows = String::new();
    for p in &passes {
        let state = match (&p["error"], p["complete"] == true) {
            (serde_json::Value::String(e), _) => format!("stopped: {}", esc(e)),
            (_, true) => "done".into(),
            (_, false) => "running".into(),
        };
        rows.push_str(&format!(
            "<tr data-pass=\"{}\"><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td></tr>\n",
            p["passid"],
            when(p["started_at"].as_f64()),
            p["builds_deleted"],
            p["logs_expired"],
            p["chunks_deleted"],
            p["changes_deleted"],
            p["longest_batch_ms"].as_f64().unwrap_or(0.0),
        ));
    }
    let passes = if passes.is_empty() {
        "<p id=\"no-passes\">No pass yet.</p>".to_string()
    } else {
        format!(
            "<table id=\"passes\"><tr><th>started</th><th>state</th><th>builds deleted</th><th>logs expired</th>\
<th>log chunks deleted</th><th>changes deleted</th><th>longest write</th></tr>\n{rows}</table>\
<p class=\"hint\">{total} pass(es) in all; <a href=\"/api/v2/janitor_passes\">/api/v2/janitor_passes</a></p>"
        )
    };
    let body = format!("<h2>What is kept</h2>{settings}\n<h2>Passes</h2>{passes}");
    ctx.page("Janitor", "", WATCH, &body).await
}
