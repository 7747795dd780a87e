//! `mb.steps.lua { run = function(step) … end }`: a step written in Lua,
//! moonbot's answer to a custom Buildbot step class.
//!
//! `run` runs as a task of the config's Lua state ([`crate::lua::task`]):
//! each step method that needs the master (`step:shell`, `log:write`,
//! `step:set_property`, `step:upload` …) yields a request, which [`run`]
//! carries out here with the same code the built-in kinds use (a
//! `step:shell{…}` is read like `mb.steps.shell{…}` and run like it), and
//! the answer resumes the function. Waiting for a command suspends only
//! this step. An error in the function, or running over its instruction or
//! memory budget, ends the step EXCEPTION with the Lua traceback in its
//! `err.text` log; a stopped build ends it at its next request.

use super::transfer::{self, UploadKind};
use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::{Fields, LuaFn, RawKey, RawValue, Resumed, TaskLimits};
use crate::results::{CANCELLED, EXCEPTION, RETRY, SUCCESS};
use crate::running_builds::StopKind;
use serde_json::{Value, json};

/// The log a failed Lua step's traceback goes to (Buildbot's name for a
/// step's exception log).
pub const ERROR_LOG: &str = "err.text";

/// `mb.steps.lua{…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LuaStep {
    pub run: LuaFn,
    pub limits: TaskLimits,
}

/// Compile the fields of `mb.steps.lua{…}`.
pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let run = match f.get("run") {
        Some(RawValue::Function(run)) => Some(run.clone()),
        Some(other) => {
            let msg = format!(
                "{builder}: step: 'run' must be a function, not a {}",
                other.type_name()
            );
            f.error(msg);
            None
        }
        None => {
            f.error(format!("{builder}: step: 'run' (a function) is required"));
            None
        }
    };
    let defaults = TaskLimits::default();
    let limits = TaskLimits {
        instructions: f
            .integer("max_instructions", 10_000, 100_000_000_000)
            .map_or(defaults.instructions, |n| n as u64),
        memory_bytes: f
            .integer("max_memory_mb", 1, 4096)
            .map_or(defaults.memory_bytes, |mb| (mb as usize) << 20),
    };
    Compiled {
        kind: run.map(|run| StepKind::Lua(LuaStep { run, limits })),
        default_name: "lua".into(),
    }
}

/// Run the step's function to its end, carrying out what it asks for.
pub async fn run<H: StepHost>(
    step: &LuaStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    ctx.host.begin(ctx.name).await?;
    let info = json!({ "name": ctx.name, "properties": ctx.render.properties_json() });
    let lua = ctx.render.lua;
    let (task, mut resumed) = match lua
        .start_task(ctx.lua_scope, &step.run, info, step.limits)
        .await
    {
        Ok(started) => started,
        Err(e) => return failed(ctx, &e.to_string()).await,
    };
    loop {
        let request = match resumed {
            Resumed::Returned(value) => return returned(ctx, &value).await,
            Resumed::Failed(traceback) => return failed(ctx, &traceback).await,
            Resumed::Asked(request) => request,
        };
        let (answer, ended) = carry_out(ctx, &request).await?;
        if let Some(result) = ended {
            // The worker is gone or the build stops: the function is not
            // resumed (dropping the task ends its coroutine).
            drop(task);
            return Ok(result);
        }
        resumed = match task.resume(answer).await {
            Ok(resumed) => resumed,
            Err(e) => return failed(ctx, &e.to_string()).await,
        };
    }
}

/// The result the function returned: nil is SUCCESS, else one of Buildbot's codes.
async fn returned<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    value: &RawValue,
) -> Result<i32, H::Error> {
    match value {
        RawValue::Nil => Ok(SUCCESS),
        RawValue::Int(r) if (0..=6).contains(r) => Ok(*r as i32),
        other => {
            let why = format!(
                "the step's function returned {}, not a result (mb.results.SUCCESS …) or nil",
                describe(other)
            );
            failed(ctx, &why).await
        }
    }
}

