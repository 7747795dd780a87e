//! `auth = { users = {…}, tokens = {…}, rules = {…} }`: who may log in, which
//! scripts hold API tokens, and which roles may do which control action.
//! Hashes are checked for their shape only; master.lua never holds a secret.

use super::FILE;
use super::settings::plain_section;
use crate::lua::fields::valid_name;
use crate::lua::{ConfigError, Fields, RawKey, RawValue};
use std::collections::BTreeMap;

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
pub const ACTIONS: &[&str] = &[
    "force",
    "stop",
    "rebuild",
    "cancel",
    "set_priority",
    "reload",
    "pause",
    "stop_worker",
    "enable_scheduler",
    "sendchange",
];

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

pub(super) fn compile_auth(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<AuthConfig> {
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
            && !crate::credentials::is_password_hash(hash)
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
            && !crate::credentials::is_token_hash(hash)
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
