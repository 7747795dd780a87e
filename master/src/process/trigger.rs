//! A build's `trigger` step, the master's side: the buildset a triggerable
//! scheduler makes for it ([`trigger`]), and waiting for those buildsets
//! ([`wait`]).
//!
//! The scheduler is read from the running configuration when the step
//! triggers, and the wait follows rows in the database (woken by
//! `buildsets/N/complete`, and checked every few seconds in case an event
//! was missed), so a reload during the wait changes nothing for it. A build
//! stopped while it waits cancels its children that have not started, and
//! stops the running ones if the step says so.

use crate::config::SchedulerConfig;
use crate::data::DataError;
use crate::data::buildsets::NewBuildset;
use crate::data::changes::NewChange;
use crate::data::query::ListQuery;
use crate::db::entities::sourcestamps;
use crate::mq::Topic;
use crate::mq::topic::BuildsetEvent;
use crate::render::Properties;
use crate::running_builds::{StopKind, StopSignal};
use crate::shared::Shared;
use crate::steps::trigger::{ChildOutcome, TriggerRequest, Triggered};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

/// How often a waiting trigger looks at its buildsets without an event.
const RECHECK: Duration = Duration::from_secs(5);

/// The triggering build, as its children are made from it.
pub struct Parent<'a> {
    pub buildid: i64,
    pub sourcestamps: &'a [sourcestamps::Model],
    pub properties: &'a Properties,
}

/// Make the buildset `request.scheduler` builds for `parent`.
pub async fn trigger(
    shared: &Shared,
    parent: &Parent<'_>,
    request: &TriggerRequest,
) -> Result<Result<Triggered, String>, DataError> {
    let name = &request.scheduler;
    let (builderids, reason, mut properties, priority) = {
        let running = shared.running_config();
        let Some(scheduler) = running
            .loaded
            .config
            .schedulers
            .iter()
            .find(|s| s.name() == name)
        else {
            return Ok(Err(format!("there is no scheduler '{name}'")));
        };
        let SchedulerConfig::Triggerable {
            builders,
            reason,
            properties,
            priority,
            ..
        } = scheduler
        else {
            return Ok(Err(format!(
                "scheduler '{name}' is a {}, not a triggerable scheduler",
                scheduler.class_name()
            )));
        };
        let ids: Vec<i64> = builders
            .iter()
            .filter_map(|b| running.builder_ids.get(b).copied())
            .collect();
        let props: Properties = properties
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), "Scheduler".to_string())))
            .collect();
        (ids, reason.clone(), props, *priority)
    };
    for (k, v) in &request.properties {
        properties.insert(k.clone(), (v.clone(), "Trigger".into()));
    }
    properties.insert(
        "scheduler".into(),
        (name.as_str().into(), "Scheduler".into()),
    );
    let got_revision = parent
        .properties
        .get("got_revision")
        .map(|(v, _)| v.clone())
        .unwrap_or(Value::Null);
    let mut sourcestampids = Vec::with_capacity(parent.sourcestamps.len());
    for stamp in parent.sourcestamps {
        let revision = if request.always_use_latest {
            None
        } else if request.update_sourcestamp {
            // One codebase: a string; several: codebase → revision.
            match &got_revision {
                Value::String(rev) => Some(rev.clone()),
                Value::Object(by_codebase) => by_codebase
                    .get(&stamp.codebase)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| stamp.revision.clone()),
                _ => stamp.revision.clone(),
            }
        } else {
            stamp.revision.clone()
        };
        if revision == stamp.revision {
            sourcestampids.push(stamp.id);
            continue;
        }
        let id = shared
            .data
            .sourcestamp_id(&NewChange {
                codebase: stamp.codebase.clone(),
                repository: stamp.repository.clone(),
                branch: stamp.branch.clone(),
                revision,
                project: stamp.project.clone(),
                ..NewChange::default()
            })
            .await?;
        sourcestampids.push(id);
    }
    let added = shared
        .data
        .add_buildsets(vec![NewBuildset {
            reason: reason.unwrap_or_else(|| {
                format!("The Triggerable scheduler named '{name}' triggered this build")
            }),
            builderids,
            properties,
            sourcestampids,
            priority,
            parent: Some((parent.buildid, name.clone())),
            ..NewBuildset::default()
        }])
        .await?;
    let Some((bsid, _)) = added.into_iter().next() else {
        return Err(DataError::Unexpected("returned no new buildset row"));
    };
    info!(buildid = parent.buildid, bsid, scheduler = %name, "triggered");
    Ok(Ok(Triggered {
        scheduler: name.clone(),
        bsid,
    }))
}

