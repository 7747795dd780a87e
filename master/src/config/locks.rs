//! `mb.locks.master{…}` and `mb.locks.worker{…}`, and the `locks = { … }`
//! field of builders and steps that names them with an access mode
//! (`lock:access("counting" | "exclusive")`), as Buildbot's `MasterLock`,
//! `WorkerLock` and `LockAccess`.
//!
//! A lock is known by its name: every place that names it must define it
//! the same way ([`collect`] checks), and [`MasterConfig::locks`] holds
//! each one, so a running build reads the current `max_count` when it
//! takes a lock.
//!
//! [`MasterConfig::locks`]: super::MasterConfig::locks

use crate::lua::{ConfigError, Fields, RawKey, RawValue};
use std::collections::BTreeMap;

/// Counting on the whole master, or per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Master,
    Worker,
}

/// A lock as master.lua defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDef {
    pub name: String,
    pub kind: LockKind,
    pub max_count: u32,
    /// A worker lock's own count on some workers.
    pub max_count_for_worker: BTreeMap<String, u32>,
    pub defined_at: String,
}

impl LockDef {
    /// How many may hold it on `worker` (a master lock: anywhere).
    pub fn max_on(&self, worker: &str) -> u32 {
        match self.kind {
            LockKind::Master => self.max_count,
            LockKind::Worker => self
                .max_count_for_worker
                .get(worker)
                .copied()
                .unwrap_or(self.max_count),
        }
    }
}

/// A builder's or step's use of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockAccess {
    pub lock: LockDef,
    pub exclusive: bool,
}

/// Read `locks = { lock:access(mode), … }` (a bare lock is a counting
/// access, as in Buildbot).
pub fn compile_accesses(f: &mut Fields<'_>, what: &str) -> Vec<LockAccess> {
    let Some(items) = f.list("locks") else {
        return Vec::new();
    };
    let at = f.at.clone();
    let mut out = Vec::new();
    for item in items {
        match access(item, &at) {
            Ok(a) => out.push(a),
            Err(e) => f.error(format!("{what}: locks: {e}")),
        }
    }
    out
}

fn text<'a>(value: &'a RawValue, key: &str) -> Option<&'a str> {
    match value.get(key) {
        Some(RawValue::Str(s)) => Some(s),
        _ => None,
    }
}

fn access(item: &RawValue, at: &str) -> Result<LockAccess, String> {
    match text(item, "_kind") {
        Some("lock_access") => {
            let exclusive = match text(item, "mode") {
                Some("exclusive") => true,
                Some("counting") => false,
                other => {
                    return Err(format!(
                        "access mode must be \"counting\" or \"exclusive\", not {other:?}"
                    ));
                }
            };
            let lock = item.get("lock").ok_or("an access without its lock")?;
            Ok(LockAccess {
                lock: definition(lock, at)?,
                exclusive,
            })
        }
        Some("lock.master" | "lock.worker") => Ok(LockAccess {
            lock: definition(item, at)?,
            exclusive: false,
        }),
        _ => Err("expected lock:access(\"counting\" | \"exclusive\") of an mb.locks.* lock".into()),
    }
}

fn definition(lock: &RawValue, at: &str) -> Result<LockDef, String> {
    let RawValue::Table(entries) = lock else {
        return Err("a lock must be mb.locks.master{…} or mb.locks.worker{…}".into());
    };
    let kind = match text(lock, "_kind") {
        Some("lock.master") => LockKind::Master,
        Some("lock.worker") => LockKind::Worker,
        _ => return Err("a lock must be mb.locks.master{…} or mb.locks.worker{…}".into()),
    };
    let where_ = text(lock, "_where").unwrap_or(at).to_string();
    let mut f = Fields::new("lock", where_.clone(), entries);
    let name = f.required_string("name");
    let max_count = f.integer("max_count", 1, 1_000_000).unwrap_or(1) as u32;
    let mut max_count_for_worker = BTreeMap::new();
    if kind == LockKind::Worker {
        match f.get("max_count_for_worker") {
            None => {}
            Some(RawValue::Table(per)) => {
                for (k, v) in per {
                    match (k, v) {
                        (RawKey::Str(worker), RawValue::Int(n)) if *n >= 1 => {
                            max_count_for_worker.insert(worker.clone(), *n as u32);
                        }
                        _ => f.error(
                            "lock: 'max_count_for_worker' maps worker names to counts of at least 1"
                                .into(),
                        ),
                    }
                }
            }
            Some(other) => f.error(format!(
                "lock: 'max_count_for_worker' must be a table, not a {}",
                other.type_name()
            )),
        }
    }
    let mut errors = Vec::new();
    f.finish(&mut errors);
    if let Some(e) = errors.first() {
        return Err(e.to_string());
    }
    Ok(LockDef {
        name: name.ok_or("a lock needs a name")?,
        kind,
        max_count,
        max_count_for_worker,
        defined_at: where_,
    })
}

/// Every lock the builders and their steps name, by name; two different
/// definitions of one name are an error.
pub fn collect(
    builders: &[super::BuilderConfig],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, LockDef> {
    let mut locks: BTreeMap<String, LockDef> = BTreeMap::new();
    let accesses = builders.iter().flat_map(|b| {
        b.locks
            .iter()
            .chain(b.steps.iter().flat_map(|s| s.locks.iter()))
    });
    for access in accesses {
        let lock = &access.lock;
        match locks.get(&lock.name) {
            None => {
                locks.insert(lock.name.clone(), lock.clone());
            }
            Some(first) => {
                let same = LockDef {
                    defined_at: first.defined_at.clone(),
                    ..lock.clone()
                };
                if &same != first {
                    errors.push(ConfigError {
                        location: lock.defined_at.clone(),
                        message: format!(
                            "lock '{}' is defined differently at {}",
                            lock.name, first.defined_at
                        ),
                    });
                }
            }
        }
    }
    locks
}
