//! `dependent { upstream }`: when a buildset of the upstream scheduler
//! completes with SUCCESS or WARNINGS, build the same source stamps on this
//! scheduler's builders (Buildbot's `Dependent`).
//!
//! It reads buildsets from the database, woken by `buildsets/N/complete`:
//! its position (the last buildset id below which every buildset is
//! complete and examined) is kept in its object state, and each buildset it
//! makes carries `external_idstring = "dependent:NAME:UPSTREAM_BSID"`, so a
//! completed upstream buildset is followed exactly once, also across a
//! restart, whatever order buildsets complete in.

use super::buildset;
use crate::config::SchedulerConfig;
use crate::data::DataError;
use crate::data::buildsets::NewBuildset;
use crate::data::schedulers::{LAST_BUILDSET_SEEN, SchedulerStep};
use crate::mq::Topic;
use crate::mq::topic::BuildsetEvent;
use crate::results::{SUCCESS, WARNINGS};
use crate::services::TaskService;
use crate::shared::Shared;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// Buildsets read per step.
const STEP_BUILDSETS: u64 = 500;
/// Look again this often even without an event.
const RECHECK: Duration = Duration::from_secs(30);

/// Start the dependent scheduler `name` (a [`TaskService`]).
pub fn start(shared: Arc<Shared>, name: &str) -> TaskService {
    let events = shared.data.bus.subscribe();
    let owned = name.to_string();
    TaskService::spawn("dependent scheduler", name, move |(settings, shutdown)| {
        run(shared, owned, events, settings, shutdown)
    })
}

async fn run(
    shared: Arc<Shared>,
    name: String,
    mut events: broadcast::Receiver<crate::mq::Event>,
    mut settings: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut position = None;
    loop {
        match follow(&shared, &name, &mut position).await {
            Ok(()) => {}
            Err(e) => {
                warn!(scheduler = %name, "reading upstream buildsets failed, trying again: {e}")
            }
        }
        let wake = tokio::time::sleep(RECHECK);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = settings.changed() => break,
                _ = &mut wake => break,
                event = events.recv() => match event {
                    Ok(e) if matches!(e.topic, Topic::Buildset { event: BuildsetEvent::Complete, .. }) => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

/// Build for every upstream buildset that succeeded since the position;
/// `position` is (object id, last buildset id), read on first use.
async fn follow(
    shared: &Shared,
    name: &str,
    position: &mut Option<(i64, i64)>,
) -> Result<(), DataError> {
    let running = shared.running_config();
    let Some(SchedulerConfig::Dependent {
        builders,
        upstream,
        reason,
        properties,
        priority,
        ..
    }) = running.loaded.config.scheduler(name)
    else {
        return Ok(());
    };
    let data = &shared.data;
    let (objectid, mut seen) = match *position {
        Some(p) => p,
        None => {
            // New: it follows the buildsets that come after it.
            data.scheduler_position(name, LAST_BUILDSET_SEEN).await?
        }
    };
    loop {
        let buildsets = data.buildsets_after(seen, STEP_BUILDSETS).await?;
        let read = buildsets.len() as u64;
        let mut step = SchedulerStep {
            schedulerid: running.scheduler_ids.get(name).copied().unwrap_or(0),
            ..SchedulerStep::default()
        };
        let mut blocked = false;
        let mut advanced = seen;
        for bs in buildsets {
            if !bs.complete {
                // Everything before an incomplete buildset is done with.
                blocked = true;
                continue;
            }
            if !blocked {
                advanced = bs.bsid;
            }
            let from_upstream = bs
                .properties
                .get("scheduler")
                .is_some_and(|(v, _)| v.as_str() == Some(upstream.as_str()));
            let succeeded = matches!(bs.results, Some(r) if r == SUCCESS || r == WARNINGS);
            if !from_upstream || !succeeded {
                continue;
            }
            let mark = format!("dependent:{name}:{}", bs.bsid);
            if data.buildset_marked(&mark).await? {
                continue;
            }
            step.buildsets.push(NewBuildset {
                reason: reason.clone().unwrap_or_else(|| {
                    format!(
                        "downstream of buildset {} of scheduler '{upstream}'",
                        bs.bsid
                    )
                }),
                builderids: buildset::builder_ids(&running, builders),
                properties: buildset::properties(name, properties, &[]),
                sourcestampids: bs.sourcestampids.clone(),
                priority: *priority,
                consumes: None,
                external_idstring: Some(mark),
                changeids: Vec::new(),
                parent: None,
            });
        }
        let made = step.buildsets.len();
        step.state
            .push((objectid, LAST_BUILDSET_SEEN, json!(advanced)));
        data.schedule(step).await?;
        if made > 0 {
            info!(scheduler = %name, upstream = %upstream, buildsets = made, "upstream succeeded");
        }
        seen = advanced;
        *position = Some((objectid, seen));
        if read < STEP_BUILDSETS || blocked {
            return Ok(());
        }
    }
}
