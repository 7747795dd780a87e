//! Running one remote command on this machine: processes, their output, their
//! time limits and interrupts; the filesystem commands (`files`) and
//! transfers (`transfer`) are dispatched from here.
//!
//! This module knows nothing about QUIC. The connection hands it a
//! [`RemoteCommand`], a channel for output and a oneshot for interrupts, and gets
//! back a [`CommandOutcome`]; the tests drive it the same way with real processes.
//!
//! A shell command runs in its own process group so that stopping it (interrupt,
//! timeout, lost connection) reaches every process it started: SIGTERM to the
//! group, SIGKILL after the grace time. A command that exits by itself is never
//! signalled, even if it left background processes behind.

pub use crate::command_io::{CommandEvent, Input};
use crate::files;
use crate::protocol::{CommandOutcome, OUTPUT_CHUNK, RemoteCommand, ShellCommand};
use crate::signal::{SIGKILL, SIGTERM, process_group_alive, signal_process_group};
use crate::transfer;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until};

/// How often followed `log_files` are read while the command runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// One file of `log_files`, and how far it has been sent.
struct Follower {
    name: String,
    path: PathBuf,
    sent: u64,
}

impl Follower {
    /// What was appended since the last read (at most a few chunks), as
    /// events; a file that does not exist yet gives none, one that shrank
    /// is read again from its start.
    fn read_new(&mut self, out: &mut std::collections::VecDeque<CommandEvent>) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.sent {
            self.sent = 0;
        }
        if len == self.sent || file.seek(SeekFrom::Start(self.sent)).is_err() {
            return;
        }
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        for _ in 0..16 {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.sent += n as u64;
                    out.push_back(CommandEvent::LogFile {
                        name: self.name.clone(),
                        bytes: buf[..n].to_vec(),
                    });
                }
            }
        }
    }
}

/// The interrupt reason used when the interrupt sender is dropped unsent.
pub const CONNECTION_LOST: &str = "connection to master lost";

/// How long output is still collected after the command's main process exited
/// (a background grandchild may hold the pipes open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// While a stopped command's main process is gone but its group is not, how
/// often to look whether the group has emptied.
const GROUP_POLL: Duration = Duration::from_millis(25);

/// How long processes get to vanish after SIGKILL before the runner gives up
/// on them (a process in uninterruptible sleep dies only when its I/O ends).
const KILL_SETTLE: Duration = Duration::from_secs(1);

/// Run `cmd` and report how it ended.
///
/// Relative paths (the working directory, the paths of filesystem commands)
/// resolve against `builds_dir`. Output is sent on `events` as it is read; a
/// full channel holds the command's output back (the process blocks on its
/// pipe), a closed one discards it. A download reads the master's bytes from
/// `input`. Sending on `interrupt`, or dropping it
/// unsent (reason [`CONNECTION_LOST`]), stops a running shell command.
pub async fn run_command(
    cmd: &RemoteCommand,
    builds_dir: &Path,
    events: mpsc::Sender<CommandEvent>,
    input: mpsc::Receiver<Input>,
    interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let start = Instant::now();
    let at = |path: &str| builds_dir.join(path);
    let mut outcome = match cmd {
        RemoteCommand::Shell(shell) => run_shell(shell, builds_dir, events, interrupt).await,
        RemoteCommand::Mkdir { path } => files::mkdir(&at(path)).await,
        RemoteCommand::Rmdir { path } => files::rmdir(&at(path)).await,
        RemoteCommand::Stat { path } => files::stat(&at(path)).await,
        RemoteCommand::Rmfile { path } => files::rmfile(&at(path)).await,
        RemoteCommand::Cpdir { from, to } => files::cpdir(&at(from), &at(to)).await,
        RemoteCommand::Glob { pattern } => files::glob(builds_dir, pattern).await,
        RemoteCommand::Listdir { path } => files::listdir(&at(path)).await,
        RemoteCommand::UploadFile { path, max_size } => {
            transfer::upload_file(&at(path), *max_size, events, interrupt).await
        }
        RemoteCommand::UploadDirectory {
            path,
            compress,
            max_size,
        } => transfer::upload_directory(&at(path), *compress, *max_size, events, interrupt).await,
        RemoteCommand::DownloadFile { path, mode, size } => {
            transfer::download_file(&at(path), *mode, *size, input, interrupt).await
        }
        RemoteCommand::DownloadDirectory { path, compress } => {
            transfer::download_directory(&at(path), *compress, input, interrupt).await
        }
    };
    outcome.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    outcome
}

