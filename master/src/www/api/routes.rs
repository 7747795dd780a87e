//! The data API's table: every path of Buildbot 4.3's data API (the
//! `pathPatterns` of `master/buildbot/data/*.py`, in Buildbot's order within
//! each entity), then moonbot's own (artifacts, janitor passes, config).
//! Each row names its handler; the handlers below resolve the path's
//! captures (a builder by id or name, a build by id or by builder and
//! number, a step by number or name, a log by slug) and ask the data layer.
//!
//! Entities moonbot does not have (projects, codebases, branches, commits,
//! build data) answer as Buildbot does on a master without them: an empty
//! list, and 404 for one object.

use super::router::{Answer, Answered, Kind, Route};
use super::{ApiError, Call};
use crate::data::query::ListQuery;
use crate::shared::RunningConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A handler row's function: `h!(name)` is `|c| Box::pin(name(c))`.
macro_rules! h {
    ($f:ident) => {
        |c| -> Answered<'_> { Box::pin($f(c)) }
    };
}

const BUILD_ACTIONS: &[&str] = &["stop", "rebuild"];
const WORKER_ACTIONS: &[&str] = &["stop", "kill", "pause", "unpause"];
const NONE: &[&str] = &[];

/// Shorthand for a row.
const fn r(
    pattern: &'static str,
    kind: Kind,
    entity: &'static str,
    actions: &'static [&'static str],
    handler: super::router::Handler,
) -> Route {
    Route {
        pattern,
        kind,
        entity,
        actions,
        handler,
    }
}

use Kind::{Collection as C, Raw, RawInline, Single as S};

