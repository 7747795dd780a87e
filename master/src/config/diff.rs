//! What a reload would change: the running configuration against a new one,
//! component by component, by name.
//!
//! The diff decides two things. It is the summary a user sees (`moonbot
//! reconfig`, the API, the log), and it tells the master which live components
//! need work: a removed worker is disconnected once idle, an added builder gets a
//! database row. New builds always take the newest definitions, so a "changed"
//! builder needs no restart of anything.
//!
//! Positions (`defined_at`) are not compared: adding a comment at the top of
//! master.lua moves every definition but changes none of them. Lua functions
//! compare by their code (see [`super::LuaFn`]).

use super::*;
use serde::{Deserialize, Serialize};

/// Names added, removed and changed in one kind of component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Compare two lists of named components; `same` says whether two
    /// definitions with one name are equivalent.
    fn between<T>(
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Changes {
        let mut changes = Changes::default();
        for n in new {
            match old.iter().find(|o| name(o) == name(n)) {
                None => changes.added.push(name(n).to_string()),
                Some(o) if !same(o, n) => changes.changed.push(name(n).to_string()),
                Some(_) => {}
            }
        }
        for o in old {
            if !new.iter().any(|n| name(n) == name(o)) {
                changes.removed.push(name(o).to_string());
            }
        }
        changes
    }
}

/// Everything a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub workers: Changes,
    pub builders: Changes,
    pub schedulers: Changes,
    #[serde(default)]
    pub change_sources: Changes,
    #[serde(default)]
    pub reporters: Changes,
    /// Top-level settings that changed and apply at once (`title`, `reconfig` …).
    pub settings: Vec<String>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
            && self.builders.is_empty()
            && self.schedulers.is_empty()
            && self.change_sources.is_empty()
            && self.reporters.is_empty()
            && self.settings.is_empty()
    }

    /// One line per change, `+ builder linux`, `- worker arm1`, `~ scheduler force`,
    /// for the CLI and the log.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (kind, changes) in [
            ("worker", &self.workers),
            ("builder", &self.builders),
            ("scheduler", &self.schedulers),
            ("change source", &self.change_sources),
            ("reporter", &self.reporters),
        ] {
            for (mark, names) in [
                ('+', &changes.added),
                ('-', &changes.removed),
                ('~', &changes.changed),
            ] {
                lines.extend(names.iter().map(|n| format!("{mark} {kind} {n}")));
            }
        }
        lines.extend(self.settings.iter().map(|s| format!("~ setting {s}")));
        lines
    }

    /// `3 added, 1 removed, 2 changed` style counts, for a log line.
    pub fn counts(&self) -> String {
        let kinds = [
            &self.workers,
            &self.builders,
            &self.schedulers,
            &self.change_sources,
            &self.reporters,
        ];
        let added: usize = kinds.iter().map(|c| c.added.len()).sum();
        let removed: usize = kinds.iter().map(|c| c.removed.len()).sum();
        let changed: usize =
            kinds.iter().map(|c| c.changed.len()).sum::<usize>() + self.settings.len();
        format!("{added} added, {removed} removed, {changed} changed")
    }
}

/// The diff from `old` (none at start-up) to `new`.
pub fn diff(old: Option<&MasterConfig>, new: &MasterConfig) -> ConfigDiff {
    let Some(old) = old else {
        return ConfigDiff {
            workers: Changes::between(&[], &new.workers, |w| &w.name, |_, _| true),
            builders: Changes::between(&[], &new.builders, |b| &b.name, |_, _| true),
            schedulers: Changes::between(&[], &new.schedulers, |s| s.name(), |_, _| true),
            change_sources: Changes::between(&[], &new.change_sources, |s| s.name(), |_, _| true),
            reporters: Changes::between(&[], &new.reporters, |r| &r.name, |_, _| true),
            settings: Vec::new(),
        };
    };
    let mut settings = Vec::new();
    if old.title != new.title {
        settings.push("title".to_string());
    }
    if old.title_url != new.title_url {
        settings.push("title_url".to_string());
    }
    if old.www.change_hooks != new.www.change_hooks {
        settings.push("www.change_hooks".to_string());
    }
    if old.buildbot_url != new.buildbot_url {
        settings.push("buildbot_url".to_string());
    }
    if old.reconfig != new.reconfig {
        settings.push("reconfig".to_string());
    }
    if old.auth != new.auth {
        settings.push("auth".to_string());
    }
    if old.janitor != new.janitor {
        settings.push("janitor".to_string());
    }
    ConfigDiff {
        workers: Changes::between(&old.workers, &new.workers, |w| &w.name, same_worker),
        builders: Changes::between(&old.builders, &new.builders, |b| &b.name, same_builder),
        schedulers: Changes::between(
            &old.schedulers,
            &new.schedulers,
            |s| s.name(),
            same_scheduler,
        ),
        change_sources: Changes::between(
            &old.change_sources,
            &new.change_sources,
            |s| s.name(),
            |a, b| a.unplaced() == b.unplaced(),
        ),
        reporters: Changes::between(
            &old.reporters,
            &new.reporters,
            |r| &r.name,
            |a, b| a.unplaced() == b.unplaced(),
        ),
        settings,
    }
}

