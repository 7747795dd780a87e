//! The builders list (filtered by name or tag) and a builder's page: its
//! recent builds, the force form, and pending requests that can be cancelled.

use super::build::Estimates;
use super::html::{button, elapsed, esc, state_of, text, when};
use super::{Ctx, PageError, PageResult};
use crate::config::SchedulerConfig;
use crate::data::query::ListQuery;

/// Builds shown per page of a builder.
const BUILDS_PER_PAGE: u64 = 25;

pub(super) async fn list(ctx: &Ctx<'_>) -> PageResult {
    let name_filter = ctx.request.param("name").unwrap_or_default();
    let tag_filter = ctx.request.param("tag").unwrap_or_default();
    let cfg = &ctx.running.loaded.config;
    let mut tags: Vec<&str> = cfg
        .builders
        .iter()
        .flat_map(|b| b.tags.iter().map(String::as_str))
        .collect();
    tags.sort();
    tags.dedup();
    let last_builds = ctx.shared.data.last_builds().await?;
    let mut rows = String::new();
    for b in &cfg.builders {
        if !b.name.to_lowercase().contains(&name_filter.to_lowercase())
            || (!tag_filter.is_empty() && !b.tags.contains(&tag_filter))
        {
            continue;
        }
        let Some(&id) = ctx.running.builder_ids.get(&b.name) else {
            continue;
        };
        let last = match last_builds.get(&id) {
            Some(l) => format!(
                "<a href=\"/builds/{}\" class=\"{}\">#{} {}</a>",
                l["buildid"],
                state_of(l),
                l["number"],
                state_of(l)
            ),
            None => "none yet".into(),
        };
        let tag_links: String = b
            .tags
            .iter()
            .map(|t| {
                format!(
                    "<a class=\"tag\" href=\"/builders?tag={}\">{}</a> ",
                    esc(&urlencode(t)),
                    esc(t)
                )
            })
            .collect();
        let online = b
            .workernames
            .iter()
            .filter(|w| ctx.shared.workers.is_connected(w))
            .count();
        rows.push_str(&format!(
            "<tr data-builder=\"{}\"><td><a href=\"/builders/{id}\">{}</a></td><td>{}</td><td>{tag_links}</td>\
<td>{online} of {}</td><td>{last}</td></tr>\n",
            esc(&b.name),
            esc(&b.name),
            esc(b.description.as_deref().unwrap_or("")),
            b.workernames.len(),
        ));
    }
    let tag_options: String = tags
        .iter()
        .map(|t| {
            let selected = if *t == tag_filter { " selected" } else { "" };
            format!("<option{selected}>{}</option>", esc(t))
        })
        .collect();
    let body = format!(
        "<form method=\"get\" class=\"filter\"><input name=\"name\" placeholder=\"name contains\" value=\"{}\"> \
<select name=\"tag\"><option value=\"\">any tag</option>{tag_options}</select> <button>filter</button></form>\n\
<div id=\"live\"><table id=\"builders\"><tr><th>builder</th><th>description</th><th>tags</th><th>workers online</th><th>last build</th></tr>\n{rows}</table></div>",
        esc(&name_filter)
    );
    ctx.page(
        "Builders",
        "builders",
        &["builds/*/*", "builders/*/*"],
        &body,
    )
    .await
}

/// Percent-encode a query value.
pub(super) fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s[2..].to_string())
        .unwrap_or_default()
}

