//! Which events a reporter reports (its `generators`, Buildbot's report
//! generators), and the build each report describes.
//!
//! - `build_start_end`: every build of the generator's builders, tags and
//!   branches, when it starts and when it ends.
//! - `build_status`: a finished build whose result is one of the `mode`s:
//!   `failing`, `passing`, `warnings`, `exception`, `cancelled`, `all`;
//!   `problem` (it failed, and the previous build of its builder and branch
//!   did not) and `change` (its result differs from that previous build's).
//! - `buildset`: a finished buildset, in one message with those of its
//!   builds that the filters and modes take (none: no message);
//!   `buildset_combined`: every finished buildset with all its builds.
//! - `worker_missing`: a worker that stayed away longer than its
//!   `missing_timeout`.
//!
//! The build generators and `buildset` take `builders`, `tags`, `branches`
//! and `schedulers` filters.

use crate::config::ReporterConfig;
use crate::config::reporters::{GeneratorConfig, GeneratorKind, Mode, Use};
use crate::data::DataError;
use crate::data::query::{Filter, ListQuery, Op};
use crate::data::reports::{ReportEvent, ReportEvents};
use crate::results::{CANCELLED, EXCEPTION, FAILURE, SUCCESS, WARNINGS};
use crate::shared::Shared;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// One message to send: a build (or a queued request), as it is at the event.
#[derive(Debug, Clone)]
pub struct Report {
    /// `queued`, `started` or `finished`.
    pub event: &'static str,
    /// The build as the API shows it, with its properties, its builder
    /// (`builder`: id, name, tags) and its page (`url`); for `queued`, the
    /// request's `buildrequestid`, `buildsetid`, builder, properties and its
    /// builder's page.
    pub build: Value,
    /// What it builds (repository, revision, branch, codebase).
    pub sourcestamps: Vec<Value>,
}

impl Report {
    /// What a formatter gets: the build (buildset, worker) with `event`.
    pub fn table(&self) -> Value {
        let mut table = self.build.clone();
        table["event"] = self.event.into();
        table
    }

    /// What the report is about, as a queue's order key: one build's (or
    /// buildset's, or worker's) messages go out in order.
    pub fn subject_key(&self) -> String {
        match self.event {
            "buildset" => format!("buildset:{}", self.build["bsid"]),
            "worker_missing" => format!("worker:{}", self.build["workerid"]),
            _ => format!("build:{}", self.build["buildid"]),
        }
    }
}