/// Every route, first match wins.
#[rustfmt::skip]
pub(crate) static ROUTES: &[Route] = &[
    // Build data (moonbot stores none).
    r("builders/n:builderid/builds/n:build_number/data", C, "build_data", NONE, h!(build_data_list)),
    r("builders/s:buildername/builds/n:build_number/data", C, "build_data", NONE, h!(build_data_list)),
    r("builds/n:buildid/data", C, "build_data", NONE, h!(build_data_list)),
    r("builders/n:builderid/builds/n:build_number/data/i:name", S, "build_data", NONE, h!(build_data_one)),
    r("builders/s:buildername/builds/n:build_number/data/i:name", S, "build_data", NONE, h!(build_data_one)),
    r("builds/n:buildid/data/i:name", S, "build_data", NONE, h!(build_data_one)),
    r("builders/n:builderid/builds/n:build_number/data/i:name/value", Raw, "build_data", NONE, h!(build_data_one)),
    r("builders/s:buildername/builds/n:build_number/data/i:name/value", Raw, "build_data", NONE, h!(build_data_one)),
    r("builds/n:buildid/data/i:name/value", Raw, "build_data", NONE, h!(build_data_one)),
    // Builders.
    r("builders/n:builderid", S, "builder", NONE, h!(builder_one)),
    r("builders/s:buildername", S, "builder", NONE, h!(builder_one)),
    r("masters/n:masterid/builders/n:builderid", S, "builder", NONE, h!(builder_one)),
    r("builders", C, "builder", NONE, h!(builder_list)),
    r("masters/n:masterid/builders", C, "builder", NONE, h!(builder_list)),
    r("projects/n:projectid/builders", C, "builder", NONE, h!(builder_list)),
    r("workers/n:workerid/builders", C, "builder", NONE, h!(builder_list)),
    // Build requests.
    r("buildrequests/n:buildrequestid", S, "buildrequest", &["cancel", "set_priority"], h!(buildrequest_one)),
    r("buildrequests", C, "buildrequest", NONE, h!(buildrequest_list)),
    r("builders/n:builderid/buildrequests", C, "buildrequest", NONE, h!(buildrequest_list)),
    // Builds.
    r("builds/n:buildid", S, "build", BUILD_ACTIONS, h!(build_one)),
    r("builders/n:builderid/builds/n:build_number", S, "build", BUILD_ACTIONS, h!(build_one)),
    r("builders/s:buildername/builds/n:build_number", S, "build", BUILD_ACTIONS, h!(build_one)),
    r("builds/n:buildid/triggered_builds", C, "build", NONE, h!(triggered_builds)),
    r("builds", C, "build", NONE, h!(build_list)),
    r("builders/n:builderid/builds", C, "build", NONE, h!(build_list)),
    r("builders/s:buildername/builds", C, "build", NONE, h!(build_list)),
    r("buildrequests/n:buildrequestid/builds", C, "build", NONE, h!(build_list)),
    r("changes/n:changeid/builds", C, "build", NONE, h!(builds_of_change)),
    r("workers/n:workerid/builds", C, "build", NONE, h!(build_list)),
    // Buildsets.
    r("buildsets/n:bsid", S, "buildset", NONE, h!(buildset_one)),
    r("buildsets", C, "buildset", NONE, h!(buildset_list)),
    // Changes.
    r("changes/n:changeid", S, "change", NONE, h!(change_one)),
    r("changes", C, "change", &["add"], h!(change_list)),
    r("builders/n:builderid/builds/n:build_number/changes", C, "change", NONE, h!(changes_of_build)),
    r("builds/n:buildid/changes", C, "change", NONE, h!(changes_of_build)),
    r("sourcestamps/n:ssid/changes", C, "change", NONE, h!(change_list)),
    // Change sources.
    r("changesources/n:changesourceid", S, "changesource", NONE, h!(changesource_one)),
    r("masters/n:masterid/changesources/n:changesourceid", S, "changesource", NONE, h!(changesource_one)),
    r("changesources", C, "changesource", NONE, h!(changesource_list)),
    r("masters/n:masterid/changesources", C, "changesource", NONE, h!(changesource_list)),
    // Codebases, their branches and commits (moonbot stores none).
    r("branches/n:branchid", S, "branch", NONE, h!(none_one)),
    r("codebases/n:codebaseid/branches", C, "branch", NONE, h!(none_list)),
    r("commits/n:commitid", S, "commit", NONE, h!(none_one)),
    r("codebases/n:codebaseid/commits_by_revision/s:revision", S, "commit", NONE, h!(none_one)),
    r("codebases/n:codebaseid/commits", C, "commit", NONE, h!(none_list)),
    r("codebases/n:codebaseid/commit_range/n:commitid1/n:commitid2/commits_common_parent", S, "commit_graph", NONE, h!(none_one)),
    r("codebases/n:codebaseid", S, "codebase", NONE, h!(none_one)),
    r("projects/n:projectid/codebases/i:codebasename", S, "codebase", NONE, h!(none_one)),
    r("codebases", C, "codebase", NONE, h!(none_list)),
    // Force schedulers.
    r("forceschedulers/i:schedulername", S, "forcescheduler", &["force"], h!(forcescheduler_one)),
    r("forceschedulers", C, "forcescheduler", NONE, h!(forcescheduler_list)),
    r("builders/:builderid/forceschedulers", C, "forcescheduler", NONE, h!(forcescheduler_list)),
    // Log contents.
    r("logchunks", S, "logchunk", NONE, h!(logchunks)),
    r("logs/n:logid/contents", S, "logchunk", NONE, h!(logchunks)),
    r("steps/n:stepid/logs/i:log_slug/contents", S, "logchunk", NONE, h!(logchunks)),
    r("builds/n:buildid/steps/i:step_name/logs/i:log_slug/contents", S, "logchunk", NONE, h!(logchunks)),
    r("builds/n:buildid/steps/n:step_number/logs/i:log_slug/contents", S, "logchunk", NONE, h!(logchunks)),
    r("builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug/contents", S, "logchunk", NONE, h!(logchunks)),
    r("builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug/contents", S, "logchunk", NONE, h!(logchunks)),
    r("logs/n:logid/raw", Raw, "logchunk", NONE, h!(log_raw)),
    r("steps/n:stepid/logs/i:log_slug/raw", Raw, "logchunk", NONE, h!(log_raw)),
    r("builds/n:buildid/steps/i:step_name/logs/i:log_slug/raw", Raw, "logchunk", NONE, h!(log_raw)),
    r("builds/n:buildid/steps/n:step_number/logs/i:log_slug/raw", Raw, "logchunk", NONE, h!(log_raw)),
    r("builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug/raw", Raw, "logchunk", NONE, h!(log_raw)),
    r("builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug/raw", Raw, "logchunk", NONE, h!(log_raw)),
    r("logs/n:logid/raw_inline", RawInline, "logchunk", NONE, h!(log_raw)),
    r("steps/n:stepid/logs/i:log_slug/raw_inline", RawInline, "logchunk", NONE, h!(log_raw)),
    r("builds/n:buildid/steps/i:step_name/logs/i:log_slug/raw_inline", RawInline, "logchunk", NONE, h!(log_raw)),
    r("builds/n:buildid/steps/n:step_number/logs/i:log_slug/raw_inline", RawInline, "logchunk", NONE, h!(log_raw)),
    r("builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug/raw_inline", RawInline, "logchunk", NONE, h!(log_raw)),
    r("builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug/raw_inline", RawInline, "logchunk", NONE, h!(log_raw)),
    // Logs.
    r("logs/n:logid", S, "log", NONE, h!(log_one)),
    r("steps/n:stepid/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("builds/n:buildid/steps/i:step_name/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("builds/n:buildid/steps/n:step_number/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("builders/s:buildername/builds/n:build_number/steps/i:step_name/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("builders/s:buildername/builds/n:build_number/steps/n:step_number/logs/i:log_slug", S, "log", NONE, h!(log_one)),
    r("steps/n:stepid/logs", C, "log", NONE, h!(log_list)),
    r("builds/n:buildid/steps/i:step_name/logs", C, "log", NONE, h!(log_list)),
    r("builds/n:buildid/steps/n:step_number/logs", C, "log", NONE, h!(log_list)),
    r("builders/n:builderid/builds/n:build_number/steps/i:step_name/logs", C, "log", NONE, h!(log_list)),
    r("builders/n:builderid/builds/n:build_number/steps/n:step_number/logs", C, "log", NONE, h!(log_list)),
    r("builders/s:buildername/builds/n:build_number/steps/i:step_name/logs", C, "log", NONE, h!(log_list)),
    r("builders/s:buildername/builds/n:build_number/steps/n:step_number/logs", C, "log", NONE, h!(log_list)),
    // Masters.
    r("masters/n:masterid", S, "master", NONE, h!(master_one)),
    r("builders/n:builderid/masters/n:masterid", S, "master", NONE, h!(master_one)),
    r("masters", C, "master", NONE, h!(master_list)),
    r("builders/n:builderid/masters", C, "master", NONE, h!(master_list)),
    // Projects (moonbot has none).
    r("projects/n:projectid", S, "project", NONE, h!(none_one)),
    r("projects/i:projectname", S, "project", NONE, h!(none_one)),
    r("projects", C, "project", NONE, h!(none_list)),
    // Properties.
    r("buildsets/n:bsid/properties", S, "property", NONE, h!(buildset_properties)),
    r("builders/n:builderid/builds/n:build_number/properties", S, "property", NONE, h!(build_properties)),
    r("builds/n:buildid/properties", S, "property", NONE, h!(build_properties)),
    r("builds/n:buildid/property_list", C, "_property", NONE, h!(build_property_list)),
    r("buildsets/n:bsid/properties_list", C, "_property", NONE, h!(buildset_property_list)),
    r("changes/n:changeid/properties_list", C, "_property", NONE, h!(change_property_list)),
    // The root and the spec.
    r("", C, "rootlink", NONE, h!(root_links)),
    r("application.spec", C, "spec", NONE, h!(application_spec)),
    // Schedulers.
    r("schedulers/n:schedulerid", S, "scheduler", &["enable"], h!(scheduler_one)),
    r("masters/n:masterid/schedulers/n:schedulerid", S, "scheduler", &["enable"], h!(scheduler_one)),
    r("schedulers", C, "scheduler", NONE, h!(scheduler_list)),
    r("masters/n:masterid/schedulers", C, "scheduler", NONE, h!(scheduler_list)),
    // Source stamps.
    r("sourcestamps/n:ssid", S, "sourcestamp", NONE, h!(sourcestamp_one)),
    r("sourcestamps", C, "sourcestamp", NONE, h!(sourcestamp_list)),
    r("buildsets/:buildsetid/sourcestamps", C, "sourcestamp", NONE, h!(sourcestamps_of_buildset)),
    // Steps.
    r("steps/n:stepid", S, "step", NONE, h!(step_one)),
    r("builds/n:buildid/steps/i:step_name", S, "step", NONE, h!(step_one)),
    r("builds/n:buildid/steps/n:step_number", S, "step", NONE, h!(step_one)),
    r("builders/n:builderid/builds/n:build_number/steps/i:step_name", S, "step", NONE, h!(step_one)),
    r("builders/n:builderid/builds/n:build_number/steps/n:step_number", S, "step", NONE, h!(step_one)),
    r("builders/s:buildername/builds/n:build_number/steps/i:step_name", S, "step", NONE, h!(step_one)),
    r("builders/s:buildername/builds/n:build_number/steps/n:step_number", S, "step", NONE, h!(step_one)),
    r("builds/n:buildid/steps", C, "step", NONE, h!(step_list)),
    r("builders/n:builderid/builds/n:build_number/steps", C, "step", NONE, h!(step_list)),
    r("builders/s:buildername/builds/n:build_number/steps", C, "step", NONE, h!(step_list)),
    // Test results.
    r("test_result_sets", C, "test_result_set", NONE, h!(test_result_set_list)),
    r("builders/n:builderid/test_result_sets", C, "test_result_set", NONE, h!(test_result_set_list)),
    r("builders/s:buildername/test_result_sets", C, "test_result_set", NONE, h!(test_result_set_list)),
    r("builds/n:buildid/test_result_sets", C, "test_result_set", NONE, h!(test_result_set_list)),
    r("steps/n:stepid/test_result_sets", C, "test_result_set", NONE, h!(test_result_set_list)),
    r("codebases/n:codebaseid/commit_range/n:commitid1/n:commitid2/test_result_sets", C, "test_result_set", NONE, h!(none_list)),
    r("test_result_sets/n:test_result_setid", S, "test_result_set", NONE, h!(test_result_set_one)),
    r("test_result_sets/n:test_result_setid/results", C, "test_result", NONE, h!(test_result_list)),
    // Workers.
    r("workers/n:workerid", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("workers/i:name", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("masters/n:masterid/workers/n:workerid", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("masters/n:masterid/workers/i:name", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("masters/n:masterid/builders/n:builderid/workers/n:workerid", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("masters/n:masterid/builders/n:builderid/workers/i:name", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("builders/n:builderid/workers/n:workerid", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("builders/n:builderid/workers/i:name", S, "worker", WORKER_ACTIONS, h!(worker_one)),
    r("workers", C, "worker", NONE, h!(worker_list)),
    r("masters/n:masterid/workers", C, "worker", NONE, h!(worker_list)),
    r("masters/n:masterid/builders/n:builderid/workers", C, "worker", NONE, h!(worker_list)),
    r("builders/n:builderid/workers", C, "worker", NONE, h!(worker_list)),
    // moonbot's own.
    r("artifacts", C, "artifact", NONE, h!(artifact_list)),
    r("builds/n:buildid/artifacts", C, "artifact", NONE, h!(artifact_list)),
    r("artifacts/n:artifactid", S, "artifact", NONE, h!(artifact_one)),
    r("artifacts/n:artifactid/files", C, "artifact_file", NONE, h!(artifact_files)),
    r("janitor_passes", C, "janitor_pass", NONE, h!(janitor_pass_list)),
    r("config", S, "config", &["reload", "diff"], h!(config_one)),
    r("config/reloads", C, "reload", NONE, h!(reload_list)),
    r("reporters", C, "reporter", NONE, h!(reporter_list)),
    r("reporters/s:reportername", S, "reporter", NONE, h!(reporter_one)),
];

/// How many of [`ROUTES`] are Buildbot's (the rest are moonbot's own).
#[cfg(test)]
const BUILDBOT_ROUTES: usize = 138;

// ---- Resolving a path's captures ----------------------------------------

fn missing(what: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("{what} not found"))
}

/// The builder a path names (`builderid` or `buildername`), among the
/// configured ones.
fn builder_id(c: &Call<'_>, running: &RunningConfig) -> Result<Option<i64>, ApiError> {
    if let Some(id) = c.args.num("builderid") {
        return if running.builder_ids.values().any(|v| *v == id) {
            Ok(Some(id))
        } else {
            Err(missing(format_args!("builder {id}")))
        };
    }
    match c.args.text("buildername") {
        Some(name) => running
            .builder_ids
            .get(name)
            .copied()
            .map(Some)
            .ok_or_else(|| missing(format_args!("builder '{}'", name.escape_debug()))),
        None => Ok(None),
    }
}

/// The build a path names: `buildid`, or a builder and `build_number`.
pub(super) async fn build_id(c: &Call<'_>) -> Result<Option<i64>, ApiError> {
    if let Some(id) = c.args.num("buildid") {
        return Ok(Some(id));
    }
    let Some(number) = c.args.num("build_number") else {
        return Ok(None);
    };
    let builderid = builder_id(c, &c.shared.running_config())?.unwrap_or(0);
    let q = ListQuery::default()
        .with_eq("builderid", builderid)
        .with_eq("number", number);
    let (found, _) = c.shared.data.list_builds(&q, false).await?;
    found
        .first()
        .and_then(|b| b["buildid"].as_i64())
        .map(Some)
        .ok_or_else(|| missing(format_args!("build {number} of builder {builderid}")))
}

/// A build that must exist (for what hangs under it).
async fn existing_build(c: &Call<'_>) -> Result<i64, ApiError> {
    let buildid = build_id(c).await?.unwrap_or(0);
    let q = ListQuery::default().with_eq("buildid", buildid);
    if c.shared.data.list_builds(&q, false).await?.0.is_empty() {
        return Err(missing(format_args!("build {buildid}")));
    }
    Ok(buildid)
}

/// The step a path names: `stepid`, or a build and `step_number` or `step_name`.
async fn step_id(c: &Call<'_>) -> Result<Option<i64>, ApiError> {
    if let Some(id) = c.args.num("stepid") {
        return Ok(Some(id));
    }
    let q = match (c.args.num("step_number"), c.args.text("step_name")) {
        (Some(n), _) => ListQuery::default().with_eq("number", n),
        (None, Some(name)) => ListQuery::default().with_eq("name", name),
        (None, None) => return Ok(None),
    };
    let Some(buildid) = build_id(c).await? else {
        return Ok(None);
    };
    let (found, _) = c
        .shared
        .data
        .list_steps(&q.with_eq("buildid", buildid))
        .await?;
    found
        .first()
        .and_then(|s| s["stepid"].as_i64())
        .map(Some)
        .ok_or_else(|| missing(format_args!("that step of build {buildid}")))
}

/// The log a path names: `logid`, or a step and `log_slug`.
async fn log_id(c: &Call<'_>) -> Result<i64, ApiError> {
    if let Some(id) = c.args.num("logid") {
        return Ok(id);
    }
    if let (Some(slug), Some(stepid)) = (c.args.text("log_slug"), step_id(c).await?) {
        let q = ListQuery::default()
            .with_eq("stepid", stepid)
            .with_eq("slug", slug);
        let (found, _) = c.shared.data.list_logs(&q).await?;
        return found
            .first()
            .and_then(|l| l["logid"].as_i64())
            .ok_or_else(|| {
                missing(format_args!(
                    "log '{}' of step {stepid}",
                    slug.escape_debug()
                ))
            });
    }
    // `/logchunks?logid=N`.
    c.q.filters
        .iter()
        .find(|f| f.field == "logid")
        .and_then(|f| f.values.first())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("which log? give logid=N"))
}

/// Whether the path's `masterid` (if any) is this master: `Ok(false)` for
/// another known master (which runs none of this master's services here),
/// 404 for an unknown one.
async fn on_this_master(c: &Call<'_>) -> Result<bool, ApiError> {
    let Some(masterid) = c.args.num("masterid") else {
        return Ok(true);
    };
    if masterid == c.shared.data.masterid {
        return Ok(true);
    }
    let masters = c.shared.data.masters_json().await?;
    if masters
        .iter()
        .any(|m| m["masterid"].as_i64() == Some(masterid))
    {
        Ok(false)
    } else {
        Err(missing(format_args!("master {masterid}")))
    }
}

/// The worker a path names (`workerid` or `name`), among the configured ones.
pub(super) fn worker_name(
    c: &Call<'_>,
    running: &RunningConfig,
) -> Result<Option<(String, i64)>, ApiError> {
    let found = if let Some(id) = c.args.num("workerid") {
        running.worker_ids.iter().find(|(_, v)| **v == id)
    } else if let Some(name) = c.args.text("name") {
        running.worker_ids.get_key_value(name)
    } else {
        return Ok(None);
    };
    found
        .map(|(n, id)| Some((n.clone(), *id)))
        .ok_or_else(|| missing("worker"))
}

fn one(items: Vec<Value>) -> Answer {
    Answer::One(items.into_iter().next())
}

fn list((items, total): (Vec<Value>, u64)) -> Answer {
    Answer::List(items, total)
}

fn all(items: Vec<Value>) -> Answer {
    let total = items.len() as u64;
    Answer::List(items, total)
}

// ---- Handlers ---------------------------------------------------------------

async fn none_list(_: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(Answer::List(Vec::new(), 0))
}

async fn none_one(_: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(Answer::One(None))
}

async fn build_data_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    existing_build(c).await?;
    Ok(Answer::List(Vec::new(), 0))
}

async fn build_data_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    existing_build(c).await?;
    Ok(Answer::One(None))
}

async fn root_links(_: &Call<'_>) -> Result<Answer, ApiError> {
    let mut names: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.kind == Kind::Collection && !r.pattern.is_empty() && !r.pattern.contains('/'))
        .map(|r| r.pattern)
        .collect();
    names.dedup();
    Ok(all(names.into_iter().map(|n| json!({"name": n})).collect()))
}

async fn application_spec(_: &Call<'_>) -> Result<Answer, ApiError> {
    let mut rows: Vec<&Route> = ROUTES.iter().collect();
    rows.sort_by_key(|r| r.pattern);
    Ok(all(rows
        .into_iter()
        .map(|r| {
            let entity = super::spec::entity(r.entity);
            json!({
                "path": r.pattern,
                "type": r.entity,
                "plural": entity.and_then(|e| e.plural).unwrap_or(r.entity),
                "type_spec": entity.map(|e| e.spec()).unwrap_or(Value::Null),
            })
        })
        .collect()))
}

async fn builder_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let id = builder_id(c, &running)?.unwrap_or(0);
    if !on_this_master(c).await? {
        return Ok(Answer::One(None));
    }
    let q = c.q.clone().with_eq("builderid", id).whole();
    Ok(one(c
        .shared
        .data
        .list_builders(&q, &running.builder_ids)
        .await?
        .0))
}

async fn builder_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    if c.args.has("projectid") || !on_this_master(c).await? {
        return Ok(Answer::List(Vec::new(), 0));
    }
    let mut configured = running.builder_ids.clone();
    if let Some((worker, _)) = worker_name(c, &running)? {
        let serving: Vec<&str> = running
            .loaded
            .config
            .builders
            .iter()
            .filter(|b| b.workernames.contains(&worker))
            .map(|b| b.name.as_str())
            .collect();
        configured.retain(|name, _| serving.contains(&name.as_str()));
    }
    Ok(list(c.shared.data.list_builders(&c.q, &configured).await?))
}

async fn buildrequest_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let id = c.args.num("buildrequestid").unwrap_or(0);
    let q = c.q.clone().with_eq("buildrequestid", id).whole();
    Ok(one(c.shared.data.list_buildrequests(&q).await?.0))
}

async fn buildrequest_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let mut q = c.q.clone();
    if let Some(id) = builder_id(c, &c.shared.running_config())? {
        q = q.with_eq("builderid", id);
    }
    Ok(list(c.shared.data.list_buildrequests(&q).await?))
}

