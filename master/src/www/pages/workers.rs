//! The workers list and a worker's page: connected or not and since when,
//! what it said about itself in its hello, what it is building, what it built.

use super::html::{elapsed, esc, state_of, text, when};
use super::{Ctx, PageResult, found_one};
use crate::data::query::ListQuery;
use serde_json::Value;

const WATCH: &[&str] = &["workers/*/*", "builds/*/*"];

fn info_cells(w: &Value) -> String {
    let info = &w["workerinfo"];
    let field = |k: &str| match &info[k] {
        Value::String(s) => esc(s),
        Value::Null => String::new(),
        other => esc(&other.to_string()),
    };
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        field("os"),
        field("arch"),
        field("cpus"),
        field("admin")
    )
}

fn connection(w: &Value) -> (bool, String) {
    let mut text = match w["connected_to"].as_array().and_then(|c| c.first()) {
        Some(c) => format!("connected since {}", when(c["connected_at"].as_f64())),
        None => "not connected".into(),
    };
    let online = !w["connected_to"].as_array().is_none_or(|c| c.is_empty());
    if w["paused"] == true {
        text.push_str(", paused");
    }
    if w["graceful"] == true {
        text.push_str(", stopping after its running builds");
    }
    (online, text)
}

pub(super) async fn list(ctx: &Ctx<'_>) -> PageResult {
    let (workers, _) = ctx
        .shared
        .data
        .list_workers(&ListQuery::default(), &ctx.running.worker_ids)
        .await?;
    let mut rows = String::new();
    for w in &workers {
        let (online, since) = connection(w);
        let name = text(w, "name");
        let running = ctx.shared.workers.running(name);
        rows.push_str(&format!(
            "<tr class=\"{}\" data-worker=\"{}\"><td><a href=\"/workers/{}\">{}</a></td><td class=\"conn\">{since}</td>{}<td>{running}</td></tr>\n",
            if online { "online" } else { "offline" },
            esc(name),
            w["workerid"],
            esc(name),
            info_cells(w),
        ));
    }
    let body = format!(
        "<div id=\"live\"><table id=\"workers\"><tr><th>worker</th><th>connection</th><th>OS</th><th>arch</th><th>CPUs</th><th>admin</th><th>building now</th></tr>\n{rows}</table></div>"
    );
    ctx.page("Workers", "workers", WATCH, &body).await
}

pub(super) async fn worker(ctx: &Ctx<'_>, workerid: i64) -> PageResult {
    let now = crate::data::now();
    let (found, _) = ctx
        .shared
        .data
        .list_workers(
            &ListQuery::default().with_eq("workerid", workerid),
            &ctx.running.worker_ids,
        )
        .await?;
    let w = found_one(found, &format!("worker {workerid}"))?;
    let (_, since) = connection(&w);
    let control = if ctx.may("pause") {
        let (path, label) = if w["paused"] == true {
            (format!("/workers/{workerid}/unpause"), "Unpause")
        } else {
            (format!("/workers/{workerid}/pause"), "Pause")
        };
        super::html::button(&path, &ctx.csrf, label, "pause")
    } else {
        String::new()
    };
    let connected = w["connected_to"].as_array().is_some_and(|c| !c.is_empty());
    let control = if connected && ctx.may("stop_worker") {
        format!(
            "{control}{}{}",
            super::html::button(
                &format!("/workers/{workerid}/stop"),
                &ctx.csrf,
                "Stop after its builds",
                "stop"
            ),
            super::html::button(
                &format!("/workers/{workerid}/kill"),
                &ctx.csrf,
                "Kill",
                "kill"
            ),
        )
    } else {
        control
    };
    let q = ListQuery {
        order: vec![("buildid".into(), true)],
        limit: Some(30),
        ..Default::default()
    }
    .with_eq("workerid", workerid);
    let (builds, _) = ctx.shared.data.list_builds(&q, false).await?;
    let rows: String = builds
        .iter()
        .map(|b| {
            let builderid = b["builderid"].as_i64().unwrap_or(0);
            format!(
                "<tr class=\"{}\"><td>{}</td><td><a href=\"/builds/{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                state_of(b),
                esc(&ctx.builder_name(builderid)),
                b["buildid"],
                b["number"],
                state_of(b),
                when(b["started_at"].as_f64()),
                elapsed(b, now),
            )
        })
        .collect();
    let body = format!(
        "<div id=\"live\"><p class=\"conn\">{since}</p>{control}<table class=\"facts\"><tr><th>OS</th><th>arch</th><th>CPUs</th><th>admin</th></tr><tr>{}</tr></table>\
<h2>Builds</h2><table id=\"builds\"><tr><th>builder</th><th>build</th><th>result</th><th>started</th><th>duration</th></tr>{rows}</table></div>",
        info_cells(&w),
    );
    ctx.page(text(&w, "name"), "workers", WATCH, &body).await
}
