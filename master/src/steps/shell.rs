//! `mb.steps.shell{ command = … }`: run a command on the worker (Buildbot's
//! `ShellCommand`). The command is a string for `/bin/sh -c`, an argv list
//! (whose elements may be renderables; a list among them is flattened, as
//! Buildbot does), or a renderable giving either. `workdir` and each `env`
//! value may be renderables too.

use super::warnings::WarningRule;
use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::{Fields, RawKey, RawValue};
use crate::render::{RenderContext, RenderError, Renderable, interpolate::value_text};
use moonbot_worker::protocol::{
    CommandIo, CommandLine, INTERRUPT_SIGNALS, RemoteCommand, ShellCommand,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// A command on the worker (Buildbot's `ShellCommand`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShellStep {
    pub command: Renderable,
    /// Relative to the builder's directory.
    pub workdir: Renderable,
    /// Variables to set; `None` unsets one.
    pub env: BTreeMap<String, Option<Renderable>>,
    /// Seconds without output before the command is stopped.
    pub timeout_s: Option<u64>,
    /// Seconds the command may run in all.
    pub max_time_s: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when it is stopped (`sigterm_time`).
    pub sigterm_grace_s: u64,
    /// `want_stdout`, `want_stderr`, `interrupt_signal`, `use_pty` (the
    /// stdin text is rendered from `initial_stdin`).
    pub io: CommandIo,
    pub initial_stdin: Option<Renderable>,
    /// Lines of output that count as warnings (`warning_pattern`).
    pub warnings: Option<WarningRule>,
    /// Log name → a file (relative to the workdir) the worker follows into
    /// that log while the command runs (`log_files`).
    pub log_files: BTreeMap<String, Renderable>,
}

/// Compile the fields of `mb.steps.shell{…}`.
pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    compile_with(f, builder, None)
}

/// `mb.steps.compile{…}` (Buildbot's `Compile`): a shell step that counts
/// warnings, with Buildbot's default `warning_pattern`.
pub fn compile_compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let mut compiled = compile_with(f, builder, Some(super::warnings::COMPILE_PATTERN));
    compiled.default_name = "compile".into();
    compiled
}

/// A shell step whose `warning_pattern` defaults to `default_pattern`.
fn compile_with(f: &mut Fields<'_>, builder: &str, default_pattern: Option<&str>) -> Compiled {
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
        Some(RawValue::Str(s)) => Some(Renderable::Literal(Value::String(s.clone()))),
        Some(value @ RawValue::Table(_)) if value.get("_kind").is_none() => {
            match command_argv(value) {
                Ok(()) => crate::render::field(f, "command"),
                Err(e) => {
                    let msg = format!("{builder}: step: 'command' {e}");
                    f.error(msg);
                    None
                }
            }
        }
        Some(RawValue::Function(_) | RawValue::Table(_)) => crate::render::field(f, "command"),
        Some(other) => {
            let msg = format!(
                "{builder}: step: 'command' must be a string, a list, a renderable or a function, not a {}",
                other.type_name()
            );
            f.error(msg);
            None
        }
    };
    let mut settings = compile_settings(f, builder);
    compile_io(f, &mut settings, default_pattern);
    let default_name = match &command {
        Some(Renderable::Literal(Value::String(s))) => {
            s.split_whitespace().next().unwrap_or("shell").to_string()
        }
        Some(Renderable::Literal(Value::Array(argv))) => argv
            .first()
            .map(value_text)
            .unwrap_or_else(|| "shell".into()),
        Some(Renderable::List(items)) => items
            .first()
            .and_then(|r| r.as_literal_str())
            .unwrap_or("shell")
            .to_string(),
        _ => "shell".to_string(),
    };
    Compiled {
        kind: command.map(|command| {
            StepKind::Shell(ShellStep {
                command,
                ..settings
            })
        }),
        default_name,
    }
}

