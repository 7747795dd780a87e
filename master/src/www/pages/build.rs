//! The build page (properties, reason, steps, inline live logs, estimated time
//! left, stop and rebuild) and the estimates other pages show.

use super::html::{button, duration, elapsed, esc, state_of, text, when};
use super::{Ctx, PageResult, found_one};
use crate::data::DataError;
use crate::data::query::ListQuery;
use crate::shared::Shared;
use serde_json::Value;
use std::collections::BTreeMap;

/// How many earlier successful builds an estimate averages.
const ESTIMATE_BUILDS: u64 = 10;

/// Expected durations, from the builder's recent successful builds.
#[derive(Debug, Default)]
pub(super) struct Estimates {
    pub build: Option<f64>,
    /// Step name → mean duration.
    pub steps: BTreeMap<String, f64>,
}

impl Estimates {
    pub(super) async fn of_builder(
        shared: &Shared,
        builderid: i64,
    ) -> Result<Estimates, DataError> {
        let q = ListQuery {
            order: vec![("number".into(), true)],
            limit: Some(ESTIMATE_BUILDS),
            ..Default::default()
        }
        .with_eq("builderid", builderid)
        .with_eq("results", crate::results::SUCCESS);
        let (builds, _) = shared.data.list_builds(&q, false).await?;
        let durations: Vec<f64> = builds.iter().filter_map(span).collect();
        if durations.is_empty() {
            return Ok(Estimates::default());
        }
        let ids = builds.iter().filter_map(|b| b["buildid"].as_i64());
        let steps_q = ListQuery::default().with_any("buildid", ids);
        let (steps, _) = shared.data.list_steps(&steps_q).await?;
        let mut by_name: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in &steps {
            if let Some(d) = span(s) {
                by_name
                    .entry(text(s, "name").to_string())
                    .or_default()
                    .push(d);
            }
        }
        Ok(Estimates {
            build: Some(mean(&durations)),
            steps: by_name.into_iter().map(|(k, v)| (k, mean(&v))).collect(),
        })
    }

    /// A progress bar and "about N left" for a running build or step.
    fn bar(expected: Option<f64>, started: Option<f64>, now: f64) -> String {
        let (Some(expected), Some(started)) = (expected, started) else {
            return "<span class=\"eta\">no estimate yet</span>".to_string();
        };
        let done = now - started;
        let left = expected - done;
        let label = if left >= 0.0 {
            format!("about {} left", duration(left))
        } else {
            format!("{} over the usual {}", duration(-left), duration(expected))
        };
        format!(
            "<progress max=\"{expected:.1}\" value=\"{:.1}\"></progress> <span class=\"eta\">{label}</span>",
            done.min(expected)
        )
    }

    /// The bar for a running build.
    pub(super) fn progress(&self, build: &Value, now: f64) -> String {
        Self::bar(self.build, build["started_at"].as_f64(), now)
    }
}

/// A step's `urls` (Buildbot's `addURL`: an upload's artifact, a step's
/// `url`) as links; only `http(s)://` and paths on this site are links, so a
/// `javascript:` URL from a property never becomes one.
fn step_links(step: &Value) -> String {
    let Some(urls) = step["urls"].as_array() else {
        return String::new();
    };
    let mut out = String::new();
    for u in urls {
        let (name, url) = (text(u, "name"), text(u, "url"));
        let safe = url.starts_with("https://")
            || url.starts_with("http://")
            || (url.starts_with('/') && !url.starts_with("//"));
        if safe {
            out.push_str(&format!(
                " <a class=\"steplink\" href=\"{}\">{}</a>",
                esc(url),
                esc(name)
            ));
        } else {
            out.push_str(&format!(
                " <span class=\"steplink\">{}: {}</span>",
                esc(name),
                esc(url)
            ));
        }
    }
    out
}

/// Failed tests shown at most on the build page.
const FAILED_TESTS_SHOWN: u64 = 200;

