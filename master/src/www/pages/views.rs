//! The overview grids: waterfall (time × builders), console (changes ×
//! builders) and grid (buildsets × builders), and the sources of a build.

use super::html::{esc, state_of, text, when};
use super::{Ctx, PageResult};
use crate::data::DataError;
use crate::data::query::ListQuery;
use crate::shared::Shared;
use serde_json::Value;
use std::collections::BTreeMap;

const WATCH: &[&str] = &["builds/*/*", "buildsets/*/*"];
/// Rows of the waterfall and console, columns of the grid.
const ROWS: u64 = 50;

/// Builder ids and names in the order master.lua lists them.
fn columns(ctx: &Ctx<'_>) -> Vec<(i64, String)> {
    ctx.running
        .loaded
        .config
        .builders
        .iter()
        .filter_map(|b| {
            ctx.running
                .builder_ids
                .get(&b.name)
                .map(|id| (*id, b.name.clone()))
        })
        .collect()
}

fn header(cols: &[(i64, String)], first: &str) -> String {
    let ths: String = cols
        .iter()
        .map(|(id, name)| format!("<th><a href=\"/builders/{id}\">{}</a></th>", esc(name)))
        .collect();
    format!("<tr><th>{first}</th>{ths}</tr>")
}

/// A small coloured link to a build.
fn chip(b: &Value) -> String {
    let state = state_of(b);
    format!(
        "<a class=\"chip {state}\" href=\"/builds/{}\" title=\"{}\">#{}</a>",
        b["buildid"],
        esc(&format!("{state}: {}", text(b, "state_string"))),
        b["number"]
    )
}

/// The builds made for these buildsets, as buildset id → builds.
async fn builds_of_buildsets(
    shared: &Shared,
    bsids: &[i64],
) -> Result<BTreeMap<i64, Vec<Value>>, DataError> {
    let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for (bsid, build) in shared
        .data
        .builds_of_buildsets(bsids, ListQuery::default(), false)
        .await?
    {
        out.entry(bsid).or_default().push(build);
    }
    Ok(out)
}

fn cells(cols: &[(i64, String)], builds: &[Value]) -> String {
    cols.iter()
        .map(|(id, _)| {
            let chips: String = builds
                .iter()
                .filter(|b| b["builderid"].as_i64() == Some(*id))
                .map(chip)
                .collect();
            format!("<td>{chips}</td>")
        })
        .collect()
}

pub(super) async fn waterfall(ctx: &Ctx<'_>) -> PageResult {
    let cols = columns(ctx);
    let q = ListQuery {
        order: vec![("started_at".into(), true)],
        limit: Some(ROWS),
        ..Default::default()
    };
    let (builds, _) = ctx.shared.data.list_builds(&q, false).await?;
    let rows: String = builds
        .iter()
        .map(|b| {
            format!(
                "<tr><td class=\"time\">{}</td>{}</tr>\n",
                when(b["started_at"].as_f64()),
                cells(&cols, std::slice::from_ref(b))
            )
        })
        .collect();
    let body = format!(
        "<div id=\"live\"><table class=\"matrix\" id=\"waterfall\">{}\n{rows}</table></div>",
        header(&cols, "started")
    );
    ctx.page("Waterfall", "waterfall", WATCH, &body).await
}

pub(super) async fn grid(ctx: &Ctx<'_>) -> PageResult {
    let cols = columns(ctx);
    let q = ListQuery {
        order: vec![("bsid".into(), true)],
        limit: Some(ROWS),
        ..Default::default()
    };
    let (buildsets, _) = ctx.shared.data.list_buildsets(&q).await?;
    let bsids: Vec<i64> = buildsets
        .iter()
        .filter_map(|b| b["bsid"].as_i64())
        .collect();
    let builds = builds_of_buildsets(ctx.shared, &bsids).await?;
    let rows: String = buildsets
        .iter()
        .map(|bs| {
            let bsid = bs["bsid"].as_i64().unwrap_or(0);
            let empty = Vec::new();
            format!(
                "<tr><td class=\"bs\">{} <span class=\"reason\">{}</span></td>{}</tr>\n",
                when(bs["submitted_at"].as_f64()),
                esc(text(bs, "reason")),
                cells(&cols, builds.get(&bsid).unwrap_or(&empty))
            )
        })
        .collect();
    let body = format!(
        "<div id=\"live\"><table class=\"matrix\" id=\"grid\">{}\n{rows}</table></div>",
        header(&cols, "buildset")
    );
    ctx.page("Grid", "grid", WATCH, &body).await
}

pub(super) async fn console(ctx: &Ctx<'_>) -> PageResult {
    let cols = columns(ctx);
    let q = ListQuery {
        limit: Some(ROWS),
        ..Default::default()
    };
    let (changes, _) = ctx.shared.data.list_changes(&q).await?;
    let ssids: Vec<i64> = changes
        .iter()
        .filter_map(|c| c["sourcestampid"].as_i64())
        .collect();
    let pairs = ctx.shared.data.buildsets_of_sourcestamps(&ssids).await?;
    let bsids: Vec<i64> = pairs.iter().map(|(_, bs)| *bs).collect();
    let builds = builds_of_buildsets(ctx.shared, &bsids).await?;
    let mut rows = String::new();
    for c in &changes {
        let ssid = c["sourcestampid"].as_i64();
        let of_change: Vec<Value> = pairs
            .iter()
            .filter(|(ss, _)| Some(*ss) == ssid)
            .flat_map(|(_, bs)| builds.get(bs).cloned().unwrap_or_default())
            .collect();
        let revision = text(c, "revision");
        let short: String = revision.chars().take(10).collect();
        let subject = text(c, "comments").lines().next().unwrap_or("");
        rows.push_str(&format!(
            "<tr><td class=\"change\"><a href=\"/changes/{}\"><code title=\"{}\">{}</code></a> {} <span class=\"author\">{}</span> {}</td>{}</tr>\n",
            c["changeid"],
            esc(revision),
            esc(&short),
            esc(subject),
            esc(text(c, "author")),
            when(c["when_timestamp"].as_f64()),
            cells(&cols, &of_change)
        ));
    }
    let empty = if changes.is_empty() {
        "<p id=\"no-changes\">No changes yet: commits appear here as change sources and hooks report them.</p>"
    } else {
        ""
    };
    let body = format!(
        "<div id=\"live\">{empty}<table class=\"matrix\" id=\"console\">{}\n{rows}</table></div>",
        header(&cols, "change")
    );
    ctx.page("Console", "console", &["builds/*/*", "changes/*/*"], &body)
        .await
}

/// The source stamps of a build's buildset, as HTML.
pub(super) async fn sources_html(shared: &Shared, build: &Value) -> Result<String, DataError> {
    let Some(stamps) = shared.data.build_sourcestamps(build).await? else {
        return Ok(String::new());
    };
    if stamps.is_empty() {
        return Ok("none (built without a revision)".into());
    }
    Ok(stamps
        .iter()
        .map(|s| {
            format!(
                "<div class=\"source\">{} {} <code>{}</code></div>",
                esc(text(s, "repository")),
                esc(text(s, "branch")),
                esc(text(s, "revision"))
            )
        })
        .collect())
}