/// A shell command's own options: `want_stdout`, `want_stderr`,
/// `interrupt_signal`, `use_pty`, `initial_stdin`, `warning_pattern` and
/// `max_warnings` (on `shell` and `set_property_from_command`).
fn compile_io(f: &mut Fields<'_>, step: &mut ShellStep, default_pattern: Option<&str>) {
    let what = f.what.clone();
    let interrupt_signal = f.string("interrupt_signal").map(|s| {
        let name = s.trim_start_matches("SIG").to_ascii_uppercase();
        if !INTERRUPT_SIGNALS.contains(&name.as_str()) {
            f.error(format!(
                "{what}: 'interrupt_signal' must be one of {}, not \"{s}\"",
                INTERRUPT_SIGNALS.join(", ")
            ));
        }
        name
    });
    let io = CommandIo {
        want_stdout: f.boolean("want_stdout", true),
        want_stderr: f.boolean("want_stderr", true),
        initial_stdin: None,
        interrupt_signal,
        use_pty: f.boolean("use_pty", false),
        log_files: BTreeMap::new(),
    };
    let warnings = super::warnings::compile(f, default_pattern);
    step.io = io;
    step.initial_stdin = crate::render::field(f, "initial_stdin");
    step.warnings = warnings;
    let at = f.at.clone();
    match f.get("log_files") {
        None => {}
        Some(RawValue::Table(entries)) => {
            for (k, v) in entries {
                let RawKey::Str(name) = k else {
                    f.error(format!("{what}: 'log_files' maps log names to files"));
                    continue;
                };
                if name == "stdio" || name == "warnings" {
                    f.error(format!("{what}: log_files: '{name}' is the step's own log"));
                    continue;
                }
                if name.is_empty() || name.len() > 200 {
                    f.error(format!("{what}: log_files: a log name is 1-200 bytes"));
                    continue;
                }
                match Renderable::compile(v, &format!("{what}: log_files '{name}'"), &at) {
                    Ok(r) => {
                        step.log_files.insert(name.clone(), r);
                    }
                    Err(e) => f.error_at(e.location, e.message),
                }
            }
        }
        Some(other) => f.error(format!(
            "{what}: 'log_files' must be a table of log name = file, not a {}",
            other.type_name()
        )),
    }
}

/// What every command-running step shares: `workdir`, `env`, `timeout`,
/// `max_time`, `sigterm_time` (the command is left empty).
pub fn compile_settings(f: &mut Fields<'_>, builder: &str) -> ShellStep {
    ShellStep {
        io: CommandIo::default(),
        initial_stdin: None,
        warnings: None,
        log_files: BTreeMap::new(),
        command: Renderable::Literal(Value::Null),
        workdir: crate::render::field(f, "workdir")
            .unwrap_or_else(|| Renderable::Literal(Value::String("build".into()))),
        env: compile_env(f, builder),
        timeout_s: Some(f.integer("timeout", 1, 7 * 86400).unwrap_or(1200) as u64),
        max_time_s: f.integer("max_time", 1, 30 * 86400).map(|n| n as u64),
        sigterm_grace_s: f.integer("sigterm_time", 0, 3600).unwrap_or(5) as u64,
    }
}

/// An argv list must be a non-empty sequence of strings, numbers and
/// renderables.
fn command_argv(value: &RawValue) -> Result<(), String> {
    let RawValue::Table(entries) = value else {
        return Err("must be a list".into());
    };
    if entries.is_empty() {
        return Err("is an empty list".into());
    }
    for (i, (k, v)) in entries.iter().enumerate() {
        if *k != RawKey::Int(i as i64 + 1) {
            return Err(format!("must be a list, but has the key {k}"));
        }
        match v {
            RawValue::Str(_) | RawValue::Int(_) | RawValue::Num(_) | RawValue::Function(_) => {}
            RawValue::Table(_) if v.get("_kind").is_some() => {}
            other => {
                return Err(format!(
                    "must list strings or renderables, found a {}",
                    other.type_name()
                ));
            }
        }
    }
    Ok(())
}

