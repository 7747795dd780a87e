//! Turning the table master.lua returned into a [`MasterConfig`].
//!
//! The compiler reads every object, checks every field, then checks the references
//! between objects, and reports *all* errors it found, each at the `file:line` of
//! the constructor call that made the object. It runs no Lua.

use super::ConfigError;
use super::lua::{RawKey, RawValue};
use super::model::*;
use moonbot_worker::protocol::{CommandLine, DEFAULT_PORT};
use std::collections::{BTreeMap, BTreeSet};

/// Compile the raw configuration, or return every error found.
pub fn compile(raw: &RawValue) -> Result<MasterConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let config = compile_top(raw, &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

/// Reads the fields of one tagged table and remembers which ones were used.
struct Fields<'a> {
    what: String,
    at: String,
    entries: &'a [(RawKey, RawValue)],
    used: BTreeSet<&'a str>,
    errors: Vec<ConfigError>,
}

impl<'a> Fields<'a> {
    fn new(what: impl Into<String>, at: String, entries: &'a [(RawKey, RawValue)]) -> Self {
        let mut used = BTreeSet::new();
        used.insert("_kind");
        used.insert("_where");
        Fields {
            what: what.into(),
            at,
            entries,
            used,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, message: String) {
        self.errors.push(ConfigError {
            location: self.at.clone(),
            message,
        });
    }

    fn get(&mut self, key: &'a str) -> Option<&'a RawValue> {
        self.used.insert(key);
        self.entries.iter().find_map(|(k, v)| match k {
            RawKey::Str(s) if s == key && *v != RawValue::Nil => Some(v),
            _ => None,
        })
    }

    fn string(&mut self, key: &'a str) -> Option<String> {
        match self.get(key)? {
            RawValue::Str(s) => Some(s.clone()),
            other => {
                let msg = format!(
                    "{}: '{key}' must be a string, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                None
            }
        }
    }

    fn required_string(&mut self, key: &'a str) -> Option<String> {
        let present = self.get(key).is_some();
        if !present {
            let msg = format!("{}: '{key}' is required", self.what);
            self.error(msg);
            return None;
        }
        self.string(key)
    }

    fn boolean(&mut self, key: &'a str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(RawValue::Bool(b)) => *b,
            Some(other) => {
                let msg = format!(
                    "{}: '{key}' must be true or false, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                default
            }
        }
    }

    fn integer(&mut self, key: &'a str, min: i64, max: i64) -> Option<i64> {
        let value = match self.get(key)? {
            RawValue::Int(i) => *i,
            RawValue::Num(n) if n.fract() == 0.0 => *n as i64,
            other => {
                let msg = format!(
                    "{}: '{key}' must be a whole number, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                return None;
            }
        };
        if value < min || value > max {
            let msg = format!(
                "{}: '{key}' must be between {min} and {max}, not {value}",
                self.what
            );
            self.error(msg);
            return None;
        }
        Some(value)
    }

    fn list(&mut self, key: &'a str) -> Option<Vec<&'a RawValue>> {
        match self.get(key)? {
            RawValue::Table(entries) => {
                let mut items = Vec::new();
                for (i, (k, v)) in entries.iter().enumerate() {
                    if *k != RawKey::Int(i as i64 + 1) {
                        let msg =
                            format!("{}: '{key}' must be a list, but has the key {k}", self.what);
                        self.error(msg);
                        return None;
                    }
                    items.push(v);
                }
                Some(items)
            }
            other => {
                let msg = format!(
                    "{}: '{key}' must be a list, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
                None
            }
        }
    }

    fn string_list(&mut self, key: &'a str) -> Vec<String> {
        let Some(items) = self.list(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                RawValue::Str(s) => out.push(s.clone()),
                other => {
                    let msg = format!(
                        "{}: '{key}' must list strings, found a {}",
                        self.what,
                        other.type_name()
                    );
                    self.error(msg);
                }
            }
        }
        out
    }

    fn properties(&mut self, key: &'a str) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        match self.get(key) {
            None => {}
            Some(RawValue::Table(entries)) => {
                for (k, v) in entries {
                    let RawKey::Str(name) = k else {
                        let msg = format!("{}: '{key}' must have string keys", self.what);
                        self.error(msg);
                        continue;
                    };
                    match v.to_json() {
                        Ok(json) => {
                            out.insert(name.clone(), json);
                        }
                        Err(e) => {
                            let msg = format!("{}: property '{name}': {e}", self.what);
                            self.error(msg);
                        }
                    }
                }
            }
            Some(other) => {
                let msg = format!(
                    "{}: '{key}' must be a table, not a {}",
                    self.what,
                    other.type_name()
                );
                self.error(msg);
            }
        }
        out
    }

    /// Report keys nobody asked for (usually typos).
    fn finish(mut self, out: &mut Vec<ConfigError>) {
        for (k, _) in self.entries {
            let name = k.to_string();
            if !self.used.contains(name.as_str()) {
                self.errors.push(ConfigError {
                    location: self.at.clone(),
                    message: format!("{}: unknown field '{name}'", self.what),
                });
            }
        }
        out.append(&mut self.errors);
    }
}

/// The entries of a Lua table.
type Entries = [(RawKey, RawValue)];

/// A table made by one of the `moonbot` constructors: its kind, position, fields.
fn tagged<'a>(
    value: &'a RawValue,
    expected: &str,
    context: &str,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<(&'a str, String, &'a Entries)> {
    let RawValue::Table(entries) = value else {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!(
                "{context}: expected {expected}, got a {}",
                value.type_name()
            ),
        });
        return None;
    };
    let (Some(RawValue::Str(kind)), Some(RawValue::Str(place))) =
        (value.get("_kind"), value.get("_where"))
    else {
        errors.push(ConfigError {
            location: at.to_string(),
            message: format!("{context}: expected {expected}, got a plain table"),
        });
        return None;
    };
    Some((kind.as_str(), place.clone(), entries))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

const FILE: &str = super::lua::CONFIG_FILE;

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
    let workers_raw = top.list("workers").unwrap_or_default();
    let builders_raw = top.list("builders").unwrap_or_default();
    let schedulers_raw = top.list("schedulers").unwrap_or_default();
    top.finish(errors);

    let www = compile_www(www_raw, errors);
    let quic = compile_quic(protocols_raw, errors);
    let db = compile_db(db_raw, errors);
    let reconfig = compile_reconfig(reconfig_raw, errors);
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

    check_references(&workers, &builders, &schedulers, errors);
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
        reconfig: reconfig?,
        auth: auth?,
    })
}