/// The build's test results: each set's counts, and the failed tests with
/// their messages.
async fn failed_tests_html(ctx: &Ctx<'_>, buildid: i64) -> Result<String, DataError> {
    let data = &ctx.shared.data;
    let (sets, _) = data
        .list_test_result_sets(&ListQuery::default().with_eq("buildid", buildid))
        .await?;
    if sets.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from(
        "<h2>Tests</h2><table id=\"test-results\"><tr><th>report</th><th>passed</th><th>failed</th><th>skipped</th></tr>",
    );
    let mut failed_rows = String::new();
    for set in &sets {
        out.push_str(&format!(
            "<tr><td><a href=\"/api/v2/test_result_sets/{}/results\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            set["test_result_setid"],
            esc(text(set, "description")),
            set["tests_passed"],
            set["tests_failed"],
            set["tests_skipped"],
        ));
        let q = ListQuery {
            limit: Some(FAILED_TESTS_SHOWN),
            ..Default::default()
        }
        .with_eq(
            "test_result_setid",
            set["test_result_setid"].as_i64().unwrap_or(0),
        )
        .with_eq("value", "0");
        let (failed, _) = data.list_test_results(&q).await?;
        for r in failed.iter().filter(|r| r["outcome"] != "skipped") {
            failed_rows.push_str(&format!(
                "<li class=\"failed-test\"><span class=\"outcome\">{}</span> <span class=\"name\">{}</span> <span class=\"message\">{}</span></li>",
                esc(text(r, "outcome")),
                esc(text(r, "test_name")),
                esc(text(r, "message")),
            ));
        }
    }
    out.push_str("</table>");
    if !failed_rows.is_empty() {
        out.push_str(&format!(
            "<h3>Failed tests</h3><ul id=\"failed-tests\">{failed_rows}</ul>"
        ));
    }
    Ok(out)
}

/// The build that triggered this one, and the builds this one triggered,
/// as rows of the facts table.
async fn family_html(ctx: &Ctx<'_>, buildid: i64, brid: Option<i64>) -> Result<String, DataError> {
    let data = &ctx.shared.data;
    let mut out = String::new();
    if let Some(parent) = match brid {
        Some(brid) => data.parent_of_request(brid).await?,
        None => None,
    } {
        out.push_str(&format!(
            "<tr><th>triggered by</th><td id=\"parent\"><a href=\"/builds/{parent}\">build {parent}</a></td></tr>"
        ));
    }
    let children = data.triggered_builds(buildid, ListQuery::default()).await?;
    if !children.is_empty() {
        let links: Vec<String> = children
            .iter()
            .map(|c| {
                let state = crate::results::name(c["results"].as_i64().map_or(-1, |r| r as i32));
                format!(
                    "<a class=\"{}\" href=\"/builds/{}\">{} #{}</a>",
                    if c["complete"] == true {
                        state
                    } else {
                        "running"
                    },
                    c["buildid"],
                    esc(&ctx.builder_name(c["builderid"].as_i64().unwrap_or(0))),
                    c["number"]
                )
            })
            .collect();
        out.push_str(&format!(
            "<tr><th>triggered</th><td id=\"triggered\">{}</td></tr>",
            links.join(" ")
        ));
    }
    Ok(out)
}

/// The build's artifacts, with download links (a directory's files listed).
async fn artifacts_html(ctx: &Ctx<'_>, buildid: i64) -> Result<String, DataError> {
    let (items, _) = ctx
        .shared
        .data
        .list_artifacts(&ListQuery::default().with_eq("buildid", buildid))
        .await?;
    if items.is_empty() {
        return Ok(String::new());
    }
    let mut rows = String::new();
    for a in &items {
        let id = a["artifactid"].as_i64().unwrap_or(0);
        let link = if a["type"] == "directory" {
            format!(
                "<a href=\"/api/v2/artifacts/{id}/files\">{}/</a> ({} files)",
                esc(text(a, "name")),
                a["files"]
            )
        } else {
            format!(
                "<a href=\"/api/v2/artifacts/{id}/raw\">{}</a>",
                esc(text(a, "name"))
            )
        };
        rows.push_str(&format!(
            "<tr><td>{link}</td><td>{}</td><td>{}</td></tr>",
            a["size"],
            when(a["expires_at"].as_f64()),
        ));
    }
    Ok(format!(
        "<h2>Artifacts</h2><table id=\"artifacts\"><tr><th>artifact</th><th>bytes</th><th>kept until</th></tr>{rows}</table>"
    ))
}

