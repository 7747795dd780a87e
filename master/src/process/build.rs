//! One build: properties, steps in order, results combined the way Buildbot
//! combines them, and what happens to the build request afterwards.
//!
//! Properties come in Buildbot's layers, each later one winning: master.lua's
//! global `properties` ("Global"), the buildset's (scheduler, force form,
//! change), the builder's, the worker's, then the build's own (`buildername`,
//! `buildnumber`, `workername`, `builddir`, `owners`, and the source stamp's
//! `branch`, `revision`, `repository`, `project`, `codebase`).
//!
//! Secrets: every step renders its arguments through one [`RenderContext`],
//! whose [`Redactor`] learns each secret the build used; the step's log,
//! description and summary go through it, so a secret's value is never
//! stored.
//!
//! Step rules (Buildbot's): a FAILURE makes the build FAILURE when
//! `flunk_on_failure` (default), WARNINGS when `warn_on_failure`, and stops the
//! build when `halt_on_failure`; EXCEPTION, RETRY and CANCELLED stop it too. After
//! a stop only `always_run` steps run. A build that ends RETRY (worker lost,
//! master stopping) gives its request back to the queue.

use super::trigger;
use crate::artifacts::{Incoming, Stored};
use crate::config::builders::{StepCondition, StepRetry, compile_step, unique_step_name};
use crate::config::locks::{LockAccess, LockKind};
use crate::config::{BuilderConfig, LoadedConfig, StepConfig, WorkerConfig};
use crate::data::artifacts::NewArtifact;
use crate::data::buildsets::PendingRequest;
use crate::data::logs::{LogStream, LogWriter};
use crate::data::test_results::{NewTestResult, NewTestResultSet};
use crate::data::{Data, DataError};
use crate::locks::{LockGuard, LockKey, Want};
use crate::lua::{LuaScope, RawKey, RawValue};
use crate::render::{RenderContext, SourceStamp};
use crate::results::{self, CANCELLED, EXCEPTION, FAILURE, RETRY, SKIPPED, SUCCESS, WARNINGS};
use crate::running_builds::{StopKind, StopSignal};
use crate::secrets::{Redactor, Secrets};
use crate::shared::Shared;
use crate::steps::StepKind;
use crate::steps::context::COLLECT_LIMIT;
use crate::steps::transfer::DownloadSource;
use crate::steps::trigger::{ChildOutcome, TriggerRequest, Triggered};
use crate::steps::{
    self, BuildArtifacts, Collected, Properties, RemoteFailure, RemoteIo, StepContext, StepHost,
    Stream, TestCase, TestCounts,
};
use crate::worker_registry::WorkerLease;
use crate::workers::remote::{self, Output, OutputSink, RemoteError, SinkError, WorkerLink};
use moonbot_worker::protocol::{CommandOutcome, RemoteCommand};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{Instrument, error, info, info_span};

/// How long a request whose build failed in the master waits before it is
/// handed out again.
const RETRY_AFTER_MASTER_FAILURE: Duration = Duration::from_secs(10);

/// Run a claimed request as a build on the leased worker; `collapsed` are
/// claimed requests the build stands for (they end SKIPPED when it starts).
pub async fn run(
    shared: Arc<Shared>,
    request: PendingRequest,
    collapsed: Vec<PendingRequest>,
    builder: BuilderConfig,
    worker: Option<WorkerConfig>,
    loaded: LoadedConfig,
    lease: WorkerLease,
) {
    let span = info_span!("build", builder = %builder.name, worker = %lease.worker.name);
    async move {
        let brid = request.brid;
        let result = run_inner(
            &shared,
            request,
            &collapsed,
            &builder,
            worker.as_ref(),
            &loaded,
            &lease,
        )
        .await;
        if let Err(e) = result {
            error!(
                "build for request {brid} failed in the master: {e}; it runs again in {} s",
                RETRY_AFTER_MASTER_FAILURE.as_secs()
            );
            // The build could not be recorded properly: let the request run
            // again, but not at once: what refused this build's writes (a
            // database outage, a missing table) would refuse the next one's,
            // and an immediate retry makes builds as fast as it fails. The
            // worker's slot stays taken meanwhile.
            tokio::time::sleep(RETRY_AFTER_MASTER_FAILURE).await;
            let _ = shared.data.unclaim_request(brid).await;
        }
    }
    .instrument(span)
    .await
}

/// Everything one build needs while it runs.
struct BuildContext<'a> {
    shared: &'a Shared,
    request: &'a PendingRequest,
    builder: &'a BuilderConfig,
    worker: Option<&'a WorkerConfig>,
    lease: &'a WorkerLease,
    /// The worker's connection, followed across reconnects.
    link: WorkerLink<'a>,
    loaded: &'a LoadedConfig,
    /// The build's secrets providers; what they gave is in `redactor`.
    secrets: Secrets,
    redactor: Redactor,
    buildid: i64,
    number: i32,
    props: Properties,
    /// What the build builds, for the source-stamp properties.
    sourcestamps: Vec<crate::db::entities::sourcestamps::Model>,
    /// The same, as `%(src:…)s` reads them.
    sources: Vec<SourceStamp>,
    stop: &'a StopSignal,
    /// The Lua functions the build's Lua steps hand over (in steps they add).
    lua_scope: LuaScope,
}

