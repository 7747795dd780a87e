//! One build: properties, steps in order, results combined the way Buildbot
//! combines them, and what happens to the build request afterwards.
//!
//! Step rules (Buildbot's): a FAILURE makes the build FAILURE when
//! `flunk_on_failure` (default), WARNINGS when `warn_on_failure`, and stops the
//! build when `halt_on_failure`; EXCEPTION, RETRY and CANCELLED stop it too. After
//! a stop only `always_run` steps run. A build that ends RETRY (worker lost,
//! master stopping) gives its request back to the queue.

use super::{StopKind, StopSignal};
use crate::config::{
    BuilderConfig, LuaGeneration, Renderable, StepConfig, StepKind, WorkerConfig, lua::RawValue,
};
use crate::data::DataError;
use crate::data::buildsets::PendingRequest;
use crate::data::logs::{LogStream, LogWriter};
use crate::results::{self, CANCELLED, EXCEPTION, FAILURE, RETRY, SUCCESS, WARNINGS};
use crate::runtime::Shared;
use crate::workers::WorkerLease;
use crate::workers::remote::{self, Output, OutputSink, RemoteError, WorkerLink};
use moonbot_worker::protocol::{CommandLine, CommandOutcome, RemoteCommand, ShellCommand};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, error, info, info_span};