fn span(v: &Value) -> Option<f64> {
    Some(v["complete_at"].as_f64()? - v["started_at"].as_f64()?)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

pub(super) async fn build(ctx: &Ctx<'_>, buildid: i64) -> PageResult {
    let data = &ctx.shared.data;
    let now = crate::data::now();
    let (found, _) = data
        .list_builds(
            &ListQuery::default().with_eq("buildid", buildid).whole(),
            false,
        )
        .await?;
    let b = found_one(found, &format!("build {buildid}"))?;
    let builderid = b["builderid"].as_i64().unwrap_or(0);
    let builder = ctx.builder_name(builderid);
    let state = state_of(&b);
    let running = b["complete"] == false;
    let estimates = Estimates::of_builder(ctx.shared, builderid).await?;
    let props = data.build_properties(buildid).await?;

    let mut actions = String::new();
    if running && ctx.may("stop") {
        actions.push_str(&button(
            &format!("/builds/{buildid}/stop"),
            &ctx.csrf,
            "Stop",
            "stop",
        ));
    }
    if !running && ctx.may("rebuild") {
        actions.push_str(&button(
            &format!("/builds/{buildid}/rebuild"),
            &ctx.csrf,
            "Rebuild",
            "rebuild",
        ));
    }
    let timing = if running {
        estimates.progress(&b, now)
    } else {
        format!("took {}", elapsed(&b, now))
    };
    let reason = props["reason"][0].as_str().unwrap_or("");
    let owner = props["owner"][0].as_str().unwrap_or("");

    let (steps, _) = data
        .list_steps(&ListQuery::default().with_eq("buildid", buildid).whole())
        .await?;
    let step_ids: Vec<i64> = steps.iter().filter_map(|s| s["stepid"].as_i64()).collect();
    let logs = if step_ids.is_empty() {
        Vec::new()
    } else {
        data.list_logs(&ListQuery::default().with_any("stepid", step_ids))
            .await?
            .0
    };
    let mut step_rows = String::new();
    // Steps `hide_step_if` hid are left out unless asked for, as Buildbot's UI does.
    let show_hidden = ctx.request.param("hidden").is_some_and(|v| v == "1");
    let hidden = steps.iter().filter(|s| s["hidden"] == true).count();
    for s in &steps {
        if s["hidden"] == true && !show_hidden {
            continue;
        }
        let stepid = s["stepid"].as_i64().unwrap_or(0);
        let step_state = state_of(s);
        let step_running = s["complete"] == false;
        let timing = if step_running {
            Estimates::bar(
                estimates.steps.get(text(s, "name")).copied(),
                s["started_at"].as_f64(),
                now,
            )
        } else {
            elapsed(s, now)
        };
        let mut step_logs = String::new();
        for l in logs.iter().filter(|l| l["stepid"].as_i64() == Some(stepid)) {
            let logid = l["logid"].as_i64().unwrap_or(0);
            // Open while the step runs or when it failed: that is what one wants to read.
            let open = if step_running || s["results"].as_i64().is_some_and(|r| r >= 2) {
                " open"
            } else {
                ""
            };
            step_logs.push_str(&format!(
                "<details class=\"logbox\"{open}><summary>{} <span class=\"lines\">{} lines</span> \
<a href=\"/logs/{logid}\">view</a> <a href=\"/api/v2/logs/{logid}/raw\">download</a></summary>\
<pre class=\"log\" data-logid=\"{logid}\" data-tail=\"300\"></pre></details>",
                esc(text(l, "name")),
                l["num_lines"],
            ));
        }
        step_rows.push_str(&format!(
            "<li class=\"step {step_state}\" data-step=\"{}\"><div class=\"stephead\"><span class=\"num\">{}</span> \
<span class=\"name\">{}</span> <span class=\"state\">{}</span> <span class=\"result\">{step_state}</span> \
<span class=\"time\">{timing}</span>{}</div>{step_logs}</li>\n",
            esc(text(s, "name")),
            s["number"],
            esc(text(s, "name")),
            esc(text(s, "state_string")),
            step_links(s),
        ));
    }
    let mut prop_rows = String::new();
    if let Value::Object(map) = &props {
        for (name, pair) in map {
            let value = match &pair[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            prop_rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"source\">{}</td></tr>",
                esc(name),
                esc(&value),
                esc(pair[1].as_str().unwrap_or(""))
            ));
        }
    }
    let sources = super::views::sources_html(ctx.shared, &b).await?;
    let changes = data
        .changes_of_build(buildid, ListQuery::default())
        .await?
        .unwrap_or_default();
    let changes = if changes.is_empty() {
        "<p id=\"build-changes\">No changes: built without one (forced, or on a timer with none new).</p>".to_string()
    } else {
        format!(
            "<table id=\"build-changes\">{}{}</table>",
            super::changes::TABLE_HEAD,
            super::changes::rows_html(&changes)
        )
    };
    let (collapsed, _) = data
        .list_buildrequests(&ListQuery::default().with_eq("collapsed_into_buildid", buildid))
        .await?;
    let collapsed = if collapsed.is_empty() {
        String::new()
    } else {
        let requests: Vec<String> = collapsed
            .iter()
            .map(|r| {
                format!(
                    "request {} (buildset {})",
                    r["buildrequestid"], r["buildsetid"]
                )
            })
            .collect();
        format!(
            "<tr><th>collapsed</th><td id=\"collapsed\">{} ended SKIPPED, collapsed into this build</td></tr>",
            requests.join(", ")
        )
    };
    let family = family_html(ctx, buildid, b["buildrequestid"].as_i64()).await?;
    let artifacts = artifacts_html(ctx, buildid).await?;
    let tests = failed_tests_html(ctx, buildid).await?;
    let hidden_note = match (hidden, show_hidden) {
        (0, _) => String::new(),
        (n, false) => format!(
            "<p class=\"hint\" id=\"hidden-steps\">{n} hidden step(s): <a href=\"?hidden=1\">show them</a></p>"
        ),
        (n, true) => format!(
            "<p class=\"hint\" id=\"hidden-steps\">{n} hidden step(s) shown: <a href=\"?\">hide them</a></p>"
        ),
    };
    let body = format!(
        "<div id=\"live\"><div class=\"buildhead {state}\" id=\"build-state\" data-state=\"{state}\">\
<span class=\"result\">{state}</span> {}<span class=\"time\">{timing}</span> {actions}</div>\n\
<table class=\"facts\"><tr><th>builder</th><td><a href=\"/builders/{builderid}\">{}</a></td></tr>\
<tr><th>worker</th><td>{}</td></tr><tr><th>reason</th><td id=\"reason\">{}</td></tr>\
<tr><th>owner</th><td>{}</td></tr><tr><th>started</th><td>{}</td></tr><tr><th>finished</th><td>{}</td></tr>\
<tr><th>sources</th><td>{sources}</td></tr>{collapsed}{family}</table>\n\
<h2>Changes</h2>{changes}\n\
<h2>Steps</h2><ol class=\"steps\" id=\"steps\">{step_rows}</ol>{hidden_note}\n\
{tests}{artifacts}\
<h2>Properties</h2><table id=\"properties\"><tr><th>name</th><th>value</th><th>source</th></tr>{prop_rows}</table></div>",
        esc(text(&b, "state_string")),
        esc(&builder),
        esc(&ctx.worker_name(b["workerid"].as_i64())),
        esc(reason),
        esc(owner),
        when(b["started_at"].as_f64()),
        when(b["complete_at"].as_f64()),
    );
    let title = format!("{builder} #{}", b["number"]);
    let watch = [
        format!("builds/{buildid}/*"),
        "steps/*/*".to_string(),
        "logs/*/*".to_string(),
    ];
    let watch: Vec<&str> = watch.iter().map(String::as_str).collect();
    ctx.page(&title, "builders", &watch, &body).await
}
