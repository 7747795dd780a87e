//! The home page: which builders are red, what runs now and how far along it
//! is, how long the queue is, and whether the last reload of master.lua failed.

use super::html::{esc, text, when};
use super::{Ctx, PageError, PageResult, build};
use crate::data::DataError;
use crate::data::query::ListQuery;
use crate::shared::Shared;
use serde_json::Value;

/// Bus paths that change what the home page shows.
pub(super) const WATCH: &[&str] = &[
    "builds/*/*",
    "steps/*/*",
    "buildrequests/*/*",
    "builders/*/*",
    "config_reloads/*/*",
];

/// A warning when the last reload of master.lua failed: what is wrong, and
/// that the previous configuration is still the one running.
pub(super) async fn reload_banner(shared: &Shared) -> Result<String, DataError> {
    let last = ListQuery {
        limit: Some(1),
        ..Default::default()
    };
    let (reloads, _) = shared.data.list_reloads(&last).await?;
    let Some(reload) = reloads.first().filter(|r| r["success"] == false) else {
        return Ok(String::new());
    };
    let errors: String = reload["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "<li><code>{}: {}</code></li>",
                esc(text(e, "location")),
                esc(text(e, "message"))
            )
        })
        .collect();
    Ok(format!(
        "<div class=\"banner\" id=\"reload-failed\"><strong>The last reload of master.lua ({}) failed</strong>; \
the master keeps running the previous configuration.<ul>{errors}</ul></div>\n",
        esc(text(reload, "trigger")),
    ))
}

/// Each configured builder with its last build, in master.lua's order.
async fn last_builds(ctx: &Ctx<'_>) -> Result<Vec<(String, i64, Option<Value>)>, PageError> {
    let mut last = ctx.shared.data.last_builds().await?;
    Ok(ctx
        .running
        .loaded
        .config
        .builders
        .iter()
        .filter_map(|b| {
            let id = *ctx.running.builder_ids.get(&b.name)?;
            Some((b.name.clone(), id, last.remove(&id)))
        })
        .collect())
}

pub(super) async fn home(ctx: &Ctx<'_>) -> PageResult {
    let now = crate::data::now();
    let last = last_builds(ctx).await?;
    let red = last
        .iter()
        .filter(|(_, _, b)| {
            b.as_ref()
                .and_then(|b| b["results"].as_i64())
                .is_some_and(|r| r as i32 >= crate::results::FAILURE)
        })
        .count();
    let mut rows = String::new();
    for (name, id, build) in &last {
        let (state, cell) = match build {
            Some(b) => (
                super::html::state_of(b),
                format!(
                    "<a href=\"/builds/{}\">#{}</a> {} {}",
                    b["buildid"],
                    b["number"],
                    esc(text(b, "state_string")),
                    when(b["started_at"].as_f64())
                ),
            ),
            None => ("none", "no builds yet".to_string()),
        };
        rows.push_str(&format!(
            "<tr class=\"{state}\" data-builder=\"{}\"><td><a href=\"/builders/{id}\">{}</a></td><td class=\"result\">{state}</td><td>{cell}</td></tr>\n",
            esc(name),
            esc(name),
        ));
    }

    let running_q = ListQuery {
        order: vec![("started_at".into(), false)],
        ..Default::default()
    }
    .with_eq("complete", "false");
    let (running, _) = ctx.shared.data.list_builds(&running_q, false).await?;
    let mut running_rows = String::new();
    let mut estimates = std::collections::BTreeMap::new();
    for b in &running {
        let builderid = b["builderid"].as_i64().unwrap_or(0);
        if let std::collections::btree_map::Entry::Vacant(slot) = estimates.entry(builderid) {
            slot.insert(build::Estimates::of_builder(ctx.shared, builderid).await?);
        }
        let estimate = &estimates[&builderid];
        running_rows.push_str(&format!(
            "<tr class=\"running\"><td>{}</td><td><a href=\"/builds/{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&ctx.builder_name(builderid)),
            b["buildid"],
            b["number"],
            esc(&ctx.worker_name(b["workerid"].as_i64())),
            esc(text(b, "state_string")),
            estimate.progress(b, now),
        ));
    }
    let running_table = if running.is_empty() {
        "<p id=\"running-none\">Nothing is building.</p>".to_string()
    } else {
        format!(
            "<table id=\"running\"><tr><th>builder</th><th>build</th><th>worker</th><th>state</th><th>progress</th></tr>\n{running_rows}</table>"
        )
    };
    let pending_q = ListQuery::default()
        .with_eq("complete", "false")
        .with_eq("claimed", "false");
    let (_, queued) = ctx.shared.data.list_buildrequests(&pending_q).await?;
    let body = format!(
        "<div id=\"live\"><p id=\"summary\"><strong id=\"red-count\">{red}</strong> of {} builders failing · \
<strong id=\"running-count\">{}</strong> building · <strong id=\"queue-length\">{queued}</strong> queued</p>\n\
<h2>Builders</h2><table id=\"builders\"><tr><th>builder</th><th>last result</th><th>last build</th></tr>\n{rows}</table>\n\
<h2>Running now</h2>{running_table}</div>",
        last.len(),
        running.len(),
    );
    let reload = if ctx.may("reload") {
        format!(
            "<p class=\"actions\">{} <span class=\"hint\">(master.lua: {})</span></p>",
            super::html::button("/config/reload", &ctx.csrf, "Reload master.lua", "reload"),
            esc(&ctx.running.loaded.config.summary())
        )
    } else {
        String::new()
    };
    let kept = if ctx.running.loaded.config.janitor.is_some() {
        "<p class=\"hint\" id=\"janitor-link\"><a href=\"/janitor\">What history is kept</a></p>"
    } else {
        ""
    };
    let body = format!("{body}\n{reload}{kept}");
    ctx.page("Home", "home", WATCH, &body).await
}
