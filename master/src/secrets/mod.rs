//! Secrets: values (passwords, tokens, keys) that steps use but nobody may
//! read back. master.lua lists providers in `secrets = { … }`:
//! `mb.secrets.files { dir }` (one file per secret) and
//! `mb.secrets.env { prefix }` (environment variables). `%(secret:NAME)s` and
//! `mb.secret "NAME"` ask them in order, only when a step runs; the value
//! goes to that step's worker and into the build's [`Redactor`], and never
//! into the database.
//!
//! Why refuse short values: redaction replaces every occurrence of a secret's
//! text, so a secret of one to three characters ("1", "no") would censor
//! unrelated output everywhere (Buildbot's bb#5051). The provider model is
//! an enum with one lookup per kind, so another provider (HashiCorp Vault's
//! KV store) is one more variant.

pub mod redact;

pub use redact::Redactor;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The shortest value accepted as a secret.
pub const MIN_SECRET_LEN: usize = 4;

/// Where secrets come from (master.lua's `secrets = { … }`).
#[derive(Debug, Clone, PartialEq)]
pub enum SecretProvider {
    /// `mb.secrets.files { dir }`: the secret NAME is the file `dir/NAME`
    /// (its trailing line break removed); relative to the master directory.
    Files { dir: PathBuf },
    /// `mb.secrets.env { prefix }`: the secret NAME is `$PREFIX` + NAME.
    Env { prefix: String },
}

/// A secret's name and value; its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    name: String,
    value: String,
}

impl Secret {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}: <redacted>)", self.name)
    }
}

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret name '{0}' must be letters, digits, '_', '-' or '.', not starting with '.'")]
    BadName(String),
    #[error(
        "secret '{name}' ({place}) is shorter than {MIN_SECRET_LEN} characters: refused, since redacting it would censor unrelated text"
    )]
    TooShort { name: String, place: String },
    #[error("secret file {0} is readable by other users (chmod 600 it)")]
    TooOpen(String),
    #[error("cannot read secret '{name}' from {place}: {why}")]
    Unreadable {
        name: String,
        place: String,
        why: String,
    },
}

/// The configured providers, asked in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secrets {
    providers: Vec<SecretProvider>,
}

impl Secrets {
    /// `providers` with relative `dir`s taken from `master_dir`.
    pub fn new(providers: &[SecretProvider], master_dir: &Path) -> Secrets {
        Secrets {
            providers: providers
                .iter()
                .map(|p| match p {
                    SecretProvider::Files { dir } => SecretProvider::Files {
                        dir: master_dir.join(dir),
                    },
                    other => other.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The secret `name` from the first provider that has it.
    pub fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_string()));
        }
        for provider in &self.providers {
            let found = match provider {
                SecretProvider::Files { dir } => read_file_secret(&dir.join(name), name)?,
                SecretProvider::Env { prefix } => {
                    let var = format!("{prefix}{name}");
                    std::env::var(&var)
                        .ok()
                        .map(|value| (value, format!("${var}")))
                }
            };
            if let Some((value, place)) = found {
                return checked(name, value, place).map(Some);
            }
        }
        Ok(None)
    }

    /// What a start or a reload must refuse: a secrets file that others may
    /// read, or one too short to redact. Every problem, one per file.
    pub fn check(&self) -> Vec<SecretError> {
        let mut problems = Vec::new();
        for provider in &self.providers {
            match provider {
                SecretProvider::Files { dir } => {
                    let entries = match std::fs::read_dir(dir) {
                        Ok(entries) => entries,
                        Err(e) => {
                            problems.push(SecretError::Unreadable {
                                name: "*".into(),
                                place: dir.display().to_string(),
                                why: e.to_string(),
                            });
                            continue;
                        }
                    };
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| valid_name(n))
                        .collect();
                    names.sort();
                    for name in names {
                        match read_file_secret(&dir.join(&name), &name) {
                            Ok(Some((value, place))) => {
                                if let Err(e) = checked(&name, value, place) {
                                    problems.push(e);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => problems.push(e),
                        }
                    }
                }
                SecretProvider::Env { prefix } => {
                    for (var, value) in std::env::vars() {
                        if let Some(name) = var.strip_prefix(prefix.as_str())
                            && let Err(e) = checked(name, value, format!("${var}"))
                        {
                            problems.push(e);
                        }
                    }
                }
            }
        }
        problems
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn checked(name: &str, value: String, place: String) -> Result<Secret, SecretError> {
    if value.chars().count() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort {
            name: name.to_string(),
            place,
        });
    }
    Ok(Secret {
        name: name.to_string(),
        value,
    })
}

/// A file's secret, with its trailing line break removed; `None` when
/// there is no such file. A file others may read is refused.
fn read_file_secret(path: &Path, name: &str) -> Result<Option<(String, String)>, SecretError> {
    let place = path.display().to_string();
    let unreadable = |why: String| SecretError::Unreadable {
        name: name.to_string(),
        place: place.clone(),
        why,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(SecretError::TooOpen(place));
    }
    let mut value = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    while value.ends_with('\n') || value.ends_with('\r') {
        value.pop();
    }
    Ok(Some((value, place)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn files_are_read_with_their_line_break_removed_and_never_shown() {
        let master = tempfile::tempdir().unwrap();
        let dir = master.path().join("secrets");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "token", "hunter22\n", 0o600);
        // `dir` is relative to the master directory.
        let secrets = Secrets::new(
            &[SecretProvider::Files {
                dir: "secrets".into(),
            }],
            master.path(),
        );
        let token = secrets.get("token").unwrap().unwrap();
        assert_eq!(token.value(), "hunter22");
        assert!(!format!("{token:?}").contains("hunter22"));
        assert_eq!(secrets.get("other").unwrap(), None);
        assert!(secrets.check().is_empty());
    }

    #[test]
    fn open_short_and_oddly_named_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "open", "long enough", 0o644);
        write(dir.path(), "pin", "123\n", 0o600);
        let secrets = Secrets::new(
            &[SecretProvider::Files {
                dir: dir.path().to_path_buf(),
            }],
            Path::new("/"),
        );
        assert!(matches!(secrets.get("open"), Err(SecretError::TooOpen(_))));
        assert!(matches!(
            secrets.get("pin"),
            Err(SecretError::TooShort { .. })
        ));
        assert!(matches!(
            secrets.get("../etc/passwd"),
            Err(SecretError::BadName(_))
        ));
        let problems = secrets.check();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].to_string().contains("readable by other users"));
        assert!(
            problems[1]
                .to_string()
                .contains("shorter than 4 characters")
        );
    }

    #[test]
    fn the_environment_provider_reads_prefixed_variables() {
        // Cargo runs tests with CARGO_PKG_NAME (long enough) and
        // CARGO_PKG_VERSION_MAJOR ("0", too short) set.
        let secrets = Secrets::new(
            &[SecretProvider::Env {
                prefix: "CARGO_PKG_".into(),
            }],
            Path::new("/"),
        );
        assert_eq!(
            secrets.get("NAME").unwrap().unwrap().value(),
            env!("CARGO_PKG_NAME")
        );
        assert_eq!(secrets.get("NO_SUCH_THING").unwrap(), None);
        assert!(matches!(
            secrets.get("VERSION_MAJOR"),
            Err(SecretError::TooShort { .. })
        ));
        assert!(
            secrets
                .check()
                .iter()
                .any(|e| e.to_string().contains("$CARGO_PKG_VERSION_MAJOR"))
        );
    }
}