fn plain_section<'a>(
    raw: Option<&'a RawValue>,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<&'a [(RawKey, RawValue)]> {
    match raw {
        None => Some(&[]),
        Some(RawValue::Table(entries)) => Some(entries),
        Some(other) => {
            errors.push(ConfigError::whole_file(format!(
                "'{name}' must be a table, not a {}",
                other.type_name()
            )));
            None
        }
    }
}

fn compile_www(raw: Option<&RawValue>, errors: &mut Vec<ConfigError>) -> Option<WwwConfig> {
    let entries = plain_section(raw, "www", errors)?;
    let mut f = Fields::new("www", FILE.to_string(), entries);
    let port = f.integer("port", 0, 65535).unwrap_or(8010) as u16;
    let bind = f.string("bind").unwrap_or_else(|| "127.0.0.1".into());
    f.finish(errors);
    Some(WwwConfig { bind, port })
}

fn compile_quic(raw: Option<&RawValue>, errors: &mut Vec<ConfigError>) -> Option<QuicConfig> {
    let entries = plain_section(raw, "protocols", errors)?;
    let mut f = Fields::new("protocols", FILE.to_string(), entries);
    let quic_raw = f.get("quic");
    f.finish(errors);
    let entries = plain_section(quic_raw, "protocols.quic", errors)?;
    let mut f = Fields::new("protocols.quic", FILE.to_string(), entries);
    let port = f.integer("port", 0, 65535).unwrap_or(DEFAULT_PORT as i64) as u16;
    let bind = f.string("bind").unwrap_or_else(|| "0.0.0.0".into());
    let idle_timeout_s = f.integer("idle_timeout", 1, 86400).unwrap_or(30) as u64;
    f.finish(errors);
    Some(QuicConfig {
        bind,
        port,
        idle_timeout_s,
    })
}

fn compile_db(raw: Option<&RawValue>, errors: &mut Vec<ConfigError>) -> Option<DbConfig> {
    let entries = plain_section(raw, "db", errors)?;
    let mut f = Fields::new("db", FILE.to_string(), entries);
    let url = f
        .string("url")
        .unwrap_or_else(|| "sqlite:state.sqlite".into());
    f.finish(errors);
    Some(DbConfig { url })
}

