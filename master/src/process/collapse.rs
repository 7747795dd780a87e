//! `collapse_requests`: which pending requests of a builder one build stands
//! for.
//!
//! Buildbot collapses when a request is added, and the older requests it
//! replaces end SKIPPED with nothing saying why; the build then reports only
//! the newest request's changes. Here the decision is made when a build is
//! about to start, so the collapsed requests can name that build: the newest
//! request of the group runs, the others end SKIPPED with
//! `collapsed_into_buildid` set, and the build's changes are the union of
//! every request's (see `Data::changes_of_build`).

use crate::config::{BuilderConfig, CollapseRequests, LuaGeneration};
use crate::data::buildsets::PendingRequest;
use crate::data::collapse::Candidate;
use crate::data::{Data, DataError};
use crate::lua::RawValue;
use serde_json::json;
use tracing::warn;

/// The requests `request`'s build should stand for, oldest first, `request`
/// among them; just `request` when nothing collapses with it.
pub async fn group(
    data: &Data,
    rule: &CollapseRequests,
    lua: &LuaGeneration,
    builder: &BuilderConfig,
    request: &PendingRequest,
) -> Result<Vec<PendingRequest>, DataError> {
    if matches!(rule, CollapseRequests::Off) {
        return Ok(vec![request.clone()]);
    }
    let candidates = data.collapse_candidates(request.builderid).await?;
    let Some(picked) = candidates.iter().find(|c| c.request.brid == request.brid) else {
        return Ok(vec![request.clone()]);
    };
    let mut group = Vec::new();
    for other in &candidates {
        if other.request.brid == picked.request.brid {
            group.push(other.request.clone());
            continue;
        }
        // Buildbot's argument order: the newer request first.
        let (new, old) = if other.request.brid > picked.request.brid {
            (other, picked)
        } else {
            (picked, other)
        };
        if decide(rule, lua, builder, request.builderid, new, old).await {
            group.push(other.request.clone());
        }
    }
    Ok(group)
}

/// Whether `new` and `old` may be one build under `rule`.
async fn decide(
    rule: &CollapseRequests,
    lua: &LuaGeneration,
    builder: &BuilderConfig,
    builderid: i64,
    new: &Candidate,
    old: &Candidate,
) -> bool {
    match rule {
        CollapseRequests::Off => false,
        CollapseRequests::Compatible => new.compatible(old),
        CollapseRequests::Lua(function) => {
            let builder_json = json!({ "name": builder.name, "builderid": builderid });
            match lua
                .call_with(function, vec![builder_json, new.to_json(), old.to_json()])
                .await
            {
                Ok(RawValue::Nil | RawValue::Bool(false)) => false,
                Ok(_) => true,
                Err(e) => {
                    warn!(builder = %builder.name, "collapse_requests failed, so the requests stay apart: {e}");
                    false
                }
            }
        }
    }
}