/// Why the worker is stopping a command.
#[derive(Debug)]
enum StopReason {
    Interrupted,
    NoOutput(u64),
    TooLong(u64),
}

impl StopReason {
    fn failure(&self) -> Option<String> {
        match self {
            StopReason::Interrupted => None,
            StopReason::NoOutput(s) => {
                Some(format!("command timed out: {s} seconds without output"))
            }
            StopReason::TooLong(s) => Some(format!("command timed out: {s} seconds elapsed")),
        }
    }
}

/// An outcome for a command that never ran.
fn not_started(failure: String) -> CommandOutcome {
    CommandOutcome {
        failure: Some(failure),
        ..CommandOutcome::default()
    }
}

async fn run_shell(
    shell: &ShellCommand,
    builds_dir: &Path,
    events: mpsc::Sender<CommandEvent>,
    interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let argv = shell.command.argv();
    let Some(program) = argv.first() else {
        return not_started("could not start the command: the command line is empty".into());
    };
    let workdir = builds_dir.join(&shell.workdir);
    if let Err(e) = tokio::fs::create_dir_all(&workdir).await {
        return not_started(format!(
            "could not create the working directory {}: {e}",
            workdir.display()
        ));
    }
    // `./configure` means the one in the working directory, as in a shell there.
    let program_path = if program.contains('/') && Path::new(program).is_relative() {
        workdir.join(program)
    } else {
        PathBuf::from(program)
    };
    let mut command = tokio::process::Command::new(&program_path);
    command
        .args(&argv[1..])
        .current_dir(&workdir)
        .process_group(0);
    let io = &shell.io;
    let pty_reader = if io.use_pty {
        // The command writes to the terminal's far end; we read the near end.
        let pty = match nix::pty::openpty(None, None) {
            Ok(pty) => pty,
            Err(e) => return not_started(format!("could not open a pseudo-terminal: {e}")),
        };
        let (out, err) = match (pty.slave.try_clone(), pty.slave.try_clone()) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => {
                return not_started(format!("could not open a pseudo-terminal: {e}"));
            }
        };
        command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        if io.initial_stdin.is_none() {
            command.stdin(Stdio::from(pty.slave));
        }
        Some(tokio::fs::File::from_std(std::fs::File::from(pty.master)))
    } else {
        command
            .stdout(if io.want_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if io.want_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        None
    };
    if io.initial_stdin.is_some() {
        command.stdin(Stdio::piped());
    } else if pty_reader.is_none() {
        command.stdin(Stdio::null());
    }
    for (name, value) in &shell.env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return not_started(format!("could not start `{program}`: {e}")),
    };
    // The terminal's far end now belongs to the command alone, so reading
    // the near end ends when the command's side closes.
    drop(command);
    if let (Some(text), Some(mut stdin)) = (io.initial_stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A command that exits without reading its input is not an error.
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let Some(pgid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return not_started(format!("could not start `{program}`: no process id"));
    };
    tracing::debug!(pgid, command = %shell.command.display(), workdir = %workdir.display(), "started");
    let guard = GroupGuard { pgid, armed: true };
    let followers = shell
        .io
        .log_files
        .iter()
        .map(|(name, path)| Follower {
            name: name.clone(),
            path: workdir.join(path),
            sent: 0,
        })
        .collect();
    supervise(
        shell, child, pty_reader, followers, guard, events, interrupt,
    )
    .await
}

/// Kills the process group if the runner is dropped while it is responsible
/// for the group (e.g. the task is aborted), so no command outlives its runner.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = signal_process_group(self.pgid, SIGKILL);
        }
    }
}

