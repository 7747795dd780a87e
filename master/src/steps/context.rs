//! What every step kind runs with: a [`StepContext`] (the build's directory,
//! what renders its arguments, its exit-code rule and stop signal) and a
//! [`StepHost`], the build's side of a step: its row and log in the
//! database, and the worker.
//!
//! The host is a trait so that step kinds depend on nothing above them: the
//! build (`process::build`) implements it with the data layer and the worker
//! link, and the kinds stay plain functions of their model and this context.

pub use crate::render::Properties;
use crate::render::RenderContext;
use crate::results::{CANCELLED, EXCEPTION, FAILURE, RETRY, SUCCESS};
use crate::running_builds::{StopKind, StopSignal};
use moonbot_worker::protocol::{CommandOutcome, RemoteCommand};
use std::collections::BTreeMap;
use std::future::Future;

/// Why a remote command produced no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteFailure {
    /// The worker went away (and did not come back in its grace period): the
    /// step, and so the build, ends RETRY.
    #[error("lost the connection to the worker: {0}")]
    ConnectionLost(String),
    /// Anything else (the worker broke the protocol, storing output failed):
    /// the step ends EXCEPTION.
    #[error("{0}")]
    Failed(String),
}

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

    /// Run `command` on the build's worker, its output into the step's log;
    /// stopping the build interrupts it.
    fn run_remote(
        &mut self,
        command: RemoteCommand,
    ) -> impl Future<Output = Result<CommandOutcome, RemoteFailure>> + Send;
}

/// Everything a step kind may use while it runs.
pub struct StepContext<'a, H> {
    /// The step's name (unique within its builder).
    pub name: &'a str,
    /// The builder's directory on the worker; step paths are relative to it.
    pub builddir: &'a str,
    /// Renders the step's arguments from what the build knows.
    pub render: &'a RenderContext<'a>,
    /// Exit code → result (`decode_rc`); `None`: 0 is SUCCESS, else FAILURE.
    pub decode_rc: Option<&'a BTreeMap<i64, i32>>,
    /// Whether, and why, the build was asked to stop.
    pub stop: &'a StopSignal,
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

    /// Run one remote command, write its outcome to the log, and say what it
    /// means for the step: by its exit code (`decode_rc`, else SUCCESS for 0
    /// and FAILURE for the rest; a signal is FAILURE), CANCELLED (or RETRY
    /// when the master is stopping) when interrupted, RETRY when the worker was
    /// lost, EXCEPTION otherwise.
    pub async fn run_command(&mut self, command: RemoteCommand) -> Result<i32, H::Error> {
        match self.host.run_remote(command).await {
            Ok(outcome) => {
                self.write_outcome(&outcome).await?;
                Ok(if outcome.interrupted {
                    match self.stop.requested() {
                        Some(StopKind::Shutdown) => RETRY,
                        _ => CANCELLED,
                    }
                } else {
                    self.decode(&outcome)
                })
            }
            Err(lost @ RemoteFailure::ConnectionLost(_)) => {
                self.host.header(&lost.to_string()).await?;
                Ok(RETRY)
            }
            Err(RemoteFailure::Failed(why)) => {
                self.host.header(&why).await?;
                Ok(EXCEPTION)
            }
        }
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
