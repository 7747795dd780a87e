//! master.lua's `secrets = { mb.secrets.files { dir }, mb.secrets.env { prefix } }`:
//! where `mb.secret` and `%(secret:NAME)s` look, in order. The values are
//! read by [`crate::secrets`] when a step runs; loading only checks them (a
//! file others may read, or a value too short to redact, refuses the start
//! or the reload).

use super::FILE;
use crate::lua::fields::tagged;
use crate::lua::{ConfigError, Fields, RawValue};
use crate::secrets::SecretProvider;

pub(super) fn compile_secrets(
    raw: Vec<&RawValue>,
    errors: &mut Vec<ConfigError>,
) -> Vec<SecretProvider> {
    let mut out = Vec::new();
    for item in raw {
        let Some((kind, at, entries)) = tagged(
            item,
            "mb.secrets.files{…} or mb.secrets.env{…}",
            "secrets",
            FILE,
            errors,
        ) else {
            continue;
        };
        let mut f = Fields::new(format!("secrets: {kind}"), at.clone(), entries);
        let provider = match kind {
            "secrets.files" => f
                .required_string("dir")
                .map(|dir| SecretProvider::Files { dir: dir.into() }),
            "secrets.env" => match f.required_string("prefix") {
                Some(prefix) if prefix.is_empty() => {
                    f.error(
                        "secrets: env: 'prefix' must not be empty (every variable would be a secret)"
                            .into(),
                    );
                    None
                }
                other => other.map(|prefix| SecretProvider::Env { prefix }),
            },
            other => {
                f.error(format!(
                    "secrets: expected mb.secrets.files{{…}} or mb.secrets.env{{…}}, got a {other}"
                ));
                None
            }
        };
        f.finish(errors);
        out.extend(provider);
    }
    out
}