fn compile_reconfig(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<ReconfigConfig> {
    let entries = plain_section(raw, "reconfig", errors)?;
    let mut f = Fields::new("reconfig", FILE.to_string(), entries);
    let watch = f.boolean("watch", true);
    let debounce_ms = f.integer("debounce_ms", 0, 60_000).unwrap_or(300) as u64;
    f.finish(errors);
    Some(ReconfigConfig { watch, debounce_ms })
}

fn compile_auth(raw: Option<&RawValue>, errors: &mut Vec<ConfigError>) -> Option<AuthConfig> {
    let entries = plain_section(raw, "auth", errors)?;
    let mut f = Fields::new("auth", FILE.to_string(), entries);
    let users_raw = f.list("users").unwrap_or_default();
    let tokens_raw = f.list("tokens").unwrap_or_default();
    let rules_raw = f.get("rules");
    f.finish(errors);

    let mut users: Vec<UserConfig> = Vec::new();
    for (i, raw) in users_raw.iter().enumerate() {
        let entries = plain_section(Some(raw), &format!("auth.users[{}]", i + 1), errors)?;
        let mut f = Fields::new(format!("auth.users[{}]", i + 1), FILE.to_string(), entries);
        let name = f.required_string("name");
        let password_hash = f.required_string("password_hash");
        let roles = f.string_list("roles");
        if let Some(hash) = &password_hash
            && !crate::www::auth::is_password_hash(hash)
        {
            f.error(format!(
                "auth.users[{}]: 'password_hash' is not a hash from `moonbot hash-password`",
                i + 1
            ));
        }
        if let Some(name) = &name
            && !valid_name(name)
        {
            f.error(format!(
                "auth.users[{}]: user name '{name}' may only hold letters, digits, '-', '_' and '.'",
                i + 1
            ));
        }
        if let Some(name) = &name
            && users.iter().any(|u| &u.name == name)
        {
            f.error(format!("auth.users: user '{name}' is defined twice"));
        }
        f.finish(errors);
        if let (Some(name), Some(password_hash)) = (name, password_hash) {
            users.push(UserConfig {
                name,
                password_hash,
                roles,
            });
        }
    }

    let mut tokens = Vec::new();
    for (i, raw) in tokens_raw.iter().enumerate() {
        let entries = plain_section(Some(raw), &format!("auth.tokens[{}]", i + 1), errors)?;
        let mut f = Fields::new(format!("auth.tokens[{}]", i + 1), FILE.to_string(), entries);
        let name = f.required_string("name");
        let token_hash = f.required_string("token_hash");
        let roles = f.string_list("roles");
        if let Some(hash) = &token_hash
            && !crate::www::auth::is_token_hash(hash)
        {
            f.error(format!(
                "auth.tokens[{}]: 'token_hash' is not a hash from `moonbot api-token`",
                i + 1
            ));
        }
        f.finish(errors);
        if let (Some(name), Some(token_hash)) = (name, token_hash) {
            tokens.push(TokenConfig {
                name,
                token_hash,
                roles,
            });
        }
    }

    let mut rules = BTreeMap::new();
    let entries = plain_section(rules_raw, "auth.rules", errors)?;
    let mut f = Fields::new("auth.rules", FILE.to_string(), entries);
    for action in ACTIONS {
        if f.get(action).is_some() {
            rules.insert(action.to_string(), f.string_list(action));
        }
    }
    for (key, _) in entries {
        if let RawKey::Str(k) = key
            && !ACTIONS.contains(&k.as_str())
        {
            f.error(format!(
                "auth.rules: unknown action '{k}' (known: {})",
                ACTIONS.join(", ")
            ));
            f.used.insert(k.as_str());
        }
    }
    f.finish(errors);
    Some(AuthConfig {
        users,
        tokens,
        rules,
    })
}

fn compile_worker(raw: &RawValue, errors: &mut Vec<ConfigError>) -> Option<WorkerConfig> {
    let (kind, at, entries) = tagged(raw, "mb.worker{…}", "workers", FILE, errors)?;
    if kind != "worker" {
        errors.push(ConfigError {
            location: at,
            message: format!("workers: expected mb.worker{{…}}, got a {kind}"),
        });
        return None;
    }
    let mut f = Fields::new("worker", at.clone(), entries);
    let name = f.required_string("name");
    let max_builds = f.integer("max_builds", 1, 100_000).map(|n| n as u32);
    let missing_timeout_s = f
        .integer("missing_timeout", 2, 86_400)
        .map_or(DEFAULT_MISSING_TIMEOUT_S, |n| n as u64);
    let reconnect_grace_s = f
        .integer("reconnect_grace", 0, 86_400)
        .map_or(DEFAULT_RECONNECT_GRACE_S, |n| n as u64);
    let properties = f.properties("properties");
    let _notify = f.string_list("notify");
    if let Some(n) = &name
        && !valid_name(n)
    {
        f.error(format!(
            "worker: name '{n}' must be 1-64 letters, digits, '.', '_' or '-', not starting with '-' or '.'"
        ));
    }
    f.finish(errors);
    Some(WorkerConfig {
        name: name?,
        max_builds,
        missing_timeout_s,
        reconnect_grace_s,
        properties,
        defined_at: at,
    })
}

fn compile_builder(raw: &RawValue, errors: &mut Vec<ConfigError>) -> Option<BuilderConfig> {
    let (kind, at, entries) = tagged(raw, "mb.builder{…}", "builders", FILE, errors)?;
    if kind != "builder" {
        errors.push(ConfigError {
            location: at,
            message: format!("builders: expected mb.builder{{…}}, got a {kind}"),
        });
        return None;
    }
    let mut f = Fields::new("builder", at.clone(), entries);
    let name = f.required_string("name");
    if let Some(n) = &name
        && !valid_name(n)
    {
        f.error(format!(
            "builder: name '{n}' must be 1-64 letters, digits, '.', '_' or '-', not starting with '-' or '.'"
        ));
    }
    let what = format!("builder '{}'", name.as_deref().unwrap_or("?"));
    f.what = what.clone();
    let workernames = f.string_list("workernames");
    let builddir = f
        .string("builddir")
        .or_else(|| name.clone())
        .unwrap_or_default();
    let description = f.string("description");
    let tags = f.string_list("tags");
    let properties = f.properties("properties");
    let steps_raw = f.list("steps").unwrap_or_default();
    if workernames.is_empty() && f.get("workernames").is_none() {
        f.error(format!("{what}: 'workernames' is required"));
    }
    f.finish(errors);
    let mut steps = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for raw_step in steps_raw {
        if let Some(mut step) = compile_step(raw_step, &what, &at, errors) {
            // Buildbot's rule: a repeated step name gets a numeric suffix.
            let count = names.entry(step.name.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                step.name = format!("{}_{}", step.name, *count - 1);
            }
            steps.push(step);
        }
    }
    Some(BuilderConfig {
        name: name?,
        workernames,
        builddir,
        description,
        tags,
        properties,
        steps,
        defined_at: at,
    })
}

fn compile_step(
    raw: &RawValue,
    builder: &str,
    builder_at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<StepConfig> {
    let context = format!("{builder}: steps");
    let (kind, at, entries) = tagged(raw, "a step (mb.steps.*{…})", &context, builder_at, errors)?;
    let mut f = Fields::new(format!("{builder}: step"), at.clone(), entries);
    let explicit_name = f.string("name");
    let flags = StepFlags {
        halt_on_failure: f.boolean("halt_on_failure", false),
        flunk_on_failure: f.boolean("flunk_on_failure", true),
        warn_on_failure: f.boolean("warn_on_failure", false),
        flunk_on_warnings: f.boolean("flunk_on_warnings", false),
        warn_on_warnings: f.boolean("warn_on_warnings", false),
        always_run: f.boolean("always_run", false),
    };
    let description = f.string("description");
    let (step_kind, default_name) = match kind {
        "step.shell" => {
            let command = match f.get("command") {
                None => {
                    let msg = format!("{builder}: step: 'command' is required");
                    f.error(msg);
                    None
                }
                Some(RawValue::Str(s)) if s.trim().is_empty() => {
                    let msg = format!("{builder}: step: 'command' is empty");
                    f.error(msg);
                    None
                }
                Some(RawValue::Str(s)) => Some(Renderable::Value(CommandLine::Shell(s.clone()))),
                Some(RawValue::Function(func)) => Some(Renderable::Lua(func.clone())),
                Some(value @ RawValue::Table(_)) => match command_argv(value) {
                    Ok(argv) => Some(Renderable::Value(CommandLine::Argv(argv))),
                    Err(e) => {
                        let msg = format!("{builder}: step: 'command' {e}");
                        f.error(msg);
                        None
                    }
                },
                Some(other) => {
                    let msg = format!(
                        "{builder}: step: 'command' must be a string, a list of strings or a function, not a {}",
                        other.type_name()
                    );
                    f.error(msg);
                    None
                }
            };
            let workdir = f.string("workdir").unwrap_or_else(|| "build".into());
            let env = compile_env(&mut f, builder);
            let timeout_s = Some(f.integer("timeout", 1, 7 * 86400).unwrap_or(1200) as u64);
            let max_time_s = f.integer("max_time", 1, 30 * 86400).map(|n| n as u64);
            let sigterm_grace_s = f.integer("sigterm_time", 0, 3600).unwrap_or(5) as u64;
            let default_name = match &command {
                Some(Renderable::Value(CommandLine::Argv(argv))) => argv[0].clone(),
                Some(Renderable::Value(CommandLine::Shell(s))) => {
                    s.split_whitespace().next().unwrap_or("shell").to_string()
                }
                _ => "shell".to_string(),
            };
            (
                command.map(|command| {
                    StepKind::Shell(ShellStep {
                        command,
                        workdir,
                        env,
                        timeout_s,
                        max_time_s,
                        sigterm_grace_s,
                    })
                }),
                default_name,
            )
        }
        "step.mkdir" | "step.rmdir" => {
            let dir = f.required_string("dir");
            let step = dir.map(|dir| {
                if kind == "step.mkdir" {
                    StepKind::Mkdir { dir }
                } else {
                    StepKind::Rmdir { dir }
                }
            });
            (step, kind.trim_start_matches("step.").to_string())
        }
        other => {
            let msg = format!("{context}: expected a step (mb.steps.*{{…}}), got a {other}");
            f.error(msg);
            return None;
        }
    };
    f.finish(errors);
    Some(StepConfig {
        name: explicit_name.unwrap_or(default_name),
        kind: step_kind?,
        flags,
        description,
        defined_at: at,
    })
}

fn command_argv(value: &RawValue) -> Result<Vec<String>, String> {
    let RawValue::Table(entries) = value else {
        return Err("must be a list".into());
    };
    if entries.is_empty() {
        return Err("is an empty list".into());
    }
    let mut argv = Vec::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        if *k != RawKey::Int(i as i64 + 1) {
            return Err(format!("must be a list, but has the key {k}"));
        }
        match v {
            RawValue::Str(s) => argv.push(s.clone()),
            RawValue::Int(n) => argv.push(n.to_string()),
            other => return Err(format!("must list strings, found a {}", other.type_name())),
        }
    }
    Ok(argv)
}

fn compile_env(f: &mut Fields<'_>, builder: &str) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match f.get("env") {
        None => {}
        Some(RawValue::Table(entries)) => {
            for (k, v) in entries {
                let RawKey::Str(name) = k else {
                    f.error(format!("{builder}: step: 'env' must have string keys"));
                    continue;
                };
                match v {
                    RawValue::Str(s) => {
                        env.insert(name.clone(), Some(s.clone()));
                    }
                    RawValue::Int(n) => {
                        env.insert(name.clone(), Some(n.to_string()));
                    }
                    RawValue::Bool(false) => {
                        env.insert(name.clone(), None);
                    }
                    other => f.error(format!(
                        "{builder}: step: env '{name}' must be a string (or false to unset), not a {}",
                        other.type_name()
                    )),
                }
            }
        }
        Some(other) => f.error(format!(
            "{builder}: step: 'env' must be a table, not a {}",
            other.type_name()
        )),
    }
    env
}

