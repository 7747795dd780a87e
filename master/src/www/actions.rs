//! Control actions that both the JSON-RPC API and the pages' forms offer and
//! that are more than one call into the data layer. Authorization happens
//! before these are called (see [`super::auth::authorize`]).

use crate::data::DataError;
use crate::data::query::ListQuery;
use crate::shared::Shared;

/// Why an action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("build {0} not found")]
    NoBuild(i64),
    #[error("build request {0} has already started or finished; stop its build instead")]
    NotPending(i64),
    #[error("worker '{0}' is not in this master's configuration")]
    NoWorker(String),
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Pause or unpause a configured worker (by name or id): a paused worker gets
/// no new builds; its running builds go on. Returns the worker as the API shows it.
pub async fn set_worker_paused(
    shared: &Shared,
    worker: &str,
    paused: bool,
) -> Result<serde_json::Value, ActionError> {
    let running = shared.running_config();
    let found = running
        .worker_ids
        .iter()
        .find(|(name, id)| name.as_str() == worker || id.to_string() == worker)
        .map(|(name, id)| (name.clone(), *id));
    drop(running);
    let (name, workerid) = found.ok_or_else(|| ActionError::NoWorker(worker.to_string()))?;
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
    Ok(shown.unwrap_or(serde_json::Value::Null))
}

/// What a rebuild submitted.
pub struct Rebuilt {
    pub bsid: i64,
    pub brid: i64,
    pub builderid: i64,
}

/// A new request for the builder of `buildid`, with its properties.
pub async fn rebuild(
    shared: &Shared,
    buildid: i64,
    user: Option<&str>,
) -> Result<Rebuilt, ActionError> {
    let q = ListQuery::default().with_eq("buildid", buildid);
    let (builds, _) = shared
        .data
        .list_builds(&q, false)
        .await
        .map_err(DataError::Query)?;
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

/// Cancel a request no build has started for.
pub async fn cancel(shared: &Shared, brid: i64) -> Result<(), ActionError> {
    if shared.data.cancel_request(brid).await? {
        Ok(())
    } else {
        Err(ActionError::NotPending(brid))
    }
}