async fn run_inner(
    shared: &Arc<Shared>,
    request: PendingRequest,
    collapsed: &[PendingRequest],
    builder: &BuilderConfig,
    worker: Option<&WorkerConfig>,
    loaded: &LoadedConfig,
    lease: &WorkerLease,
) -> Result<(), DataError> {
    let data = &shared.data;
    let started = match data
        .start_build(&request, lease.worker.workerid, collapsed)
        .await
    {
        Ok(started) => started,
        Err(e) => {
            // Nothing was recorded: the collapsed requests wait again too.
            for other in collapsed {
                let _ = data.unclaim_request(other.brid).await;
            }
            return Err(e);
        }
    };
    let (buildid, number) = (started.buildid, started.number);
    if !collapsed.is_empty() {
        let brids: Vec<i64> = collapsed.iter().map(|r| r.brid).collect();
        info!(buildid, collapsed = ?brids, "requests collapsed into this build");
    }
    // Dropped on every path out of here: the build leaves the running set.
    let registration = shared.builds.register(buildid);
    info!(buildid, number, "build started");
    let grace = worker.map_or(crate::config::DEFAULT_RECONNECT_GRACE_S, |w| {
        w.reconnect_grace_s
    });
    let mut ctx = BuildContext {
        shared,
        request: &request,
        builder,
        worker,
        lease,
        link: WorkerLink {
            registry: &shared.workers,
            worker: lease.worker.clone(),
            grace: Duration::from_secs(grace),
        },
        loaded,
        secrets: Secrets::new(&loaded.config.secrets, &shared.dir),
        redactor: Redactor::default(),
        buildid,
        number,
        props: started.buildset_properties,
        sources: started
            .sourcestamps
            .iter()
            .map(|s| SourceStamp {
                codebase: s.codebase.clone(),
                branch: s.branch.clone(),
                revision: s.revision.clone(),
                repository: s.repository.clone(),
                project: s.project.clone(),
            })
            .collect(),
        sourcestamps: started.sourcestamps,
        stop: &registration.stop,
        lua_scope: loaded.lua.scope(),
    };
    let result = execute(&mut ctx).await;
    if result.is_err() {
        let _ = data
            .finish_build(
                buildid,
                EXCEPTION,
                "exception: the master could not record this build",
                None,
            )
            .await;
    }
    result
}

/// Properties, steps, the result, and what becomes of the request.
async fn execute(ctx: &mut BuildContext<'_>) -> Result<(), DataError> {
    let data = &ctx.shared.data;
    let (builder, buildid, number) = (ctx.builder, ctx.buildid, ctx.number);
    let mut props: Properties = ctx
        .loaded
        .config
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), (v.clone(), "Global".to_string())))
        .collect();
    props.extend(std::mem::take(&mut ctx.props));
    for (k, v) in &builder.properties {
        props.insert(k.clone(), (v.clone(), "Builder".into()));
    }
    if let Some(w) = ctx.worker {
        for (k, v) in &w.properties {
            props.insert(k.clone(), (v.clone(), "Worker".into()));
        }
    }
    let worker_name = ctx.lease.worker.name.clone();
    props.insert(
        "buildername".into(),
        (builder.name.clone().into(), "Builder".into()),
    );
    props.insert("buildnumber".into(), (number.into(), "Build".into()));
    props.insert("workername".into(), (worker_name.into(), "Worker".into()));
    props.insert(
        "builddir".into(),
        (builder.builddir.clone().into(), "Builder".into()),
    );
    // Who the build is for: the user who forced it (Buildbot's `owners`).
    let owners: Vec<Value> = props
        .get("owner")
        .and_then(|(v, _)| v.as_str())
        .map(|o| vec![Value::from(o)])
        .unwrap_or_default();
    props.insert("owners".into(), (Value::Array(owners), "Build".into()));
    // As Buildbot: one source stamp names what the build builds in plain
    // properties; with several codebases they would be ambiguous.
    if let [stamp] = ctx.sourcestamps.as_slice() {
        for (name, value) in [
            ("branch", stamp.branch.clone().map(Value::from)),
            ("revision", stamp.revision.clone().map(Value::from)),
            ("repository", Some(stamp.repository.clone().into())),
            ("project", Some(stamp.project.clone().into())),
            ("codebase", Some(stamp.codebase.clone().into())),
        ] {
            props.insert(name.into(), (value.unwrap_or(Value::Null), "Build".into()));
        }
    }
    data.add_build_properties(buildid, &props).await?;
    ctx.props = props;

    let shared = ctx.shared;
    let worker_name = ctx.lease.worker.name.clone();
    let build_locks = take_locks(
        shared,
        buildid,
        &worker_name,
        &builder.locks,
        ctx.stop,
        None,
    )
    .await?;
    let (mut build_results, failed_steps) = match build_locks {
        Some(mut held) => run_steps(ctx, &mut held).await?,
        // Stopped while it waited for its locks: no step ran.
        None => (SUCCESS, Vec::new()),
    };
    match ctx.stop.requested() {
        Some(StopKind::Shutdown) => build_results = RETRY,
        Some(StopKind::Cancel) => build_results = results::worst(build_results, CANCELLED),
        None => {}
    }
    // A request that keeps ending RETRY (not because this master stops)
    // ends EXCEPTION instead of looping forever, as Buildbot's does.
    let mut state_note = None;
    if build_results == RETRY && ctx.stop.requested().is_none() {
        let limit = builder.max_retries.unwrap_or(ctx.loaded.config.max_retries);
        let before = data.retried_builds(ctx.request.brid).await?;
        if before + 1 > u64::from(limit) {
            build_results = EXCEPTION;
            state_note = Some(format!(
                "exception: the request ended RETRY {} times (max_retries = {limit})",
                before + 1
            ));
        }
    }
    let state = match build_results {
        _ if state_note.is_some() => state_note.unwrap_or_default(),
        SUCCESS => "build successful".to_string(),
        RETRY => "retry".to_string(),
        // Who stopped it and why shows on the build (`stop`'s reason, a
        // newer change that superseded it).
        CANCELLED => match ctx.stop.interrupt.borrow().as_deref() {
            Some(reason) if !reason.is_empty() => format!("cancelled: {reason}"),
            _ => "cancelled".to_string(),
        },
        r => format!("{} {}", failure_word(r), failed_steps.join(" ")),
    };
    // A build that ends RETRY gives its request back; any other completes it.
    let completed = (build_results != RETRY).then_some(ctx.request);
    data.finish_build(buildid, build_results, state.trim(), completed)
        .await?;
    if completed.is_none() {
        data.unclaim_request(ctx.request.brid).await?;
        // It runs again and triggers its own: the children it was waiting
        // for that have not started would be orphans.
        data.cancel_orphaned_children(Some(buildid)).await?;
    }
    info!(
        buildid,
        number,
        result = results::name(build_results),
        "build finished"
    );
    Ok(())
}