fn describe(value: &RawValue) -> String {
    match value {
        RawValue::Int(n) => n.to_string(),
        RawValue::Str(s) => format!("{s:?}"),
        other => format!("a {}", other.type_name()),
    }
}

/// End the step EXCEPTION with `why` in its `err.text` log.
async fn failed<H: StepHost>(ctx: &mut StepContext<'_, H>, why: &str) -> Result<i32, H::Error> {
    ctx.host.use_log(ERROR_LOG).await?;
    let mut text = why.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    ctx.host
        .output(super::Stream::Stderr, text.as_bytes())
        .await?;
    ctx.host.use_log("stdio").await?;
    let first = why.lines().next().unwrap_or(why);
    ctx.host
        .header(&format!("the Lua step failed: {first}"))
        .await?;
    Ok(EXCEPTION)
}

/// Carry out one request: its answer for the function, and the step's
/// result when it must end here (the worker was lost, the build stops).
async fn carry_out<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    request: &RawValue,
) -> Result<(Value, Option<i32>), H::Error> {
    let op = match request.get("op") {
        Some(RawValue::Str(op)) => op.as_str(),
        _ => {
            return Ok((
                refuse("a Lua step's requests go through its step methods"),
                None,
            ));
        }
    };
    let at = match request.get("where") {
        Some(RawValue::Str(at)) => at.clone(),
        _ => "?".to_string(),
    };
    let text = |key: &str| match request.get(key) {
        Some(RawValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let answer = match op {
        "shell" => {
            let Some(args) = request.get("args") else {
                return Ok((refuse("step:shell needs its arguments"), None));
            };
            let (answer, result) = shell(ctx, args, &at).await?;
            return Ok((answer, ended(ctx, result)));
        }
        "upload" | "download" => {
            let Some(args) = request.get("args") else {
                return Ok((refuse("a transfer needs its arguments"), None));
            };
            let (answer, result) = transfer(ctx, op, args, &at).await?;
            return Ok((answer, ended(ctx, result)));
        }
        "add_log" => match text("name") {
            Some(name) if valid_log_name(&name) => {
                ctx.host.use_log(&name).await?;
                ctx.host.use_log("stdio").await?;
                json!({})
            }
            _ => refuse("a log's name is a string of 1-200 bytes, not 'err.text'"),
        },
        "write" => match (text("log"), text("text")) {
            (Some(log), Some(text)) if valid_log_name(&log) => {
                ctx.host.use_log(&log).await?;
                ctx.host
                    .output(super::Stream::Stdout, text.as_bytes())
                    .await?;
                ctx.host.use_log("stdio").await?;
                json!({})
            }
            _ => refuse("log:write takes a string"),
        },
        "set_property" => match (text("name"), request.get("value")) {
            (Some(name), value) if !name.is_empty() && name.len() <= 256 => {
                match value.unwrap_or(&RawValue::Nil).to_json() {
                    Ok(value) => {
                        ctx.host.set_property(&name, value).await?;
                        json!({})
                    }
                    Err(e) => refuse(&format!("property '{name}': {e}")),
                }
            }
            _ => refuse("a property's name is a string of 1-256 bytes"),
        },
        "set_summary" => match text("text") {
            Some(summary) => {
                ctx.host.set_summary(&summary);
                json!({})
            }
            None => refuse("step:set_summary takes a string"),
        },
        "add_steps" => {
            let after_current = text("after").as_deref() == Some("current");
            let steps = request.get("steps").unwrap_or(&RawValue::Nil);
            match ctx.host.add_steps(after_current, steps, &at, false).await? {
                Ok(names) => json!({ "names": names }),
                Err(e) => refuse(&e),
            }
        }
        other => refuse(&format!("no step method asks for '{other}'")),
    };
    Ok((answer, ended(ctx, SUCCESS)))
}

/// The step's end when a command's result or the build's stop calls for it.
fn ended<H: StepHost>(ctx: &StepContext<'_, H>, result: i32) -> Option<i32> {
    match ctx.stop.requested() {
        Some(StopKind::Shutdown) => Some(RETRY),
        Some(StopKind::Cancel) => Some(CANCELLED),
        None if result == RETRY => Some(RETRY),
        None => None,
    }
}

fn refuse(why: &str) -> Value {
    json!({ "error": why })
}

fn valid_log_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && name != ERROR_LOG
}

/// The entries of a method's argument table (none when it is no table).
fn entries(args: &RawValue) -> &[(RawKey, RawValue)] {
    match args {
        RawValue::Table(entries) => entries,
        _ => &[],
    }
}

/// The errors a field reader found, as one answer (`None`: none).
fn field_errors(f: Fields<'_>) -> Option<Value> {
    let mut errors = Vec::new();
    f.finish(&mut errors);
    (!errors.is_empty()).then(|| {
        refuse(
            &errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// `step:shell{…}`: the arguments of `mb.steps.shell`, and `collect_stdout`.
async fn shell<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    args: &RawValue,
    at: &str,
) -> Result<(Value, i32), H::Error> {
    let what = format!("lua step '{}'", ctx.name);
    let mut f = Fields::new(format!("{what}: step:shell"), at.to_string(), entries(args));
    let collect = f.boolean("collect_stdout", false);
    let compiled = super::shell::compile(&mut f, &what);
    if let Some(refused) = field_errors(f) {
        return Ok((refused, SUCCESS));
    }
    let Some(StepKind::Shell(command)) = compiled.kind else {
        return Ok((refuse("step:shell needs a command"), SUCCESS));
    };
    ctx.host.use_log("stdio").await?;
    let (result, out) = super::shell::execute(&command, ctx, true).await?;
    let mut answer = json!({ "rc": out.rc, "result": result });
    if collect {
        answer["stdout"] = String::from_utf8_lossy(&out.stdout).into();
        answer["stderr"] = String::from_utf8_lossy(&out.stderr).into();
    }
    Ok((answer, result))
}

/// `step:upload{…}` and `step:download{…}`: the arguments of the transfer
/// step they stand for, chosen by `directory`, `workersrcs` and `s`.
async fn transfer<H: StepHost>(
    ctx: &mut StepContext<'_, H>,
    op: &str,
    args: &RawValue,
    at: &str,
) -> Result<(Value, i32), H::Error> {
    let what = format!("lua step '{}': step:{op}", ctx.name);
    let mut f = Fields::new(what, at.to_string(), entries(args));
    let directory = f.boolean("directory", false);
    let compiled = if op == "upload" {
        let kind = if directory {
            UploadKind::Directory
        } else if args.get("workersrcs").is_some() {
            UploadKind::Multiple { glob: false }
        } else {
            UploadKind::File
        };
        transfer::compile_upload(&mut f, kind)
    } else {
        let tag = if directory {
            "directory_download"
        } else if args.get("s").is_some() {
            "string_download"
        } else {
            "file_download"
        };
        transfer::compile_download(&mut f, tag)
    };
    if let Some(refused) = field_errors(f) {
        return Ok((refused, SUCCESS));
    }
    if ctx.from_repository
        && let Some(StepKind::Download(step)) = &compiled.kind
        && matches!(
            step.source,
            transfer::DownloadSource::File(_) | transfer::DownloadSource::Directory { .. }
        )
    {
        return Ok((
            refuse("a step from the repository cannot read the master's files"),
            SUCCESS,
        ));
    }
    ctx.host.use_log("stdio").await?;
    let result = match compiled.kind {
        Some(StepKind::Upload(step)) => transfer::run_upload(&step, ctx).await?,
        Some(StepKind::Download(step)) => transfer::run_download(&step, ctx).await?,
        _ => return Ok((refuse("the transfer's arguments are incomplete"), SUCCESS)),
    };
    Ok((json!({ "result": result }), result))
}
