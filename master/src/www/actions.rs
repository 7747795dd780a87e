//! Every control action, whoever asks for it: the JSON-RPC API and the pages'
//! forms only parse a request into an [`Action`]; this module authorizes it
//! ([`authorize`]) and carries it out ([`perform`]).
//!
//! Authorization is a capability: [`perform`] takes the [`Authorized`] that
//! [`authorize`] returned for the action's kind, so nothing can be done that
//! was not checked against master.lua's `auth.rules` (and, for a browser, the
//! CSRF token) first. The callers authorize as soon as they know the kind, so
//! a caller who may not act learns nothing from a malformed request.

use super::auth::{self, Denied, Identity};
use crate::data::DataError;
use crate::data::changes::NewChange;
use crate::data::query::ListQuery;
use crate::reconfig::{self, Trigger};
use crate::running_builds::StopKind;
use crate::schedulers::force::{self, ForceError, ForceRequest};
use crate::shared::Shared;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a control action is, before its arguments are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActionKind {
    Force,
    Stop,
    Rebuild,
    Cancel,
    /// Change a pending build request's priority (`set_priority`).
    SetPriority,
    Pause,
    Unpause,
    /// A worker's `stop`: no new builds, then it is let go.
    StopWorker,
    /// A worker's `kill`: let go now; its running builds are lost to it.
    KillWorker,
    /// A scheduler's `enable` (with `enabled = false`, disable).
    EnableScheduler,
    Reload,
    /// What a reload would change (`moonbot checkconfig --diff`); nothing is applied.
    Diff,
    /// Report a change (`moonbot sendchange`).
    SendChange,
}

impl ActionKind {
    /// Every kind.
    #[cfg(test)]
    const ALL: [ActionKind; 13] = [
        ActionKind::Force,
        ActionKind::Stop,
        ActionKind::Rebuild,
        ActionKind::Cancel,
        ActionKind::SetPriority,
        ActionKind::Pause,
        ActionKind::Unpause,
        ActionKind::StopWorker,
        ActionKind::KillWorker,
        ActionKind::EnableScheduler,
        ActionKind::Reload,
        ActionKind::Diff,
        ActionKind::SendChange,
    ];

    /// The name master.lua's `auth.rules` gives it (one of
    /// [`crate::config::ACTIONS`]): pausing and unpausing share `pause`, a
    /// diff is allowed to whoever may `reload`.
    pub(super) fn rule(self) -> &'static str {
        match self {
            ActionKind::Force => "force",
            ActionKind::Stop => "stop",
            ActionKind::Rebuild => "rebuild",
            ActionKind::Cancel => "cancel",
            ActionKind::SetPriority => "set_priority",
            ActionKind::Pause | ActionKind::Unpause => "pause",
            ActionKind::StopWorker | ActionKind::KillWorker => "stop_worker",
            ActionKind::EnableScheduler => "enable_scheduler",
            ActionKind::Reload | ActionKind::Diff => "reload",
            ActionKind::SendChange => "sendchange",
        }
    }
}

/// A control action with its arguments.
#[derive(Debug, Clone)]
pub(super) enum Action {
    /// Force builds through a force scheduler.
    Force {
        scheduler: String,
        request: ForceRequest,
    },
    /// Stop a running build (it ends CANCELLED).
    Stop {
        buildid: i64,
        reason: String,
    },
    /// A new request for what a build built, with its properties.
    Rebuild {
        buildid: i64,
    },
    /// Cancel a build request no build has started for.
    Cancel {
        brid: i64,
    },
    /// Give a pending build request another priority.
    SetPriority {
        brid: i64,
        priority: i64,
    },
    /// Give a worker (by name or id) no new builds; its running builds go on.
    Pause {
        worker: String,
    },
    Unpause {
        worker: String,
    },
    /// Let a worker go: after its running builds (`kill = false`), or now.
    StopWorker {
        worker: String,
        kill: bool,
    },
    /// Enable or disable a scheduler (stored: it lasts across restarts).
    EnableScheduler {
        schedulerid: i64,
        enabled: bool,
    },
    /// Load master.lua again and apply it.
    Reload,
    /// What a reload would change, or its errors; nothing applied or recorded.
    Diff,
    /// Store a change a source reported.
    SendChange {
        change: NewChange,
    },
}

