//! The master's own settings: the web server (`www`), the QUIC listener
//! (`protocols.quic`), the database (`db`) and live reloading (`reconfig`).
//! A running master cannot change `www`, `protocols` or `db` (see
//! [`super::diff::fixed_setting_errors`]).

use super::FILE;
use crate::lua::{ConfigError, Fields, RawKey, RawValue};
use moonbot_worker::protocol::DEFAULT_PORT;
use std::collections::BTreeMap;

/// The HTTP server (REST API and pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WwwConfig {
    pub bind: String,
    /// 0 picks a free port (the chosen one is written to `moonbot.ports`).
    pub port: u16,
    /// Host names the master answers to besides loopback ones and `bind`
    /// (`www.hosts`); see [`WwwConfig::answers_to`].
    pub hosts: Vec<String>,
    /// Most web connections open at once, `/ws` sessions included
    /// (`www.max_connections`; fewer when the open-files limit is lower).
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers, counted from
    /// its opening or its last answer (`www.idle_timeout`).
    pub idle_timeout_s: u64,
    /// The forge webhooks that answer at `/change_hook/DIALECT`
    /// (`www.change_hooks`, Buildbot's `change_hook_dialects`); only these do.
    /// They may change while the master runs.
    pub change_hooks: BTreeMap<String, ChangeHookConfig>,
}

/// Settings every hook dialect takes from `www.change_hooks.NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSettings {
    /// The changes' codebase (default: empty).
    pub codebase: String,
    /// The changes' project (default: the forge's repository name).
    pub project: Option<String>,
}

/// Dialects of `www.change_hooks` moonbot reads.
pub const HOOK_DIALECTS: &[&str] = &[
    "github",
    "gitlab",
    "gitea",
    "bitbucketcloud",
    "bitbucketserver",
    "base",
];

/// One forge webhook's settings.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChangeHookConfig {
    /// The shared secret: GitHub signs each delivery with it, GitLab sends it
    /// as `X-Gitlab-Token`; when set, a delivery without it (or with another)
    /// is refused (403). Never shown.
    pub secret: Option<String>,
    pub settings: HookSettings,
    /// GitHub and Gitea: an API token (Buildbot's `token`), with which a
    /// pull request's changed files are fetched. Never shown.
    pub api_token: Option<String>,
    /// The API's base: GitHub's `github_api_endpoint` (GitHub Enterprise:
    /// `https://HOST/api/v3`), Gitea's `api_url` (empty: worked out from
    /// the repository's web address, `https://HOST/api/v1`).
    pub api_url: String,
    /// `secret_file`, `token_file`: files (relative to the master
    /// directory) the secret and the token are read from at each load, so
    /// they need not be written in master.lua ([`read_hook_files`]).
    pub secret_file: Option<String>,
    pub token_file: Option<String>,
}

/// GitHub's API, unless `github_api_endpoint` says otherwise.
pub const GITHUB_API: &str = "https://api.github.com";

impl std::fmt::Debug for ChangeHookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeHookConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("settings", &self.settings)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("api_url", &self.api_url)
            .field("secret_file", &self.secret_file)
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// `www.max_connections` unless set: far more than people and scripts need,
/// and a small share of a typical 65,536 open-files limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// `www.idle_timeout` unless set: longer than a browser keeps an unused
/// connection open (Chromium: 5 min is its socket pool's idle limit, but
/// it sends each request's headers at once), short enough that idle sockets
/// do not pile up.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 30;

impl WwwConfig {
    /// What the web port is bound and limited by: a change to any of it
    /// needs a restart (the hooks do not).
    pub fn listener(&self) -> (&str, u16, &[String], usize, u64) {
        (
            &self.bind,
            self.port,
            &self.hosts,
            self.max_connections,
            self.idle_timeout_s,
        )
    }

    /// Whether a request's `Host` (name or address, port ignored) is one this
    /// master serves: a loopback name or address, the bind address, or one of
    /// `hosts`. A master bound to a non-loopback address with no `hosts`
    /// cannot know its names and answers to any. Refusing the others is what
    /// stops DNS rebinding: a foreign page whose name was re-pointed at
    /// 127.0.0.1 still sends its own name.
    pub fn answers_to(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<std::net::IpAddr>()
            && (ip.is_loopback() || self.bind.parse() == Ok(ip))
        {
            return true;
        }
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
            return true;
        }
        let bound_to_loopback = self
            .bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || self.bind == "localhost";
        !bound_to_loopback && self.hosts.is_empty()
    }
}

/// The name or address of a `Host` value, without its port or IPv6 brackets.
pub fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub url: String,
}

/// A plain table section (or an absent one, read as empty).
pub(super) fn plain_section<'a>(
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

pub(super) fn compile_www(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<WwwConfig> {
    let entries = plain_section(raw, "www", errors)?;
    let mut f = Fields::new("www", FILE.to_string(), entries);
    let port = f.integer("port", 0, 65535).unwrap_or(8010) as u16;
    let bind = f.string("bind").unwrap_or_else(|| "127.0.0.1".into());
    let hosts = f.string_list("hosts");
    let max_connections = f
        .integer("max_connections", 16, 1_000_000)
        .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize);
    let idle_timeout_s = f
        .duration_s("idle_timeout")
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_S);
    let change_hooks = compile_change_hooks(f.get("change_hooks"), errors);
    f.finish(errors);
    Some(WwwConfig {
        bind,
        port,
        hosts,
        max_connections,
        idle_timeout_s,
        change_hooks,
    })
}

