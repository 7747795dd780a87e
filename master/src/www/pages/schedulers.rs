//! `/schedulers`: the configured schedulers, what each builds, and whether
//! it is enabled, with Buildbot's enable switch for whoever may
//! `enable_scheduler` (a disabled scheduler builds nothing until enabled;
//! the setting is stored).

use super::html::esc;
use super::{Ctx, PageResult};
use crate::data::query::ListQuery;

const WATCH: &[&str] = &["schedulers/*/updated"];

pub(super) async fn list(ctx: &Ctx<'_>) -> PageResult {
    let names: Vec<&str> = ctx
        .running
        .loaded
        .config
        .schedulers
        .iter()
        .map(|s| s.name())
        .collect();
    let (rows, _) = ctx
        .shared
        .data
        .list_schedulers(&ListQuery::default().with_any("name", names.iter()), &names)
        .await?;
    let may = ctx.may("enable_scheduler");
    let mut table = String::new();
    for s in &ctx.running.loaded.config.schedulers {
        let Some(row) = rows.iter().find(|r| r["name"] == s.name()) else {
            continue;
        };
        let enabled = row["enabled"] != false;
        let id = &row["schedulerid"];
        let control = if may {
            let (verb, label) = if enabled {
                ("disable", "Disable")
            } else {
                ("enable", "Enable")
            };
            super::html::button(&format!("/schedulers/{id}/{verb}"), &ctx.csrf, label, verb)
        } else {
            String::new()
        };
        table.push_str(&format!(
            "<tr data-scheduler=\"{id}\" class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{control}</td></tr>\n",
            if enabled { "enabled" } else { "disabled" },
            esc(s.name()),
            esc(s.class_name()),
            esc(&s.builder_names().join(", ")),
            if enabled { "enabled" } else { "disabled" },
        ));
    }
    let body = format!(
        "<div id=\"live\"><table id=\"schedulers\"><tr><th>scheduler</th><th>kind</th><th>builders</th><th>state</th><th></th></tr>\n{table}</table></div>"
    );
    ctx.page("Schedulers", "schedulers", WATCH, &body).await
}