impl Action {
    pub(super) fn kind(&self) -> ActionKind {
        match self {
            Action::Force { .. } => ActionKind::Force,
            Action::Stop { .. } => ActionKind::Stop,
            Action::Rebuild { .. } => ActionKind::Rebuild,
            Action::Cancel { .. } => ActionKind::Cancel,
            Action::SetPriority { .. } => ActionKind::SetPriority,
            Action::Pause { .. } => ActionKind::Pause,
            Action::Unpause { .. } => ActionKind::Unpause,
            Action::StopWorker { kill: false, .. } => ActionKind::StopWorker,
            Action::StopWorker { kill: true, .. } => ActionKind::KillWorker,
            Action::EnableScheduler { .. } => ActionKind::EnableScheduler,
            Action::Reload => ActionKind::Reload,
            Action::Diff => ActionKind::Diff,
            Action::SendChange { .. } => ActionKind::SendChange,
        }
    }
}

/// Proof that a caller may do one kind of action; only [`authorize`] makes one.
#[derive(Debug)]
pub(super) struct Authorized {
    kind: ActionKind,
    /// The logged-in user (or token) acting, if any: the owner of what it
    /// forces, named in stop and rebuild reasons.
    pub user: Option<String>,
}

/// May `identity` do `kind`? `csrf_form` is the CSRF token a form post carried
/// (`None` for the JSON API, whose content type is its CSRF protection).
pub(super) fn authorize(
    shared: &Shared,
    identity: &Identity,
    kind: ActionKind,
    csrf_form: Option<&str>,
) -> Result<Authorized, Denied> {
    let running = shared.running_config();
    auth::authorize(
        &shared.session_key,
        running.loaded.config.auth.as_ref(),
        identity,
        kind.rule(),
        csrf_form,
    )?;
    Ok(Authorized {
        kind,
        user: identity.user.as_ref().map(|u| u.name.clone()),
    })
}

/// What an action did.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The buildset and builderid → build request id.
    Forced {
        bsid: i64,
        brids: BTreeMap<i64, i64>,
    },
    Stopped,
    Rebuilt(Rebuilt),
    Cancelled,
    PrioritySet,
    /// The worker as the API shows it after a pause or unpause.
    Worker(Value),
    /// The worker is being let go.
    WorkerStopping,
    /// The scheduler as the API shows it after `enable`.
    Scheduler(Value),
    /// The stored outcome of the reload (`/api/v2/config/reloads` shape).
    Reloaded(Value),
    /// `{"success", "errors", "changes"}` of a dry run.
    Diff(Value),
    /// The new change's id.
    ChangeAdded(i64),
}

/// What a rebuild submitted.
#[derive(Debug)]
pub(super) struct Rebuilt {
    pub bsid: i64,
    pub brid: i64,
    pub builderid: i64,
}

