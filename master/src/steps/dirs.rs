//! `mb.steps.mkdir{ dir = … }` and `mb.steps.rmdir{ dir = … }`: create a
//! directory (with its parents) or remove a directory tree on the worker,
//! relative to the builder's directory (`dir` may be a renderable).
//! Buildbot's `MakeDirectory` and `RemoveDirectory`.

use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::Fields;
use crate::render::Renderable;
use moonbot_worker::protocol::RemoteCommand;

/// The directory a mkdir or rmdir step works on.
#[derive(Debug, Clone, PartialEq)]
pub struct DirStep {
    /// Relative to the builder's directory.
    pub dir: Renderable,
}

/// Compile `dir`; `name` is the step's default name, `kind` makes the variant.
pub fn compile(f: &mut Fields<'_>, name: &str, kind: fn(DirStep) -> StepKind) -> Compiled {
    let dir = crate::render::field(f, "dir");
    if f.get("dir").is_none() {
        let msg = format!("{}: 'dir' is required", f.what);
        f.error(msg);
    }
    Compiled {
        kind: dir.map(|dir| kind(DirStep { dir })),
        default_name: name.to_string(),
    }
}

pub async fn run_mkdir<H: StepHost>(
    step: &DirStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    run(step, ctx, "mkdir", |path| RemoteCommand::Mkdir { path }).await
}

pub async fn run_rmdir<H: StepHost>(
    step: &DirStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    run(step, ctx, "rmdir", |path| RemoteCommand::Rmdir { path }).await
}

/// Show `verb dir`, then run the worker command `command` makes of the path.
async fn run<H: StepHost>(
    step: &DirStep,
    ctx: &mut StepContext<'_, H>,
    verb: &str,
    command: fn(String) -> RemoteCommand,
) -> Result<i32, H::Error> {
    let dir = match ctx.render.render_string(&step.dir).await {
        Ok(dir) => dir,
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render 'dir': {e}"))
                .await;
        }
    };
    let path = ctx.path(&dir);
    ctx.host.begin(&format!("{verb} {dir}")).await?;
    ctx.host.header(&format!("{verb} {path}")).await?;
    ctx.run_command(command(path)).await
}