fn failure_word(result: i32) -> &'static str {
    match result {
        WARNINGS => "warnings",
        FAILURE => "failed",
        EXCEPTION => "exception",
        _ => results::name(result),
    }
}

/// Most steps a build may add to itself at run time.
const MAX_ADDED_STEPS: usize = 1000;

/// The steps a build runs: the builder's, and those its steps added.
struct StepPlan<'a> {
    steps: Vec<Cow<'a, StepConfig>>,
    /// Every name taken so far (an added step's repeated name gets `_N`).
    names: BTreeMap<String, usize>,
    added: usize,
}

impl<'a> StepPlan<'a> {
    fn new(configured: &'a [StepConfig]) -> StepPlan<'a> {
        StepPlan {
            steps: configured.iter().map(Cow::Borrowed).collect(),
            names: configured.iter().map(|s| (s.name.clone(), 1)).collect(),
            added: 0,
        }
    }

    /// Put the steps a step added (in its [`Added`]) after step `current`
    /// or after the last.
    fn insert(&mut self, current: usize, added: Added) {
        let mut at = current + 1;
        for (after_current, mut step) in added.0 {
            step.name = unique_step_name(&mut self.names, &step.name);
            self.added += 1;
            if after_current {
                self.steps.insert(at, Cow::Owned(step));
                at += 1;
            } else {
                self.steps.push(Cow::Owned(step));
            }
        }
    }
}

/// Steps one step added, in order, each after the current step (`true`)
/// or after the last.
#[derive(Default)]
struct Added(Vec<(bool, StepConfig)>);

/// Run the steps; returns the build's result and the names of steps that hurt it.
async fn run_steps<'s>(
    ctx: &mut BuildContext<'s>,
    build_locks: &mut LockGuard<'s>,
) -> Result<(i32, Vec<String>), DataError> {
    let mut build_results = SUCCESS;
    let mut terminated = false;
    let mut failed = Vec::new();
    let mut number = 0;
    let mut plan = StepPlan::new(&ctx.builder.steps);
    let mut index = 0;
    while index < plan.steps.len() {
        let step = plan.steps[index].clone();
        let step: &StepConfig = &step;
        match ctx.stop.requested() {
            Some(StopKind::Shutdown) => break,
            Some(StopKind::Cancel) => terminated = true,
            None => {}
        }
        if terminated && !step.flags.always_run {
            index += 1;
            continue;
        }
        number += 1;
        let room = MAX_ADDED_STEPS - plan.added;
        let step_locks = match step_locks(ctx, build_locks, step).await? {
            Some(held) => held,
            None => {
                // Stopped while it waited for its locks: it does not run
                // (not even an always_run step, which would wait again).
                number -= 1;
                index += 1;
                continue;
            }
        };
        let (mut result, mut added, mut outcome) = run_step(ctx, number, step, room).await?;
        // `retry`: the step runs again in this build (a new step row).
        let mut attempt = 0;
        while let Some(retry) = &step.retry
            && attempt < retry.max
            && ctx.stop.requested().is_none()
            && retries_on(retry, result, outcome.as_ref())
        {
            attempt += 1;
            if retry.delay_s > 0 {
                let mut interrupt = ctx.stop.interrupt.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(retry.delay_s)) => {}
                    _ = interrupt.changed() => {}
                }
                if ctx.stop.requested().is_some() {
                    break;
                }
            }
            // What the failed attempt added goes with it (replaced below).
            let again = StepConfig {
                name: format!("{} (retry {attempt})", step.name),
                ..step.clone()
            };
            number += 1;
            (result, added, outcome) = run_step(ctx, number, &again, room).await?;
        }
        drop(step_locks);
        plan.insert(index, added);
        index += 1;
        let f = &step.flags;
        let contribution = match result {
            FAILURE => {
                if f.halt_on_failure {
                    terminated = true;
                }
                if f.flunk_on_failure {
                    FAILURE
                } else if f.warn_on_failure {
                    WARNINGS
                } else {
                    SUCCESS
                }
            }
            WARNINGS => {
                if f.flunk_on_warnings {
                    FAILURE
                } else if f.warn_on_warnings {
                    WARNINGS
                } else {
                    SUCCESS
                }
            }
            EXCEPTION | RETRY | CANCELLED => {
                terminated = true;
                result
            }
            other => other,
        };
        if contribution != SUCCESS && contribution != results::SKIPPED {
            failed.push(step.name.clone());
        }
        build_results = results::worst(build_results, contribution);
        if result == RETRY {
            // The worker is gone: not even always_run steps can run.
            break;
        }
    }
    Ok((build_results, failed))
}

