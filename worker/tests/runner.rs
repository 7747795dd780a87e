//! Integration tests of the command runner through the crate's public API, with
//! real processes: output completeness and order, exit status, environment,
//! working directory, time limits, interrupts and process-group kills, and the
//! filesystem commands.

use moonbot_worker::protocol::{
    CommandLine, CommandOutcome, OUTPUT_CHUNK, RemoteCommand, ShellCommand,
};
use moonbot_worker::runner::{CommandEvent, run_command};
use moonbot_worker::signal::{SIGKILL, signal_process};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

fn shell(script: &str) -> ShellCommand {
    ShellCommand {
        command: CommandLine::Shell(script.into()),
        workdir: "wd".into(),
        env: BTreeMap::new(),
        timeout_s: None,
        max_time_s: None,
        sigterm_grace_s: 1,
        io: Default::default(),
    }
}

/// What a finished command produced.
struct Finished {
    outcome: CommandOutcome,
    events: Vec<CommandEvent>,
}

impl Finished {
    fn stdout(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CommandEvent::Stdout(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    fn stderr(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CommandEvent::Stderr(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout()).unwrap()
    }
}

/// A command running in a background task, with its interrupt sender.
struct Running {
    interrupt: Option<oneshot::Sender<String>>,
    task: tokio::task::JoinHandle<Finished>,
}

impl Running {
    async fn finish(self) -> Finished {
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the command finished in time")
            .unwrap()
    }
}

/// Start `cmd` with a channel of `capacity`; a consumer that sleeps `consumer_delay`
/// per event simulates a slow master.
fn start_with(
    cmd: RemoteCommand,
    builds: &Path,
    capacity: usize,
    consumer_delay: Option<Duration>,
) -> Running {
    let builds = builds.to_path_buf();
    let (events_tx, mut events_rx) = mpsc::channel(capacity);
    let (interrupt_tx, interrupt_rx) = oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = events_rx.recv().await {
            if let Some(delay) = consumer_delay {
                tokio::time::sleep(delay).await;
            }
            events.push(event);
        }
        events
    });
    let task = tokio::spawn(async move {
        let (_no_input, input) = mpsc::channel(1);
        let outcome = run_command(&cmd, &builds, events_tx, input, interrupt_rx).await;
        let events = collector.await.unwrap();
        Finished { outcome, events }
    });
    Running {
        interrupt: Some(interrupt_tx),
        task,
    }
}

fn start(cmd: RemoteCommand, builds: &Path) -> Running {
    start_with(cmd, builds, 16, None)
}

async fn run(cmd: RemoteCommand, builds: &Path) -> Finished {
    let running = start(cmd, builds);
    // Keep the interrupt sender alive: dropping it would stop the command.
    let interrupt = running.interrupt;
    let finished = tokio::time::timeout(Duration::from_secs(20), running.task)
        .await
        .expect("the command finished in time")
        .unwrap();
    drop(interrupt);
    finished
}

/// Is `pid` gone (no such process, or a zombie nobody has reaped yet)?
fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
        }
    }
}

/// Wait until `path` holds a line (written by the command under test).
async fn read_pid_file(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().parse().expect("a pid");
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn builds_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let builds = tmp.path().join("builds");
    std::fs::create_dir(&builds).unwrap();
    (tmp, builds)
}

#[tokio::test]
async fn stdout_and_stderr_arrive_complete_and_in_order() {
    let (_tmp, builds) = builds_dir();
    let script = "for i in $(seq 1 2000); do echo out$i; echo err$i >&2; done";
    let done = run(RemoteCommand::Shell(shell(script)), &builds).await;
    assert_eq!(done.outcome.rc, Some(0), "{:?}", done.outcome);
    assert!(done.outcome.succeeded());
    let expected_out: String = (1..=2000).map(|i| format!("out{i}\n")).collect();
    let expected_err: String = (1..=2000).map(|i| format!("err{i}\n")).collect();
    assert_eq!(done.stdout_text(), expected_out);
    assert_eq!(String::from_utf8(done.stderr()).unwrap(), expected_err);
    for event in &done.events {
        let (CommandEvent::Stdout(bytes) | CommandEvent::Stderr(bytes)) = event else {
            panic!("only output events: {event:?}");
        };
        assert!(!bytes.is_empty() && bytes.len() <= OUTPUT_CHUNK);
    }
}

