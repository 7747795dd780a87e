//! Configuration: running master.lua ([`lua`]), compiling what it returns into a
//! plain, validated [`MasterConfig`] ([`compile`]), and the errors both report.
//!
//! Only this module touches mlua. A [`LoadedConfig`] pairs the compiled data with
//! the Lua generation that holds its functions.

pub mod compile;
pub mod diff;
pub mod lua;
pub mod model;

pub use lua::LuaGeneration;
pub use model::*;
use std::path::Path;
use std::sync::Arc;

/// One problem in the configuration, at the place a user must edit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigError {
    /// `master.lua:42`, or `master.lua` for the file as a whole.
    pub location: String,
    pub message: String,
}

impl ConfigError {
    pub fn whole_file(message: String) -> Self {
        ConfigError {
            location: lua::CONFIG_FILE.to_string(),
            message,
        }
    }

    /// Split a Lua error message (`master.lua:3: unexpected symbol`) into place and text.
    pub fn from_lua_message(text: &str) -> Self {
        let mut parts = text.splitn(3, ':');
        if let (Some(file), Some(line), Some(rest)) = (parts.next(), parts.next(), parts.next())
            && !file.is_empty()
            && !line.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
        {
            return ConfigError {
                location: format!("{file}:{line}"),
                message: rest.trim().to_string(),
            };
        }
        ConfigError::whole_file(text.to_string())
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every error of a failed load, one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// A compiled configuration together with the Lua state its functions live in.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Arc<MasterConfig>,
    pub lua: Arc<LuaGeneration>,
}

/// Load and compile `master_dir/master.lua`.
pub fn load(master_dir: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let (lua, raw) = LuaGeneration::load(master_dir).map_err(ConfigErrors)?;
    let config = compile::compile(&raw).map_err(ConfigErrors)?;
    Ok(LoadedConfig {
        config: Arc::new(config),
        lua: Arc::new(lua),
    })
}