async fn build_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let id = build_id(c).await?.unwrap_or(0);
    let q = c.q.clone().with_eq("buildid", id).whole();
    Ok(one(c.shared.data.list_builds(&q, c.with_props).await?.0))
}

async fn build_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let mut q = c.q.clone();
    if let Some(id) = builder_id(c, &c.shared.running_config())? {
        q = q.with_eq("builderid", id);
    }
    if let Some(id) = c.args.num("buildrequestid") {
        q = q.with_eq("buildrequestid", id);
    }
    if let Some(id) = c.args.num("workerid") {
        q = q.with_eq("workerid", id);
    }
    Ok(list(c.shared.data.list_builds(&q, c.with_props).await?))
}

async fn triggered_builds(c: &Call<'_>) -> Result<Answer, ApiError> {
    let buildid = existing_build(c).await?;
    Ok(all(c
        .shared
        .data
        .triggered_builds(buildid, c.q.clone())
        .await?))
}

async fn builds_of_change(c: &Call<'_>) -> Result<Answer, ApiError> {
    let changeid = c.args.num("changeid").unwrap_or(0);
    let whole = ListQuery::default().with_eq("changeid", changeid);
    let (found, _) = c.shared.data.list_changes(&whole).await?;
    let change = found
        .first()
        .ok_or_else(|| missing(format_args!("change {changeid}")))?;
    let ssids: Vec<i64> = change["sourcestamp"]["ssid"].as_i64().into_iter().collect();
    Ok(all(c
        .shared
        .data
        .builds_of_sourcestamps(&ssids, c.q.clone(), c.with_props)
        .await?))
}

