//! `mb.steps.master_shell { command, workdir, env, max_time }`: a command run
//! on the master, not on a worker (Buildbot's `MasterShellCommand`), to
//! publish what a build made or poke a service only the master may reach.
//!
//! Why it must be enabled: a worker's command runs on a machine that is
//! there to run builds; this one runs as the master's user, beside its
//! database and CA key. So a builder may use it only when master.lua says
//! `allow_master_shell = true` (a checkconfig error otherwise).
//!
//! The command runs in its own process group with the master's environment
//! plus `env`, in `workdir` (relative to the master directory, default the
//! master directory itself); stopping the build sends the group SIGTERM,
//! then SIGKILL after `sigterm_time` seconds.

use super::shell::{self, ShellStep};
use super::{Compiled, StepContext, StepHost, StepKind, Stream};
use crate::lua::Fields;
use crate::results::{CANCELLED, EXCEPTION, FAILURE, RETRY, SUCCESS};
use crate::running_builds::StopKind;
use moonbot_worker::protocol::CommandLine;
use moonbot_worker::signal::{SIGKILL, SIGTERM, signal_process_group};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The command, and the shell settings it is rendered with.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterShellStep {
    pub shell: ShellStep,
}

/// A shell step's fields (its `workdir` relative to the master directory,
/// default `.`).
pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let workdir_given = f.get("workdir").is_some();
    let mut compiled = shell::compile(f, builder);
    for worker_only in [
        "want_stdout",
        "want_stderr",
        "interrupt_signal",
        "use_pty",
        "initial_stdin",
        "warning_pattern",
        "max_warnings",
        "log_files",
    ] {
        if f.get(worker_only).is_some() {
            let msg = format!("{}: master_shell does not take '{worker_only}'", f.what);
            f.error(msg);
        }
    }
    compiled.kind = compiled.kind.map(|kind| match kind {
        StepKind::Shell(mut shell) => {
            if !workdir_given {
                shell.workdir = crate::render::Renderable::Literal(".".into());
            }
            StepKind::MasterShell(MasterShellStep { shell })
        }
        other => other,
    });
    compiled
}

pub async fn run<H: StepHost>(
    step: &MasterShellStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    if ctx.from_repository {
        return ctx
            .cannot_start("a step from the repository cannot run commands on the master")
            .await;
    }
    let (line, workdir, env) = match shell::render_parts(&step.shell, ctx.render).await {
        Ok(parts) => parts,
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not build the command: {e}"))
                .await;
        }
    };
    let dir = ctx.master_dir.join(&workdir);
    ctx.host
        .begin(&format!("'{}' (on the master)", line.display()))
        .await?;
    ctx.host
        .header(&format!("{} (on the master)", line.display()))
        .await?;
    ctx.host
        .header(&format!(" in dir {}", dir.display()))
        .await?;
    let mut command = match &line {
        CommandLine::Shell(s) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        CommandLine::Argv(argv) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    for (name, value) in &env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    command
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            ctx.host.header(&format!("cannot start it: {e}")).await?;
            return Ok(EXCEPTION);
        }
    };
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Ok(EXCEPTION);
    };
    let mut interrupt = ctx.stop.interrupt.clone();
    let max_time = step.shell.max_time_s.map(Duration::from_secs);
    let deadline = tokio::time::sleep(max_time.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let (mut out_open, mut err_open) = (true, true);
    let (mut out_buf, mut err_buf) = (vec![0u8; 16384], vec![0u8; 16384]);
    let mut stopped: Option<&'static str> = None;
    let status = loop {
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => ctx.host.output(Stream::Stdout, &out_buf[..n]).await?,
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => ctx.host.output(Stream::Stderr, &err_buf[..n]).await?,
            },
            status = child.wait(), if !out_open && !err_open => break status,
            changed = interrupt.changed(), if stopped.is_none() => {
                if changed.is_ok() && interrupt.borrow().is_some() {
                    stopped = Some("interrupted");
                    terminate(group, step.shell.sigterm_grace_s);
                }
            },
            () = &mut deadline, if stopped.is_none() => {
                stopped = Some("max_time exceeded");
                terminate(group, step.shell.sigterm_grace_s);
            },
        }
    };
    if let Some(why) = stopped {
        ctx.host.header(&format!("command {why}")).await?;
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            ctx.host.header(&format!("cannot wait for it: {e}")).await?;
            return Ok(EXCEPTION);
        }
    };
    match status.code() {
        Some(rc) => {
            ctx.host
                .header(&format!("program finished with exit code {rc}"))
                .await?
        }
        None => ctx.host.header("program killed by a signal").await?,
    }
    Ok(match (stopped, ctx.stop.requested()) {
        (Some("interrupted"), Some(StopKind::Shutdown)) => RETRY,
        (Some("interrupted"), _) => CANCELLED,
        (Some(_), _) => FAILURE,
        (None, _) => match (ctx.decode_rc, status.code()) {
            (Some(rule), Some(rc)) => rule.get(&(rc as i64)).copied().unwrap_or(FAILURE),
            (None, Some(0)) => SUCCESS,
            _ => FAILURE,
        },
    })
}

/// SIGTERM to the command's group now, SIGKILL after `grace_s` seconds.
fn terminate(group: Option<i32>, grace_s: u64) {
    let Some(group) = group else { return };
    let _ = signal_process_group(group, SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(grace_s)).await;
        let _ = signal_process_group(group, SIGKILL);
    });
}