/// How a step's last command ended, as its `retry` reads it.
struct LastCommand {
    rc: Option<i32>,
    timed_out: bool,
}

impl LastCommand {
    fn of(outcome: &CommandOutcome) -> LastCommand {
        LastCommand {
            rc: outcome.rc,
            timed_out: outcome
                .failure
                .as_deref()
                .is_some_and(|f| f.starts_with("command timed out")),
        }
    }
}

/// Whether a step's `retry` covers how it ended: the worker lost (RETRY),
/// its command timed out, or an exit code it lists.
fn retries_on(retry: &StepRetry, result: i32, last: Option<&LastCommand>) -> bool {
    if result == SUCCESS || result == SKIPPED || result == CANCELLED {
        return false;
    }
    if retry.worker_lost && result == RETRY {
        return true;
    }
    let Some(last) = last else {
        return false;
    };
    (retry.timeout && last.timed_out)
        || last.rc.is_some_and(|rc| retry.rcs.contains(&i64::from(rc)))
}

/// Take `accesses` for build `buildid` on `worker`, its state showing what
/// it waits for and the wait added to its `locks_duration_s`; `None` when
/// the build was stopped first. `holding`: the build's own locks, which it
/// lets go while it waits if keeping them could deadlock.
async fn take_locks<'s>(
    shared: &'s Shared,
    buildid: i64,
    worker: &str,
    accesses: &[LockAccess],
    stop: &StopSignal,
    holding: Option<(&mut LockGuard<'s>, &[LockAccess])>,
) -> Result<Option<LockGuard<'s>>, DataError> {
    let wants_of = |accesses: &[LockAccess]| -> Vec<Want> {
        let running = shared.running_config();
        accesses
            .iter()
            .map(|a| {
                // The running configuration's count: a reload applies to
                // the next acquisition.
                let def = running
                    .loaded
                    .config
                    .locks
                    .get(&a.lock.name)
                    .unwrap_or(&a.lock);
                Want {
                    key: LockKey {
                        name: a.lock.name.clone(),
                        worker: (a.lock.kind == LockKind::Worker).then(|| worker.to_string()),
                    },
                    exclusive: a.exclusive,
                    max_count: def.max_on(worker),
                }
            })
            .collect()
    };
    if accesses.is_empty() {
        return Ok(Some(shared.locks.none(buildid)));
    }
    let wants = wants_of(accesses);
    // Waiting while holding the build's locks would close a cycle: let them
    // go and wait for all of them together instead.
    let (wants, rejoin) = match holding {
        Some((held, own)) if !wants.is_empty() && shared.locks.would_deadlock(buildid, &wants) => {
            let keys = held.keys().to_vec();
            let mut all = wants;
            all.extend(wants_of(own));
            // The empty guard replaces the held one, whose drop releases it.
            *held = shared.locks.split(held, &[]);
            (all, Some((held, keys)))
        }
        _ => (wants, None),
    };
    let started = std::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let acquire = shared.locks.acquire(buildid, &wants, move |keys| {
        let names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let _ = tx.send(format!("waiting for lock {}", names.join(", ")));
    });
    tokio::pin!(acquire);
    let mut interrupt = stop.interrupt.clone();
    let mut waited = false;
    let mut guard = loop {
        tokio::select! {
            // Locks that are free are taken even by a stopping build (its
            // always_run steps); only a wait is cut short.
            biased;
            guard = &mut acquire => break Some(guard),
            Some(text) = rx.recv() => {
                waited = true;
                shared.data.update_build_state(buildid, &text, 0).await?;
            }
            Ok(()) = interrupt.changed() => {
                if stop.requested().is_some() {
                    break None;
                }
            }
        }
    };
    if waited {
        let seconds = started.elapsed().as_secs_f64().round() as i64;
        shared
            .data
            .update_build_state(buildid, "building", seconds)
            .await?;
    }
    if let (Some(all), Some((held, keys))) = (guard.as_mut(), rejoin) {
        *held = shared.locks.split(all, &keys);
    }
    Ok(guard)
}