async fn buildset_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let q =
        c.q.clone()
            .with_eq("bsid", c.args.num("bsid").unwrap_or(0))
            .whole();
    Ok(one(c.shared.data.list_buildsets(&q).await?.0))
}

async fn buildset_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(list(c.shared.data.list_buildsets(&c.q).await?))
}

async fn change_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let q =
        c.q.clone()
            .with_eq("changeid", c.args.num("changeid").unwrap_or(0))
            .whole();
    Ok(one(c.shared.data.list_changes(&q).await?.0))
}

async fn change_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let mut q = c.q.clone();
    if let Some(ssid) = c.args.num("ssid") {
        q = q.with_eq("sourcestampid", ssid);
    }
    Ok(list(c.shared.data.list_changes(&q).await?))
}

async fn changes_of_build(c: &Call<'_>) -> Result<Answer, ApiError> {
    let buildid = build_id(c).await?.unwrap_or(0);
    let items = c
        .shared
        .data
        .changes_of_build(buildid, c.q.clone())
        .await?
        .ok_or_else(|| missing(format_args!("build {buildid}")))?;
    Ok(all(items))
}

/// The names of the change sources the running configuration lists.
fn running_sources(running: &RunningConfig) -> Vec<&str> {
    running
        .loaded
        .config
        .change_sources
        .iter()
        .map(|s| s.name())
        .collect()
}