pub(super) async fn builder(ctx: &Ctx<'_>, builderid: i64) -> PageResult {
    let data = &ctx.shared.data;
    let now = crate::data::now();
    let name = ctx
        .configured_builder(builderid)
        .ok_or_else(|| PageError::NotFound(format!("builder {builderid} not found")))?;
    let cfg = ctx.running.loaded.config.builder(&name);
    let offset = match ctx.request.param("offset") {
        Some(o) => crate::data::query::count("offset", &o)
            .map_err(|e| PageError::BadRequest(e.to_string()))?,
        None => 0,
    };

    let force_forms: String = if ctx.may("force") {
        ctx.running
            .loaded
            .config
            .schedulers
            .iter()
            .filter(|s| s.builder_names().contains(&name))
            .filter_map(|s| match s {
                SchedulerConfig::Force { label, form, .. } => Some((s, label, form)),
                SchedulerConfig::Changes(_)
                | SchedulerConfig::Timed(_)
                | SchedulerConfig::Dependent { .. }
                | SchedulerConfig::Triggerable { .. } => None,
            })
            .map(|(s, label, form)| {
                super::force_form::render(
                    s.name(),
                    label,
                    form,
                    builderid,
                    &ctx.csrf,
                    ctx.identity.user.is_some(),
                )
            })
            .collect()
    } else if ctx.running.loaded.config.auth.is_some() && ctx.identity.user.is_none() {
        "<p><a href=\"/login\">Log in</a> to start builds.</p>".into()
    } else {
        String::new()
    };

    let pending_q = ListQuery {
        order: vec![("submitted_at".into(), false)],
        ..Default::default()
    }
    .with_eq("builderid", builderid)
    .with_eq("complete", "false")
    .with_eq("claimed", "false");
    let (pending, _) = data.list_buildrequests(&pending_q).await?;
    let may_cancel = ctx.may("cancel");
    let pending_rows: String = pending
        .iter()
        .map(|r| {
            let brid = r["buildrequestid"].as_i64().unwrap_or(0);
            let cancel = if may_cancel {
                button(
                    &format!("/buildrequests/{brid}/cancel"),
                    &ctx.csrf,
                    "Cancel",
                    "cancel",
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-brid=\"{brid}\"><td>{brid}</td><td>{}</td><td>{cancel}</td></tr>",
                when(r["submitted_at"].as_f64())
            )
        })
        .collect();
    let pending_html = if pending.is_empty() {
        "<p id=\"pending-none\">No pending requests.</p>".to_string()
    } else {
        format!(
            "<table id=\"pending\"><tr><th>request</th><th>submitted</th><th></th></tr>{pending_rows}</table>"
        )
    };

    let q = ListQuery {
        order: vec![("number".into(), true)],
        // One more than shown says whether there is an older page, without
        // counting a builder's whole history.
        limit: Some(BUILDS_PER_PAGE + 1),
        offset: Some(offset),
        ..Default::default()
    }
    .with_eq("builderid", builderid);
    let (mut builds, _) = data.list_builds(&q, true).await?;
    let older = builds.len() as u64 > BUILDS_PER_PAGE;
    builds.truncate(BUILDS_PER_PAGE as usize);
    let estimates = Estimates::of_builder(ctx.shared, builderid).await?;
    let mut rows = String::new();
    for b in &builds {
        let state = state_of(b);
        let time = if b["complete"] == false {
            estimates.progress(b, now)
        } else {
            elapsed(b, now)
        };
        let revision = esc(b["properties"]["revision"][0].as_str().unwrap_or(""));
        rows.push_str(&format!(
            "<tr class=\"{state}\" data-number=\"{}\"><td><a href=\"/builds/{}\">#{}</a></td><td class=\"result\">{state}</td>\
<td>{}</td><td>{}</td><td class=\"revision\" title=\"{revision}\">{}</td><td>{}</td><td>{time}</td><td>{}</td><td>{}</td></tr>\n",
            b["number"],
            b["buildid"],
            b["number"],
            esc(text(b, "state_string")),
            esc(b["properties"]["branch"][0].as_str().unwrap_or("")),
            esc(&revision.chars().take(12).collect::<String>()),
            when(b["started_at"].as_f64()),
            esc(&ctx.worker_name(b["workerid"].as_i64())),
            esc(b["properties"]["reason"][0].as_str().unwrap_or("")),
        ));
    }
    let mut pager = String::new();
    if offset > 0 {
        pager.push_str(&format!(
            "<a href=\"?offset={}\">newer</a> ",
            offset.saturating_sub(BUILDS_PER_PAGE)
        ));
    }
    if older {
        pager.push_str(&format!(
            "<a href=\"?offset={}\">older</a>",
            offset + BUILDS_PER_PAGE
        ));
    }
    let (description, tags, workers) = match cfg {
        Some(c) => (
            c.description.clone().unwrap_or_default(),
            c.tags.join(", "),
            c.workernames.join(", "),
        ),
        None => Default::default(),
    };
    let body = format!(
        "<p class=\"description\">{}</p><p>tags: {} · workers: {} · <a href=\"/badges/{}.svg\">badge</a></p>\n{force_forms}\n\
<div id=\"live\"><h2>Pending requests</h2>{pending_html}\n<h2>Builds</h2>\
<table id=\"builds\"><tr><th>build</th><th>result</th><th>state</th><th>branch</th><th>revision</th><th>started</th><th>duration</th><th>worker</th><th>reason</th></tr>\n{rows}</table>\
<p class=\"pager\">{pager}</p></div>",
        esc(&description),
        esc(&tags),
        esc(&workers),
        esc(&crate::www::paths::segment(&name)),
    );
    let watch = [
        "builds/*/*".to_string(),
        "buildrequests/*/*".to_string(),
        "steps/*/*".to_string(),
    ];
    let watch: Vec<&str> = watch.iter().map(String::as_str).collect();
    ctx.page(&name, "builders", &watch, &body).await
}
