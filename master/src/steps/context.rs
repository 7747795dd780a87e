//! What every step kind runs with: a [`StepContext`] (the build's directory,
//! what renders its arguments, its exit-code rule and stop signal) and a
//! [`StepHost`], the build's side of a step: its row and log in the
//! database, and the worker.
//!
//! The host is a trait so that step kinds depend on nothing above them: the
//! build (`process::build`) implements it with the data layer and the worker
//! link, and the kinds stay plain functions of their model and this context.

use super::trigger::{ChildOutcome, TriggerRequest, Triggered};
use crate::artifacts::{ArtifactStore, Incoming, Outgoing, Stored};
use crate::lua::{LuaScope, RawValue};
pub use crate::render::Properties;
use crate::render::RenderContext;
use crate::results::{CANCELLED, EXCEPTION, FAILURE, RETRY, SUCCESS};
use crate::running_builds::{StopKind, StopSignal};
use moonbot_worker::protocol::{CommandOutcome, RemoteCommand};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;

/// The most of a command's stdout and of its stderr a step keeps to read
/// (`set_property_from_command`, the `git` step): the log keeps all of it.
pub const COLLECT_LIMIT: usize = 16 << 20;

/// A command's output as a step reads it (each stream cut at [`COLLECT_LIMIT`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code, when the command exited.
    pub rc: Option<i32>,
}

/// Which stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Why a remote command produced no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteFailure {
    /// The worker went away (and did not come back in its grace period): the
    /// step, and so the build, ends RETRY.
    #[error("lost the connection to the worker: {0}")]
    ConnectionLost(String),
    /// What the worker sent was refused (an upload too large, an unsafe tar
    /// entry): the step ends FAILURE.
    #[error("{0}")]
    Refused(String),
    /// Anything else (the worker broke the protocol, storing output failed):
    /// the step ends EXCEPTION.
    #[error("{0}")]
    Failed(String),
}