/// Watch a started command until it has ended and its output is collected.
async fn supervise(
    shell: &ShellCommand,
    mut child: tokio::process::Child,
    pty_reader: Option<tokio::fs::File>,
    mut followers: Vec<Follower>,
    mut guard: GroupGuard,
    events: mpsc::Sender<CommandEvent>,
    mut interrupt: oneshot::Receiver<String>,
) -> CommandOutcome {
    let pgid = guard.pgid;
    let start = Instant::now();
    let grace_s = shell.sigterm_grace_s;
    let max_time_deadline = shell.max_time_s.and_then(|s| deadline_after(start, s));
    let no_output_limit = shell.timeout_s.map(Duration::from_secs);

    let mut stdout: Option<Box<dyn AsyncRead + Unpin + Send>> = match pty_reader {
        Some(pty) => Some(Box::new(pty)),
        None => child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
    };
    let mut stderr = child.stderr.take();
    let interrupt_signal = interrupt_signal(shell.io.interrupt_signal.as_deref());
    let mut stdout_buf = vec![0u8; OUTPUT_CHUNK];
    let mut stderr_buf = vec![0u8; OUTPUT_CHUNK];
    // The consumer; `None` once it went away (output is then discarded).
    let mut events = Some(events);
    // A chunk read but not yet accepted by the channel; nothing more is read
    // until it is, which keeps the order and passes back-pressure on.
    let mut pending: Option<CommandEvent> = None;
    let mut last_activity = start;

    let mut interrupt_armed = true;
    let mut interrupted = false;
    let mut status: Option<ExitStatus> = None;
    let mut wait_failure: Option<String> = None;
    let mut stop: Option<StopReason> = None;
    let mut sigkill_at: Option<Instant> = None;
    let mut sigkill_sent_at: Option<Instant> = None;
    let mut drain_deadline: Option<Instant> = None;
    // Followed files' bytes waiting for the channel, and whether their last
    // read (after the command ended) is done.
    let mut followed = std::collections::VecDeque::new();
    let mut followed_last = followers.is_empty();
    let mut follow_tick = tokio::time::interval(FOLLOW_EVERY);

    loop {
        let exited = status.is_some() || wait_failure.is_some();
        let pipes_done = stdout.is_none() && stderr.is_none();
        if exited && pipes_done && !followed_last {
            followed_last = true;
            for f in &mut followers {
                f.read_new(&mut followed);
            }
        }
        if pending.is_none() && events.is_some() {
            pending = followed.pop_front();
        }
        if exited && pipes_done && pending.is_none() {
            // A stopped command is over when its whole group has exited, not
            // just the main process.
            if stop.is_none() {
                break;
            }
            if !process_group_alive(pgid) {
                if sigkill_sent_at.is_none() {
                    // Nothing seen alive; SIGKILL anyway in case a member hid
                    // from the check (it costs nothing when the group is gone).
                    let _ = signal_process_group(pgid, SIGKILL);
                }
                break;
            }
            if sigkill_sent_at.is_some_and(|at| at.elapsed() >= KILL_SETTLE) {
                tracing::warn!(
                    pgid,
                    "processes of the command survive SIGKILL; no longer waiting for them"
                );
                break;
            }
        }
        let running = !exited;
        let watching_group = exited && stop.is_some();
        let no_output_deadline = no_output_limit.and_then(|limit| last_activity.checked_add(limit));

        tokio::select! {
            reason = &mut interrupt, if interrupt_armed => {
                interrupt_armed = false;
                let reason = reason.unwrap_or_else(|_| CONNECTION_LOST.to_string());
                if stop.is_none() {
                    tracing::info!(pgid, %reason, "interrupting command");
                    interrupted = running;
                    stop = Some(StopReason::Interrupted);
                    send_signal(pgid, interrupt_signal);
                    sigkill_at = deadline_after(Instant::now(), grace_s);
                }
            }
            _ = sleep_until_opt(no_output_deadline),
                if running && stop.is_none() && pending.is_none() && no_output_deadline.is_some() => {
                let limit = shell.timeout_s.unwrap_or_default();
                tracing::info!(pgid, "no output for {limit} s: stopping command");
                stop = Some(StopReason::NoOutput(limit));
                send_sigterm(pgid);
                sigkill_at = deadline_after(Instant::now(), grace_s);
            }
            _ = sleep_until_opt(max_time_deadline),
                if running && stop.is_none() && max_time_deadline.is_some() => {
                let limit = shell.max_time_s.unwrap_or_default();
                tracing::info!(pgid, "ran for {limit} s: stopping command");
                stop = Some(StopReason::TooLong(limit));
                send_sigterm(pgid);
                sigkill_at = deadline_after(Instant::now(), grace_s);
            }
            _ = sleep_until_opt(sigkill_at), if sigkill_at.is_some() && sigkill_sent_at.is_none() => {
                sigkill_sent_at = Some(Instant::now());
                match signal_process_group(pgid, SIGKILL) {
                    Ok(()) => tracing::info!(pgid, "command still running after SIGTERM: sent SIGKILL"),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => tracing::warn!(pgid, "could not SIGKILL the command: {e}"),
                }
            }
            result = child.wait(), if running => {
                match result {
                    Ok(exit) => status = Some(exit),
                    Err(e) => {
                        wait_failure = Some(format!("lost track of the command: {e}"));
                        let _ = signal_process_group(pgid, SIGKILL);
                        sigkill_sent_at = Some(Instant::now());
                    }
                }
                if stop.is_none() {
                    // Exited by itself: whatever it left behind is not ours to kill.
                    guard.armed = false;
                }
                drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() && !pipes_done => {
                tracing::debug!(pgid, "output pipes still open {DRAIN_AFTER_EXIT:?} after exit; no longer reading them");
                stdout = None;
                stderr = None;
            }
            _ = sleep(GROUP_POLL), if watching_group => {}
            _ = follow_tick.tick(), if !followers.is_empty() && !exited && followed.is_empty() => {
                for f in &mut followers {
                    f.read_new(&mut followed);
                }
            }
            read = read_pipe(stdout.as_mut(), &mut stdout_buf), if stdout.is_some() && pending.is_none() => {
                match read {
                    Ok(0) => stdout = None,
                    Ok(n) => {
                        last_activity = Instant::now();
                        if events.is_some() {
                            pending = Some(CommandEvent::Stdout(stdout_buf[..n].to_vec()));
                        }
                    }
                    // A pseudo-terminal reports its closing as EIO.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => stdout = None,
                    Err(e) => {
                        tracing::warn!(pgid, "reading the command's stdout failed: {e}");
                        stdout = None;
                    }
                }
            }
            read = read_pipe(stderr.as_mut(), &mut stderr_buf), if stderr.is_some() && pending.is_none() => {
                match read {
                    Ok(0) => stderr = None,
                    Ok(n) => {
                        last_activity = Instant::now();
                        if events.is_some() {
                            pending = Some(CommandEvent::Stderr(stderr_buf[..n].to_vec()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pgid, "reading the command's stderr failed: {e}");
                        stderr = None;
                    }
                }
            }
            permit = reserve(events.clone()), if pending.is_some() => {
                match permit {
                    Ok(permit) => {
                        if let Some(event) = pending.take() {
                            permit.send(event);
                        }
                        last_activity = Instant::now();
                    }
                    Err(_) => {
                        // Nobody listens any more; keep draining the pipes so the
                        // command is not blocked, and drop what it writes.
                        events = None;
                        pending = None;
                    }
                }
            }
        }
    }
    guard.armed = false;

    CommandOutcome {
        rc: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        interrupted,
        failure: wait_failure.or_else(|| stop.as_ref().and_then(StopReason::failure)),
        elapsed_ms: 0,
        stat: None,
        files: None,
        lost: false,
    }
}

/// `secs` seconds after `from`; `None` (never) when that is beyond what the
/// clock can represent, so an absurd limit from the master cannot panic.
fn deadline_after(from: Instant, secs: u64) -> Option<Instant> {
    from.checked_add(Duration::from_secs(secs))
}

fn send_sigterm(pgid: i32) {
    send_signal(pgid, SIGTERM);
}

fn send_signal(pgid: i32, sig: i32) {
    match signal_process_group(pgid, sig) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, "could not send signal {sig} to the command: {e}"),
    }
}

/// The signal an interrupt sends first: the command's `interrupt_signal`
/// (a name the master checked), SIGTERM otherwise.
fn interrupt_signal(name: Option<&str>) -> i32 {
    match name {
        Some("INT") => libc::SIGINT,
        Some("HUP") => libc::SIGHUP,
        Some("QUIT") => libc::SIGQUIT,
        Some("KILL") => libc::SIGKILL,
        Some("USR1") => libc::SIGUSR1,
        Some("USR2") => libc::SIGUSR2,
        _ => SIGTERM,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn read_pipe<R: AsyncRead + Unpin>(
    pipe: Option<&mut R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn reserve(
    events: Option<mpsc::Sender<CommandEvent>>,
) -> Result<mpsc::OwnedPermit<CommandEvent>, mpsc::error::SendError<()>> {
    match events {
        Some(events) => events
            .reserve_owned()
            .await
            .map_err(|_| mpsc::error::SendError(())),
        None => Err(mpsc::error::SendError(())),
    }
}
