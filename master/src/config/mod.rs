//! Configuration: what master.lua means. [`load`] runs it (through
//! [`crate::lua`]), [`compile`] turns the result into a plain, validated
//! [`MasterConfig`], one module per section (`settings`, `auth`, `workers`,
//! `builders`, `schedulers`, `janitor`; step kinds compile in [`crate::steps`]), and
//! [`diff`] compares two configurations by name.
//!
//! A [`LoadedConfig`] pairs the compiled data with the Lua generation that
//! holds its functions. This module runs no Lua itself: only [`crate::lua`]
//! touches mlua.

pub mod artifacts;
pub mod auth;
pub mod builders;
pub mod change_filter;
pub mod change_sources;
pub mod compile;
pub mod diff;
pub mod force;
pub mod janitor;
pub mod locks;
pub mod places;
pub mod reporters;
pub mod schedulers;
pub mod secrets;
pub mod settings;
pub mod timing;
pub mod workers;

pub use crate::lua::{ConfigError, ConfigErrors, LuaFn, LuaGeneration};
pub use auth::{ACTIONS, AuthConfig, TokenConfig, UserConfig};
pub use builders::{BuilderConfig, CollapseRequests, StepConfig, StepFlags};
pub use change_filter::{ChangeFilter, Matcher};
pub use change_sources::{BranchSelection, ChangeSourceConfig, GitCredentials, GitPollerConfig};
pub use force::{CodebaseParam, ForceForm, ForceParam, ParamKind};
pub use janitor::JanitorConfig;
pub use reporters::ReporterConfig;
pub use schedulers::{
    ChangeSchedulerConfig, CodebaseDefaults, Grouping, SchedulerConfig, TimedSchedulerConfig,
};
pub use settings::{
    ChangeHookConfig, DbConfig, HOOK_DIALECTS, HookSettings, QuicConfig, ReconfigConfig, WwwConfig,
};
use std::path::Path;
use std::sync::Arc;
pub use timing::Timing;
pub use workers::{DEFAULT_MISSING_TIMEOUT_S, DEFAULT_RECONNECT_GRACE_S, WorkerConfig};

/// Where errors about the file as a whole (and its top-level sections) point.
const FILE: &str = crate::lua::CONFIG_FILE;

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
    /// Pollers (`change_sources = {…}`); webhooks are `www.change_hooks`.
    pub change_sources: Vec<ChangeSourceConfig>,
    /// Who is told about builds (`reporters = {…}`).
    pub reporters: Vec<ReporterConfig>,
    pub reconfig: ReconfigConfig,
    /// Users, API tokens and who may do what; `None` (no `auth` section) lets
    /// only clients on this machine (loopback) use control actions.
    pub auth: Option<AuthConfig>,
    /// How long history is kept; `None` (no `janitor` section) keeps it all.
    pub janitor: Option<JanitorConfig>,
    /// Where uploads are kept, and for how long.
    pub artifacts: artifacts::ArtifactsConfig,
    /// Every builder's `collapse_requests` unless it sets its own.
    pub collapse_requests: CollapseRequests,
    /// Properties every build gets (the lowest layer, source `Global`).
    pub properties: std::collections::BTreeMap<String, serde_json::Value>,
    /// Where secrets come from, asked in order.
    pub secrets: Vec<crate::secrets::SecretProvider>,
    /// Whether builders may run `master_shell` steps (commands on the master).
    pub allow_master_shell: bool,
    /// Every lock builders and steps name, by name.
    pub locks: std::collections::BTreeMap<String, locks::LockDef>,
    /// The order builders get free workers in (Buildbot's
    /// `prioritizeBuilders`): a function of the builders.
    pub prioritize_builders: Option<crate::lua::LuaFn>,
    /// Builds of a request that ended RETRY before it ends EXCEPTION.
    pub max_retries: u32,
}

impl MasterConfig {
    /// Whether (and how) `builder`'s pending requests collapse.
    pub fn collapse_requests_of<'a>(&'a self, builder: &'a BuilderConfig) -> &'a CollapseRequests {
        builder
            .collapse_requests
            .as_ref()
            .unwrap_or(&self.collapse_requests)
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerConfig> {
        self.workers.iter().find(|w| w.name == name)
    }

    pub fn builder(&self, name: &str) -> Option<&BuilderConfig> {
        self.builders.iter().find(|b| b.name == name)
    }

    pub fn scheduler(&self, name: &str) -> Option<&SchedulerConfig> {
        self.schedulers.iter().find(|s| s.name() == name)
    }

    pub fn change_source(&self, name: &str) -> Option<&ChangeSourceConfig> {
        self.change_sources.iter().find(|s| s.name() == name)
    }

    /// One line for `checkconfig` and the log.
    pub fn summary(&self) -> String {
        format!(
            "{} worker(s), {} builder(s), {} scheduler(s), {} change source(s), {} reporter(s)",
            self.workers.len(),
            self.builders.len(),
            self.schedulers.len(),
            self.change_sources.len(),
            self.reporters.len()
        )
    }
}

/// A compiled configuration together with the Lua state its functions live in.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Arc<MasterConfig>,
    pub lua: Arc<LuaGeneration>,
}

/// Load and compile `master_dir/master.lua`.
pub fn load(master_dir: &Path) -> Result<LoadedConfig, ConfigErrors> {
    load_with(master_dir, false)
}

/// [`load`], in the sandbox of `checkconfig --sandbox` when `sandbox`.
pub fn load_with(master_dir: &Path, sandbox: bool) -> Result<LoadedConfig, ConfigErrors> {
    let limits = crate::lua::LuaLimits {
        sandbox,
        ..crate::lua::LuaLimits::from_env()
    };
    let (lua, raw) = LuaGeneration::load_with(master_dir, limits).map_err(ConfigErrors)?;
    let source =
        std::fs::read_to_string(master_dir.join(crate::lua::CONFIG_FILE)).unwrap_or_default();
    let mut config = compile::compile(&raw).map_err(|mut errors| {
        places::place_on_lines(&mut errors, &source);
        ConfigErrors(errors)
    })?;
    let mut errors = settings::read_hook_files(&mut config.www, master_dir);
    errors.extend(
        crate::secrets::Secrets::new(&config.secrets, master_dir)
            .check()
            .into_iter()
            .map(|e| ConfigError::whole_file(format!("secrets: {e}"))),
    );
    if !errors.is_empty() {
        places::place_on_lines(&mut errors, &source);
        return Err(ConfigErrors(errors));
    }
    Ok(LoadedConfig {
        config: Arc::new(config),
        lua: Arc::new(lua),
    })
}
