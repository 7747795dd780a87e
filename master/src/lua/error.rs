//! What is wrong with a configuration, said at the place a user must edit
//! (`master.lua:42: …`).

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
            location: super::engine::CONFIG_FILE.to_string(),
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
