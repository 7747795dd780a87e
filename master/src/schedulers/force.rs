//! The force scheduler: a build on request (REST API, web form, quickstart).
//!
//! It has nothing long-lived: forcing reads the scheduler's builders from the
//! running configuration at each request. It is a service all the same, as
//! every scheduler is ([`super::OnDemand`]), so the services manager starts,
//! reconfigures and stops schedulers uniformly and logs each.

use super::force_params::{self, FieldError};
use crate::config::SchedulerConfig;
use crate::data::buildsets::NewBuildset;
use crate::data::changes::NewChange;
use crate::shared::Shared;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why a force request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    #[error("no force scheduler named '{0}'")]
    UnknownScheduler(String),
    #[error("scheduler '{0}' is disabled")]
    Disabled(String),
    #[error("scheduler '{scheduler}' cannot build builder {builderid}")]
    NotAllowed { scheduler: String, builderid: i64 },
    /// A value the scheduler's form refused (naming the field).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// PostgreSQL cannot store a NUL in text; SQLite would, and every page
    /// would then carry it. Refused on both, the same way.
    #[error("property '{0}' must not contain a NUL character")]
    Nul(String),
    #[error("storing the request failed: {0}")]
    Data(#[from] crate::data::DataError),
}

/// What to force.
#[derive(Debug, Clone, Default)]
pub struct ForceRequest {
    /// One builder, or every builder of the scheduler when `None`.
    pub builderid: Option<i64>,
    /// The form's fields as sent (`reason`, `owner`, codebase fields,
    /// property fields), checked against the scheduler's form.
    pub fields: Map<String, Value>,
    /// A logged-in user: the owner, whatever `fields` say.
    pub user: Option<String>,
    /// Free-form properties (the API's `properties` object, the form's
    /// `name=value` lines), besides the form's typed ones.
    pub properties: BTreeMap<String, Value>,
}

/// Add a buildset with one request per chosen builder; returns the buildset id
/// and builderid → build request id. Nothing is queued when a value is wrong.
pub async fn force(
    shared: &Shared,
    scheduler_name: &str,
    request: ForceRequest,
) -> Result<(i64, BTreeMap<i64, i64>), ForceError> {
    let running = shared.running_config();
    let Some(SchedulerConfig::Force { builders, form, .. }) =
        running.loaded.config.scheduler(scheduler_name)
    else {
        return Err(ForceError::UnknownScheduler(scheduler_name.to_string()));
    };
    if let Some(id) = running.scheduler_ids.get(scheduler_name)
        && shared.data.scheduler_disabled(*id)
    {
        return Err(ForceError::Disabled(scheduler_name.to_string()));
    }
    let allowed = super::buildset::builder_ids(&running, builders);
    let chosen = match request.builderid {
        Some(id) if allowed.contains(&id) => vec![id],
        Some(id) => {
            return Err(ForceError::NotAllowed {
                scheduler: scheduler_name.to_string(),
                builderid: id,
            });
        }
        None => allowed,
    };
    let collected = force_params::collect(form, &request.fields)?;
    for (name, value) in &request.properties {
        if name.contains('\0') || value.to_string().contains("\\u0000") {
            return Err(ForceError::Nul(name.escape_debug().to_string()));
        }
    }
    let owner = request
        .user
        .or_else(|| Some(collected.owner.clone()).filter(|o| !o.trim().is_empty()))
        .unwrap_or_else(|| "anonymous".into());
    let reason = Some(collected.reason.clone())
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("A build was forced by '{owner}'"));
    let mut props = BTreeMap::new();
    for (k, v) in request.properties.into_iter().chain(collected.properties) {
        props.insert(k, (v, "Force Build Form".to_string()));
    }
    props.insert(
        "scheduler".into(),
        (scheduler_name.into(), "Scheduler".into()),
    );
    props.insert(
        "reason".into(),
        (reason.clone().into(), "Force Build Form".into()),
    );
    props.insert("owner".into(), (owner.into(), "Force Build Form".into()));
    let mut sourcestampids = Vec::with_capacity(collected.stamps.len());
    for stamp in collected.stamps {
        let stamp = NewChange {
            codebase: stamp.codebase,
            repository: stamp.repository,
            branch: stamp.branch,
            revision: stamp.revision,
            project: stamp.project,
            ..NewChange::default()
        };
        sourcestampids.push(shared.data.sourcestamp_id(&stamp).await?);
    }
    let added = shared
        .data
        .add_buildsets(vec![NewBuildset {
            reason,
            builderids: chosen,
            properties: props,
            sourcestampids,
            ..NewBuildset::default()
        }])
        .await?;
    added
        .into_iter()
        .next()
        .ok_or(ForceError::Data(crate::data::DataError::Unexpected(
            "returned no new buildset row",
        )))
}