#[tokio::test]
async fn large_output_survives_a_slow_consumer() {
    let (_tmp, builds) = builds_dir();
    // ~1.3 MB on stdout through a channel of one slot whose reader dawdles.
    let cmd = RemoteCommand::Shell(shell("seq 1 200000; echo end >&2"));
    let running = start_with(cmd, &builds, 1, Some(Duration::from_micros(200)));
    let interrupt = running.interrupt;
    let done = tokio::time::timeout(Duration::from_secs(60), running.task)
        .await
        .unwrap()
        .unwrap();
    drop(interrupt);
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(done.outcome.rc, Some(0), "{:?}", done.outcome);
    assert!(done.stdout() == expected.as_bytes(), "stdout differs");
    assert_eq!(done.stderr(), b"end\n");
    assert!(done.events.len() >= expected.len() / OUTPUT_CHUNK);
}

#[tokio::test]
async fn exit_code_and_signal_are_reported() {
    let (_tmp, builds) = builds_dir();
    let done = run(RemoteCommand::Shell(shell("exit 3")), &builds).await;
    assert_eq!(done.outcome.rc, Some(3));
    assert_eq!(done.outcome.signal, None);
    assert_eq!(done.outcome.failure, None);
    assert!(!done.outcome.interrupted);
    assert!(!done.outcome.succeeded());

    let done = run(RemoteCommand::Shell(shell("kill -9 $$")), &builds).await;
    assert_eq!(done.outcome.rc, None);
    assert_eq!(done.outcome.signal, Some(SIGKILL));
}

