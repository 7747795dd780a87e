//! `cancel_superseded`: when a newer revision of a branch is to be built,
//! the older revision's requests are not worth finishing. Pending ones are
//! cancelled; running ones are stopped (CANCELLED, with the reason on the
//! build). Buildbot needs a separate service, `OldBuildCanceller`, for this;
//! here it is one field, on a change scheduler (its own older requests) or
//! on a builder (that builder's older requests, whoever made them).
//!
//! The builder form runs as the [`Superseder`] service: it follows new
//! build requests on the event bus, and for one of a builder with
//! `cancel_superseded` it looks for that builder's older requests on the same
//! branch. Only builds running on this master can be stopped from here.

use crate::data::DataError;
use crate::data::buildsets::Superseded;
use crate::mq::topic::BuildRequestEvent;
use crate::mq::{Event, Topic};
use crate::running_builds::StopKind;
use crate::services::TaskService;
use crate::shared::Shared;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

/// Cancel or stop what buildset `bsid` (building source stamps `ssids`)
/// supersedes within `scope`; `who` names the scheduler or builder for the
/// log.
pub async fn cancel_superseded(
    shared: &Shared,
    scope: Superseded<'_>,
    bsid: i64,
    ssids: &[i64],
    who: &str,
) -> Result<(), DataError> {
    let data = &shared.data;
    for &ssid in ssids {
        for (brid, claimed) in data.superseded_requests(scope, ssid, bsid).await? {
            if !claimed && data.cancel_request(brid).await? {
                info!(by = %who, brid, superseded_by = bsid, "pending request cancelled: a newer revision came");
                continue;
            }
            let q = crate::data::query::ListQuery::default()
                .with_eq("buildrequestid", brid)
                .with_eq("complete", "false");
            for build in data.list_builds(&q, false).await?.0 {
                let Some(buildid) = build["buildid"].as_i64() else {
                    continue;
                };
                let reason = format!("superseded by a newer change (buildset {bsid})");
                if shared.builds.stop(buildid, StopKind::Cancel, &reason) {
                    info!(by = %who, buildid, superseded_by = bsid, "build stopped: a newer revision came");
                }
            }
        }
    }
    Ok(())
}

/// The builders' `cancel_superseded`, as a service (started when a builder
/// has it).
pub type Superseder = TaskService;

/// Start the service.
pub fn start(shared: Arc<Shared>) -> Superseder {
    let mut events = shared.data.bus.subscribe();
    TaskService::spawn(
        "superseder",
        "builders",
        move |(_settings, mut shutdown)| async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => {
                            if let Err(e) = on_event(&shared, &event).await {
                                warn!("cancel_superseded: {e}");
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            warn!("cancel_superseded missed {n} events; older requests among them may still run");
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = shutdown.changed() => return,
                }
            }
        },
    )
}

/// A new request of a builder with `cancel_superseded`: cancel what it
/// supersedes on that builder.
async fn on_event(shared: &Shared, event: &Event) -> Result<(), DataError> {
    let Topic::BuildRequest {
        event: BuildRequestEvent::New,
        ..
    } = event.topic
    else {
        return Ok(());
    };
    let (Some(builderid), Some(bsid)) = (
        event.payload["builderid"].as_i64(),
        event.payload["buildsetid"].as_i64(),
    ) else {
        return Ok(());
    };
    let running = shared.running_config();
    let Some(builder) = running
        .builder_ids
        .iter()
        .find(|(_, id)| **id == builderid)
        .and_then(|(name, _)| running.loaded.config.builder(name))
    else {
        return Ok(());
    };
    if !builder.cancel_superseded {
        return Ok(());
    }
    let ssids: Vec<i64> = shared
        .data
        .buildset_sourcestamps(bsid)
        .await?
        .iter()
        .filter_map(|s| s["ssid"].as_i64())
        .collect();
    cancel_superseded(
        shared,
        Superseded::Builder(builderid),
        bsid,
        &ssids,
        &builder.name,
    )
    .await
}