/// Run a claimed request as a build on the leased worker.
pub async fn run(
    shared: Arc<Shared>,
    request: PendingRequest,
    builder: BuilderConfig,
    worker: Option<WorkerConfig>,
    lua: Arc<LuaGeneration>,
    lease: WorkerLease,
) {
    let span = info_span!("build", builder = %builder.name, worker = %lease.worker.name);
    async move {
        let brid = request.brid;
        if let Err(e) = run_inner(&shared, request, &builder, worker.as_ref(), &lua, &lease).await {
            error!("build for request {brid} failed in the master: {e}");
            // The build could not be recorded properly: let the request run again.
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
    lua: &'a LuaGeneration,
    buildid: i64,
    number: i32,
    props: BTreeMap<String, (Value, String)>,
    stop: &'a StopSignal,
}

async fn run_inner(
    shared: &Arc<Shared>,
    request: PendingRequest,
    builder: &BuilderConfig,
    worker: Option<&WorkerConfig>,
    lua: &LuaGeneration,
    lease: &WorkerLease,
) -> Result<(), DataError> {
    let data = &shared.data;
    let (buildid, number) = data
        .add_build(request.builderid, request.brid, lease.worker.workerid)
        .await?;
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
        lua,
        buildid,
        number,
        props: BTreeMap::new(),
        stop: &registration.stop,
    };
    let result = execute(&mut ctx).await;
    if result.is_err() {
        let _ = data
            .finish_build(
                buildid,
                EXCEPTION,
                "exception: the master could not record this build",
            )
            .await;
    }
    result
}

/// Properties, steps, the result, and what becomes of the request.
async fn execute(ctx: &mut BuildContext<'_>) -> Result<(), DataError> {
    let data = &ctx.shared.data;
    let (builder, buildid, number) = (ctx.builder, ctx.buildid, ctx.number);
    let mut props = data.buildset_properties(ctx.request.buildsetid).await?;
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
    data.add_build_properties(buildid, &props).await?;
    ctx.props = props;

    let (mut build_results, failed_steps) = run_steps(ctx).await?;
    match ctx.stop.requested() {
        Some(StopKind::Shutdown) => build_results = RETRY,
        Some(StopKind::Cancel) => build_results = results::worst(build_results, CANCELLED),
        None => {}
    }
    let state = match build_results {
        SUCCESS => "build successful".to_string(),
        RETRY => "retry".to_string(),
        CANCELLED => "cancelled".to_string(),
        r => format!("{} {}", failure_word(r), failed_steps.join(" ")),
    };
    data.finish_build(buildid, build_results, state.trim())
        .await?;
    info!(
        buildid,
        number,
        result = results::name(build_results),
        "build finished"
    );
    if build_results == RETRY {
        data.unclaim_request(ctx.request.brid).await?;
    } else {
        data.complete_request(ctx.request, build_results).await?;
    }
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

/// Run the steps; returns the build's result and the names of steps that hurt it.
async fn run_steps(ctx: &mut BuildContext<'_>) -> Result<(i32, Vec<String>), DataError> {
    let mut build_results = SUCCESS;
    let mut terminated = false;
    let mut failed = Vec::new();
    let mut number = 0;
    for step in &ctx.builder.steps {
        match ctx.stop.requested() {
            Some(StopKind::Shutdown) => break,
            Some(StopKind::Cancel) => terminated = true,
            None => {}
        }
        if terminated && !step.flags.always_run {
            continue;
        }
        number += 1;
        let result = run_step(ctx, number, step).await?;
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

/// Sends a command's output into a step log.
struct LogSink<'a>(&'a mut LogWriter);

impl OutputSink for LogSink<'_> {
    async fn output(&mut self, output: Output) -> Result<(), String> {
        let (stream, bytes) = match output {
            Output::Stdout(b) => (LogStream::Stdout, b),
            Output::Stderr(b) => (LogStream::Stderr, b),
        };
        self.0
            .append(stream, &bytes)
            .await
            .map_err(|e| e.to_string())
    }

    async fn idle(&mut self) -> Result<(), String> {
        self.0.flush_if_stale().await.map_err(|e| e.to_string())
    }
}

fn props_json(props: &BTreeMap<String, (Value, String)>) -> Value {
    Value::Object(
        props
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect(),
    )
}

async fn render_command(
    ctx: &BuildContext<'_>,
    command: &Renderable<CommandLine>,
) -> Result<CommandLine, String> {
    match command {
        Renderable::Value(c) => Ok(c.clone()),
        Renderable::Lua(f) => match ctx.lua.call(f, props_json(&ctx.props)).await? {
            RawValue::Str(s) => Ok(CommandLine::Shell(s)),
            RawValue::Table(items) => items
                .into_iter()
                .map(|(_, v)| match v {
                    RawValue::Str(s) => Ok(s),
                    RawValue::Int(i) => Ok(i.to_string()),
                    other => Err(format!(
                        "the command function returned a list with a {}",
                        other.type_name()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .and_then(|argv| {
                    if argv.is_empty() {
                        Err("the command function returned an empty list".to_string())
                    } else {
                        Ok(CommandLine::Argv(argv))
                    }
                }),
            other => Err(format!(
                "the command function (defined at {}) must return a string or a list, not a {}",
                f.defined_at,
                other.type_name()
            )),
        },
    }
}

fn join_path(builddir: &str, sub: &str) -> String {
    if sub.starts_with('/') {
        sub.to_string()
    } else if sub.is_empty() || sub == "." {
        builddir.to_string()
    } else {
        format!("{builddir}/{sub}")
    }
}

async fn run_step(
    ctx: &mut BuildContext<'_>,
    number: i32,
    step: &StepConfig,
) -> Result<i32, DataError> {
    let data = &ctx.shared.data;
    let (command, description) = match &step.kind {
        StepKind::Shell(shell) => match render_command(ctx, &shell.command).await {
            Ok(line) => {
                let description = format!("'{}'", line.display());
                (
                    Ok(RemoteCommand::Shell(ShellCommand {
                        command: line,
                        workdir: join_path(&ctx.builder.builddir, &shell.workdir),
                        env: shell.env.clone(),
                        timeout_s: shell.timeout_s,
                        max_time_s: shell.max_time_s,
                        sigterm_grace_s: shell.sigterm_grace_s,
                    })),
                    description,
                )
            }
            Err(e) => (Err(e), step.name.clone()),
        },
        StepKind::Mkdir { dir } => (
            Ok(RemoteCommand::Mkdir {
                path: join_path(&ctx.builder.builddir, dir),
            }),
            format!("mkdir {dir}"),
        ),
        StepKind::Rmdir { dir } => (
            Ok(RemoteCommand::Rmdir {
                path: join_path(&ctx.builder.builddir, dir),
            }),
            format!("rmdir {dir}"),
        ),
    };
    let description = step.description.clone().unwrap_or(description);
    let stepid = data
        .start_step(ctx.buildid, number, &step.name, &description)
        .await?;
    let mut log = data.add_log(stepid, "stdio").await?;
    let command = match command {
        Ok(c) => c,
        Err(e) => {
            log.header(&format!("could not build the command: {e}"))
                .await?;
            log.finish().await?;
            data.finish_step(stepid, EXCEPTION, &format!("{description} (exception)"))
                .await?;
            return Ok(EXCEPTION);
        }
    };
    write_command_header(&mut log, &command).await?;
    let outcome = remote::run(
        &mut ctx.link,
        command,
        ctx.stop.interrupt.clone(),
        &mut LogSink(&mut log),
    )
    .await;
    let result = match outcome {
        Ok(outcome) => {
            write_outcome(&mut log, &outcome).await?;
            if outcome.interrupted {
                match ctx.stop.requested() {
                    Some(StopKind::Shutdown) => RETRY,
                    _ => CANCELLED,
                }
            } else if outcome.succeeded() {
                SUCCESS
            } else {
                FAILURE
            }
        }
        Err(RemoteError::ConnectionLost(e)) => {
            log.header(&format!("lost the connection to the worker: {e}"))
                .await?;
            RETRY
        }
        Err(e) => {
            log.header(&e.to_string()).await?;
            EXCEPTION
        }
    };
    log.finish().await?;
    let state = if result == SUCCESS {
        description
    } else {
        format!("{description} ({})", results::name(result))
    };
    data.finish_step(stepid, result, &state).await?;
    Ok(result)
}

async fn write_command_header(
    log: &mut LogWriter,
    command: &RemoteCommand,
) -> Result<(), DataError> {
    match command {
        RemoteCommand::Shell(s) => {
            log.header(&s.command.display()).await?;
            log.header(&format!(" in dir {}", s.workdir)).await?;
            for (k, v) in &s.env {
                match v {
                    Some(v) => log.header(&format!(" env: {k}={v}")).await?,
                    None => log.header(&format!(" env: unset {k}")).await?,
                }
            }
            if let Some(t) = s.timeout_s {
                log.header(&format!(" timeout: {t} s without output"))
                    .await?;
            }
            if let Some(t) = s.max_time_s {
                log.header(&format!(" max time: {t} s")).await?;
            }
        }
        RemoteCommand::Mkdir { path } => log.header(&format!("mkdir {path}")).await?,
        RemoteCommand::Rmdir { path } => log.header(&format!("rmdir {path}")).await?,
        RemoteCommand::Stat { path } => log.header(&format!("stat {path}")).await?,
    }
    Ok(())
}

async fn write_outcome(log: &mut LogWriter, outcome: &CommandOutcome) -> Result<(), DataError> {
    if let Some(failure) = &outcome.failure {
        log.header(failure).await?;
    }
    if outcome.interrupted {
        log.header("command interrupted").await?;
    }
    match (outcome.rc, outcome.signal) {
        (Some(rc), _) => {
            log.header(&format!("program finished with exit code {rc}"))
                .await?
        }
        (None, Some(sig)) => {
            log.header(&format!("program killed by signal {sig}"))
                .await?
        }
        (None, None) => {}
    }
    log.header(&format!(
        "elapsedTime={:.3}",
        outcome.elapsed_ms as f64 / 1000.0
    ))
    .await
}
