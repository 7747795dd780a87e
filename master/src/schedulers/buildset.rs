//! What every scheduler's buildset is made of, in one place: the ids of its
//! configured builders, and its properties (the scheduler's own, then its
//! changes', then `scheduler`), as Buildbot's `addBuildsetForChanges` does.

use crate::shared::RunningConfig;
use serde_json::Value;
use std::collections::BTreeMap;

/// The ids of the builders `names` that the running configuration has.
pub fn builder_ids(running: &RunningConfig, names: &[String]) -> Vec<i64> {
    names
        .iter()
        .filter_map(|b| running.builder_ids.get(b).copied())
        .collect()
}

/// A buildset's properties, name → (value, source): the scheduler's
/// `properties` (source `Scheduler`), then each change's in order (source
/// `Change`; a later change's value wins), and `scheduler`.
pub fn properties(
    scheduler: &str,
    own: &BTreeMap<String, Value>,
    changes: &[Value],
) -> BTreeMap<String, (Value, String)> {
    let mut properties = BTreeMap::new();
    for (name, value) in own {
        properties.insert(name.clone(), (value.clone(), "Scheduler".to_string()));
    }
    for change in changes {
        if let Some(props) = change["properties"].as_object() {
            for (name, pair) in props {
                properties.insert(name.clone(), (pair[0].clone(), "Change".to_string()));
            }
        }
    }
    properties.insert(
        "scheduler".into(),
        (Value::from(scheduler), "Scheduler".to_string()),
    );
    properties
}

/// Buildbot's default reason for a scheduler of `class` (`Nightly` …).
pub fn default_reason(class: &str, scheduler: &str) -> String {
    format!("The {class} scheduler named '{scheduler}' triggered this build")
}
