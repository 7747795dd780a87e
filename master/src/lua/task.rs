//! Lua that waits: a Lua step's function runs as a coroutine of its config
//! generation's state, so a remote command inside it suspends only that step.
//!
//! The generation's thread runs one piece of Lua at a time. A task is a
//! coroutine that runs until it asks the master for something (a command on
//! the worker, a log line, a property): the step methods of the embedded
//! `moonbot` module yield a request, [`LuaTask::resume`] hands it to the
//! step, and the step resumes the coroutine with the answer once it has it.
//! Between two resumes the thread serves every other build's calls and
//! tasks, so many Lua steps run at once and none blocks the master.
//!
//! Each task has its own budget ([`TaskLimits`]): the instructions it may run
//! in all (kept across resumes), and how much the state may grow while it
//! runs; past either, its coroutine fails with an error the step shows.
//! Functions met in what a task yields (a step added at run time with its
//! own `do_step_if` or `run`) are kept in the [`LuaScope`] the task was
//! started in, as long as that scope (a build) lives.

use super::engine::{CallError, Job};
use super::value::{FnHome, LuaFn, RawValue};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// What one Lua step may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    /// Lua instructions in all, over every resume.
    pub instructions: u64,
    /// How far the state may grow beyond its size when the task resumed
    /// (checked with the instruction hook; one huge allocation is stopped by
    /// the state's own limit).
    pub memory_bytes: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            instructions: 100_000_000,
            memory_bytes: 64 << 20,
        }
    }
}

/// Where a task stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Resumed {
    /// It yielded a request and waits for the answer.
    Asked(RawValue),
    /// Its function returned this.
    Returned(RawValue),
    /// It raised an error (or ran over its budget): the message, then the
    /// Lua traceback.
    Failed(String),
}

/// A running coroutine of a generation; dropping the handle ends it.
#[derive(Debug)]
pub struct LuaTask {
    pub(super) id: u64,
    pub(super) jobs: mpsc::Sender<Job>,
}

impl LuaTask {
    /// Resume the coroutine with `answer` (what its request asked for).
    pub async fn resume(&self, answer: serde_json::Value) -> Result<Resumed, CallError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Resume {
                task: self.id,
                answer,
                reply,
            })
            .map_err(|_| CallError::StateGone)?;
        let resumed = rx.await.map_err(|_| CallError::Stopped)?;
        Ok(self.adopted(resumed))
    }

    /// What the task asked for, its functions marked as living in the
    /// task's Lua state (a pipeline's runs in its own).
    pub(super) fn adopted(&self, resumed: Resumed) -> Resumed {
        match resumed {
            Resumed::Asked(mut request) => {
                request.adopt(&FnHome(self.jobs.clone()));
                Resumed::Asked(request)
            }
            other => other,
        }
    }
}

impl Drop for LuaTask {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::ForgetTask(self.id));
    }
}

/// What lives as long as one build: the functions its tasks handed over.
#[derive(Debug)]
pub struct LuaScope {
    pub(super) id: u64,
    pub(super) jobs: mpsc::Sender<Job>,
}

impl Drop for LuaScope {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::ReleaseScope(self.id));
    }
}

/// How a task is started: the function, its arguments, its scope and limits.
pub(super) struct Start {
    pub function: LuaFn,
    pub args: Vec<serde_json::Value>,
    pub scope: u64,
    pub limits: TaskLimits,
    pub reply: oneshot::Sender<Result<(u64, Resumed), String>>,
}
