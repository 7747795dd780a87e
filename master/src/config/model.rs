//! The compiled configuration: plain, validated, comparable data.
//!
//! Everything the running master needs from master.lua ends up here. Values known
//! only at build time stay Lua functions, held as [`LuaFn`] handles into the config
//! generation that defined them (see [`super::lua`]). Structs are `Clone + PartialEq`
//! so a reconfig can diff two configurations by name.

use moonbot_worker::protocol::CommandLine;
use std::collections::BTreeMap;

/// The whole master configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterConfig {
    pub title: String,
    pub title_url: Option<String>,
    /// Public URL of the web UI, used in links; derived from `www` when unset.
    pub buildbot_url: Option<String>,
    pub www: WwwConfig,
    pub quic: QuicConfig,
    pub db: DbConfig,
    pub workers: Vec<WorkerConfig>,
    pub builders: Vec<BuilderConfig>,
    pub schedulers: Vec<SchedulerConfig>,
    pub reconfig: ReconfigConfig,
    /// Users, API tokens and who may do what; `None` (no `auth` section) lets
    /// only clients on this machine (loopback) use control actions.
    pub auth: Option<AuthConfig>,
}

impl MasterConfig {
    pub fn worker(&self, name: &str) -> Option<&WorkerConfig> {
        self.workers.iter().find(|w| w.name == name)
    }

    pub fn builder(&self, name: &str) -> Option<&BuilderConfig> {
        self.builders.iter().find(|b| b.name == name)
    }

    pub fn scheduler(&self, name: &str) -> Option<&SchedulerConfig> {
        self.schedulers.iter().find(|s| s.name() == name)
    }

    /// One line for `checkconfig` and the log.
    pub fn summary(&self) -> String {
        format!(
            "{} worker(s), {} builder(s), {} scheduler(s)",
            self.workers.len(),
            self.builders.len(),
            self.schedulers.len()
        )
    }
}

/// The HTTP server (REST API and pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WwwConfig {
    pub bind: String,
    /// 0 picks a free port (the chosen one is written to `moonbot.ports`).
    pub port: u16,
}

/// The QUIC listener workers dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    pub bind: String,
    pub port: u16,
    /// A worker silent for this long is considered gone.
    pub idle_timeout_s: u64,
}

/// How the running master follows edits of master.lua.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconfigConfig {
    /// Reload when master.lua or a file it requires is saved.
    pub watch: bool,
    /// Quiet time after the last file event before reloading, so an editor's
    /// save (write, rename, chmod …) reloads once.
    pub debounce_ms: u64,
}

/// `auth = { users = {…}, tokens = {…}, rules = {…} }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub users: Vec<UserConfig>,
    pub tokens: Vec<TokenConfig>,
    /// Action → roles allowed to do it. An action without a rule is allowed to
    /// every authenticated user; `"*"` in a list means any authenticated user.
    pub rules: BTreeMap<String, Vec<String>>,
}

/// The control actions rules can name.
pub const ACTIONS: &[&str] = &["force", "stop", "rebuild", "cancel", "reload", "pause"];

/// A person who logs in with a password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    /// From `moonbot hash-password` (PBKDF2-HMAC-SHA256, salted).
    pub password_hash: String,
    pub roles: Vec<String>,
}

/// A script's bearer token (`moonbot api-token` makes one and its hash).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Who the token acts as, in logs and as the owner of what it forces.
    pub name: String,
    /// SHA-256 of the token; the token itself is never in master.lua.
    pub token_hash: String,
    pub roles: Vec<String>,
}

// Hand-written so a `{:?}` of the configuration never prints a hash.
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub url: String,
}

/// A worker that may connect.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub name: String,
    /// Builds this worker may run at once; `None` is unlimited.
    pub max_builds: Option<u32>,
    /// Seconds without a keep-alive after which the worker counts as gone
    /// (`missing_timeout`, default [`DEFAULT_MISSING_TIMEOUT_S`]).
    pub missing_timeout_s: u64,
    /// Seconds a running build waits for its worker to reconnect and re-attach
    /// the running command before it ends RETRY (`reconnect_grace`, default
    /// [`DEFAULT_RECONNECT_GRACE_S`]; 0: it ends RETRY at once).
    pub reconnect_grace_s: u64,
    pub properties: BTreeMap<String, serde_json::Value>,
    pub defined_at: String,
}

/// Default `missing_timeout` of a worker, in seconds.
pub const DEFAULT_MISSING_TIMEOUT_S: u64 = 30;
/// Default `reconnect_grace` of a worker, in seconds.
pub const DEFAULT_RECONNECT_GRACE_S: u64 = 60;

/// A builder: steps, and the workers that may run them.
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderConfig {
    pub name: String,
    pub workernames: Vec<String>,
    /// Directory for this builder under the worker's `builds/`.
    pub builddir: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub properties: BTreeMap<String, serde_json::Value>,
    pub steps: Vec<StepConfig>,
    pub defined_at: String,
}

/// One step of a builder.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Unique within the builder.
    pub name: String,
    pub kind: StepKind,
    pub flags: StepFlags,
    pub description: Option<String>,
    pub defined_at: String,
}

/// How a step's result affects the build (Buildbot's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFlags {
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub flunk_on_warnings: bool,
    pub warn_on_warnings: bool,
    pub always_run: bool,
}

impl Default for StepFlags {
    fn default() -> Self {
        StepFlags {
            halt_on_failure: false,
            flunk_on_failure: true,
            warn_on_failure: false,
            flunk_on_warnings: false,
            warn_on_warnings: false,
            always_run: false,
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Shell(ShellStep),
    Mkdir { dir: String },
    Rmdir { dir: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShellStep {
    pub command: Renderable<CommandLine>,
    /// Relative to the builder's directory.
    pub workdir: String,
    pub env: BTreeMap<String, Option<String>>,
    pub timeout_s: Option<u64>,
    pub max_time_s: Option<u64>,
    pub sigterm_grace_s: u64,
}

/// A value given literally in master.lua, or computed by a Lua function at build time.
#[derive(Debug, Clone, PartialEq)]
pub enum Renderable<T> {
    Value(T),
    Lua(LuaFn),
}

/// A handle to a Lua function of one config generation.
///
/// Two handles are equal when their definitions are (source text, plus the
/// data the `moonbot` module's closures capture, as `interpolate` templates):
/// the index and position differ between generations even for an untouched
/// function. Other values a function captures from enclosing scopes are not
/// compared; that only affects the reported diff, since new builds always use
/// the newest generation's functions (see [`super::diff`]).
#[derive(Debug, Clone)]
pub struct LuaFn {
    /// Index into the generation's function table.
    pub index: usize,
    /// Where the function was defined (`master.lua:12`).
    pub defined_at: String,
    /// Hash of the function's definition (see above).
    pub code_hash: u64,
}

impl PartialEq for LuaFn {
    fn eq(&self, other: &Self) -> bool {
        self.code_hash == other.code_hash
    }
}

/// A scheduler: turns requests or events into build requests.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    /// Builds on request (API, web form).
    Force {
        name: String,
        builders: Vec<String>,
        label: String,
        defined_at: String,
    },
}

impl SchedulerConfig {
    pub fn name(&self) -> &str {
        match self {
            SchedulerConfig::Force { name, .. } => name,
        }
    }

    pub fn builder_names(&self) -> &[String] {
        match self {
            SchedulerConfig::Force { builders, .. } => builders,
        }
    }
}
