//! Turning the table master.lua returned into a [`MasterConfig`].
//!
//! The compiler reads every object, checks every field, then checks the references
//! between objects, and reports *all* errors it found, each at the `file:line` of
//! the constructor call that made the object. It runs no Lua. Each section has
//! its own module (`settings`, `auth`, `workers`, `builders`, `schedulers`);
//! this one reads the top-level table and checks what crosses sections.

use super::FILE;
use super::auth::compile_auth;
use super::builders::compile_builder;
use super::change_sources::compile_change_source;
use super::janitor::compile_janitor;
use super::reporters::{ReporterConfig, compile_reporter};
use super::schedulers::compile_scheduler;
use super::settings::{compile_db, compile_quic, compile_reconfig, compile_www};
use super::workers::compile_worker;
use super::*;
use crate::lua::{ConfigError, Fields, RawValue};
use std::collections::BTreeMap;

/// Compile the raw configuration, or return every error found.
pub fn compile(raw: &RawValue) -> Result<MasterConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let config = compile_top(raw, &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

fn compile_top(raw: &RawValue, errors: &mut Vec<ConfigError>) -> Option<MasterConfig> {
    let RawValue::Table(entries) = raw else {
        errors.push(ConfigError::whole_file(format!(
            "master.lua must return a table, not a {}",
            raw.type_name()
        )));
        return None;
    };
    let mut top = Fields::new("configuration", FILE.to_string(), entries);
    let title = top.string("title").unwrap_or_else(|| "moonbot".into());
    let title_url = top.string("title_url");
    let buildbot_url = top.string("buildbot_url");
    let www_raw = top.get("www");
    let protocols_raw = top.get("protocols");
    let db_raw = top.get("db");
    let reconfig_raw = top.get("reconfig");
    let auth_raw = top.get("auth");
    let janitor_raw = top.get("janitor");
    let artifacts_raw = top.get("artifacts");
    let workers_raw = top.list("workers").unwrap_or_default();
    let builders_raw = top.list("builders").unwrap_or_default();
    let schedulers_raw = top.list("schedulers").unwrap_or_default();
    let change_sources_raw = top.list("change_sources").unwrap_or_default();
    let reporters_raw = top.list("reporters").unwrap_or_default();
    let collapse_requests = super::builders::collapse_requests(&mut top).unwrap_or_default();
    let properties = top.properties("properties");
    let secrets_raw = top.list("secrets").unwrap_or_default();
    let allow_master_shell = top.boolean("allow_master_shell", false);
    let prioritize_builders = match top.get("prioritize_builders") {
        None => None,
        Some(RawValue::Function(f)) => Some(f.clone()),
        Some(other) => {
            let msg = format!(
                "'prioritize_builders' must be a function of the builders, not a {}",
                other.type_name()
            );
            top.error(msg);
            None
        }
    };
    let max_retries = top.integer("max_retries", 0, 1000).unwrap_or(5) as u32;
    top.finish(errors);
    let secrets = super::secrets::compile_secrets(secrets_raw, errors);

    let www = compile_www(www_raw, errors);
    let quic = compile_quic(protocols_raw, errors);
    let db = compile_db(db_raw, errors);
    let reconfig = compile_reconfig(reconfig_raw, errors);
    let janitor = compile_janitor(janitor_raw, errors);
    let artifacts = super::artifacts::compile_artifacts(artifacts_raw, errors);
    let auth = match auth_raw {
        None => Some(None),
        raw => compile_auth(raw, errors).map(Some),
    };
    let workers: Vec<WorkerConfig> = workers_raw
        .iter()
        .filter_map(|w| compile_worker(w, errors))
        .collect();
    let builders: Vec<BuilderConfig> = builders_raw
        .iter()
        .filter_map(|b| compile_builder(b, errors))
        .collect();
    let schedulers: Vec<SchedulerConfig> = schedulers_raw
        .iter()
        .filter_map(|s| compile_scheduler(s, errors))
        .collect();

    let change_sources: Vec<ChangeSourceConfig> = change_sources_raw
        .iter()
        .filter_map(|s| compile_change_source(s, errors))
        .collect();
    let mut seen = BTreeMap::new();
    for s in &change_sources {
        if let Some(first) = seen.insert(s.name(), s.defined_at()) {
            errors.push(ConfigError {
                location: s.defined_at().to_string(),
                message: format!(
                    "duplicate change source '{}' (first defined at {first}); give one a 'name'",
                    s.name()
                ),
            });
        }
    }

    let reporters: Vec<ReporterConfig> = reporters_raw
        .iter()
        .filter_map(|r| compile_reporter(r, errors))
        .collect();
    let mut seen = BTreeMap::new();
    for r in &reporters {
        if let Some(first) = seen.insert(r.name.as_str(), r.defined_at.as_str()) {
            errors.push(ConfigError {
                location: r.defined_at.clone(),
                message: format!(
                    "duplicate reporter '{}' (first defined at {first}); give one a 'name'",
                    r.name
                ),
            });
        }
        for g in &r.generators {
            for b in &g.builders {
                if !builders.iter().any(|x| &x.name == b) {
                    errors.push(ConfigError {
                        location: r.defined_at.clone(),
                        message: format!(
                            "reporter '{}': a generator names unknown builder '{b}'",
                            r.name
                        ),
                    });
                }
            }
        }
    }

    check_references(&workers, &builders, &schedulers, errors);
    let locks = super::locks::collect(&builders, errors);
    if !allow_master_shell {
        for b in &builders {
            for step in &b.steps {
                if matches!(step.kind, crate::steps::StepKind::MasterShell(_)) {
                    errors.push(ConfigError {
                        location: step.defined_at.clone(),
                        message: format!(
                            "builder '{}': step '{}': master_shell runs commands on the master; refused unless master.lua sets allow_master_shell = true",
                            b.name, step.name
                        ),
                    });
                }
            }
        }
    }
    Some(MasterConfig {
        title,
        title_url,
        buildbot_url,
        www: www?,
        quic: quic?,
        db: db?,
        workers,
        builders,
        schedulers,
        change_sources,
        reporters,
        reconfig: reconfig?,
        auth: auth?,
        janitor: janitor?,
        artifacts: artifacts?,
        collapse_requests,
        properties,
        secrets,
        allow_master_shell,
        locks,
        prioritize_builders,
        max_retries,
    })
}

fn check_references(
    workers: &[WorkerConfig],
    builders: &[BuilderConfig],
    schedulers: &[SchedulerConfig],
    errors: &mut Vec<ConfigError>,
) {
    let mut seen = BTreeMap::new();
    for w in workers {
        if let Some(first) = seen.insert(w.name.as_str(), w.defined_at.as_str()) {
            errors.push(ConfigError {
                location: w.defined_at.clone(),
                message: format!("duplicate worker '{}' (first defined at {first})", w.name),
            });
        }
    }
    let mut seen = BTreeMap::new();
    for b in builders {
        if let Some(first) = seen.insert(b.name.as_str(), b.defined_at.as_str()) {
            errors.push(ConfigError {
                location: b.defined_at.clone(),
                message: format!("duplicate builder '{}' (first defined at {first})", b.name),
            });
        }
        for wn in &b.workernames {
            if !workers.iter().any(|w| &w.name == wn) {
                errors.push(ConfigError {
                    location: b.defined_at.clone(),
                    message: format!("builder '{}' names unknown worker '{wn}'", b.name),
                });
            }
        }
    }
    let mut seen = BTreeMap::new();
    for s in schedulers {
        let at = s.defined_at().to_string();
        if let Some(first) = seen.insert(s.name(), s.defined_at()) {
            errors.push(ConfigError {
                location: at.clone(),
                message: format!(
                    "duplicate scheduler '{}' (first defined at {first})",
                    s.name()
                ),
            });
        }
        if let SchedulerConfig::Dependent { upstream, .. } = s {
            if upstream == s.name() {
                errors.push(ConfigError {
                    location: at.clone(),
                    message: format!("scheduler '{}' cannot depend on itself", s.name()),
                });
            } else if !schedulers.iter().any(|u| u.name() == upstream) {
                errors.push(ConfigError {
                    location: at.clone(),
                    message: format!(
                        "scheduler '{}' names unknown upstream scheduler '{upstream}'",
                        s.name()
                    ),
                });
            }
        }
        for bn in s.builder_names() {
            if !builders.iter().any(|b| &b.name == bn) {
                errors.push(ConfigError {
                    location: at.clone(),
                    message: format!("scheduler '{}' names unknown builder '{bn}'", s.name()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::lua::{LuaGeneration, RawValue};

    /// The errors of a master.lua returning `{ SECTION = TEXT }`.
    fn errors_in(section: &str, text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let source = format!("return {{ {section} = {text} }}");
        std::fs::write(dir.path().join("master.lua"), source).unwrap();
        let (_lua, raw): (LuaGeneration, RawValue) = LuaGeneration::load(dir.path()).unwrap();
        match super::compile(&raw) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.message).collect(),
        }
    }

    fn errors_of(auth: &str) -> Vec<String> {
        errors_in("auth", auth)
    }

    fn www_errors_of(www: &str) -> Vec<String> {
        errors_in("www", www)
    }

    #[test]
    fn warning_suppressions_are_checked() {
        let step = |fields: &str| {
            errors_in(
                "builders",
                &format!(
                    r#"{{ require("moonbot").builder {{ name = "b", workernames = {{}}, steps = {{
                        require("moonbot").steps.compile {{ command = "make", {fields} }} }} }} }}"#
                ),
            )
        };
        assert_eq!(
            step(
                r#"suppress_warnings = { { file = "^vendor/", warning = "old", lines = { 1, 9 } } }"#
            ),
            Vec::<String>::new()
        );
        let errors = step(r#"suppress_warnings = { { warning = "(", fil = "x" } }"#);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("suppress_warnings[1]: 'warning' is not a regular expression")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("fil")), "{errors:?}");
        let errors = step(r#"suppress_warnings = { { file = "x", lines = { 9, 1 } } }"#);
        assert!(
            errors.iter().any(|e| e.contains("'warning' is required")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("'lines' is { start, end }")),
            "{errors:?}"
        );
        let errors = errors_in(
            "builders",
            r#"{ require("moonbot").builder { name = "b", workernames = {}, steps = {
                require("moonbot").steps.shell { command = "make", suppression_file = "s" } } } }"#,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("'suppression_file' needs a 'warning_pattern'")),
            "{errors:?}"
        );
    }

    #[test]
    fn change_hooks_are_checked() {
        assert!(
            www_errors_of(r#"{ change_hooks = { github = { secret = "s", strict = true } } }"#)
                .is_empty()
        );
        assert!(www_errors_of(r#"{ change_hooks = { github = {} } }"#).is_empty());
        let unknown = www_errors_of(r#"{ change_hooks = { gitlub = {} } }"#);
        assert!(
            unknown
                .iter()
                .any(|e| e.contains("unknown dialect 'gitlub' (known: github, gitlab, gitea, bitbucketcloud, bitbucketserver, base)")),
            "{unknown:?}"
        );
        let strict = www_errors_of(r#"{ change_hooks = { github = { strict = true } } }"#);
        assert!(
            strict
                .iter()
                .any(|e| e.contains("strict = true needs a secret")),
            "{strict:?}"
        );
        let both = www_errors_of(
            r#"{ change_hooks = { github = { secret = "s", secret_file = "f", token = "t", token_file = "g" } } }"#,
        );
        assert!(
            both.iter()
                .any(|e| e.contains("give 'secret' or 'secret_file', not both"))
                && both
                    .iter()
                    .any(|e| e.contains("give 'token' or 'token_file', not both")),
            "{both:?}"
        );
        assert!(
            www_errors_of(
                r#"{ change_hooks = { github = { secret_file = "f", strict = true } } }"#
            )
            .is_empty(),
            "a secret file counts for strict"
        );
        let field = www_errors_of(r#"{ change_hooks = { github = { secrets = "s" } } }"#);
        assert!(field.iter().any(|e| e.contains("secrets")), "{field:?}");
    }

    #[test]
    fn force_parameters_are_checked_when_compiled() {
        let errors_of = |properties: &str| {
            let dir = tempfile::tempdir().unwrap();
            let source = format!(
                r#"local mb = require "moonbot"
return {{
  workers = {{ mb.worker {{ name = "w" }} }},
  builders = {{ mb.builder {{ name = "b", workernames = {{ "w" }}, steps = {{}} }} }},
  schedulers = {{ mb.schedulers.force {{ name = "f", builders = {{ "b" }}, properties = {{ {properties} }} }} }},
}}"#
            );
            std::fs::write(dir.path().join("master.lua"), source).unwrap();
            let (_lua, raw): (LuaGeneration, RawValue) = LuaGeneration::load(dir.path()).unwrap();
            match super::compile(&raw) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.into_iter().map(|e| e.message).collect::<Vec<_>>(),
            }
        };
        assert_eq!(
            errors_of(
                r#"mb.params.int { name = "jobs", default = 3 }, mb.params.choice { name = "os", choices = { "a", "b" } }"#
            ),
            Vec::<String>::new()
        );
        let cases = [
            (
                r#"mb.params.int { name = "jobs", default = "x" }"#,
                "mb.params.int 'jobs': 'default' must be a whole number, not 'x'",
            ),
            (
                r#"mb.params.choice { name = "os", choices = { "a" }, default = "z" }"#,
                "'default' 'z' is not one of the choices (a)",
            ),
            (
                r#"mb.params.choice { name = "os" }"#,
                "mb.params.choice: 'choices' (a list of strings) is required",
            ),
            (
                r#"mb.params.string { name = "s", regex = "(" }"#,
                "mb.params.string: 'regex' does not compile",
            ),
            (
                r#"mb.params.fixed { name = "arch" }"#,
                "mb.params.fixed: 'default' (its value) is required",
            ),
            (
                r#"mb.params.string { name = "s", colour = 1 }"#,
                "mb.params.string: unknown field 'colour'",
            ),
            (
                r#"mb.params.string { name = "reason" }"#,
                "force: two fields are named 'reason'",
            ),
            (
                r#"mb.params.string { name = "a b" }"#,
                "name 'a b' must be letters",
            ),
            (r#"mb.worker { name = "w2" }"#, "unknown kind 'worker'"),
        ];
        for (properties, expected) in cases {
            let errors = errors_of(properties);
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{properties}: expected '{expected}' in {errors:?}"
            );
        }
    }

    #[test]
    fn collapse_requests_is_a_boolean_or_a_function() {
        use crate::config::CollapseRequests;
        assert!(errors_in("collapse_requests", "false").is_empty());
        assert!(errors_in("collapse_requests", "function(b, new, old) return true end").is_empty());
        let wrong = errors_in("collapse_requests", r#""yes""#);
        assert!(
            wrong.iter().any(|e| e
                .contains("'collapse_requests' must be a boolean or a function(builder, new, old), not a string")),
            "{wrong:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let source = r#"local mb = require "moonbot"
return {
  collapse_requests = false,
  workers = { mb.worker { name = "w" } },
  builders = {
    mb.builder { name = "own", workernames = { "w" }, steps = {}, collapse_requests = true },
    mb.builder { name = "inherits", workernames = { "w" }, steps = {} },
  },
}"#;
        std::fs::write(dir.path().join("master.lua"), source).unwrap();
        let (_lua, raw): (LuaGeneration, RawValue) = LuaGeneration::load(dir.path()).unwrap();
        let config = super::compile(&raw).unwrap();
        let rule = |name: &str| {
            config
                .collapse_requests_of(config.builder(name).unwrap())
                .clone()
        };
        assert_eq!(rule("own"), CollapseRequests::Compatible);
        assert_eq!(rule("inherits"), CollapseRequests::Off);
    }

    #[test]
    fn every_sample_config_compiles() {
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-configs");
        let mut compiled = 0;
        for entry in std::fs::read_dir(&samples).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.join("master.lua").exists() {
                continue;
            }
            let (_lua, raw) =
                LuaGeneration::load(&dir).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
            if let Err(errors) = super::compile(&raw) {
                panic!("{}: {errors:?}", dir.display());
            }
            compiled += 1;
        }
        assert!(compiled >= 3, "only {compiled} samples found");
    }

    #[test]
    fn change_schedulers_are_checked() {
        let scheduler = |fields: &str| {
            errors_in(
                "schedulers",
                &format!(
                    r#"{{ require("moonbot").schedulers.any_branch {{ name = "s", builders = {{}}, {fields} }} }}"#
                ),
            )
        };
        assert!(
            scheduler(
                r#"change_filter = { branch = { "main" }, project_re = "moon" },
                   tree_stable_timer = "5m", file_is_important = function() return true end,
                   codebases = { app = { repository = "r", branch = "main" } }, priority = 3"#
            )
            .is_empty()
        );
        let all = scheduler(
            r#"change_filter = { brnach = "main" }, tree_stable_timer = "soon",
               file_is_important = true, codebases = { app = { tag = "v1" } }, colapse = true"#,
        )
        .join("\n");
        let timed = errors_in(
            "schedulers",
            r#"{ require("moonbot").schedulers.periodic { name = "p", builders = {} },
                 require("moonbot").schedulers.nightly { name = "n", builders = {}, hour = 25 } }"#,
        )
        .join("\n");
        assert!(timed.contains("periodic: 'period'"), "{timed}");
        let dependent = errors_in(
            "schedulers",
            r#"{ require("moonbot").schedulers.dependent { name = "d", builders = {}, upstream = "nope" } }"#,
        )
        .join("\n");
        assert!(
            dependent.contains("scheduler 'd' names unknown upstream scheduler 'nope'"),
            "{dependent}"
        );
        assert!(
            timed.contains("'hour' must be a number from 0 to 23"),
            "{timed}"
        );
        for expected in [
            "change_filter: unknown field 'brnach'",
            "'tree_stable_timer'",
            "'file_is_important' must be a function of the change, not a boolean",
            "codebase 'app': unknown field 'tag'",
            "scheduler: unknown field 'colapse'",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }
    }

    #[test]
    fn auth_sections_are_checked() {
        let hash = crate::credentials::hash_password("pw");
        let good = format!(
            r#"{{ users = {{ {{ name = "ana", password_hash = "{hash}", roles = {{ "admins" }} }} }},
               rules = {{ force = {{ "admins" }} }} }}"#
        );
        assert!(errors_of(&good).is_empty(), "{:?}", errors_of(&good));
        let errors = errors_of(
            r#"{ users = { { name = "a b", password_hash = "hunter2" } },
                 tokens = { { name = "bot", token_hash = "abc" } },
                 rules = { deploy = { "admins" } } }"#,
        );
        let all = errors.join("\n");
        assert!(
            all.contains("not a hash from `moonbot hash-password`"),
            "{all}"
        );
        assert!(all.contains("may only hold letters"), "{all}");
        assert!(all.contains("not a hash from `moonbot api-token`"), "{all}");
        assert!(all.contains("unknown action 'deploy'"), "{all}");
        assert!(
            !all.contains("hunter2"),
            "an error quoted the password field: {all}"
        );
    }

    #[test]
    fn reporters_are_checked() {
        let reporters = |text: &str| {
            errors_in(
                "reporters",
                &format!("{{ (function() local mb = require('moonbot'); return {text} end)() }}"),
            )
        };
        assert_eq!(
            reporters(
                r#"mb.reporters.http_push { url = "http://x", token = "t",
                    generators = { mb.generators.build_status { mode = { "problem", "change" } } } }"#
            ),
            Vec::<String>::new()
        );
        let errors = reporters(r#"mb.reporters.http_push { url = "http://x", tokn = "t" }"#);
        assert!(errors.iter().any(|e| e.contains("tokn")), "{errors:?}");
        let errors = reporters(
            r#"mb.reporters.http_push { url = "http://x",
                generators = { mb.generators.build_status { mode = { "sometimes" } } } }"#,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("unknown mode 'sometimes'")),
            "{errors:?}"
        );
        let errors =
            reporters(r#"mb.reporters.http_push { url = "http://x", user = "u", token = "t" }"#);
        assert!(errors.iter().any(|e| e.contains("not a mix")), "{errors:?}");
        let errors = reporters(r#"mb.reporters.http_push { name = "r" }"#);
        assert!(errors.iter().any(|e| e.contains("url")), "{errors:?}");
        let errors = reporters(
            r#"mb.reporters.http_push { url = "http://x" }, mb.reporters.http_push { url = "http://x" }"#,
        );
        assert!(
            errors.iter().any(|e| e.contains("duplicate reporter")),
            "{errors:?}"
        );
        // The new generators; a status is about one build; a filter of
        // builds means nothing to a missing worker.
        assert_eq!(
            reporters(
                r#"mb.reporters.http_push { url = "http://x", generators = {
                    mb.generators.buildset { mode = { "failing" }, schedulers = { "s" } },
                    mb.generators.buildset_combined {},
                    mb.generators.worker_missing { workers = { "w1" } } } }"#
            ),
            Vec::<String>::new()
        );
        let errors = reporters(
            r#"mb.reporters.github_status { token = "t",
                generators = { mb.generators.buildset_combined {} } }"#,
        );
        assert!(
            errors.iter().any(|e| e
                .contains("github_status: its generators must be build_status or build_start_end")),
            "{errors:?}"
        );
        let errors = reporters(
            r#"mb.reporters.slack { webhook = "http://x",
                generators = { mb.generators.worker_missing { builders = { "b" } } } }"#,
        );
        assert!(errors.iter().any(|e| e.contains("builders")), "{errors:?}");
        let errors = reporters(
            r#"mb.reporters.slack { webhook = "http://x", template = "{{ build.number " }"#,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("'template' is not a valid template")),
            "{errors:?}"
        );
        let errors = reporters(
            r#"mb.reporters.slack { webhook = "http://x", template = "x",
                format_fn = function(b) return "y" end }"#,
        );
        assert!(errors.iter().any(|e| e.contains("not both")), "{errors:?}");
        let errors = reporters(r#"mb.reporters.http_push { url = "http://x", subject = "s" }"#);
        assert!(errors.iter().any(|e| e.contains("subject")), "{errors:?}");
        let errors = reporters(
            r#"mb.reporters.slack { webhook = "http://x",
                generators = { mb.generators.worker_missing { workers = "some" } } }"#,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("must be \"all\" or a list")),
            "{errors:?}"
        );
    }
}