/// The reports `config`'s generators make of one event (at most one per
/// build: two generators that both match send one message).
pub async fn reports(
    shared: &Shared,
    config: &ReporterConfig,
    kind: ReportEvent,
    objectid: i64,
    usage: Use,
    sources: bool,
) -> Result<Vec<Report>, DataError> {
    let event = match kind {
        ReportEvent::BuildStarted => "started",
        ReportEvent::BuildFinished => "finished",
        ReportEvent::BuildsetNew if usage == Use::Statuses => {
            return queued(shared, config, objectid).await;
        }
        ReportEvent::BuildsetNew => return Ok(Vec::new()),
        ReportEvent::BuildsetComplete => {
            return Ok(buildset(shared, config, objectid, sources)
                .await?
                .into_iter()
                .collect());
        }
        ReportEvent::WorkerMissing => {
            return Ok(worker_missing(shared, config, objectid)
                .await?
                .into_iter()
                .collect());
        }
    };
    if !events_taken(config).contains(kind) {
        return Ok(Vec::new());
    }
    let Some(build) = build_at(shared, kind, objectid).await? else {
        return Ok(Vec::new());
    };
    let mut wanted = false;
    for g in &config.generators {
        if !g.kind.is_per_build() || !selects(g, &build) {
            continue;
        }
        wanted = match (&g.kind, usage) {
            (_, Use::Statuses) | (GeneratorKind::BuildStartEnd, _) => true,
            (GeneratorKind::BuildStatus(modes), Use::Messages) => {
                event == "finished" && status_wanted(shared, modes, &build).await?
            }
            (
                GeneratorKind::Buildset(_)
                | GeneratorKind::BuildsetCombined
                | GeneratorKind::WorkerMissing(_),
                Use::Messages,
            ) => false,
        };
        if wanted {
            break;
        }
    }
    if !wanted {
        return Ok(Vec::new());
    }
    let sourcestamps = if sources {
        shared
            .data
            .build_sourcestamps(&build)
            .await?
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(vec![Report {
        event,
        build,
        sourcestamps,
    }])
}

/// The kinds of event `config`'s generators take: a status every state of
/// a build (queued, started, finished); `build_start_end` a build's start
/// and end, `build_status` only its end (a reporter of results neither
/// reads nor looks at a build as it starts); the buildset generators a
/// finished buildset; `worker_missing` a missing worker. The master records
/// only the kinds some reporter takes.
pub fn events_taken(config: &ReporterConfig) -> ReportEvents {
    if config.kind.usage() == Use::Statuses {
        return [
            ReportEvent::BuildsetNew,
            ReportEvent::BuildStarted,
            ReportEvent::BuildFinished,
        ]
        .into_iter()
        .collect();
    }
    config
        .generators
        .iter()
        .flat_map(|g| match g.kind {
            GeneratorKind::BuildStartEnd => {
                &[ReportEvent::BuildStarted, ReportEvent::BuildFinished][..]
            }
            GeneratorKind::BuildStatus(_) => &[ReportEvent::BuildFinished][..],
            GeneratorKind::Buildset(_) | GeneratorKind::BuildsetCombined => {
                &[ReportEvent::BuildsetComplete][..]
            }
            GeneratorKind::WorkerMissing(_) => &[ReportEvent::WorkerMissing][..],
        })
        .copied()
        .collect()
}

/// A new buildset's requests, one report each (for the generators'
/// builders): what a commit status shows as pending.
async fn queued(
    shared: &Shared,
    config: &ReporterConfig,
    bsid: i64,
) -> Result<Vec<Report>, DataError> {
    let q = ListQuery::default().with_eq("buildsetid", bsid);
    let (requests, _) = shared.data.list_buildrequests(&q).await?;
    let sourcestamps = shared.data.buildset_sourcestamps(bsid).await?;
    let properties: serde_json::Map<String, Value> = shared
        .data
        .buildset_properties(bsid)
        .await?
        .into_iter()
        .map(|(name, (value, source))| (name, json!([value, source])))
        .collect();
    let mut out = Vec::new();
    for r in requests {
        let builderid = r["builderid"].as_i64().unwrap_or(0);
        let mut item = json!({
            "buildrequestid": r["buildrequestid"],
            "buildsetid": bsid,
            "builderid": builderid,
            "number": null,
            "results": null,
            "properties": properties,
        });
        describe_builder(
            shared,
            &mut item,
            builderid,
            &format!("builders/{builderid}"),
        );
        if config.generators.iter().any(|g| selects(g, &item)) {
            out.push(Report {
                event: "queued",
                build: item,
                sourcestamps: sourcestamps.clone(),
            });
        }
    }
    Ok(out)
}

/// A finished buildset, for the first buildset generator that reports it:
/// the buildset as the API shows it with `builds` (those the generator's
/// filters and modes take; `buildset_combined`: all) and `url` (its first
/// build's page).
async fn buildset(
    shared: &Shared,
    config: &ReporterConfig,
    bsid: i64,
    sources: bool,
) -> Result<Option<Report>, DataError> {
    let generators: Vec<&GeneratorConfig> = config
        .generators
        .iter()
        .filter(|g| {
            matches!(
                g.kind,
                GeneratorKind::Buildset(_) | GeneratorKind::BuildsetCombined
            )
        })
        .collect();
    if generators.is_empty() {
        return Ok(None);
    }
    let q = ListQuery::default().with_eq("bsid", bsid);
    let Some(mut set) = shared.data.list_buildsets(&q).await?.0.into_iter().next() else {
        return Ok(None);
    };
    let q = ListQuery::default().with_eq("buildsetid", bsid).whole();
    let (requests, _) = shared.data.list_buildrequests(&q).await?;
    let mut builds = Vec::new();
    if !requests.is_empty() {
        let mut q = ListQuery {
            order: vec![("buildid".into(), false)],
            ..Default::default()
        }
        .whole();
        q.filters.push(Filter {
            field: "buildrequestid".into(),
            op: Op::Eq,
            values: requests
                .iter()
                .map(|r| r["buildrequestid"].to_string())
                .collect(),
        });
        for mut build in shared.data.list_builds(&q, true).await?.0 {
            let buildid = build["buildid"].as_i64().unwrap_or(0);
            let builderid = build["builderid"].as_i64().unwrap_or(0);
            describe_builder(shared, &mut build, builderid, &format!("builds/{buildid}"));
            builds.push(build);
        }
    }
    for g in generators {
        let taken = match &g.kind {
            GeneratorKind::Buildset(modes) => {
                let mut taken = Vec::new();
                for b in &builds {
                    if selects(g, b) && status_wanted(shared, modes, b).await? {
                        taken.push(b.clone());
                    }
                }
                taken
            }
            _ => builds.clone(),
        };
        if taken.is_empty() {
            continue;
        }
        set["url"] = taken[0]["url"].clone();
        set["builds"] = Value::Array(taken);
        let sourcestamps = if sources {
            shared.data.buildset_sourcestamps(bsid).await?
        } else {
            Vec::new()
        };
        return Ok(Some(Report {
            event: "buildset",
            build: set,
            sourcestamps,
        }));
    }
    Ok(None)
}

/// A worker gone longer than its `missing_timeout`, if a `worker_missing`
/// generator takes it: the worker as the API shows it, with the addresses
/// master.lua gives to tell (`notify`), its `missing_timeout` and `url`.
async fn worker_missing(
    shared: &Shared,
    config: &ReporterConfig,
    workerid: i64,
) -> Result<Option<Report>, DataError> {
    let Some(mut worker) = shared.data.worker_json(workerid).await? else {
        return Ok(None);
    };
    let name = worker["name"].as_str().unwrap_or_default().to_string();
    let wanted = config.generators.iter().any(|g| match &g.kind {
        GeneratorKind::WorkerMissing(workers) => workers.is_empty() || workers.contains(&name),
        _ => false,
    });
    if !wanted {
        return Ok(None);
    }
    let running = shared.running_config();
    let Some(cfg) = running.loaded.config.worker(&name) else {
        return Ok(None);
    };
    worker["notify"] = json!(cfg.notify_on_missing);
    worker["missing_timeout"] = cfg.missing_timeout_s.into();
    worker["url"] = page_url(&running, &format!("workers/{workerid}")).into();
    Ok(Some(Report {
        event: "worker_missing",
        build: worker,
        sourcestamps: Vec::new(),
    }))
}

/// Add `builder` (id, name, tags) and `url` (`page` under `buildbot_url`).
fn describe_builder(shared: &Shared, item: &mut Value, builderid: i64, page: &str) {
    let running = shared.running_config();
    let name = running
        .builder_name(builderid)
        .unwrap_or_default()
        .to_string();
    let tags = running
        .loaded
        .config
        .builder(&name)
        .map(|b| b.tags.clone())
        .unwrap_or_default();
    item["builder"] = json!({"builderid": builderid, "name": name, "tags": tags});
    item["url"] = page_url(&running, page).into();
}

/// A status page's address under `buildbot_url`.
fn page_url(running: &crate::shared::RunningConfig, page: &str) -> String {
    let base = running
        .loaded
        .config
        .buildbot_url
        .as_deref()
        .unwrap_or_default();
    format!("{}/{page}", base.trim_end_matches('/'))
}

/// The builds as they were read for recent events, shared by the
/// reporters: each reporter reads every event, and the first to ask reads
/// the build for all of them (a build does not change between its start's
/// event and its end's, and its end is read after it ended). The oldest go
/// first once [`SEEN_BUILDS`] are kept.
#[derive(Default)]
struct SeenBuilds {
    builds: HashMap<(ReportEvent, i64), Value>,
    order: VecDeque<(ReportEvent, i64)>,
}

/// Builds kept in [`SeenBuilds`].
const SEEN_BUILDS: usize = 2048;

impl SeenBuilds {
    fn get(&self, key: &(ReportEvent, i64)) -> Option<&Value> {
        self.builds.get(key)
    }

    fn insert(&mut self, key: (ReportEvent, i64), build: Value) {
        if self.builds.insert(key, build).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > SEEN_BUILDS {
            if let Some(old) = self.order.pop_front() {
                self.builds.remove(&old);
            }
        }
    }
}

fn seen_builds() -> std::sync::MutexGuard<'static, SeenBuilds> {
    static SEEN: std::sync::OnceLock<Mutex<SeenBuilds>> = std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The build an event is about, read once for every reporter.
async fn build_at(
    shared: &Shared,
    kind: ReportEvent,
    buildid: i64,
) -> Result<Option<Value>, DataError> {
    let key = (kind, buildid);
    let cached = seen_builds().get(&key).cloned();
    if let Some(build) = cached {
        return Ok(Some(build));
    }
    let Some(build) = build_of(shared, buildid).await? else {
        return Ok(None);
    };
    seen_builds().insert(key, build.clone());
    Ok(Some(build))
}

/// Read the builds `events` are about that `config`'s generators can take
/// and no reporter has read yet, in one query, so that a turn's reports do
/// not read them one by one.
pub async fn read_builds(
    shared: &Shared,
    config: &ReporterConfig,
    events: &[crate::db::entities::report_events::Model],
) -> Result<(), DataError> {
    let taken = events_taken(config);
    let wanted: Vec<(ReportEvent, i64)> = {
        let seen = seen_builds();
        events
            .iter()
            .filter_map(|e| Some((ReportEvent::parse(&e.kind)?, e.objectid)))
            .filter(|(kind, _)| {
                matches!(kind, ReportEvent::BuildStarted | ReportEvent::BuildFinished)
                    && taken.contains(*kind)
            })
            .filter(|key| seen.get(key).is_none())
            .collect()
    };
    if wanted.len() < 2 {
        return Ok(());
    }
    let mut q = ListQuery::default().whole();
    q.filters.push(Filter {
        field: "buildid".into(),
        op: Op::Eq,
        values: wanted.iter().map(|(_, id)| id.to_string()).collect(),
    });
    let (builds, _) = shared.data.list_builds(&q, true).await?;
    let mut seen = seen_builds();
    for mut build in builds {
        let buildid = build["buildid"].as_i64().unwrap_or(0);
        let builderid = build["builderid"].as_i64().unwrap_or(0);
        describe_builder(shared, &mut build, builderid, &format!("builds/{buildid}"));
        for key in wanted.iter().filter(|(_, id)| *id == buildid) {
            seen.insert(*key, build.clone());
        }
    }
    Ok(())
}

/// The build with its properties, builder and URL.
async fn build_of(shared: &Shared, buildid: i64) -> Result<Option<Value>, DataError> {
    let q = ListQuery::default().with_eq("buildid", buildid).whole();
    let Some(mut build) = shared
        .data
        .list_builds(&q, true)
        .await?
        .0
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let builderid = build["builderid"].as_i64().unwrap_or(0);
    describe_builder(shared, &mut build, builderid, &format!("builds/{buildid}"));
    Ok(Some(build))
}

/// The build's branch (its `branch` property), if any.
fn branch(build: &Value) -> Option<&str> {
    build["properties"]["branch"][0].as_str()
}

/// Whether a generator's builders, tags, branches and schedulers take the
/// build.
fn selects(g: &GeneratorConfig, build: &Value) -> bool {
    let builder = build["builder"]["name"].as_str().unwrap_or_default();
    let tags: Vec<&str> = build["builder"]["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (g.builders.is_empty() || g.builders.iter().any(|b| b == builder))
        && (g.tags.is_empty() || g.tags.iter().any(|t| tags.contains(&t.as_str())))
        && (g.branches.is_empty()
            || branch(build).is_some_and(|b| g.branches.iter().any(|x| x == b)))
        && (g.schedulers.is_empty()
            || build["properties"]["scheduler"][0]
                .as_str()
                .is_some_and(|s| g.schedulers.iter().any(|x| x == s)))
}

/// Whether a finished build's result is one `modes` report.
async fn status_wanted(shared: &Shared, modes: &[Mode], build: &Value) -> Result<bool, DataError> {
    let result = build["results"].as_i64().map(|r| r as i32);
    let failed = result == Some(FAILURE);
    let mut previous = None;
    for mode in modes {
        let hit = match mode {
            Mode::All => true,
            Mode::Failing => failed,
            Mode::Passing => result == Some(SUCCESS),
            Mode::Warnings => result == Some(WARNINGS),
            Mode::Exception => result == Some(EXCEPTION),
            Mode::Cancelled => result == Some(CANCELLED),
            Mode::Problem | Mode::Change => {
                if previous.is_none() {
                    previous = Some(previous_result(shared, build).await?);
                }
                let before = previous.flatten();
                match mode {
                    Mode::Problem => failed && before.is_some_and(|b| b != FAILURE),
                    _ => before.is_some_and(|b| Some(b) != result),
                }
            }
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The result of the last finished build before `build` of its builder and
/// branch (`None`: there is none).
async fn previous_result(shared: &Shared, build: &Value) -> Result<Option<i32>, DataError> {
    let mut q = ListQuery {
        order: vec![("buildid".into(), true)],
        limit: Some(50),
        ..Default::default()
    }
    .with_eq("builderid", build["builderid"].as_i64().unwrap_or(0))
    .with_eq("complete", "true");
    q.filters.push(Filter {
        field: "buildid".into(),
        op: Op::Lt,
        values: vec![build["buildid"].to_string()],
    });
    let (builds, _) = shared.data.list_builds(&q, true).await?;
    Ok(builds
        .iter()
        .find(|b| branch(b) == branch(build))
        .and_then(|b| b["results"].as_i64())
        .map(|r| r as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LuaGeneration;

    /// Each reporter of `reporters` (Lua constructors), compiled.
    fn reporters(reporters: &str) -> Vec<ReporterConfig> {
        let dir = tempfile::tempdir().unwrap();
        let source =
            format!("local mb = require('moonbot')\nreturn {{ reporters = {{ {reporters} }} }}");
        std::fs::write(dir.path().join("master.lua"), source).unwrap();
        let (_lua, raw) = LuaGeneration::load(dir.path()).unwrap();
        crate::config::compile::compile(&raw).unwrap().reporters
    }

    fn taken(config: &ReporterConfig) -> Vec<ReportEvent> {
        ReportEvent::ALL
            .into_iter()
            .filter(|e| events_taken(config).contains(*e))
            .collect()
    }

    /// The master records only what some reporter takes: reporters of
    /// builds cost no buildset or worker rows.
    #[test]
    fn a_reporter_takes_the_events_its_generators_report() {
        use ReportEvent::*;
        let all = reporters(
            r#"mb.reporters.http_push { name = "starts", url = "http://x" },
               mb.reporters.slack { webhook = "http://x" },
               mb.reporters.github_status { token = "t" },
               mb.reporters.http_push { name = "sets", url = "http://x", generators = {
                   mb.generators.buildset_combined {},
                   mb.generators.worker_missing {} } }"#,
        );
        let kinds: Vec<Vec<ReportEvent>> = all.iter().map(taken).collect();
        assert_eq!(
            kinds,
            [
                vec![BuildStarted, BuildFinished],
                vec![BuildFinished],
                vec![BuildsetNew, BuildStarted, BuildFinished],
                vec![BuildsetComplete, WorkerMissing],
            ]
        );
        let union = all
            .iter()
            .map(events_taken)
            .fold(ReportEvents::default(), ReportEvents::union);
        assert!(ReportEvent::ALL.into_iter().all(|e| union.contains(e)));
        assert!(!events_taken(&all[1]).contains(BuildStarted));
    }
}