async fn changesource_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let here = on_this_master(c).await?;
    let id = c.args.num("changesourceid").unwrap_or(0);
    let q = c.q.clone().with_eq("changesourceid", id).whole();
    let (items, _) = c
        .shared
        .data
        .list_changesources(&q, &running_sources(&running))
        .await?;
    Ok(one(items
        .into_iter()
        .filter(|s| here || !s["master"].is_null())
        .collect()))
}

async fn changesource_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let names = running_sources(&running);
    let mut q = c.q.clone();
    if c.args.has("masterid") {
        if !on_this_master(c).await? {
            return Ok(Answer::List(Vec::new(), 0));
        }
        q = q.with_any("name", names.iter());
    }
    Ok(list(c.shared.data.list_changesources(&q, &names).await?))
}

async fn forcescheduler_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let name = c.args.text("schedulername").unwrap_or_default();
    let items = super::force_schedulers(c.shared, &c.shared.running_config())
        .into_iter()
        .filter(|s| s["name"] == name)
        .collect();
    Ok(one(items))
}

async fn forcescheduler_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let mut items = super::force_schedulers(c.shared, &running);
    if let Some(id) = builder_id(c, &running)? {
        let name = running.builder_name(id).unwrap_or_default().to_string();
        items.retain(|s| {
            s["builder_names"]
                .as_array()
                .is_some_and(|b| b.iter().any(|n| *n == name))
        });
    }
    Ok(all(items))
}

