//! `mb.steps.pipeline { file = ".moonbot/pipeline.lua" }`: steps that come
//! from the repository being built (the Jenkinsfile / `.gitlab-ci.yml`
//! model, which Buildbot lacks).
//!
//! The file is someone else's code, so it never runs in master.lua's Lua
//! state. The directory it is in is fetched from the worker (at most
//! `max_size` bytes, through the same checked tar unpacking as uploads)
//! into a temporary directory, and the file is evaluated there in a Lua
//! state of its own ([`LuaGeneration::load_pipeline`]): no `os`, `io` or
//! `debug`, text chunks only, `require` and `loadfile` only inside that
//! directory, and its own instruction and memory budget. It sees the
//! `moonbot` module and returns a list of steps, which are checked as
//! master.lua's are and run after this one. Functions in those steps (a
//! `do_step_if`, a Lua step's `run`) are called in the pipeline's state,
//! which lives as long as the build holds them. A broken file fails the
//! step with each error's `file:line` in its log.

use super::{Compiled, RemoteIo, StepContext, StepHost, StepKind};
use crate::artifacts::{ArtifactStore, Incoming};
use crate::lua::{Fields, LuaGeneration, LuaLimits};
use crate::render::Renderable;
use crate::results::{EXCEPTION, FAILURE, SUCCESS};
use moonbot_worker::protocol::RemoteCommand;
use serde_json::Value;
use std::path::{Component, Path};

/// The default pipeline file, relative to `workdir`.
pub const DEFAULT_FILE: &str = ".moonbot/pipeline.lua";

/// `mb.steps.pipeline{…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStep {
    /// Relative to `workdir`.
    pub file: Renderable,
    pub workdir: Renderable,
    /// Most bytes of the file's directory fetched from the worker.
    pub max_size: u64,
    /// The pipeline state's memory and instructions (loading, and each
    /// later call of one of its functions).
    pub limits: LuaLimits,
}

/// Compile the fields of `mb.steps.pipeline{…}`.
pub fn compile(f: &mut Fields<'_>) -> Compiled {
    let file = crate::render::field(f, "file")
        .unwrap_or_else(|| Renderable::Literal(Value::String(DEFAULT_FILE.into())));
    let workdir = crate::render::field(f, "workdir")
        .unwrap_or_else(|| Renderable::Literal(Value::String("build".into())));
    let max_size = f.integer("max_size", 1024, 64 << 20).unwrap_or(1 << 20) as u64;
    let instructions = f
        .integer("max_instructions", 10_000, 10_000_000_000)
        .unwrap_or(100_000_000) as u64;
    let memory_mb = f.integer("max_memory_mb", 1, 1024).unwrap_or(64) as usize;
    Compiled {
        kind: Some(StepKind::Pipeline(Box::new(PipelineStep {
            file,
            workdir,
            max_size,
            limits: LuaLimits {
                memory_bytes: memory_mb << 20,
                load_instructions: instructions,
                call_instructions: instructions,
                sandbox: true,
            },
        }))),
        default_name: "pipeline".into(),
    }
}

/// `text` with our copy's paths (`local_prefix`) and the bare chunk name
/// (`name:` at a line's start or after a space) as the repository's
/// (`dir_prefix`, `file`).
fn named_as_in_repo(
    text: &str,
    local_prefix: &str,
    dir_prefix: &str,
    name: &str,
    file: &str,
) -> String {
    let text = text.replace(local_prefix, dir_prefix);
    if name == file {
        return text;
    }
    let bare = format!("{name}:");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(&bare) {
        let before = &rest[..i];
        let at_word = before.is_empty() && out.is_empty()
            || before.ends_with([' ', '\n', '\t'])
            || (before.is_empty() && out.ends_with([' ', '\n', '\t']));
        out.push_str(before);
        if at_word {
            out.push_str(file);
            out.push(':');
        } else {
            out.push_str(&bare);
        }
        rest = &rest[i + bare.len()..];
    }
    out.push_str(rest);
    out
}