/// What a remote command's output and input are besides the step's log.
pub enum RemoteIo<'a> {
    /// Output into the step's log only.
    Log,
    /// Into the log, and a copy kept.
    Collect(&'a mut Collected),
    /// An upload: its bytes into this.
    Receive(&'a mut Incoming),
    /// A download: these bytes to the worker.
    Send(Outgoing),
}

/// Where a build's uploads go, and what they may be.
pub struct BuildArtifacts {
    pub store: ArtifactStore,
    pub buildid: i64,
    /// The limit of an upload whose step sets no `max_size`.
    pub max_size: u64,
}

/// A test report's cases and counts, as the `test` step hands them to the host.
pub use crate::test_reports::junit::{Counts as TestCounts, TestCase};

/// The build's side of a running step.
pub trait StepHost: Send {
    /// The master could not record the step (a database error).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Start the step: its row, showing `description` (unless master.lua gave
    /// the step its own), and its `stdio` log. A kind calls this once it knows
    /// what it will do; the host starts the step itself if a kind did not.
    fn begin(&mut self, description: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// One line of the master's own words (a header) in the step's log.
    fn header(&mut self, line: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Run `command` on the build's worker, its output into the step's log
    /// (and where `io` says: a `Collect` also gets the exit code); stopping
    /// the build interrupts it.
    fn run_remote(
        &mut self,
        command: RemoteCommand,
        io: RemoteIo<'_>,
    ) -> impl Future<Output = Result<CommandOutcome, RemoteFailure>> + Send;

    /// Record an upload that arrived (`kind`: `file` or `directory`) under
    /// `name`, linked from the step.
    fn add_artifact(
        &mut self,
        name: &str,
        kind: &str,
        stored: &Stored,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A link on the step (Buildbot's `addURL`).
    fn add_url(
        &mut self,
        name: &str,
        url: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Record a set of test results (`description`: where they came from;
    /// `counts` covers every case, `cases` those the parser kept).
    fn add_test_results(
        &mut self,
        description: &str,
        counts: TestCounts,
        cases: Vec<TestCase>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// What the step shows when it ends, unless master.lua's
    /// `description_done` says otherwise.
    fn set_summary(&mut self, summary: &str);

    /// Output of the step's own making (a command run on the master) into
    /// its current log.
    fn output(
        &mut self,
        stream: Stream,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Write from now on into the step's log `name`, made when first named
    /// (`stdio` is the first).
    fn use_log(&mut self, name: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Set a build property from this step on (its source: the step's name).
    fn set_property(
        &mut self,
        name: &str,
        value: Value,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Add steps (`steps`: a list of `mb.steps.*{…}` tables, written at
    /// `at`) to the build, right after this one or after its last; the
    /// inner `Err` says why they were refused (each step is checked as
    /// master.lua's are). Gives the names they got.
    fn add_steps(
        &mut self,
        after_current: bool,
        steps: &RawValue,
        at: &str,
        from_repository: bool,
    ) -> impl Future<Output = Result<Result<Vec<String>, String>, Self::Error>> + Send;

    /// Make the buildset a `trigger` step asks of a triggerable scheduler,
    /// this build its parent; the inner `Err` says why it could not.
    fn trigger(
        &mut self,
        request: &TriggerRequest,
    ) -> impl Future<Output = Result<Result<Triggered, String>, Self::Error>> + Send;

    /// Wait until the buildsets `bsids` this build triggered are complete;
    /// `None` when the build was stopped first (children not started are
    /// cancelled, and running ones stopped with `stop_children`).
    fn wait_triggered(
        &mut self,
        bsids: &[i64],
        stop_children: bool,
    ) -> impl Future<Output = Result<Option<Vec<ChildOutcome>>, Self::Error>> + Send;
}

/// Everything a step kind may use while it runs.
pub struct StepContext<'a, H> {
    /// The step's name (unique within its builder).
    pub name: &'a str,
    /// The builder's directory on the worker; step paths are relative to it.
    pub builddir: &'a str,
    /// The master's directory (where `master_shell` commands run).
    pub master_dir: &'a std::path::Path,
    /// Renders the step's arguments from what the build knows.
    pub render: &'a RenderContext<'a>,
    /// Exit code → result (`decode_rc`); `None`: 0 is SUCCESS, else FAILURE.
    pub decode_rc: Option<&'a BTreeMap<i64, i32>>,
    /// Whether, and why, the build was asked to stop.
    pub stop: &'a StopSignal,
    /// Where uploads go.
    pub artifacts: &'a BuildArtifacts,
    /// What keeps the Lua functions the build's Lua steps hand over.
    pub lua_scope: &'a LuaScope,
    /// The step came from the repository being built: no commands on the
    /// master, no master files, no secrets.
    pub from_repository: bool,
    pub host: &'a mut H,
}

impl<H: StepHost> StepContext<'_, H> {
    /// `sub` under the builder's directory (an absolute path stays as it is).
    pub fn path(&self, sub: &str) -> String {
        if sub.starts_with('/') {
            sub.to_string()
        } else if sub.is_empty() || sub == "." {
            self.builddir.to_string()
        } else {
            format!("{}/{sub}", self.builddir)
        }
    }

    /// End a step that could not start (an argument did not render): its
    /// row (if not made yet), `why` in its log, EXCEPTION.
    pub async fn cannot_start(&mut self, why: &str) -> Result<i32, H::Error> {
        self.host.begin(self.name).await?;
        self.host.header(why).await?;
        Ok(EXCEPTION)
    }

    /// Run one remote command, write its outcome to the log, and say what it
    /// means for the step: by its exit code (`decode_rc`, else SUCCESS for 0
    /// and FAILURE for the rest; a signal is FAILURE), CANCELLED (or RETRY
    /// when the master is stopping) when interrupted, RETRY when the worker was
    /// lost, EXCEPTION otherwise.
    pub async fn run_command(&mut self, command: RemoteCommand) -> Result<i32, H::Error> {
        self.run_command_with(command, RemoteIo::Log)
            .await
            .map(|(r, _)| r)
    }

    /// [`StepContext::run_command`], keeping the command's output in `collect`.
    pub async fn run_command_collecting(
        &mut self,
        command: RemoteCommand,
        collect: Option<&mut Collected>,
    ) -> Result<i32, H::Error> {
        let io = match collect {
            Some(collect) => RemoteIo::Collect(collect),
            None => RemoteIo::Log,
        };
        self.run_command_with(command, io).await.map(|(r, _)| r)
    }

    /// [`StepContext::run_command`] with the command's input and output as
    /// `io` says; also gives the outcome, when there was one.
    pub async fn run_command_with(
        &mut self,
        command: RemoteCommand,
        io: RemoteIo<'_>,
    ) -> Result<(i32, Option<CommandOutcome>), H::Error> {
        match self.host.run_remote(command, io).await {
            Ok(outcome) => {
                self.write_outcome(&outcome).await?;
                let result = if outcome.interrupted {
                    match self.stop.requested() {
                        Some(StopKind::Shutdown) => RETRY,
                        _ => CANCELLED,
                    }
                } else {
                    self.decode(&outcome)
                };
                Ok((result, Some(outcome)))
            }
            Err(lost @ RemoteFailure::ConnectionLost(_)) => {
                self.host.header(&lost.to_string()).await?;
                Ok((RETRY, None))
            }
            Err(RemoteFailure::Refused(why)) => {
                self.host.header(&why).await?;
                Ok((FAILURE, None))
            }
            Err(RemoteFailure::Failed(why)) => {
                self.host.header(&why).await?;
                Ok((EXCEPTION, None))
            }
        }
    }

    /// The bytes of the file `path` on the worker (relative to the builds
    /// directory), at most `max`; `Err` holds the step result when it could
    /// not be read (the reason is in the log).
    pub async fn read_worker_file(
        &mut self,
        path: &str,
        max: u64,
    ) -> Result<Result<Vec<u8>, i32>, H::Error> {
        let mut incoming = Incoming::Memory {
            bytes: Vec::new(),
            max,
        };
        let command = RemoteCommand::UploadFile {
            path: path.to_string(),
            max_size: Some(max),
        };
        let (read, _) = self
            .run_command_with(command, RemoteIo::Receive(&mut incoming))
            .await?;
        let Incoming::Memory { bytes, .. } = incoming else {
            unreachable!("made as memory above")
        };
        Ok(if read == SUCCESS {
            Ok(bytes)
        } else {
            Err(read)
        })
    }

    /// The result an ended command's exit gives.
    fn decode(&self, outcome: &CommandOutcome) -> i32 {
        match (self.decode_rc, outcome.rc) {
            (Some(rule), Some(rc)) if outcome.failure.is_none() => {
                rule.get(&(rc as i64)).copied().unwrap_or(FAILURE)
            }
            _ if outcome.succeeded() => SUCCESS,
            _ => FAILURE,
        }
    }

    async fn write_outcome(&mut self, outcome: &CommandOutcome) -> Result<(), H::Error> {
        let host = &mut *self.host;
        if let Some(failure) = &outcome.failure {
            host.header(failure).await?;
        }
        if outcome.interrupted {
            host.header("command interrupted").await?;
        }
        match (outcome.rc, outcome.signal) {
            (Some(rc), _) => {
                host.header(&format!("program finished with exit code {rc}"))
                    .await?
            }
            (None, Some(sig)) => {
                host.header(&format!("program killed by signal {sig}"))
                    .await?
            }
            (None, None) => {}
        }
        host.header(&format!(
            "elapsedTime={:.3}",
            outcome.elapsed_ms as f64 / 1000.0
        ))
        .await
    }
}