/// Why an action could not be done.
#[derive(Debug, thiserror::Error)]
pub(super) enum ActionError {
    /// The proof of authorization was for another kind of action (a bug in
    /// the caller; nothing is done).
    #[error("not authorized for this action")]
    WrongAuthorization,
    #[error("build {0} not found")]
    NoBuild(i64),
    #[error("build {0} is not running on this master")]
    NotRunning(i64),
    #[error("build request {0} has already started or finished; stop its build instead")]
    NotPending(i64),
    #[error("worker '{0}' is not in this master's configuration")]
    NoWorker(String),
    #[error("worker '{0}' is not connected to this master")]
    NotConnected(String),
    #[error("scheduler {0} not found")]
    NoScheduler(i64),
    #[error(transparent)]
    Force(#[from] ForceError),
    /// The reload ran but its outcome could not be recorded.
    #[error("{0}")]
    Reload(#[source] DataError),
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Carry out an authorized action.
pub(super) async fn perform(
    shared: &Arc<Shared>,
    authorized: Authorized,
    action: Action,
) -> Result<Outcome, ActionError> {
    if authorized.kind != action.kind() {
        return Err(ActionError::WrongAuthorization);
    }
    let user = authorized.user.as_deref();
    match action {
        Action::Force { scheduler, request } => {
            let (bsid, brids) = force::force(shared, &scheduler, request).await?;
            Ok(Outcome::Forced { bsid, brids })
        }
        Action::Stop { buildid, reason } => {
            if shared.builds.stop(buildid, StopKind::Cancel, &reason) {
                Ok(Outcome::Stopped)
            } else {
                Err(ActionError::NotRunning(buildid))
            }
        }
        Action::Rebuild { buildid } => rebuild(shared, buildid, user).await.map(Outcome::Rebuilt),
        Action::Cancel { brid } => {
            if shared.data.cancel_request(brid).await? {
                Ok(Outcome::Cancelled)
            } else {
                Err(ActionError::NotPending(brid))
            }
        }
        Action::SetPriority { brid, priority } => {
            if shared.data.set_request_priority(brid, priority).await? {
                Ok(Outcome::PrioritySet)
            } else {
                Err(ActionError::NotPending(brid))
            }
        }
        Action::Pause { worker } => set_worker_paused(shared, &worker, true).await,
        Action::Unpause { worker } => set_worker_paused(shared, &worker, false).await,
        Action::StopWorker { worker, kill } => {
            let (worker, _) = configured_worker(shared, &worker)?;
            let connected = shared
                .workers
                .get(&worker)
                .ok_or_else(|| ActionError::NotConnected(worker.clone()))?;
            tracing::info!(worker = %worker, user = ?user, "worker {} from the API", if kill { "killed" } else { "asked to stop" });
            if kill {
                connected.kill();
            } else {
                connected.stop_gracefully();
            }
            Ok(Outcome::WorkerStopping)
        }
        Action::EnableScheduler {
            schedulerid,
            enabled,
        } => {
            let shown = shared
                .data
                .set_scheduler_enabled(schedulerid, enabled)
                .await?
                .ok_or(ActionError::NoScheduler(schedulerid))?;
            tracing::info!(schedulerid, enabled, user = ?user, "scheduler {}", if enabled { "enabled" } else { "disabled" });
            Ok(Outcome::Scheduler(shown))
        }
        Action::Reload => reconfig::reload(shared, Trigger::Api)
            .await
            .map(Outcome::Reloaded)
            .map_err(ActionError::Reload),
        Action::Diff => {
            let running = shared.running_config();
            let answer = match reconfig::prepare(&shared.dir, Some(&running.loaded.config)).await {
                Ok((_, changes)) => {
                    serde_json::json!({"success": true, "errors": [], "changes": changes})
                }
                Err(errors) => {
                    serde_json::json!({"success": false, "errors": errors, "changes": null})
                }
            };
            Ok(Outcome::Diff(answer))
        }
        Action::SendChange { change } => {
            let changeid = shared.data.add_change(change).await?;
            tracing::info!(changeid, user = ?user, "change added");
            Ok(Outcome::ChangeAdded(changeid))
        }
    }
}

/// Pause or unpause a configured worker (by name or id): a paused worker gets
/// no new builds; its running builds go on.
async fn set_worker_paused(
    shared: &Shared,
    worker: &str,
    paused: bool,
) -> Result<Outcome, ActionError> {
    let (name, workerid) = configured_worker(shared, worker)?;
    // The registry first: storing publishes `workers/N/state_updated`, on
    // which the distributor looks for builds an unpaused worker can take.
    let before = shared.workers.set_paused(&name, paused);
    let shown = match shared.data.set_worker_paused(workerid, paused).await {
        Ok(shown) => shown,
        Err(e) => {
            shared.workers.set_paused(&name, before);
            return Err(e.into());
        }
    };
    tracing::info!(worker = %name, "worker {}", if paused { "paused" } else { "unpaused" });
    Ok(Outcome::Worker(shown.unwrap_or(Value::Null)))
}

/// A configured worker's name and id, from its name or id.
fn configured_worker(shared: &Shared, worker: &str) -> Result<(String, i64), ActionError> {
    let running = shared.running_config();
    running
        .worker_ids
        .iter()
        .find(|(name, id)| name.as_str() == worker || id.to_string() == worker)
        .map(|(name, id)| (name.clone(), *id))
        .ok_or_else(|| ActionError::NoWorker(worker.to_string()))
}

/// A new request for the builder of `buildid`, with its properties.
async fn rebuild(
    shared: &Shared,
    buildid: i64,
    user: Option<&str>,
) -> Result<Rebuilt, ActionError> {
    let q = ListQuery::default().with_eq("buildid", buildid);
    let (builds, _) = shared.data.list_builds(&q, false).await?;
    let build = builds.first().ok_or(ActionError::NoBuild(buildid))?;
    let brid = build["buildrequestid"]
        .as_i64()
        .ok_or(ActionError::NoBuild(buildid))?;
    let reason = format!(
        "rebuild of build #{} by {}",
        build["number"],
        user.unwrap_or("a user")
    );
    let (bsid, brid) = shared.data.resubmit_request(brid, &reason).await?;
    Ok(Rebuilt {
        bsid,
        brid,
        builderid: build["builderid"].as_i64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_rule_master_lua_accepts() {
        for kind in ActionKind::ALL {
            assert!(
                crate::config::ACTIONS.contains(&kind.rule()),
                "{kind:?} is authorized as '{}', which auth.rules does not know",
                kind.rule()
            );
        }
        for rule in crate::config::ACTIONS {
            assert!(
                ActionKind::ALL.iter().any(|k| k.rule() == *rule),
                "auth.rules accepts '{rule}', which no action uses"
            );
        }
    }
}
