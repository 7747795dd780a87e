//! The changes page (the newest commits that sources and hooks reported) and
//! a change's page: who, when, where, the message, the files, the properties
//! and the builds made from it.

use super::html::{esc, state_of, text, when};
use super::{Ctx, PageResult, found_one};
use crate::data::query::ListQuery;
use serde_json::Value;

const WATCH: &[&str] = &["changes/*/*", "builds/*/*"];
/// Changes on the changes page.
const ROWS: u64 = 100;

/// A revision, shortened to 12 characters with the whole in its title.
fn short_revision(change: &Value) -> String {
    let revision = text(change, "revision");
    let short: String = revision.chars().take(12).collect();
    format!("<code title=\"{}\">{}</code>", esc(revision), esc(&short))
}

/// A link to where the change can be seen, if it is a web address.
fn revlink(change: &Value) -> String {
    let link = text(change, "revlink");
    if link.starts_with("https://") || link.starts_with("http://") {
        format!(
            "<a href=\"{}\" rel=\"noreferrer\">{}</a>",
            esc(link),
            esc(link)
        )
    } else {
        esc(link)
    }
}

/// Changes as the rows of a table with the header [`TABLE_HEAD`].
pub(super) fn rows_html(changes: &[Value]) -> String {
    changes
        .iter()
        .map(|c| {
            let subject = text(c, "comments").lines().next().unwrap_or("");
            format!(
                "<tr><td><a href=\"/changes/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>\n",
                short_revision(c),
                esc(text(c, "branch")),
                esc(text(c, "author")),
                esc(subject),
                esc(text(c, "repository")),
                when(c["when_timestamp"].as_f64()),
                id = c["changeid"],
            )
        })
        .collect()
}

/// The header row of a table of [`rows_html`].
pub(super) const TABLE_HEAD: &str = "<tr><th>change</th><th>revision</th><th>branch</th>\
<th>author</th><th>message</th><th>repository</th><th>when</th></tr>\n";

pub(super) async fn list(ctx: &Ctx<'_>) -> PageResult {
    let q = ListQuery {
        limit: Some(ROWS),
        ..Default::default()
    };
    let (changes, _) = ctx.shared.data.list_changes(&q).await?;
    let rows = rows_html(&changes);
    let body = if changes.is_empty() {
        "<div id=\"live\"><p id=\"no-changes\">No changes yet: commits appear here as \
         `moonbot sendchange` and the repository hooks report them.</p></div>"
            .to_string()
    } else {
        format!("<div id=\"live\"><table id=\"changes\">{TABLE_HEAD}{rows}</table></div>")
    };
    ctx.page("Changes", "changes", WATCH, &body).await
}

pub(super) async fn change(ctx: &Ctx<'_>, changeid: i64) -> PageResult {
    let data = &ctx.shared.data;
    let q = ListQuery::default().with_eq("changeid", changeid).whole();
    let (found, _) = data.list_changes(&q).await?;
    let c = found_one(found, &format!("change {changeid}"))?;
    let files: String = c["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| format!("<li>{}</li>", esc(f.as_str().unwrap_or(""))))
                .collect()
        })
        .unwrap_or_default();
    let properties: String = c["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, pair)| {
                    let value = match &pair[0] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!(
                        "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
                        esc(name),
                        esc(&value),
                        esc(pair[1].as_str().unwrap_or(""))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ssids: Vec<i64> = c["sourcestamp"]["ssid"].as_i64().into_iter().collect();
    let builds: String = data
        .builds_of_sourcestamps(&ssids, ListQuery::default(), false)
        .await?
        .iter()
        .map(|b| {
            let builderid = b["builderid"].as_i64().unwrap_or(0);
            format!(
                "<li class=\"{}\"><a href=\"/builds/{}\">{} #{}</a> {}</li>",
                state_of(b),
                b["buildid"],
                esc(&ctx.builder_name(builderid)),
                b["number"],
                esc(text(b, "state_string")),
            )
        })
        .collect();
    let builds = if builds.is_empty() {
        "<p id=\"no-builds\">No build has been made from this change.</p>".to_string()
    } else {
        format!("<ul id=\"builds\">{builds}</ul>")
    };
    let body = format!(
        "<div id=\"live\"><table class=\"facts\" id=\"change\">\
         <tr><th>author</th><td>{}</td></tr><tr><th>committer</th><td>{}</td></tr>\
         <tr><th>when</th><td>{}</td></tr><tr><th>repository</th><td>{}</td></tr>\
         <tr><th>branch</th><td>{}</td></tr><tr><th>revision</th><td><code>{}</code></td></tr>\
         <tr><th>link</th><td>{}</td></tr><tr><th>project</th><td>{}</td></tr>\
         <tr><th>codebase</th><td>{}</td></tr><tr><th>category</th><td>{}</td></tr></table>\
         <h2>Message</h2><pre id=\"comments\">{}</pre>\
         <h2>Files</h2><ul id=\"files\">{files}</ul>\
         <h2>Properties</h2><table id=\"properties\">{properties}</table>\
         <h2>Builds</h2>{builds}</div>",
        esc(text(&c, "author")),
        esc(text(&c, "committer")),
        when(c["when_timestamp"].as_f64()),
        esc(text(&c, "repository")),
        esc(text(&c, "branch")),
        esc(text(&c, "revision")),
        revlink(&c),
        esc(text(&c, "project")),
        esc(text(&c, "codebase")),
        esc(text(&c, "category")),
        esc(text(&c, "comments")),
    );
    ctx.page(&format!("Change {changeid}"), "changes", WATCH, &body)
        .await
}