/// Take a step's locks (`Some(guard)`; one without locks when it has
/// none), or `None` when the build was stopped while it waited.
async fn step_locks<'s>(
    ctx: &BuildContext<'s>,
    build_locks: &mut LockGuard<'s>,
    step: &StepConfig,
) -> Result<Option<LockGuard<'s>>, DataError> {
    take_locks(
        ctx.shared,
        ctx.buildid,
        &ctx.lease.worker.name,
        &step.locks,
        ctx.stop,
        Some((build_locks, &ctx.builder.locks)),
    )
    .await
}

/// Run one step: `do_step_if` decides whether the kind runs (through a
/// [`BuildStepHost`]) or the step is SKIPPED; then `hide_step_if` is asked,
/// the log closed and the step finished with its result and summary.
async fn run_step(
    ctx: &mut BuildContext<'_>,
    number: i32,
    step: &StepConfig,
    room: usize,
) -> Result<(i32, Added, Option<LastCommand>), DataError> {
    let added_by_functions = std::sync::Mutex::new(Vec::new());
    // A step from the repository renders without the master's secrets.
    let no_secrets = Secrets::new(&[], &ctx.shared.dir);
    let render = RenderContext {
        properties: &ctx.props,
        sources: &ctx.sources,
        worker_name: &ctx.lease.worker.name,
        worker: &ctx.lease.worker.info,
        secrets: if step.from_repository {
            &no_secrets
        } else {
            &ctx.secrets
        },
        lua: &ctx.loaded.lua,
        redactor: &ctx.redactor,
        added_steps: Some(&added_by_functions),
    };
    let run_it = condition(&render, &step.do_step_if, None).await;
    let mut notes = Vec::new();
    let description = match &step.description {
        Some(r) => match render.render_string(r).await {
            Ok(d) => Some(d),
            Err(e) => {
                notes.push(format!("could not render 'description': {e}"));
                None
            }
        },
        None => None,
    };
    let settings = &ctx.loaded.config.artifacts;
    let artifacts = BuildArtifacts {
        store: settings.store(&ctx.shared.dir),
        buildid: ctx.buildid,
        max_size: settings.max_size,
    };
    let mut host = BuildStepHost {
        data: &ctx.shared.data,
        buildid: ctx.buildid,
        builderid: ctx.request.builderid,
        keep_days: settings.keep_days,
        summary: None,
        number,
        step,
        description,
        redactor: (!ctx.secrets.is_empty()).then(|| ctx.redactor.clone()),
        link: &mut ctx.link,
        interrupt: ctx.stop.interrupt.clone(),
        started: None,
        set_properties: Vec::new(),
        added: Added::default(),
        room,
        builder_what: format!("builder '{}'", ctx.builder.name),
        shared: ctx.shared,
        last_command: None,
        sourcestamps: &ctx.sourcestamps,
        properties: &ctx.props,
        stop: ctx.stop,
    };
    for note in &notes {
        host.header(note).await?;
    }
    let result = match run_it {
        Ok(true) => {
            let mut step_ctx = StepContext {
                name: &step.name,
                builddir: &ctx.builder.builddir,
                master_dir: &ctx.shared.dir,
                render: &render,
                decode_rc: step.decode_rc.as_ref(),
                stop: ctx.stop,
                artifacts: &artifacts,
                lua_scope: &ctx.lua_scope,
                from_repository: step.from_repository,
                host: &mut host,
            };
            steps::run(&step.kind, &mut step_ctx).await?
        }
        Ok(false) => {
            host.begin(&step.name).await?;
            host.header("skipped: do_step_if is false").await?;
            SKIPPED
        }
        Err(e) => {
            host.begin(&step.name).await?;
            host.header(&format!("do_step_if failed: {e}")).await?;
            EXCEPTION
        }
    };
    // A kind that never said what it does still gets its row.
    host.begin(&step.name).await?;
    let hidden = match condition(&render, &step.hide_step_if, Some(result)).await {
        Ok(hidden) => hidden,
        Err(e) => {
            host.header(&format!("hide_step_if failed: {e}")).await?;
            false
        }
    };
    let done = match &step.description_done {
        Some(r) => match render.render_string(r).await {
            Ok(done) => Some(done),
            Err(e) => {
                host.header(&format!("could not render 'description_done': {e}"))
                    .await?;
                None
            }
        },
        None => None,
    };
    // Steps the step's functions added (`mb.build:add_steps_*` in a
    // renderable, `do_step_if` …), checked as master.lua's are.
    let by_functions =
        std::mem::take(&mut *added_by_functions.lock().unwrap_or_else(|e| e.into_inner()));
    let mut result = result;
    for (after_current, list) in by_functions {
        if let Err(why) = host
            .add_steps(after_current, &list, &step.defined_at, false)
            .await?
        {
            host.header(&format!("steps added by a function were refused: {why}"))
                .await?;
            result = results::worst(result, EXCEPTION);
        }
    }
    let Some(started) = host.started.take() else {
        unreachable!("begin() records the started step");
    };
    let mut closed = Vec::with_capacity(started.logs.len());
    for (_, log) in started.logs {
        closed.push(log.close().await?);
    }
    let set_properties = std::mem::take(&mut host.set_properties);
    let added = std::mem::take(&mut host.added);
    let last_command = host.last_command.take();
    let done = done.or(host.summary.take()).unwrap_or(started.description);
    let state = match result {
        SUCCESS => done,
        SKIPPED => format!("{done} (skipped)"),
        other => format!("{done} ({})", results::name(other)),
    };
    ctx.shared
        .data
        .finish_step(
            started.stepid,
            result,
            &ctx.redactor.redact(&state),
            hidden,
            &closed,
        )
        .await?;
    for (name, value) in set_properties {
        ctx.props.insert(name, (value, step.name.clone()));
    }
    Ok((result, added, last_command))
}