fn compile_scheduler(raw: &RawValue, errors: &mut Vec<ConfigError>) -> Option<SchedulerConfig> {
    let (kind, at, entries) = tagged(
        raw,
        "a scheduler (mb.schedulers.*{…})",
        "schedulers",
        FILE,
        errors,
    )?;
    let mut f = Fields::new("scheduler", at.clone(), entries);
    let name = f.required_string("name");
    if let Some(n) = &name
        && !valid_name(n)
    {
        f.error(format!(
            "scheduler: name '{n}' must be 1-64 letters, digits, '.', '_' or '-'"
        ));
    }
    let builders = f.string_list("builders");
    let scheduler = match kind {
        "scheduler.force" => {
            let label = f.string("label");
            name.map(|name| SchedulerConfig::Force {
                label: label.unwrap_or_else(|| name.clone()),
                name,
                builders,
                defined_at: at,
            })
        }
        other => {
            f.error(format!(
                "schedulers: expected a scheduler (mb.schedulers.*{{…}}), got a {other}"
            ));
            None
        }
    };
    f.finish(errors);
    scheduler
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
        let at = match s {
            SchedulerConfig::Force { defined_at, .. } => defined_at,
        };
        if let Some(first) = seen.insert(s.name(), at.as_str()) {
            errors.push(ConfigError {
                location: at.clone(),
                message: format!(
                    "duplicate scheduler '{}' (first defined at {first})",
                    s.name()
                ),
            });
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
    use crate::config::lua::{LuaGeneration, RawValue};

    fn errors_of(auth: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let source = format!("return {{ auth = {auth} }}");
        std::fs::write(dir.path().join("master.lua"), source).unwrap();
        let (_lua, raw): (LuaGeneration, RawValue) = LuaGeneration::load(dir.path()).unwrap();
        match super::compile(&raw) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.message).collect(),
        }
    }

    #[test]
    fn auth_sections_are_checked() {
        let hash = crate::www::auth::hash_password("pw");
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
}
