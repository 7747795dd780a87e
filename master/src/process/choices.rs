//! The builder's choices, as master.lua's functions make them (Buildbot's
//! `prioritizeBuilders`, `nextBuild`, `nextWorker` and `canStartBuild`):
//! which builder gets free workers first, which of its pending requests is
//! built next, on which worker, and whether a request may start there at
//! all (a veto leaves it pending; the distributor asks again at its next
//! pass). A function that fails is logged and the default choice stands,
//! so a broken function never stops builds.

use crate::config::{BuilderConfig, MasterConfig};
use crate::data::buildsets::PendingRequest;
use crate::lua::{LuaGeneration, RawValue};
use serde_json::{Value, json};
use std::collections::HashMap;
use tracing::warn;

/// What a function returned for one thing: the value itself, or the `key`
/// field of the table it returned (a builder, a worker, a request as given).
fn chosen<'v>(value: &'v RawValue, key: &str) -> &'v RawValue {
    match value {
        RawValue::Table(_) => value.get(key).unwrap_or(&RawValue::Nil),
        other => other,
    }
}

/// Each ready builder's rank (lower goes first): `prioritize_builders`'
/// order, else by `priority` (higher first). A builder the function leaves
/// out gets no build this pass (`None`).
pub async fn builder_ranks(
    lua: &LuaGeneration,
    config: &MasterConfig,
    ready: &HashMap<i64, &BuilderConfig>,
) -> HashMap<i64, Option<i64>> {
    if let Some(function) = &config.prioritize_builders {
        let builders: Vec<Value> = ready
            .values()
            .map(|b| json!({ "name": b.name, "priority": b.priority, "tags": b.tags }))
            .collect();
        match lua.call(function, Value::Array(builders)).await {
            Ok(RawValue::Table(order)) => {
                let mut rank: HashMap<&str, i64> = HashMap::new();
                for (i, (_, item)) in order.iter().enumerate() {
                    if let RawValue::Str(name) = chosen(item, "name") {
                        rank.entry(name).or_insert(i as i64);
                    }
                }
                return ready
                    .iter()
                    .map(|(id, b)| (*id, rank.get(b.name.as_str()).copied()))
                    .collect();
            }
            Ok(other) => warn!(
                "prioritize_builders returned a {}, not a list of builders; using priorities",
                other.type_name()
            ),
            Err(e) => warn!("prioritize_builders failed: {e}; using priorities"),
        }
    }
    ready
        .iter()
        .map(|(id, b)| (*id, Some(-b.priority)))
        .collect()
}

/// With `next_build`, the index among `requests` (a builder's pending
/// ones, in queue order) of the one to build next; `None`: none now.
/// Without it, the first.
pub async fn next_build(
    lua: &LuaGeneration,
    builder: &BuilderConfig,
    requests: &[&PendingRequest],
) -> Option<usize> {
    let Some(function) = &builder.next_build else {
        return Some(0);
    };
    let listed: Vec<Value> = requests.iter().map(|r| r.describe()).collect();
    let args = vec![json!({ "name": builder.name }), Value::Array(listed)];
    match lua.call_with(function, args).await {
        Ok(RawValue::Nil) => None,
        Ok(answer) => {
            let found = match chosen(&answer, "buildrequestid") {
                RawValue::Int(brid) => requests.iter().position(|r| r.brid == *brid),
                _ => None,
            };
            if found.is_none() {
                warn!(builder = %builder.name, "next_build returned none of the requests it was given; building the first");
                return Some(0);
            }
            found
        }
        Err(e) => {
            warn!(builder = %builder.name, "next_build failed: {e}; building the first request");
            Some(0)
        }
    }
}

/// A worker as the builder's functions see it.
fn describe_worker(config: &MasterConfig, name: &str, running: usize) -> Value {
    let properties = config
        .worker(name)
        .map(|w| json!(w.properties))
        .unwrap_or_else(|| json!({}));
    json!({ "name": name, "properties": properties, "running_builds": running })
}

/// The workers to try for `request`, in order: `next_worker`'s choice
/// alone when the builder has one (none when it returns nil), else
/// `free` (least busy first); each passed through `can_start_build`.
pub async fn workers_for(
    lua: &LuaGeneration,
    config: &MasterConfig,
    builder: &BuilderConfig,
    request: &PendingRequest,
    free: Vec<(String, usize)>,
) -> Vec<String> {
    let mut candidates: Vec<String> = free.iter().map(|(name, _)| name.clone()).collect();
    if let Some(function) = &builder.next_worker {
        let workers: Vec<Value> = free
            .iter()
            .map(|(name, running)| describe_worker(config, name, *running))
            .collect();
        let args = vec![
            json!({ "name": builder.name }),
            Value::Array(workers),
            request.describe(),
        ];
        candidates = match lua.call_with(function, args).await {
            Ok(RawValue::Nil) => Vec::new(),
            Ok(answer) => match chosen(&answer, "name") {
                RawValue::Str(name) if candidates.contains(name) => vec![name.clone()],
                _ => {
                    warn!(builder = %builder.name, "next_worker returned none of the free workers; the request waits");
                    Vec::new()
                }
            },
            Err(e) => {
                warn!(builder = %builder.name, "next_worker failed: {e}; any free worker");
                candidates
            }
        };
    }
    let Some(function) = &builder.can_start_build else {
        return candidates;
    };
    let mut allowed = Vec::with_capacity(candidates.len());
    for name in candidates {
        let running = free.iter().find(|(n, _)| *n == name).map_or(0, |(_, r)| *r);
        let args = vec![
            json!({ "name": builder.name }),
            describe_worker(config, &name, running),
            request.describe(),
        ];
        match lua.call_with(function, args).await {
            Ok(RawValue::Nil | RawValue::Bool(false)) => {}
            Ok(_) => allowed.push(name),
            Err(e) => {
                warn!(builder = %builder.name, worker = %name, "can_start_build failed: {e}; not starting there")
            }
        }
    }
    allowed
}