/// `do_step_if` (with `result` None) or `hide_step_if` (with the step's
/// result): a fixed answer, or a Lua function of (result,) properties
/// whose answer counts as Lua counts truth.
async fn condition(
    render: &RenderContext<'_>,
    condition: &StepCondition,
    result: Option<i32>,
) -> Result<bool, crate::lua::CallError> {
    let f = match condition {
        StepCondition::Fixed(answer) => return Ok(*answer),
        StepCondition::Lua(f) => f,
    };
    let mut args: Vec<Value> = result.into_iter().map(Value::from).collect();
    args.push(render.properties_json());
    let answer = render.call_lua(f, args).await?;
    Ok(!matches!(
        answer,
        crate::lua::RawValue::Nil | crate::lua::RawValue::Bool(false)
    ))
}

/// A step once its row exists.
struct StartedStep {
    stepid: i64,
    /// Its logs in the order they were made (`stdio` first), and which one
    /// output goes to now.
    logs: Vec<(String, LogWriter)>,
    current: usize,
    /// What the step shows (master.lua's `description`, or the kind's).
    description: String,
}

impl StartedStep {
    fn log(&mut self) -> &mut LogWriter {
        &mut self.logs[self.current].1
    }

    /// The index of the step's log `name`, made (and redacted like the
    /// others) when first named.
    async fn log_index(
        &mut self,
        data: &Data,
        redactor: Option<&Redactor>,
        name: &str,
    ) -> Result<usize, DataError> {
        if let Some(i) = self.logs.iter().position(|(n, _)| n == name) {
            return Ok(i);
        }
        let mut log = data.add_log(self.stepid, name).await?;
        if let Some(redactor) = redactor {
            log.redact_with(redactor.clone());
        }
        self.logs.push((name.to_string(), log));
        Ok(self.logs.len() - 1)
    }
}

/// The build's side of one step: its row and `stdio` log in the database, and
/// the worker the build runs on.
struct BuildStepHost<'c, 'a> {
    shared: &'a Shared,
    /// How the last command ended (what a step's `retry` looks at).
    last_command: Option<LastCommand>,
    /// The build's source stamps and properties, as triggered builds get them.
    sourcestamps: &'c [crate::db::entities::sourcestamps::Model],
    properties: &'c Properties,
    stop: &'a StopSignal,
    /// Steps this step added to the build, and how many more it may add.
    added: Added,
    room: usize,
    /// "builder 'NAME'", as errors in added steps name it.
    builder_what: String,
    data: &'a Data,
    buildid: i64,
    builderid: i64,
    /// Days an artifact is kept (`artifacts.keep_days`).
    keep_days: u64,
    /// What the kind said it did (`set_summary`).
    summary: Option<String>,
    number: i32,
    step: &'c StepConfig,
    /// master.lua's `description`, rendered.
    description: Option<String>,
    /// The build's secrets, when master.lua configures any.
    redactor: Option<Redactor>,
    link: &'c mut WorkerLink<'a>,
    interrupt: watch::Receiver<Option<String>>,
    started: Option<StartedStep>,
    /// Properties the step set, for the steps after it.
    set_properties: Vec<(String, Value)>,
}

impl BuildStepHost<'_, '_> {
    async fn started(&mut self) -> Result<&mut StartedStep, DataError> {
        if self.started.is_none() {
            self.begin(&self.step.name.clone()).await?;
        }
        Ok(self
            .started
            .as_mut()
            .expect("begin() records the started step"))
    }
}

