//! How a reporter writes a message: its formatter (Buildbot's message
//! formatters), the same for every transport. A `format_fn` is called with
//! the report's table; a `template` (and, for mail, `subject`) is Jinja2
//! text, as Buildbot's `MessageFormatter` takes, rendered with minijinja
//! (the syntax was checked when master.lua loaded). Each transport reads
//! what was written its own way, or writes its default.
//!
//! A template's context carries Buildbot's names: `build` (the table a
//! `format_fn` gets: the build as the API shows it, with `properties`,
//! `builder`, `url`, and for mail `changes`), `buildername`, `build_url`,
//! `results`, `result_names` (`result_names[results]`), `workername`,
//! `blamelist`, `summary`, `buildbot_title` and `buildbot_url`; moonbot adds
//! `event` and `result`. A buildset's report gives `buildset` and `builds`,
//! a missing worker's `worker`.

use super::generators::Report;
use crate::config::reporters::Formatter;
use crate::lua::RawValue;
use crate::results;
use crate::shared::Shared;
use serde_json::{Value, json};

/// What a formatter wrote.
pub enum Written {
    /// What `format_fn` returned.
    Lua(RawValue),
    /// The templates given, rendered (one left out: `None`).
    Template {
        body: Option<String>,
        subject: Option<String>,
    },
}

/// What `formatter` writes of `report`, whose table (what `format_fn`
/// gets) `table` makes; `None`: the default formatter (the transport
/// writes, and the table is not made).
pub async fn write(
    shared: &Shared,
    formatter: &Formatter,
    report: &Report,
    table: impl FnOnce() -> Value,
) -> Result<Option<Written>, String> {
    match formatter {
        Formatter::Default => Ok(None),
        Formatter::Function(function) => {
            let lua = shared.running_config().loaded.lua.clone();
            let value = lua
                .call(function, table())
                .await
                .map_err(|e| format!("format_fn failed: {e}"))?;
            Ok(Some(Written::Lua(value)))
        }
        Formatter::Template(t) => {
            let ctx = context(shared, report, &table());
            let render = |source: &Option<String>| {
                source
                    .as_deref()
                    .map(|source| render(source, &ctx))
                    .transpose()
            };
            Ok(Some(Written::Template {
                body: render(&t.body)?,
                subject: render(&t.subject)?,
            }))
        }
    }
}

/// What a template sees of `report`, whose table (what `format_fn` gets)
/// is `table`.
fn context(shared: &Shared, report: &Report, table: &Value) -> Value {
    let running = shared.running_config();
    let config = &running.loaded.config;
    let result_names: Vec<&str> = (0..=results::CANCELLED).map(results::name).collect();
    let mut ctx = json!({
        "event": report.event,
        "buildbot_title": config.title,
        "buildbot_url": config.buildbot_url,
        "result_names": result_names,
    });
    match report.event {
        "worker_missing" => ctx["worker"] = table.clone(),
        "buildset" => {
            ctx["buildset"] = table.clone();
            ctx["builds"] = table["builds"].clone();
            ctx["results"] = table["results"].clone();
            ctx["result"] = result_name(&table["results"]).into();
        }
        _ => {
            let mut blamelist: Vec<&str> = table["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["author"].as_str())
                .collect();
            blamelist.dedup();
            ctx["build"] = table.clone();
            ctx["buildername"] = table["builder"]["name"].clone();
            ctx["build_url"] = table["url"].clone();
            ctx["results"] = table["results"].clone();
            ctx["result"] = match report.event {
                "finished" => result_name(&table["results"]),
                other => other,
            }
            .into();
            ctx["workername"] = table["properties"]["workername"][0].clone();
            ctx["blamelist"] = json!(blamelist);
            ctx["summary"] = summary(table).into();
        }
    }
    ctx
}

/// Render `source` with `ctx`.
fn render(source: &str, ctx: &Value) -> Result<String, String> {
    let env = minijinja::Environment::new();
    env.template_from_str(source)
        .and_then(|t| t.render(minijinja::value::Serde(ctx)))
        .map_err(|e| format!("the template failed: {e}"))
}

fn result_name(results: &Value) -> &'static str {
    results
        .as_i64()
        .map_or("running", |r| results::name(r as i32))
}

/// Buildbot's one-line summary of a build's result.
fn summary(build: &Value) -> String {
    let state = build["state_string"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    match build["results"].as_i64().map(|r| r as i32) {
        None => "Build running".into(),
        Some(results::SUCCESS) => "Build succeeded!".into(),
        Some(results::WARNINGS) => format!("Build had warnings{state}"),
        Some(results::CANCELLED) => "Build was cancelled".into(),
        Some(_) => format!("BUILD FAILED{state}"),
    }
}
