//! `mb.steps.trigger{…}`: start builds on other builders through their
//! `triggerable` schedulers, and (with `wait_for_finish`) wait for them
//! (Buildbot's `Trigger`).
//!
//! The step names the schedulers (a list, or a Lua function of the
//! properties giving one); each makes one buildset whose parent is this
//! build, with this build's source stamps (updated to `got_revision` unless
//! `update_sourcestamp = false`, or without a revision with
//! `always_use_latest`) and the properties `set_properties` and
//! `copy_properties` give. Waiting, the step's result is the worst of the
//! children's, except those of `unimportant_schedulers`. Stopping the build
//! cancels the children that have not started, and with `stop_children`
//! stops the running ones too. The buildsets are rows in the database, so a
//! reload never ends a waiting trigger.

use super::{Compiled, StepContext, StepHost, StepKind};
use crate::lua::{Fields, RawKey, RawValue};
use crate::render::Renderable;
use crate::results::{CANCELLED, EXCEPTION, RETRY, SUCCESS, worst};
use crate::running_builds::StopKind;
use serde_json::Value;
use std::collections::BTreeMap;

/// `mb.steps.trigger{…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerStep {
    /// Scheduler names: a list, or a renderable (a Lua function) giving one.
    pub schedulers: Renderable,
    pub wait_for_finish: bool,
    pub set_properties: BTreeMap<String, Renderable>,
    pub copy_properties: Vec<String>,
    pub update_sourcestamp: bool,
    pub always_use_latest: bool,
    /// Schedulers whose builds' results do not count in the step's.
    pub unimportant_schedulers: Vec<String>,
    /// Stopping this build stops the children already running too.
    pub stop_children: bool,
}

/// What a trigger asks of the build: one scheduler's buildset.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRequest {
    pub scheduler: String,
    /// Rendered `set_properties` and the copied ones.
    pub properties: BTreeMap<String, Value>,
    pub update_sourcestamp: bool,
    pub always_use_latest: bool,
}

/// A buildset a trigger made.
#[derive(Debug, Clone, PartialEq)]
pub struct Triggered {
    pub scheduler: String,
    pub bsid: i64,
}

/// A triggered buildset once complete: its result and its builds
/// (name shown, path of its page).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome {
    pub bsid: i64,
    pub results: i32,
    pub builds: Vec<(String, String)>,
}

/// Compile the fields of `mb.steps.trigger{…}`.
pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let what = format!("{builder}: step");
    let schedulers = crate::render::field(f, "schedulers");
    if schedulers.is_none() && f.get("schedulers").is_none() {
        f.error(format!(
            "{what}: 'schedulers' (a list of triggerable scheduler names, or a function) is required"
        ));
    }
    let at = f.at.clone();
    let mut set_properties = BTreeMap::new();
    match f.get("set_properties") {
        None => {}
        Some(RawValue::Table(entries)) => {
            for (k, v) in entries {
                let RawKey::Str(name) = k else {
                    f.error(format!("{what}: 'set_properties' must have string keys"));
                    continue;
                };
                match Renderable::compile(v, &format!("{what}: set_properties '{name}'"), &at) {
                    Ok(r) => {
                        set_properties.insert(name.clone(), r);
                    }
                    Err(e) => f.error_at(e.location, e.message),
                }
            }
        }
        Some(other) => f.error(format!(
            "{what}: 'set_properties' must be a table, not a {}",
            other.type_name()
        )),
    }
    let step = TriggerStep {
        schedulers: schedulers.unwrap_or(Renderable::Literal(Value::Array(Vec::new()))),
        wait_for_finish: f.boolean("wait_for_finish", false),
        set_properties,
        copy_properties: f.string_list("copy_properties"),
        update_sourcestamp: f.boolean("update_sourcestamp", true),
        always_use_latest: f.boolean("always_use_latest", false),
        unimportant_schedulers: f.string_list("unimportant_schedulers"),
        stop_children: f.boolean("stop_children", false),
    };
    Compiled {
        kind: Some(StepKind::Trigger(Box::new(step))),
        default_name: "trigger".into(),
    }
}

pub async fn run<H: StepHost>(
    step: &TriggerStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let names = match ctx.render.render(&step.schedulers).await {
        Ok(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect::<Vec<_>>(),
        Ok(Value::String(one)) => vec![one],
        Ok(other) => {
            return ctx
                .cannot_start(&format!(
                    "'schedulers' must give a list of scheduler names, not {other}"
                ))
                .await;
        }
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render 'schedulers': {e}"))
                .await;
        }
    };
    let mut properties = BTreeMap::new();
    for name in &step.copy_properties {
        if let Some((value, _)) = ctx.render.properties.get(name) {
            properties.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in &step.set_properties {
        match ctx.render.render(value).await {
            Ok(value) => {
                properties.insert(name.clone(), value);
            }
            Err(e) => {
                return ctx
                    .cannot_start(&format!("could not render property '{name}': {e}"))
                    .await;
            }
        }
    }
    ctx.host
        .begin(&format!("triggering {}", names.join(", ")))
        .await?;
    if names.is_empty() {
        ctx.host.header("no scheduler to trigger").await?;
        ctx.host.set_summary("triggered nothing");
        return Ok(SUCCESS);
    }
    let mut triggered = Vec::new();
    for scheduler in &names {
        let request = TriggerRequest {
            scheduler: scheduler.clone(),
            properties: properties.clone(),
            update_sourcestamp: step.update_sourcestamp,
            always_use_latest: step.always_use_latest,
        };
        match ctx.host.trigger(&request).await? {
            Ok(set) => {
                ctx.host
                    .header(&format!("triggered '{scheduler}': buildset {}", set.bsid))
                    .await?;
                triggered.push(set);
            }
            Err(why) => {
                ctx.host.header(&why).await?;
                // What was triggered already goes on without this step.
                return Ok(EXCEPTION);
            }
        }
    }
    if !step.wait_for_finish {
        ctx.host
            .set_summary(&format!("triggered {}", names.join(", ")));
        return Ok(SUCCESS);
    }
    ctx.host
        .set_summary(&format!("waiting for {}", names.join(", ")));
    let bsids: Vec<i64> = triggered.iter().map(|t| t.bsid).collect();
    let Some(outcomes) = ctx.host.wait_triggered(&bsids, step.stop_children).await? else {
        ctx.host
            .header("stopped while waiting; children that had not started were cancelled")
            .await?;
        return Ok(match ctx.stop.requested() {
            Some(StopKind::Shutdown) => RETRY,
            _ => CANCELLED,
        });
    };
    let mut result = SUCCESS;
    for outcome in &outcomes {
        for (name, url) in &outcome.builds {
            ctx.host.add_url(name, url).await?;
        }
        let scheduler = triggered
            .iter()
            .find(|t| t.bsid == outcome.bsid)
            .map(|t| t.scheduler.as_str())
            .unwrap_or("");
        if step.unimportant_schedulers.iter().any(|u| u == scheduler) {
            continue;
        }
        result = worst(result, outcome.results);
    }
    ctx.host
        .set_summary(&format!("triggered {}", names.join(", ")));
    Ok(result)
}