async fn logchunks(c: &Call<'_>) -> Result<Answer, ApiError> {
    // `/logchunks` alone names no log: no chunks.
    if c.args.0.is_empty() && !c.q.filters.iter().any(|f| f.field == "logid") {
        return Ok(Answer::List(Vec::new(), 0));
    }
    let logid = log_id(c).await?;
    let offset = c.q.offset.unwrap_or(0) as i64;
    let limit = c.q.limit.map(|l| l as i64);
    let (firstline, content) = c.shared.data.log_lines(logid, offset, limit).await?;
    Ok(Answer::List(
        vec![json!({"logid": logid, "firstline": firstline, "content": content})],
        1,
    ))
}

async fn log_raw(c: &Call<'_>) -> Result<Answer, ApiError> {
    let logid = log_id(c).await?;
    let (slug, pieces) = c.shared.data.log_raw(logid).await?;
    Ok(Answer::Raw(super::log_text(
        slug,
        pieces,
        c.route_kind == Kind::Raw,
    )))
}

async fn log_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let q = c.q.clone().with_eq("logid", log_id(c).await?).whole();
    Ok(one(c.shared.data.list_logs(&q).await?.0))
}

async fn log_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let stepid = step_id(c).await?.unwrap_or(0);
    Ok(list(
        c.shared
            .data
            .list_logs(&c.q.clone().with_eq("stepid", stepid))
            .await?,
    ))
}

async fn master_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    builder_id(c, &c.shared.running_config())?;
    let masterid = c.args.num("masterid");
    let builder_here = c.args.has("builderid");
    let items = c
        .shared
        .data
        .masters_json()
        .await?
        .into_iter()
        .filter(|m| m["masterid"].as_i64() == masterid)
        .filter(|m| !builder_here || m["masterid"].as_i64() == Some(c.shared.data.masterid))
        .collect();
    Ok(one(items))
}

