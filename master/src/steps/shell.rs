//! `mb.steps.shell{ command = … }`: run a command on the worker (Buildbot's
//! `ShellCommand`). The command is a string for `/bin/sh -c`, an argv list, or
//! a Lua function of the build's properties returning either.

use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::{CallError, Fields, RawKey, RawValue, Renderable};
use moonbot_worker::protocol::{CommandLine, RemoteCommand, ShellCommand};
use std::collections::BTreeMap;

/// A command on the worker (Buildbot's `ShellCommand`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShellStep {
    pub command: Renderable<CommandLine>,
    /// Relative to the builder's directory.
    pub workdir: String,
    /// Variables to set; `None` unsets one.
    pub env: BTreeMap<String, Option<String>>,
    /// Seconds without output before the command is stopped.
    pub timeout_s: Option<u64>,
    /// Seconds the command may run in all.
    pub max_time_s: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when it is stopped (`sigterm_time`).
    pub sigterm_grace_s: u64,
}

/// Compile the fields of `mb.steps.shell{…}`.
pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let command = match f.get("command") {
        None => {
            let msg = format!("{builder}: step: 'command' is required");
            f.error(msg);
            None
        }
        Some(RawValue::Str(s)) if s.trim().is_empty() => {
            let msg = format!("{builder}: step: 'command' is empty");
            f.error(msg);
            None
        }
        Some(RawValue::Str(s)) => Some(Renderable::Value(CommandLine::Shell(s.clone()))),
        Some(RawValue::Function(func)) => Some(Renderable::Lua(func.clone())),
        Some(value @ RawValue::Table(_)) => match command_argv(value) {
            Ok(argv) => Some(Renderable::Value(CommandLine::Argv(argv))),
            Err(e) => {
                let msg = format!("{builder}: step: 'command' {e}");
                f.error(msg);
                None
            }
        },
        Some(other) => {
            let msg = format!(
                "{builder}: step: 'command' must be a string, a list of strings or a function, not a {}",
                other.type_name()
            );
            f.error(msg);
            None
        }
    };
    let workdir = f.string("workdir").unwrap_or_else(|| "build".into());
    let env = compile_env(f, builder);
    let timeout_s = Some(f.integer("timeout", 1, 7 * 86400).unwrap_or(1200) as u64);
    let max_time_s = f.integer("max_time", 1, 30 * 86400).map(|n| n as u64);
    let sigterm_grace_s = f.integer("sigterm_time", 0, 3600).unwrap_or(5) as u64;
    let default_name = match &command {
        Some(Renderable::Value(CommandLine::Argv(argv))) => argv[0].clone(),
        Some(Renderable::Value(CommandLine::Shell(s))) => {
            s.split_whitespace().next().unwrap_or("shell").to_string()
        }
        _ => "shell".to_string(),
    };
    Compiled {
        kind: command.map(|command| {
            StepKind::Shell(ShellStep {
                command,
                workdir,
                env,
                timeout_s,
                max_time_s,
                sigterm_grace_s,
            })
        }),
        default_name,
    }
}

fn command_argv(value: &RawValue) -> Result<Vec<String>, String> {
    let RawValue::Table(entries) = value else {
        return Err("must be a list".into());
    };
    if entries.is_empty() {
        return Err("is an empty list".into());
    }
    let mut argv = Vec::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if *k != RawKey::Int(i as i64 + 1) {
            return Err(format!("must be a list, but has the key {k}"));
        }
        match v {
            RawValue::Str(s) => argv.push(s.clone()),
            RawValue::Int(n) => argv.push(n.to_string()),
            other => return Err(format!("must list strings, found a {}", other.type_name())),
        }
    }
    Ok(argv)
}

fn compile_env(f: &mut Fields<'_>, builder: &str) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match f.get("env") {
        None => {}
        Some(RawValue::Table(entries)) => {
            for (k, v) in entries {
                let RawKey::Str(name) = k else {
                    f.error(format!("{builder}: step: 'env' must have string keys"));
                    continue;
                };
                match v {
                    RawValue::Str(s) => {
                        env.insert(name.clone(), Some(s.clone()));
                    }
                    RawValue::Int(n) => {
                        env.insert(name.clone(), Some(n.to_string()));
                    }
                    RawValue::Bool(false) => {
                        env.insert(name.clone(), None);
                    }
                    other => f.error(format!(
                        "{builder}: step: env '{name}' must be a string (or false to unset), not a {}",
                        other.type_name()
                    )),
                }
            }
        }
        Some(other) => f.error(format!(
            "{builder}: step: 'env' must be a table, not a {}",
            other.type_name()
        )),
    }
    env
}

/// Run the command: render it, show it (with its directory, environment and
/// time limits) in the log's header, and run it on the worker.
pub async fn run<H: StepHost>(
    step: &ShellStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let line = match render_command(ctx, &step.command).await {
        Ok(line) => line,
        Err(e) => {
            ctx.host.begin(ctx.name).await?;
            ctx.host
                .header(&format!("could not build the command: {e}"))
                .await?;
            return Ok(crate::results::EXCEPTION);
        }
    };
    ctx.host.begin(&format!("'{}'", line.display())).await?;
    let command = ShellCommand {
        command: line,
        workdir: ctx.path(&step.workdir),
        env: step.env.clone(),
        timeout_s: step.timeout_s,
        max_time_s: step.max_time_s,
        sigterm_grace_s: step.sigterm_grace_s,
    };
    write_header(ctx.host, &command).await?;
    ctx.run_command(RemoteCommand::Shell(command)).await
}

/// Why a command function gave no command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the command function returned a list with a {0}")]
    ListItem(&'static str),
    #[error("the command function returned an empty list")]
    EmptyList,
    #[error(
        "the command function (defined at {defined_at}) must return a string or a list, not a {type_name}"
    )]
    NotACommand {
        defined_at: String,
        type_name: &'static str,
    },
}

/// The command line, from master.lua or from its Lua function.
async fn render_command<H: StepHost>(
    ctx: &StepContext<'_, H>,
    command: &Renderable<CommandLine>,
) -> Result<CommandLine, RenderError> {
    match command {
        Renderable::Value(c) => Ok(c.clone()),
        Renderable::Lua(f) => match ctx.lua.call(f, ctx.properties_json()).await? {
            RawValue::Str(s) => Ok(CommandLine::Shell(s)),
            RawValue::Table(items) => {
                let argv = items
                    .into_iter()
                    .map(|(_, v)| match v {
                        RawValue::Str(s) => Ok(s),
                        RawValue::Int(i) => Ok(i.to_string()),
                        other => Err(RenderError::ListItem(other.type_name())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if argv.is_empty() {
                    Err(RenderError::EmptyList)
                } else {
                    Ok(CommandLine::Argv(argv))
                }
            }
            other => Err(RenderError::NotACommand {
                defined_at: f.defined_at.clone(),
                type_name: other.type_name(),
            }),
        },
    }
}

async fn write_header<H: StepHost>(host: &mut H, s: &ShellCommand) -> Result<(), H::Error> {
    host.header(&s.command.display()).await?;
    host.header(&format!(" in dir {}", s.workdir)).await?;
    for (k, v) in &s.env {
        match v {
            Some(v) => host.header(&format!(" env: {k}={v}")).await?,
            None => host.header(&format!(" env: unset {k}")).await?,
        }
    }
    if let Some(t) = s.timeout_s {
        host.header(&format!(" timeout: {t} s without output"))
            .await?;
    }
    if let Some(t) = s.max_time_s {
        host.header(&format!(" max time: {t} s")).await?;
    }
    Ok(())
}