/// `www.change_hooks = { github = { secret = "…", strict = true, codebase, project } }`.
fn compile_change_hooks(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, ChangeHookConfig> {
    let mut hooks = BTreeMap::new();
    let Some(entries) = plain_section(raw, "www.change_hooks", errors) else {
        return hooks;
    };
    for (key, value) in entries {
        let dialect = match key {
            RawKey::Str(s) => s.as_str(),
            RawKey::Int(_) => "(a number)",
        };
        if !HOOK_DIALECTS.contains(&dialect) {
            errors.push(ConfigError::whole_file(format!(
                "www.change_hooks: unknown dialect '{dialect}' (known: {})",
                HOOK_DIALECTS.join(", ")
            )));
            continue;
        }
        let what = format!("www.change_hooks.{dialect}");
        let Some(fields) = plain_section(Some(value), &what, errors) else {
            continue;
        };
        let mut f = Fields::new(what.clone(), FILE.to_string(), fields);
        let secret = f.string("secret").filter(|s| !s.is_empty());
        let secret_file = f.string("secret_file");
        let strict = f.boolean("strict", false);
        let codebase = f.string("codebase").unwrap_or_default();
        let project = f.string("project");
        // Only the forges' hooks ask their API (the base hook has none);
        // there these are unknown fields.
        let (api_token, token_file, api_url) = match dialect {
            "github" => (
                f.string("token").filter(|s| !s.is_empty()),
                f.string("token_file"),
                f.string("github_api_endpoint")
                    .unwrap_or_else(|| GITHUB_API.to_string()),
            ),
            "gitea" | "gitlab" | "bitbucketcloud" | "bitbucketserver" => (
                f.string("token").filter(|s| !s.is_empty()),
                f.string("token_file"),
                f.string("api_url").unwrap_or_default(),
            ),
            _ => (None, None, String::new()),
        };
        if secret.is_some() && secret_file.is_some() {
            f.error(format!("{what}: give 'secret' or 'secret_file', not both"));
        }
        if api_token.is_some() && token_file.is_some() {
            f.error(format!("{what}: give 'token' or 'token_file', not both"));
        }
        if strict && secret.is_none() && secret_file.is_none() {
            f.error(format!(
                "{what}: strict = true needs a secret (the one set in the forge's webhook)"
            ));
        }
        f.finish(errors);
        hooks.insert(
            dialect.to_string(),
            ChangeHookConfig {
                secret,
                settings: HookSettings { codebase, project },
                api_token,
                api_url,
                secret_file,
                token_file,
            },
        );
    }
    hooks
}

/// Read the hooks' `secret_file` and `token_file` (relative to
/// `master_dir`) into their secret and token. A file that is missing,
/// empty, or readable by others (a shared secret everyone on the machine
/// could read signs nothing) is an error naming it; one trailing newline is
/// not part of the value.
pub(super) fn read_hook_files(
    www: &mut WwwConfig,
    master_dir: &std::path::Path,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (dialect, hook) in &mut www.change_hooks {
        for (field, path, value) in [
            ("secret_file", &hook.secret_file, &mut hook.secret),
            ("token_file", &hook.token_file, &mut hook.api_token),
        ] {
            let Some(path) = path else { continue };
            match read_secret_file(&master_dir.join(path)) {
                Ok(text) => *value = Some(text),
                Err(why) => errors.push(ConfigError::whole_file(format!(
                    "www.change_hooks.{dialect}: {field} '{path}' {why}"
                ))),
            }
        }
    }
    errors
}

fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "is readable by every user of this machine (mode {:o}): chmod o-r it",
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err("is empty".into());
    }
    Ok(text.to_string())
}

pub(super) fn compile_quic(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<QuicConfig> {
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

pub(super) fn compile_db(
    raw: Option<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Option<DbConfig> {
    let entries = plain_section(raw, "db", errors)?;
    let mut f = Fields::new("db", FILE.to_string(), entries);
    let url = f
        .string("url")
        .unwrap_or_else(|| "sqlite:state.sqlite".into());
    f.finish(errors);
    Some(DbConfig { url })
}

pub(super) fn compile_reconfig(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn www(bind: &str, hosts: &[&str]) -> WwwConfig {
        WwwConfig {
            bind: bind.into(),
            port: 8010,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            change_hooks: BTreeMap::new(),
        }
    }

    #[test]
    fn a_master_answers_only_to_its_own_names() {
        let local = www("127.0.0.1", &[]);
        for ok in [
            "127.0.0.1:8010",
            "localhost:8010",
            "LOCALHOST",
            "[::1]:8010",
            "127.0.0.2",
        ] {
            assert!(local.answers_to(ok), "{ok}");
        }
        for rebound in ["evil.example", "evil.example:8010", "10.0.0.5:8010", ""] {
            assert!(!local.answers_to(rebound), "{rebound}");
        }
        let named = www("0.0.0.0", &["ci.example.org"]);
        assert!(named.answers_to("ci.example.org:8010"));
        assert!(named.answers_to("CI.example.org"));
        assert!(!named.answers_to("evil.example"));
        // Bound everywhere with no names given: it cannot tell, so any.
        assert!(www("0.0.0.0", &[]).answers_to("anything.example"));
        assert!(www("10.0.0.5", &[]).answers_to("10.0.0.5:8010"));
    }
}