fn compile_env(f: &mut Fields<'_>, builder: &str) -> BTreeMap<String, Option<Renderable>> {
    let mut env = BTreeMap::new();
    let at = f.at.clone();
    match f.get("env") {
        None => {}
        Some(RawValue::Table(entries)) => {
            for (k, v) in entries {
                let RawKey::Str(name) = k else {
                    f.error(format!("{builder}: step: 'env' must have string keys"));
                    continue;
                };
                match v {
                    RawValue::Bool(false) => {
                        env.insert(name.clone(), None);
                    }
                    RawValue::Str(_)
                    | RawValue::Int(_)
                    | RawValue::Num(_)
                    | RawValue::Function(_)
                    | RawValue::Table(_) => {
                        match Renderable::compile(v, &format!("{builder}: step: env '{name}'"), &at)
                        {
                            Ok(r) => {
                                env.insert(name.clone(), Some(r));
                            }
                            Err(e) => f.error_at(e.location, e.message),
                        }
                    }
                    other => f.error(format!(
                        "{builder}: step: env '{name}' must be a string or renderable (or false to unset), not a {}",
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
    Ok(execute(step, ctx, false).await?.0)
}

/// [`run`], and the command's output when `keep` (else only what
/// `warning_pattern` needed).
pub async fn execute<H: StepHost>(
    step: &ShellStep,
    ctx: &mut StepContext<'_, H>,
    keep: bool,
) -> Result<(i32, super::Collected), H::Error> {
    let mut out = super::Collected::default();
    let command = match render(step, ctx).await {
        Ok(command) => command,
        Err(e) => {
            let result = ctx
                .cannot_start(&format!("could not build the command: {e}"))
                .await?;
            return Ok((result, out));
        }
    };
    ctx.host
        .begin(&format!("'{}'", command.command.display()))
        .await?;
    write_header(ctx.host, &command).await?;
    // Each followed file's log exists from the start, empty until it shows.
    if !command.io.log_files.is_empty() {
        for name in command.io.log_files.keys() {
            ctx.host.use_log(name).await?;
        }
        ctx.host.use_log("stdio").await?;
    }
    let collect = (keep || step.warnings.is_some()).then_some(&mut out);
    let workdir = command.workdir.clone();
    let mut result = ctx
        .run_command_collecting(RemoteCommand::Shell(command), collect)
        .await?;
    if let Some(rule) = &step.warnings {
        result = super::warnings::count(ctx, rule, &out, &workdir, result).await?;
    }
    Ok((result, out))
}

/// The command with every renderable made concrete.
pub async fn render<H: StepHost>(
    step: &ShellStep,
    ctx: &StepContext<'_, H>,
) -> Result<ShellCommand, RenderError> {
    let (command, workdir, env) = render_parts(step, ctx.render).await?;
    let mut io = step.io.clone();
    if let Some(stdin) = &step.initial_stdin {
        io.initial_stdin = Some(ctx.render.render_string(stdin).await?);
    }
    for (name, file) in &step.log_files {
        io.log_files
            .insert(name.clone(), ctx.render.render_string(file).await?);
    }
    Ok(ShellCommand {
        command,
        workdir: ctx.path(&workdir),
        env,
        timeout_s: step.timeout_s,
        max_time_s: step.max_time_s,
        sigterm_grace_s: step.sigterm_grace_s,
        io,
    })
}

/// The command line, the workdir (as master.lua gave it, not yet under the
/// builder's directory) and the environment, rendered.
pub async fn render_parts(
    step: &ShellStep,
    render: &RenderContext<'_>,
) -> Result<(CommandLine, String, BTreeMap<String, Option<String>>), RenderError> {
    let command = command_line(render.render(&step.command).await?)?;
    let workdir = render.render_string(&step.workdir).await?;
    Ok((command, workdir, render_env(&step.env, render).await?))
}

/// An `env` table, rendered (`None` unsets a variable).
pub async fn render_env(
    env: &BTreeMap<String, Option<Renderable>>,
    render: &RenderContext<'_>,
) -> Result<BTreeMap<String, Option<String>>, RenderError> {
    let mut out = BTreeMap::new();
    for (name, value) in env {
        let value = match value {
            Some(r) => Some(render.render_string(r).await?),
            None => None,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// A rendered command: a string for the shell, or a list (nested lists
/// flattened) of argv words.
pub fn command_line(value: Value) -> Result<CommandLine, RenderError> {
    let not_a_command = |got: &Value| RenderError::Type {
        what: "the command".into(),
        expected: "a string or a list of strings",
        got: type_name(got).into(),
    };
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(CommandLine::Shell(s)),
        Value::Array(items) => {
            let mut argv = Vec::new();
            flatten(items, &mut argv)?;
            if argv.is_empty() {
                return Err(RenderError::Type {
                    what: "the command".into(),
                    expected: "a non-empty list",
                    got: "an empty list".into(),
                });
            }
            Ok(CommandLine::Argv(argv))
        }
        other => Err(not_a_command(&other)),
    }
}

fn flatten(items: Vec<Value>, argv: &mut Vec<String>) -> Result<(), RenderError> {
    for item in items {
        match item {
            Value::Array(inner) => flatten(inner, argv)?,
            Value::String(_) | Value::Number(_) => argv.push(value_text(&item)),
            other => {
                return Err(RenderError::Type {
                    what: "a command word".into(),
                    expected: "a string or a number",
                    got: type_name(&other).into(),
                });
            }
        }
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (nil)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

pub async fn write_header<H: StepHost>(host: &mut H, s: &ShellCommand) -> Result<(), H::Error> {
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