impl StepHost for BuildStepHost<'_, '_> {
    type Error = DataError;

    async fn begin(&mut self, description: &str) -> Result<(), DataError> {
        if self.started.is_some() {
            return Ok(());
        }
        let mut description = self
            .description
            .clone()
            .unwrap_or_else(|| description.to_string());
        if let Some(redactor) = &self.redactor {
            description = redactor.redact(&description);
        }
        let (stepid, mut log) = self
            .data
            .start_step(
                self.buildid,
                self.number,
                &self.step.name,
                &description,
                "stdio",
            )
            .await?;
        if let Some(redactor) = &self.redactor {
            log.redact_with(redactor.clone());
        }
        self.started = Some(StartedStep {
            stepid,
            logs: vec![("stdio".to_string(), log)],
            current: 0,
            description,
        });
        Ok(())
    }

    async fn header(&mut self, line: &str) -> Result<(), DataError> {
        self.started().await?.log().header(line).await
    }

    async fn output(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), DataError> {
        let stream = match stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        self.started().await?.log().append(stream, bytes).await
    }

    async fn use_log(&mut self, name: &str) -> Result<(), DataError> {
        let redactor = self.redactor.clone();
        let data = self.data;
        let started = self.started().await?;
        started.current = started.log_index(data, redactor.as_ref(), name).await?;
        Ok(())
    }

    async fn set_property(&mut self, name: &str, value: Value) -> Result<(), DataError> {
        let value = match &self.redactor {
            Some(redactor) => redactor.redact_json(&value),
            None => value,
        };
        self.data
            .set_build_property(self.buildid, name, &value, &self.step.name)
            .await?;
        self.set_properties.push((name.to_string(), value));
        Ok(())
    }

    async fn add_steps(
        &mut self,
        after_current: bool,
        steps: &RawValue,
        at: &str,
        from_repository: bool,
    ) -> Result<Result<Vec<String>, String>, DataError> {
        // What the repository's steps add is the repository's too.
        let from_repository = from_repository || self.step.from_repository;
        let RawValue::Table(entries) = steps else {
            return Ok(Err("expects a list of steps".into()));
        };
        if entries
            .iter()
            .enumerate()
            .any(|(i, (k, _))| *k != RawKey::Int(i as i64 + 1))
        {
            return Ok(Err("expects a list of steps (mb.steps.*{…})".into()));
        }
        if self.added.0.len() + entries.len() > self.room {
            return Ok(Err(format!(
                "a build adds at most {MAX_ADDED_STEPS} steps to itself"
            )));
        }
        let mut errors = Vec::new();
        let mut compiled = Vec::new();
        for (_, raw) in entries {
            if let Some(step) = compile_step(raw, &self.builder_what, at, &mut errors) {
                compiled.push(step);
            }
        }
        if !errors.is_empty() {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Ok(Err(text.join("; ")));
        }
        let allow_master_shell = self
            .shared
            .running_config()
            .loaded
            .config
            .allow_master_shell;
        for step in &mut compiled {
            step.from_repository = from_repository;
            let on_master = match &step.kind {
                StepKind::MasterShell(_) => Some("runs commands on the master"),
                StepKind::Download(d)
                    if matches!(
                        d.source,
                        DownloadSource::File(_) | DownloadSource::Directory { .. }
                    ) =>
                {
                    Some("reads the master's files")
                }
                _ => None,
            };
            match on_master {
                Some(what) if from_repository => {
                    return Ok(Err(format!(
                        "step '{}' {what}: refused for a step from the repository",
                        step.name
                    )));
                }
                Some(what)
                    if matches!(step.kind, StepKind::MasterShell(_)) && !allow_master_shell =>
                {
                    return Ok(Err(format!(
                        "step '{}' {what}: refused unless master.lua sets allow_master_shell = true",
                        step.name
                    )));
                }
                _ => {}
            }
        }
        let names = compiled.iter().map(|s| s.name.clone()).collect();
        let lines: Vec<String> = compiled
            .iter()
            .map(|s| format!("added step '{}'", s.name))
            .collect();
        for line in lines {
            self.header(&line).await?;
        }
        self.added
            .0
            .extend(compiled.into_iter().map(|s| (after_current, s)));
        Ok(Ok(names))
    }

    async fn trigger(
        &mut self,
        request: &TriggerRequest,
    ) -> Result<Result<Triggered, String>, DataError> {
        let parent = trigger::Parent {
            buildid: self.buildid,
            sourcestamps: self.sourcestamps,
            properties: self.properties,
        };
        trigger::trigger(self.shared, &parent, request).await
    }

    async fn wait_triggered(
        &mut self,
        bsids: &[i64],
        stop_children: bool,
    ) -> Result<Option<Vec<ChildOutcome>>, DataError> {
        trigger::wait(self.shared, self.buildid, bsids, self.stop, stop_children).await
    }

