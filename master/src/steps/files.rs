//! Steps on the worker's files (Buildbot's `FileExists`, `CopyDirectory`, and
//! moonbot's steps for the `rmfile`, `glob` and `listdir` commands):
//! `mb.steps.file_exists { file }`, `mb.steps.rmfile { file }`,
//! `mb.steps.copy_directory { src, dest }`,
//! `mb.steps.glob { pattern, property }` and
//! `mb.steps.list_directory { dir, property }`; paths relative to the
//! builder's directory. `glob` and `list_directory` put what they found in a
//! build property (a list; default `files`).

use super::{Compiled, RemoteIo, StepContext, StepHost, StepKind};
use crate::lua::Fields;
use crate::render::Renderable;
use crate::results::{FAILURE, SUCCESS};
use moonbot_worker::protocol::RemoteCommand;
use serde_json::Value;

/// Which command a [`FilesStep`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesOp {
    FileExists,
    Rmfile,
    CopyDirectory,
    Glob,
    ListDirectory,
}

/// A step on the worker's files.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesStep {
    pub op: FilesOp,
    /// `file`, `src`, `pattern` or `dir`.
    pub path: Renderable,
    /// `copy_directory`'s `dest`.
    pub dest: Option<Renderable>,
    /// Where `glob` and `list_directory` put their answer.
    pub property: String,
}

pub fn compile(f: &mut Fields<'_>, op: FilesOp) -> Compiled {
    let (key, name) = match op {
        FilesOp::FileExists => ("file", "file_exists"),
        FilesOp::Rmfile => ("file", "rmfile"),
        FilesOp::CopyDirectory => ("src", "copy_directory"),
        FilesOp::Glob => ("pattern", "glob"),
        FilesOp::ListDirectory => ("dir", "list_directory"),
    };
    let path = crate::render::field(f, key);
    if f.get(key).is_none() {
        let msg = format!("{}: '{key}' is required", f.what);
        f.error(msg);
    }
    let dest = if op == FilesOp::CopyDirectory {
        let dest = crate::render::field(f, "dest");
        if f.get("dest").is_none() {
            let msg = format!("{}: 'dest' is required", f.what);
            f.error(msg);
        }
        dest
    } else {
        None
    };
    let property = match op {
        FilesOp::Glob | FilesOp::ListDirectory => {
            f.string("property").unwrap_or_else(|| "files".into())
        }
        _ => String::new(),
    };
    Compiled {
        kind: path.map(|path| {
            StepKind::Files(FilesStep {
                op,
                path,
                dest,
                property,
            })
        }),
        default_name: name.into(),
    }
}

pub async fn run<H: StepHost>(
    step: &FilesStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let path = match ctx.render.render_string(&step.path).await {
        Ok(p) => ctx.path(&p),
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render the path: {e}"))
                .await;
        }
    };
    let dest = match &step.dest {
        Some(d) => match ctx.render.render_string(d).await {
            Ok(d) => Some(ctx.path(&d)),
            Err(e) => {
                return ctx
                    .cannot_start(&format!("could not render 'dest': {e}"))
                    .await;
            }
        },
        None => None,
    };
    let (description, command) = match step.op {
        FilesOp::FileExists => (
            format!("file_exists {path}"),
            RemoteCommand::Stat { path: path.clone() },
        ),
        FilesOp::Rmfile => (
            format!("rmfile {path}"),
            RemoteCommand::Rmfile { path: path.clone() },
        ),
        FilesOp::CopyDirectory => {
            let to = dest.unwrap_or_default();
            (
                format!("copy {path} to {to}"),
                RemoteCommand::Cpdir {
                    from: path.clone(),
                    to,
                },
            )
        }
        FilesOp::Glob => (
            format!("glob {path}"),
            RemoteCommand::Glob {
                pattern: path.clone(),
            },
        ),
        FilesOp::ListDirectory => (
            format!("listdir {path}"),
            RemoteCommand::Listdir { path: path.clone() },
        ),
    };
    ctx.host.begin(&description).await?;
    ctx.host.header(&description).await?;
    let (result, outcome) = ctx.run_command_with(command, RemoteIo::Log).await?;
    let Some(outcome) = outcome else {
        return Ok(result);
    };
    match step.op {
        FilesOp::FileExists => {
            let is_file = outcome.stat.is_some_and(|s| s.is_file);
            if !is_file {
                ctx.host.header(&format!("{path} is not a file")).await?;
                return Ok(FAILURE);
            }
            ctx.host.header(&format!("{path} exists")).await?;
        }
        FilesOp::Glob | FilesOp::ListDirectory if result == SUCCESS => {
            let files = outcome.files.unwrap_or_default();
            ctx.host
                .header(&format!("{} found: {}", files.len(), files.join(" ")))
                .await?;
            let value = Value::Array(files.into_iter().map(Value::String).collect());
            ctx.host.set_property(&step.property, value).await?;
        }
        _ => {}
    }
    Ok(result)
}