/// Wait until the buildsets `bsids` (triggered by build `buildid`) are
/// complete; `None` when the build is stopped first.
pub async fn wait(
    shared: &Shared,
    buildid: i64,
    bsids: &[i64],
    stop: &StopSignal,
    stop_children: bool,
) -> Result<Option<Vec<ChildOutcome>>, DataError> {
    let mut events = shared.data.bus.subscribe();
    let mut interrupt = stop.interrupt.clone();
    loop {
        let children: Vec<_> = shared
            .data
            .child_buildsets(buildid)
            .await?
            .into_iter()
            .filter(|c| bsids.contains(&c.bsid))
            .collect();
        if stop.requested().is_some() {
            stop_triggered(shared, &children, stop_children, stop.requested()).await?;
            return Ok(None);
        }
        if children.iter().all(|c| c.complete) {
            let mut outcomes = Vec::with_capacity(children.len());
            for child in &children {
                outcomes.push(ChildOutcome {
                    bsid: child.bsid,
                    results: child.results.unwrap_or(crate::results::SUCCESS),
                    builds: builds_of(shared, child.bsid).await?,
                });
            }
            return Ok(Some(outcomes));
        }
        // Sleep until one of ours completes, the build is stopped, a few
        // seconds pass, or events were lost (lagged): then look again.
        let deadline = tokio::time::sleep(RECHECK);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = interrupt.changed() => break,
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Topic::Buildset { id, event: BuildsetEvent::Complete } = event.topic
                            && bsids.contains(&id)
                        {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        (&mut deadline).await;
                        break;
                    }
                },
            }
        }
    }
}

/// The builds of a buildset, as a step's links: "BUILDER #N" → its page.
async fn builds_of(shared: &Shared, bsid: i64) -> Result<Vec<(String, String)>, DataError> {
    let builds = shared
        .data
        .builds_of_buildsets(&[bsid], ListQuery::default(), false)
        .await?;
    let names: BTreeMap<i64, String> = {
        let running = shared.running_config();
        running
            .builder_ids
            .iter()
            .map(|(name, id)| (*id, name.clone()))
            .collect()
    };
    Ok(builds
        .into_iter()
        .filter_map(|(_, b)| {
            let buildid = b["buildid"].as_i64()?;
            let builder = names
                .get(&b["builderid"].as_i64()?)
                .cloned()
                .unwrap_or_else(|| "build".into());
            Some((
                format!("{builder} #{}", b["number"].as_i64()?),
                format!("/builds/{buildid}"),
            ))
        })
        .collect())
}

/// The parent stopped: cancel its children that have not started, and
/// stop those running here when `stop_children` (as a cancel, or as a
/// shutdown when the master is stopping).
async fn stop_triggered(
    shared: &Shared,
    children: &[crate::data::buildsets::ChildBuildset],
    stop_children: bool,
    kind: Option<StopKind>,
) -> Result<(), DataError> {
    for child in children {
        for &(brid, _, complete) in &child.requests {
            if complete || shared.data.cancel_request(brid).await? {
                continue;
            }
            if !stop_children || kind == Some(StopKind::Shutdown) {
                continue;
            }
            let q = ListQuery::default().with_eq("buildrequestid", brid);
            let (builds, _) = shared.data.list_builds(&q, false).await?;
            for build in builds {
                if let Some(id) = build["buildid"].as_i64()
                    && build["complete"] != Value::Bool(true)
                {
                    shared.builds.stop(
                        id,
                        StopKind::Cancel,
                        "the build that triggered it was stopped",
                    );
                }
            }
        }
    }
    Ok(())
}