async fn master_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let mut items = c.shared.data.masters_json().await?;
    if builder_id(c, &c.shared.running_config())?.is_some() {
        // A builder is configured on the masters that run it: this one.
        items.retain(|m| m["masterid"].as_i64() == Some(c.shared.data.masterid));
    }
    Ok(all(items))
}

async fn build_properties(c: &Call<'_>) -> Result<Answer, ApiError> {
    let buildid = existing_build(c).await?;
    Ok(Answer::One(Some(
        c.shared.data.build_properties(buildid).await?,
    )))
}

/// A buildset's properties, name → (value, source); 404 if it does not exist.
async fn buildset_props(c: &Call<'_>) -> Result<BTreeMap<String, (Value, String)>, ApiError> {
    let bsid = c.args.num("bsid").unwrap_or(0);
    let q = ListQuery::default().with_eq("bsid", bsid).whole();
    if c.shared.data.list_buildsets(&q).await?.0.is_empty() {
        return Err(missing(format_args!("buildset {bsid}")));
    }
    Ok(c.shared.data.buildset_properties(bsid).await?)
}

async fn buildset_properties(c: &Call<'_>) -> Result<Answer, ApiError> {
    // Buildbot's shape: one object, name → [value, source].
    let props: serde_json::Map<String, Value> = buildset_props(c)
        .await?
        .into_iter()
        .map(|(name, (value, source))| (name, json!([value, source])))
        .collect();
    Ok(Answer::One(Some(Value::Object(props))))
}

/// `{name: [value, source]}` as Buildbot's property list.
fn property_list(props: &Value) -> Vec<Value> {
    props
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(name, vs)| json!({"name": name, "value": vs[0], "source": vs[1]}))
                .collect()
        })
        .unwrap_or_default()
}

async fn build_property_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let buildid = existing_build(c).await?;
    Ok(all(property_list(
        &c.shared.data.build_properties(buildid).await?,
    )))
}

async fn buildset_property_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let items = buildset_props(c)
        .await?
        .into_iter()
        .map(|(name, (value, source))| json!({"name": name, "value": value, "source": source}))
        .collect();
    Ok(all(items))
}

async fn change_property_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let changeid = c.args.num("changeid").unwrap_or(0);
    let q = ListQuery::default().with_eq("changeid", changeid).whole();
    let (found, _) = c.shared.data.list_changes(&q).await?;
    let change = found
        .first()
        .ok_or_else(|| missing(format_args!("change {changeid}")))?;
    Ok(all(property_list(&change["properties"])))
}

/// The names of the schedulers the running configuration lists.
pub(super) fn running_schedulers(running: &RunningConfig) -> Vec<&str> {
    running
        .loaded
        .config
        .schedulers
        .iter()
        .map(|s| s.name())
        .collect()
}

async fn scheduler_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let here = on_this_master(c).await?;
    let id = c.args.num("schedulerid").unwrap_or(0);
    let q = c.q.clone().with_eq("schedulerid", id).whole();
    let (items, _) = c
        .shared
        .data
        .list_schedulers(&q, &running_schedulers(&running))
        .await?;
    Ok(one(items
        .into_iter()
        .filter(|s| here || !s["master"].is_null())
        .collect()))
}

async fn scheduler_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let names = running_schedulers(&running);
    let mut q = c.q.clone();
    if c.args.has("masterid") {
        if !on_this_master(c).await? {
            return Ok(Answer::List(Vec::new(), 0));
        }
        q = q.with_any("name", names.iter());
    }
    Ok(list(c.shared.data.list_schedulers(&q, &names).await?))
}

async fn sourcestamp_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let q =
        c.q.clone()
            .with_eq("ssid", c.args.num("ssid").unwrap_or(0))
            .whole();
    Ok(one(c.shared.data.list_sourcestamps(&q).await?.0))
}

async fn sourcestamp_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(list(c.shared.data.list_sourcestamps(&c.q).await?))
}

async fn sourcestamps_of_buildset(c: &Call<'_>) -> Result<Answer, ApiError> {
    let bsid = c.args.num("buildsetid").unwrap_or(0);
    Ok(all(c.shared.data.buildset_sourcestamps(bsid).await?))
}

async fn step_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let stepid = step_id(c).await?.unwrap_or(0);
    let q = c.q.clone().with_eq("stepid", stepid).whole();
    Ok(one(c.shared.data.list_steps(&q).await?.0))
}

async fn step_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let buildid = build_id(c).await?.unwrap_or(0);
    Ok(list(
        c.shared
            .data
            .list_steps(&c.q.clone().with_eq("buildid", buildid))
            .await?,
    ))
}

async fn test_result_set_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let mut q = c.q.clone();
    if let Some(id) = builder_id(c, &c.shared.running_config())? {
        q = q.with_eq("builderid", id);
    }
    if let Some(id) = build_id(c).await? {
        q = q.with_eq("buildid", id);
    }
    if let Some(id) = c.args.num("stepid") {
        q = q.with_eq("stepid", id);
    }
    Ok(list(c.shared.data.list_test_result_sets(&q).await?))
}