#[tokio::test]
async fn environment_is_set_and_removed() {
    let (_tmp, builds) = builds_dir();
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs PATH set"
    );
    let mut cmd = shell("");
    cmd.command = CommandLine::Argv(vec!["/usr/bin/env".into()]);
    cmd.env = BTreeMap::from([
        (
            "MOONBOT_TEST_VAR".into(),
            Some("a value with spaces".into()),
        ),
        ("PATH".into(), None),
    ]);
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    assert_eq!(done.outcome.rc, Some(0), "{:?}", done.outcome);
    let env = done.stdout_text();
    assert!(
        env.lines()
            .any(|l| l == "MOONBOT_TEST_VAR=a value with spaces"),
        "{env}"
    );
    assert!(!env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

#[tokio::test]
async fn workdir_is_created_relative_to_the_builds_dir() {
    let (_tmp, builds) = builds_dir();
    let mut cmd = shell("pwd");
    cmd.workdir = "proj/build/deep".into();
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    assert_eq!(done.outcome.rc, Some(0), "{:?}", done.outcome);
    let expected = builds.join("proj/build/deep").canonicalize().unwrap();
    assert_eq!(PathBuf::from(done.stdout_text().trim()), expected);

    // A relative program path means the one in the working directory.
    let script = builds.join("proj/build/deep/hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello from $0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = shell("");
    cmd.workdir = "proj/build/deep".into();
    cmd.command = CommandLine::Argv(vec!["./hello.sh".into()]);
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    assert_eq!(done.outcome.rc, Some(0), "{:?}", done.outcome);
    assert!(done.stdout_text().starts_with("hello from"));

    // An absolute workdir stays absolute.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = shell("pwd");
    cmd.workdir = elsewhere.path().join("abs").to_string_lossy().into_owned();
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    assert_eq!(
        PathBuf::from(done.stdout_text().trim()),
        elsewhere.path().join("abs").canonicalize().unwrap()
    );
}

#[tokio::test]
async fn a_missing_program_is_a_clear_failure() {
    let (_tmp, builds) = builds_dir();
    let mut cmd = shell("");
    cmd.command = CommandLine::Argv(vec!["moonbot-no-such-program".into(), "x".into()]);
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    assert_eq!(done.outcome.rc, None);
    assert!(!done.outcome.interrupted);
    let failure = done.outcome.failure.unwrap();
    assert!(
        failure.starts_with("could not start `moonbot-no-such-program`: "),
        "{failure}"
    );
    assert!(failure.contains("No such file"), "{failure}");
    assert!(done.events.is_empty());
}

#[tokio::test]
async fn silence_longer_than_timeout_stops_the_command() {
    let (_tmp, builds) = builds_dir();
    let mut cmd = shell("echo started; sleep 30");
    cmd.timeout_s = Some(1);
    let started = Instant::now();
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    let took = started.elapsed();
    assert_eq!(
        done.outcome.failure.as_deref(),
        Some("command timed out: 1 seconds without output")
    );
    assert!(!done.outcome.interrupted);
    assert_eq!(done.outcome.rc, None);
    assert!(done.outcome.signal.is_some());
    assert_eq!(done.stdout_text(), "started\n");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn output_keeps_the_timeout_away_but_max_time_does_not() {
    let (_tmp, builds) = builds_dir();
    let mut cmd = shell("while true; do echo tick; sleep 0.1; done");
    cmd.timeout_s = Some(1);
    cmd.max_time_s = Some(2);
    let started = Instant::now();
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    let took = started.elapsed();
    assert_eq!(
        done.outcome.failure.as_deref(),
        Some("command timed out: 2 seconds elapsed")
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(done.stdout_text().lines().count() >= 5);
}

#[tokio::test]
async fn interrupt_kills_the_whole_process_group() {
    let (_tmp, builds) = builds_dir();
    let mut cmd = shell("sleep 300 & echo $! > pids; sleep 300");
    // Both sleeps die of SIGTERM: the runner must notice that promptly (even if
    // nobody reaps the orphaned one) instead of sitting out the grace time.
    cmd.sigterm_grace_s = 10;
    let mut running = start(RemoteCommand::Shell(cmd), &builds);
    let background = read_pid_file(&builds.join("wd/pids")).await;
    assert!(!is_gone(background), "the background sleep runs");
    let interrupted_at = Instant::now();
    running
        .interrupt
        .take()
        .unwrap()
        .send("stop requested by test".into())
        .unwrap();
    let done = running.finish().await;
    let took = interrupted_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "waited {took:?} for a dead group"
    );
    assert!(done.outcome.interrupted, "{:?}", done.outcome);
    assert_eq!(done.outcome.failure, None);
    assert_eq!(done.outcome.rc, None);
    assert!(done.outcome.signal.is_some());
    assert!(
        is_gone(background),
        "background process {background} survived"
    );
}

#[tokio::test]
async fn dropping_the_interrupt_sender_also_kills() {
    let (_tmp, builds) = builds_dir();
    let cmd = shell("sleep 300 & echo $! > pids; sleep 300");
    let mut running = start(RemoteCommand::Shell(cmd), &builds);
    let background = read_pid_file(&builds.join("wd/pids")).await;
    drop(running.interrupt.take());
    let done = running.finish().await;
    assert!(done.outcome.interrupted, "{:?}", done.outcome);
    assert_eq!(done.outcome.failure, None);
    assert!(
        is_gone(background),
        "background process {background} survived"
    );
}

#[tokio::test]
async fn sigterm_is_followed_by_sigkill_after_the_grace_time() {
    let (_tmp, builds) = builds_dir();
    // SIGTERM is ignored by the shell and (inherited) by its background child.
    let mut cmd = shell("trap '' TERM; sleep 300 & echo $! > pids; wait");
    cmd.sigterm_grace_s = 1;
    let mut running = start(RemoteCommand::Shell(cmd), &builds);
    let background = read_pid_file(&builds.join("wd/pids")).await;
    let interrupted_at = Instant::now();
    running
        .interrupt
        .take()
        .unwrap()
        .send("stop".into())
        .unwrap();
    let done = running.finish().await;
    let took = interrupted_at.elapsed();
    assert!(done.outcome.interrupted);
    assert_eq!(done.outcome.signal, Some(SIGKILL), "{:?}", done.outcome);
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        is_gone(background),
        "background process {background} survived"
    );
}

#[tokio::test]
async fn a_normal_exit_kills_nothing_and_stops_waiting_for_held_pipes() {
    let (_tmp, builds) = builds_dir();
    // The background sleep inherits stdout and holds it open after sh exits.
    let cmd = shell("sleep 30 & echo $! > pids; echo done");
    let started = Instant::now();
    let done = run(RemoteCommand::Shell(cmd), &builds).await;
    let took = started.elapsed();
    let background: i32 = std::fs::read_to_string(builds.join("wd/pids"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let survived = !is_gone(background);
    let _ = signal_process(background, SIGKILL);
    assert_eq!(done.outcome.rc, Some(0));
    assert_eq!(done.stdout_text(), "done\n");
    assert!(survived, "a normal exit must not kill background processes");
    assert!(
        took >= Duration::from_secs(2),
        "drained for the full 2 s: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[tokio::test]
async fn mkdir_stat_and_rmdir() {
    let (_tmp, builds) = builds_dir();
    let mkdir = run(
        RemoteCommand::Mkdir {
            path: "a/b/c".into(),
        },
        &builds,
    )
    .await;
    assert_eq!(mkdir.outcome.rc, Some(0), "{:?}", mkdir.outcome);
    assert!(mkdir.outcome.succeeded());
    assert!(builds.join("a/b/c").is_dir());

    let stat = |path: &str| RemoteCommand::Stat { path: path.into() };
    let dir = run(stat("a/b"), &builds).await.outcome;
    assert_eq!(dir.rc, Some(0));
    let dir = dir.stat.unwrap();
    assert!(dir.exists && dir.is_dir && !dir.is_file);
    assert!(dir.mtime.unwrap() > 1_600_000_000);

    std::fs::write(builds.join("a/b/file.txt"), b"12345").unwrap();
    let file = run(stat("a/b/file.txt"), &builds)
        .await
        .outcome
        .stat
        .unwrap();
    assert!(file.exists && file.is_file && !file.is_dir);
    assert_eq!(file.size, 5);

    let missing = run(stat("nope"), &builds).await.outcome;
    assert_eq!(missing.rc, Some(0));
    assert!(!missing.stat.unwrap().exists);

    // mkdir over a file fails with rc 1 and says why.
    let clash = run(
        RemoteCommand::Mkdir {
            path: "a/b/file.txt/sub".into(),
        },
        &builds,
    )
    .await
    .outcome;
    assert_eq!(clash.rc, Some(1));
    assert!(clash.failure.unwrap().contains("file.txt"));

    // A read-only directory inside the tree does not stop rmdir (as root the
    // permission bits do not bite, so this only exercises the retry elsewhere).
    let readonly = builds.join("a/b/c");
    std::fs::write(readonly.join("locked"), b"x").unwrap();
    std::fs::set_permissions(
        &readonly,
        std::os::unix::fs::PermissionsExt::from_mode(0o500),
    )
    .unwrap();
    let rmdir = run(RemoteCommand::Rmdir { path: "a".into() }, &builds).await;
    assert_eq!(rmdir.outcome.rc, Some(0), "{:?}", rmdir.outcome);
    assert!(!builds.join("a").exists());
    let gone = run(stat("a"), &builds).await.outcome.stat.unwrap();
    assert!(!gone.exists);

    let again = run(RemoteCommand::Rmdir { path: "a".into() }, &builds).await;
    assert_eq!(again.outcome.rc, Some(0), "a missing directory is fine");
}
