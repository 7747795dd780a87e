//! `mb.steps.shell_sequence { commands = { { command, log_name,
//! halt_on_failure, … }, … } }`: several commands in one step, each with its
//! own log when it names one (Buildbot's `ShellSequence` of `ShellArg`s).
//! The step's `workdir`, `env` and time limits apply to every command.
//!
//! Result: each command's failure counts as its flags say (FAILURE by
//! default, WARNINGS with `warn_on_failure`, nothing with
//! `flunk_on_failure = false`); `halt_on_failure` stops the sequence; an
//! EXCEPTION, RETRY or CANCELLED ends it at once.

use super::shell::{self, ShellStep};
use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::{ConfigError, Fields, RawValue};
use crate::render::Renderable;
use crate::results::{self, CANCELLED, EXCEPTION, FAILURE, RETRY, SUCCESS, WARNINGS};
use moonbot_worker::protocol::RemoteCommand;

/// The commands, and the shell settings they share.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceStep {
    pub commands: Vec<SequenceCommand>,
    /// `workdir`, `env` and time limits; its own `command` is unused.
    pub shell: ShellStep,
}

/// One command of a sequence (Buildbot's `ShellArg`).
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceCommand {
    pub command: Renderable,
    /// The log its output goes to (default `stdio`).
    pub log_name: Option<String>,
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
}

/// Compile `commands` and the shell settings.
pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let what = f.what.clone();
    let at = f.at.clone();
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut commands = Vec::new();
    // Whether every command compiled (a bad one is reported where it is).
    let mut complete = false;
    match f.list("commands") {
        Some(items) if items.is_empty() => f.error(format!(
            "{what}: 'commands' must be a non-empty list of {{ command = … }} tables, not an empty one"
        )),
        Some(items) => {
            complete = true;
            for (i, raw) in items.into_iter().enumerate() {
                match compile_command(raw, i + 1, &what, &at, &mut errors) {
                    Some(c) => commands.push(c),
                    None => complete = false,
                }
            }
        }
        None if f.get("commands").is_none() => {
            f.error(format!("{what}: 'commands' is required"));
        }
        None => {}
    }
    for e in errors {
        f.error_at(e.location, e.message);
    }
    let mut names = std::collections::BTreeSet::new();
    for c in &commands {
        if let Some(name) = &c.log_name
            && !names.insert(name.clone())
        {
            f.error(format!(
                "{what}: two commands write to the log '{name}'; give each its own log_name"
            ));
        }
    }
    // The shared settings: a shell step without a command of its own.
    let shell = shell::compile_settings(f, builder);
    Compiled {
        kind: complete.then_some(StepKind::ShellSequence(SequenceStep { commands, shell })),
        default_name: "shell_sequence".into(),
    }
}

/// One `{ command = …, log_name = …, halt_on_failure = … }` table.
fn compile_command(
    raw: &RawValue,
    n: usize,
    what: &str,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<SequenceCommand> {
    let RawValue::Table(entries) = raw else {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!(
                "{what}: commands[{n}] must be a {{ command = … }} table, not a {}",
                raw.type_name()
            ),
        });
        return None;
    };
    if raw.get("_kind").is_some() {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!("{what}: commands[{n}] must be a plain {{ command = … }} table"),
        });
        return None;
    }
    let mut f = Fields::new(format!("{what}: commands[{n}]"), at.to_string(), entries);
    let command = crate::render::field(&mut f, "command");
    if f.get("command").is_none() {
        let msg = format!("{what}: commands[{n}]: 'command' is required");
        f.error(msg);
    }
    let log_name = f.string("log_name");
    let halt_on_failure = f.boolean("halt_on_failure", false);
    let flunk_on_failure = f.boolean("flunk_on_failure", true);
    let warn_on_failure = f.boolean("warn_on_failure", false);
    let before = errors.len();
    f.finish(errors);
    (errors.len() == before).then_some(SequenceCommand {
        command: command?,
        log_name,
        halt_on_failure,
        flunk_on_failure,
        warn_on_failure,
    })
}

/// Run the commands in order.
pub async fn run<H: StepHost>(
    step: &SequenceStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    ctx.host.begin("running commands").await?;
    let mut overall = SUCCESS;
    for c in &step.commands {
        ctx.host
            .use_log(c.log_name.as_deref().unwrap_or("stdio"))
            .await?;
        let single = ShellStep {
            command: c.command.clone(),
            ..step.shell.clone()
        };
        let command = match shell::render(&single, ctx).await {
            Ok(command) => command,
            Err(e) => {
                ctx.host
                    .header(&format!("could not build the command: {e}"))
                    .await?;
                return Ok(results::worst(overall, EXCEPTION));
            }
        };
        shell::write_header(ctx.host, &command).await?;
        let result = ctx.run_command(RemoteCommand::Shell(command)).await?;
        match result {
            FAILURE => {
                let counted = if c.flunk_on_failure {
                    FAILURE
                } else if c.warn_on_failure {
                    WARNINGS
                } else {
                    SUCCESS
                };
                overall = results::worst(overall, counted);
                if c.halt_on_failure {
                    break;
                }
            }
            EXCEPTION | RETRY | CANCELLED => return Ok(results::worst(overall, result)),
            other => overall = results::worst(overall, other),
        }
    }
    ctx.host.use_log("stdio").await?;
    Ok(overall)
}