/// A plain relative path: no `..`, not absolute.
fn plain(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

pub async fn run<H: StepHost>(
    step: &PipelineStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let rendered = async {
        let file = ctx.render.render_string(&step.file).await?;
        let workdir = ctx.render.render_string(&step.workdir).await?;
        Ok::<_, crate::render::RenderError>((file, workdir))
    }
    .await;
    let (file, workdir) = match rendered {
        Ok(r) => r,
        Err(e) => return ctx.cannot_start(&format!("could not render: {e}")).await,
    };
    if !plain(&file) {
        return ctx
            .cannot_start(&format!(
                "the pipeline file {file:?} must be a relative path inside the checkout"
            ))
            .await;
    }
    ctx.host.begin(&format!("pipeline {file}")).await?;
    let path = Path::new(&file);
    let dir = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // The file's directory, from the worker, into a directory of our own.
    let scratch = match tempfile::tempdir() {
        Ok(scratch) => scratch,
        Err(e) => {
            ctx.host
                .header(&format!("cannot make a directory for the pipeline: {e}"))
                .await?;
            return Ok(EXCEPTION);
        }
    };
    let store = ArtifactStore::new(scratch.path().to_path_buf());
    let mut incoming = match store.receive_tree(0, "pipeline", None, step.max_size).await {
        Ok(tree) => Incoming::Tree(tree),
        Err(e) => {
            ctx.host.header(&format!("cannot receive: {e}")).await?;
            return Ok(EXCEPTION);
        }
    };
    let worker_dir = ctx.path(&format!("{workdir}/{dir}"));
    ctx.host
        .header(&format!(
            "fetching {worker_dir} (at most {} bytes)",
            step.max_size
        ))
        .await?;
    let command = RemoteCommand::UploadDirectory {
        path: worker_dir,
        compress: None,
        max_size: Some(step.max_size),
    };
    let (fetched, _) = ctx
        .run_command_with(command, RemoteIo::Receive(&mut incoming))
        .await?;
    if fetched != SUCCESS {
        incoming.abandon().await;
        ctx.host
            .header(&format!("could not fetch the directory of {file}"))
            .await?;
        return Ok(fetched);
    }
    if let Err(e) = incoming.finish(None).await {
        ctx.host.header(&format!("fetch refused: {e}")).await?;
        return Ok(FAILURE);
    }
    let local = scratch.path().join("0").join("pipeline");
    if !local.join(&name).is_file() {
        ctx.host
            .header(&format!("there is no pipeline file {file} in {workdir}"))
            .await?;
        return Ok(FAILURE);
    }

    // Evaluated on a thread of its own (loading waits for it).
    let limits = step.limits;
    let (at, file_name) = (local.clone(), name.clone());
    let loaded =
        tokio::task::spawn_blocking(move || LuaGeneration::load_pipeline(&at, &file_name, limits))
            .await;
    // Errors name the file as the repository does, not our copy.
    let local_prefix = format!("{}/", local.display());
    let dir_prefix = if dir == "." {
        String::new()
    } else {
        format!("{dir}/")
    };
    let in_repo = |text: &str| named_as_in_repo(text, &local_prefix, &dir_prefix, &name, &file);
    let steps = match loaded {
        Ok(Ok(steps)) => steps,
        Ok(Err(errors)) => {
            for e in &errors {
                ctx.host.header(&in_repo(&e.to_string())).await?;
            }
            ctx.host.set_summary(&format!("{file}: broken"));
            return Ok(FAILURE);
        }
        Err(e) => {
            ctx.host
                .header(&format!("the pipeline's evaluation stopped: {e}"))
                .await?;
            return Ok(EXCEPTION);
        }
    };
    match ctx.host.add_steps(true, &steps, &file, true).await? {
        Ok(names) => {
            ctx.host.set_summary(&format!(
                "{} step{} from {file}",
                names.len(),
                if names.len() == 1 { "" } else { "s" }
            ));
            Ok(SUCCESS)
        }
        Err(why) => {
            ctx.host
                .header(&in_repo(&format!("{file}: the returned steps: {why}")))
                .await?;
            ctx.host.set_summary(&format!("{file}: broken"));
            Ok(FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_as_the_repository_does() {
        let name = |text: &str| {
            named_as_in_repo(
                text,
                "/tmp/x/0/pipeline/",
                ".moonbot/",
                "pipeline.lua",
                ".moonbot/pipeline.lua",
            )
        };
        assert_eq!(
            name("pipeline.lua:3: unexpected symbol"),
            ".moonbot/pipeline.lua:3: unexpected symbol"
        );
        assert_eq!(
            name("x: pipeline.lua:4: bad; /tmp/x/0/pipeline/lib.lua:2: worse"),
            "x: .moonbot/pipeline.lua:4: bad; .moonbot/lib.lua:2: worse"
        );
        assert_eq!(name("mypipeline.lua:1: kept"), "mypipeline.lua:1: kept");
        assert!(plain(".moonbot/pipeline.lua") && plain("p.lua"));
        assert!(!plain("../p.lua") && !plain("/etc/p.lua") && !plain(""));
    }
}