/// Settings the running master cannot change (its database, its listening
/// sockets): each difference is an error, and the whole reload is refused.
/// Values are not quoted, since a database URL may hold a password.
pub fn fixed_setting_errors(old: &MasterConfig, new: &MasterConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut refuse = |what: &str, changed: bool| {
        if changed {
            errors.push(ConfigError::whole_file(format!(
                "{what} cannot change while the master runs; restart the master to apply it \
                 (nothing of this reload was applied)"
            )));
        }
    };
    refuse("db.url", old.db != new.db);
    refuse(
        "www.bind/www.port/www.hosts/www.max_connections/www.idle_timeout",
        old.www.listener() != new.www.listener(),
    );
    refuse(
        "protocols.quic.bind/port",
        old.quic.bind != new.quic.bind || old.quic.port != new.quic.port,
    );
    refuse(
        "protocols.quic.idle_timeout",
        old.quic.idle_timeout_s != new.quic.idle_timeout_s,
    );
    errors
}

fn same_worker(a: &WorkerConfig, b: &WorkerConfig) -> bool {
    a.max_builds == b.max_builds && a.properties == b.properties
}

fn same_builder(a: &BuilderConfig, b: &BuilderConfig) -> bool {
    let unplaced = |b: &BuilderConfig| {
        let mut b = b.clone();
        b.defined_at.clear();
        for step in &mut b.steps {
            step.defined_at.clear();
        }
        b
    };
    unplaced(a) == unplaced(b)
}

/// Whether two schedulers of the same name differ in more than their position.
pub fn same_scheduler(a: &SchedulerConfig, b: &SchedulerConfig) -> bool {
    a.unplaced() == b.unplaced()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::{LuaGeneration, RawValue};

    fn compile(source: &str) -> MasterConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("master.lua"), source).unwrap();
        let (_lua, raw): (LuaGeneration, RawValue) = LuaGeneration::load(dir.path()).unwrap();
        crate::config::compile::compile(&raw).unwrap()
    }

    const BASE: &str = r#"
        local mb = require "moonbot"
        return {
          workers = { mb.worker { name = "w1" }, mb.worker { name = "w2" } },
          builders = {
            mb.builder { name = "a", workernames = { "w1" }, steps = {
              mb.steps.shell { command = function(p) return { "echo", p.buildername } end },
            } },
            mb.builder { name = "b", workernames = { "w2" }, steps = {
              mb.steps.shell { command = "true" } } },
          },
        }
    "#;

    #[test]
    fn start_up_adds_everything() {
        let d = diff(None, &compile(BASE));
        assert_eq!(d.workers.added, ["w1", "w2"]);
        assert_eq!(d.builders.added, ["a", "b"]);
        assert!(d.builders.changed.is_empty() && d.settings.is_empty());
    }

    #[test]
    fn moving_definitions_and_functions_is_no_change() {
        let moved = format!("-- a comment\n\n\n{BASE}");
        let d = diff(Some(&compile(BASE)), &compile(&moved));
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn interpolate_templates_are_compared() {
        let with = |t: &str| {
            BASE.replace(
                r#"command = "true""#,
                &format!(r#"command = mb.interpolate("{t}")"#),
            )
        };
        let old = compile(&with("echo %(prop:branch)s"));
        assert!(diff(Some(&old), &compile(&with("echo %(prop:branch)s"))).is_empty());
        let d = diff(Some(&old), &compile(&with("echo %(prop:revision)s")));
        assert_eq!(d.builders.changed, ["b"]);
    }

    #[test]
    fn names_what_was_added_removed_and_changed() {
        let edited = BASE
            .replace(
                r#"mb.worker { name = "w2" }"#,
                r#"mb.worker { name = "w3" }"#,
            )
            .replace(r#"workernames = { "w2" }"#, r#"workernames = { "w3" }"#)
            .replace("p.buildername", "p.buildnumber");
        let d = diff(Some(&compile(BASE)), &compile(&edited));
        assert_eq!(d.workers.added, ["w3"]);
        assert_eq!(d.workers.removed, ["w2"]);
        assert_eq!(d.builders.changed, ["a", "b"]);
        assert_eq!(
            d.lines(),
            ["+ worker w3", "- worker w2", "~ builder a", "~ builder b"]
        );
    }

    #[test]
    fn fixed_settings_are_refused_without_quoting_them() {
        let old = compile(BASE);
        let new = compile(&BASE.replace(
            "return {",
            r#"return { db = { url = "postgres://u:secret@h/db" }, www = { port = 1 },"#,
        ));
        let errors = fixed_setting_errors(&old, &new);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| !e.message.contains("secret")));
        assert!(errors[0].message.starts_with("db.url cannot change"));
    }
}