async fn test_result_set_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let id = c.args.num("test_result_setid").unwrap_or(0);
    let q = c.q.clone().with_eq("test_result_setid", id).whole();
    Ok(one(c.shared.data.list_test_result_sets(&q).await?.0))
}

async fn test_result_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let id = c.args.num("test_result_setid").unwrap_or(0);
    Ok(list(
        c.shared
            .data
            .list_test_results(&c.q.clone().with_eq("test_result_setid", id))
            .await?,
    ))
}

/// The configured workers a path allows: all, or those of its builder;
/// none under another master.
async fn workers_here(
    c: &Call<'_>,
    running: &RunningConfig,
) -> Result<BTreeMap<String, i64>, ApiError> {
    let mut configured = running.worker_ids.clone();
    if !on_this_master(c).await? {
        configured.clear();
    }
    if let Some(id) = builder_id(c, running)? {
        let names: Vec<String> = running
            .loaded
            .config
            .builders
            .iter()
            .filter(|b| running.builder_ids.get(&b.name) == Some(&id))
            .flat_map(|b| b.workernames.iter().cloned())
            .collect();
        configured.retain(|name, _| names.contains(name));
    }
    Ok(configured)
}

/// Buildbot's `configured_on`: each (master, builder) the worker serves.
fn with_configured_on(c: &Call<'_>, running: &RunningConfig, mut items: Vec<Value>) -> Vec<Value> {
    for item in &mut items {
        let name = item["name"].as_str().unwrap_or_default();
        item["configured_on"] = running
            .loaded
            .config
            .builders
            .iter()
            .filter(|b| b.workernames.iter().any(|w| w == name))
            .filter_map(|b| running.builder_ids.get(&b.name))
            .map(|id| json!({"masterid": c.shared.data.masterid, "builderid": id}))
            .collect();
    }
    items
}

async fn worker_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let Some((name, id)) = worker_name(c, &running)? else {
        return Ok(Answer::One(None));
    };
    let configured = workers_here(c, &running).await?;
    if !configured.contains_key(&name) {
        return Ok(Answer::One(None));
    }
    let q = c.q.clone().with_eq("workerid", id).whole();
    let items = c.shared.data.list_workers(&q, &configured).await?.0;
    Ok(one(with_configured_on(c, &running, items)))
}

async fn worker_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let running = c.shared.running_config();
    let configured = workers_here(c, &running).await?;
    let (items, total) = c.shared.data.list_workers(&c.q, &configured).await?;
    Ok(Answer::List(with_configured_on(c, &running, items), total))
}

async fn artifact_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    let mut q = c.q.clone();
    if let Some(id) = c.args.num("buildid") {
        q = q.with_eq("buildid", id);
    }
    Ok(list(c.shared.data.list_artifacts(&q).await?))
}

async fn artifact_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    let id = c.args.num("artifactid").unwrap_or(0);
    let q = c.q.clone().with_eq("artifactid", id).whole();
    Ok(one(c.shared.data.list_artifacts(&q).await?.0))
}

async fn artifact_files(c: &Call<'_>) -> Result<Answer, ApiError> {
    let id = c.args.num("artifactid").unwrap_or(0);
    Ok(all(super::artifact_files(c.shared, id).await?))
}

async fn janitor_pass_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(list(c.shared.data.list_janitor_passes(&c.q).await?))
}

async fn config_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(Answer::One(Some(super::config_json(c.shared).await?)))
}

/// The configured reporters, each with its queue and record.
async fn reporters(c: &Call<'_>, only: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let configured: Vec<(String, &'static str, Vec<String>)> = c
        .shared
        .running_config()
        .loaded
        .config
        .reporters
        .iter()
        .filter(|r| only.is_none_or(|n| n == r.name))
        .map(|r| {
            let generators = r.generators.iter().map(|g| g.describe()).collect();
            (r.name.clone(), r.class_name(), generators)
        })
        .collect();
    let mut out = Vec::new();
    for (name, kind, generators) in configured {
        let mut item = c.shared.data.reporter_record(&name).await?;
        item["name"] = name.into();
        item["kind"] = kind.into();
        item["generators"] = generators.into();
        out.push(item);
    }
    Ok(out)
}

async fn reporter_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(all(reporters(c, None).await?))
}

async fn reporter_one(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(one(reporters(c, c.args.text("reportername")).await?))
}

async fn reload_list(c: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(list(c.shared.data.list_reloads(&c.q).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildbot_paths_come_first_and_once() {
        let mut seen = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(
                seen.insert(route.pattern),
                "{} is listed twice",
                route.pattern
            );
            assert!(
                super::super::spec::entity(route.entity).is_some(),
                "{} answers '{}', which the spec does not describe",
                route.pattern,
                route.entity
            );
        }
        assert!(ROUTES.len() > BUILDBOT_ROUTES);
        assert_eq!(ROUTES[BUILDBOT_ROUTES].pattern, "artifacts");
    }
}