    async fn add_artifact(
        &mut self,
        name: &str,
        kind: &str,
        stored: &Stored,
    ) -> Result<(), DataError> {
        let stepid = self.started().await?.stepid;
        self.data
            .add_artifact(&NewArtifact {
                buildid: self.buildid,
                stepid,
                name,
                kind,
                size: stored.size,
                files: stored.files,
                path: &stored.path,
                keep_days: self.keep_days,
            })
            .await
            .map(drop)
    }

    async fn add_url(&mut self, name: &str, url: &str) -> Result<(), DataError> {
        let stepid = self.started().await?.stepid;
        self.data.add_step_url(stepid, name, url).await
    }

    async fn add_test_results(
        &mut self,
        description: &str,
        counts: TestCounts,
        cases: Vec<TestCase>,
    ) -> Result<(), DataError> {
        let stepid = self.started().await?.stepid;
        let mut set = NewTestResultSet {
            builderid: self.builderid,
            buildid: self.buildid,
            stepid,
            description: description.to_string(),
            passed: counts.passed,
            failed: counts.failures + counts.errors,
            skipped: counts.skipped,
            results: Vec::with_capacity(cases.len()),
        };
        for case in cases {
            let name = match &case.classname {
                Some(class) if !class.is_empty() => format!("{class}.{}", case.name),
                _ => case.name.clone(),
            };
            set.results.push(NewTestResult {
                test_name: name,
                test_code_path: case.file,
                line: case.line,
                duration_ns: case.duration_ns,
                outcome: case.outcome.as_str(),
                message: case.message,
            });
        }
        self.data.add_test_result_set(&set).await.map(drop)
    }

    fn set_summary(&mut self, summary: &str) {
        self.summary = Some(summary.to_string());
    }

    async fn run_remote(
        &mut self,
        command: RemoteCommand,
        io: RemoteIo<'_>,
    ) -> Result<CommandOutcome, RemoteFailure> {
        let interrupt = self.interrupt.clone();
        if self.started.is_none() {
            let name = self.step.name.clone();
            self.begin(&name)
                .await
                .map_err(|e| RemoteFailure::Failed(RemoteError::Sink(e).to_string()))?;
        }
        let Some(started) = self.started.as_mut() else {
            unreachable!("begin() records the started step");
        };
        let (collect, receive, outgoing) = match io {
            RemoteIo::Log => (None, None, None),
            RemoteIo::Collect(c) => (Some(c), None, None),
            RemoteIo::Receive(r) => (None, Some(r), None),
            RemoteIo::Send(o) => (None, None, Some(o)),
        };
        let mut sink = LogSink {
            step: started,
            data: self.data,
            redactor: self.redactor.clone(),
            collect,
            receive,
        };
        let outcome = remote::run(self.link, command, outgoing, interrupt, &mut sink).await;
        if let (Ok(outcome), Some(collect)) = (&outcome, sink.collect) {
            collect.rc = outcome.rc;
        }
        if let Ok(outcome) = &outcome {
            self.last_command = Some(LastCommand::of(outcome));
        }
        outcome.map_err(|e| match e {
            RemoteError::ConnectionLost(why) => RemoteFailure::ConnectionLost(why),
            RemoteError::Refused(why) => RemoteFailure::Refused(why),
            other => RemoteFailure::Failed(other.to_string()),
        })
    }
}

/// Sends a command's output into the step's current log (a followed
/// file's into the log of its name), and keeps a copy when the step reads it.
struct LogSink<'a, 'c> {
    step: &'a mut StartedStep,
    data: &'a Data,
    redactor: Option<Redactor>,
    collect: Option<&'c mut Collected>,
    /// Where an upload's bytes go.
    receive: Option<&'c mut Incoming>,
}

impl OutputSink for LogSink<'_, '_> {
    async fn output(&mut self, output: Output) -> Result<(), SinkError> {
        let (stream, bytes) = match output {
            Output::Data(bytes) => {
                let Some(incoming) = self.receive.as_deref_mut() else {
                    return Err(SinkError::Refused(
                        "data from a command that uploads nothing".into(),
                    ));
                };
                return incoming
                    .write(bytes)
                    .await
                    .map_err(|e| SinkError::Refused(format!("upload refused: {e}")));
            }
            Output::Stdout(b) => (LogStream::Stdout, b),
            Output::Stderr(b) => (LogStream::Stderr, b),
            Output::LogFile(name, bytes) => {
                let i = self
                    .step
                    .log_index(self.data, self.redactor.as_ref(), &name)
                    .await?;
                return Ok(self.step.logs[i]
                    .1
                    .append(LogStream::Stdout, &bytes)
                    .await?);
            }
        };
        if let Some(collect) = self.collect.as_deref_mut() {
            let kept = match stream {
                LogStream::Stdout => &mut collect.stdout,
                _ => &mut collect.stderr,
            };
            let room = COLLECT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        Ok(self.step.log().append(stream, &bytes).await?)
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        for (_, log) in &mut self.step.logs {
            log.flush_if_stale().await?;
        }
        Ok(())
    }
}
