//! Who is asking, and may they do it.
//!
//! Three ways to be someone: a browser session (a signed cookie set by the login
//! form), a script's bearer token (`Authorization: Bearer mbt_…`), or nobody.
//! Without an `auth` section in master.lua there are no users, and control
//! actions are allowed only to clients on this machine (loopback), as before.
//!
//! Sessions are stateless: the cookie carries the user name and expiry, signed
//! with HMAC-SHA256 under a key kept in the master directory, so they survive a
//! master restart and need no table. The user must still exist in the running
//! configuration for the cookie to count, so removing a user ends their
//! sessions at the next request. Cookie-authenticated requests that change
//! something must also carry the CSRF token (a second HMAC of the cookie) in a
//! form field or the `X-CSRF-Token` header.
//!
//! Passwords are stored as PBKDF2-HMAC-SHA256 hashes with a random salt; API
//! tokens are 32 random bytes, stored as their SHA-256 (a fast hash is enough
//! for a secret that long).

use crate::config::AuthConfig;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use warp::http::{HeaderMap, StatusCode};

/// The cookie holding a browser session.
pub const SESSION_COOKIE: &str = "moonbot_session";
/// The form field (and, as `X-CSRF-Token`, header) with the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// How long a login lasts.
pub const SESSION_SECONDS: u64 = 7 * 24 * 3600;
/// PBKDF2 rounds for new hashes (OWASP's figure for HMAC-SHA256).
const PBKDF2_ROUNDS: u32 = 600_000;
const PASSWORD_PREFIX: &str = "pbkdf2-sha256";
const TOKEN_PREFIX: &str = "mbt_";
const TOKEN_HASH_PREFIX: &str = "sha256:";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random number generator failed");
    out
}

/// `pbkdf2-sha256$ROUNDS$SALT$HASH` (hex) for `moonbot hash-password`.
pub fn hash_password(password: &str) -> String {
    hash_password_with(password, PBKDF2_ROUNDS)
}

fn hash_password_with(password: &str, rounds: u32) -> String {
    let salt: [u8; 16] = random_bytes();
    let mut out = [0u8; 32];
    let rounds_nz = NonZeroU32::new(rounds).expect("rounds > 0");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds_nz,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "{PASSWORD_PREFIX}${rounds}${}${}",
        hex::encode(salt),
        hex::encode(out)
    )
}

fn parse_password_hash(hash: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = hash.split('$');
    if parts.next()? != PASSWORD_PREFIX {
        return None;
    }
    let rounds = NonZeroU32::new(parts.next()?.parse().ok()?)?;
    let salt = hex::decode(parts.next()?).ok()?;
    let derived = hex::decode(parts.next()?).ok()?;
    if parts.next().is_some() || derived.len() != 32 {
        return None;
    }
    Some((rounds, salt, derived))
}

/// Whether `hash` has the shape `hash_password` makes.
pub fn is_password_hash(hash: &str) -> bool {
    parse_password_hash(hash).is_some()
}

/// Check a password against a stored hash, in constant time.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Some((rounds, salt, derived)) = parse_password_hash(hash) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &derived,
    )
    .is_ok()
}

/// Spend as long as checking a real user's password takes, so a login for an
/// unknown name cannot be told from a wrong password by its timing.
pub fn verify_unknown_user(password: &str) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("not anyone's password"));
    let _ = verify_password(hash, password);
    false
}

/// A new API token and the hash that goes into master.lua.
pub fn new_api_token() -> (String, String) {
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()));
    let hash = token_hash(&token);
    (token, hash)
}

/// `sha256:HEX` of a token.
pub fn token_hash(token: &str) -> String {
    format!(
        "{TOKEN_HASH_PREFIX}{}",
        hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
    )
}

/// Whether `hash` has the shape `token_hash` makes.
pub fn is_token_hash(hash: &str) -> bool {
    hash.strip_prefix(TOKEN_HASH_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The key that signs session cookies and CSRF tokens.
pub struct SessionKey(hmac::Key);

impl SessionKey {
    /// Read `DIR/www-session.key`, creating it (mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> std::io::Result<SessionKey> {
        let path = dir.join("www-session.key");
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.len() >= 32 => b,
            _ => {
                let fresh: [u8; 32] = random_bytes();
                write_private(&path, &fresh)?;
                fresh.to_vec()
            }
        };
        Ok(SessionKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    fn sign(&self, text: &str) -> String {
        hex::encode(hmac::sign(&self.0, text.as_bytes()))
    }

    fn verify(&self, text: &str, mac_hex: &str) -> bool {
        hex::decode(mac_hex).is_ok_and(|mac| hmac::verify(&self.0, text.as_bytes(), &mac).is_ok())
    }

    /// The cookie value for a fresh login of `user`.
    pub fn session_cookie(&self, user: &str, now: u64) -> String {
        let text = format!("{user}:{}", now + SESSION_SECONDS);
        format!("{text}:{}", self.sign(&text))
    }

    /// The user a cookie value names, if it is ours and not expired.
    fn session_user(&self, cookie: &str, now: u64) -> Option<String> {
        let (text, mac) = cookie.rsplit_once(':')?;
        let (user, expires) = text.split_once(':')?;
        let expires: u64 = expires.parse().ok()?;
        (expires > now && self.verify(text, mac)).then(|| user.to_string())
    }

    /// The CSRF token that goes with a session cookie (or, for anonymous
    /// loopback pages, with no cookie).
    pub fn csrf_token(&self, cookie: Option<&str>) -> String {
        // check_csrf verifies the same text.
        self.sign(&format!("csrf:{}", cookie.unwrap_or("anonymous")))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
}

/// The user behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
    pub via: Via,
}

/// Everything authorization needs to know about a request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Option<User>,
    /// The client is on this machine.
    pub loopback: bool,
    /// The session cookie's value, when there is one (valid or not).
    pub cookie: Option<String>,
    /// The CSRF token from the `X-CSRF-Token` header, if any.
    pub csrf_header: Option<String>,
    /// An `Authorization` header that named no known token.
    pub bad_token: bool,
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(warp::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Who sent a request.
pub fn identify(
    key: &SessionKey,
    auth: Option<&AuthConfig>,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Identity {
    let now = crate::data::now() as u64;
    let cookie = cookie_value(headers, SESSION_COOKIE);
    let csrf_header = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bearer = headers
        .get(warp::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim().to_string());
    let mut identity = Identity {
        user: None,
        loopback: client.is_some_and(|ip| ip.is_loopback()),
        cookie: cookie.clone(),
        csrf_header,
        bad_token: false,
    };
    let Some(auth) = auth else {
        return identity;
    };
    if let Some(token) = bearer {
        let hash = token_hash(&token);
        match auth.tokens.iter().find(|t| t.token_hash == hash) {
            Some(t) => {
                identity.user = Some(User {
                    name: t.name.clone(),
                    roles: t.roles.clone(),
                    via: Via::Token,
                })
            }
            None => identity.bad_token = true,
        }
        return identity;
    }
    if let Some(name) = cookie.and_then(|c| key.session_user(&c, now))
        && let Some(u) = auth.users.iter().find(|u| u.name == name)
    {
        identity.user = Some(User {
            name: u.name.clone(),
            roles: u.roles.clone(),
            via: Via::Session,
        });
    }
    identity
}

/// Why an action was refused: 401 (say who you are) or 403 (you may not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    pub message: String,
}

impl Denied {
    fn new(status: StatusCode, message: impl Into<String>) -> Denied {
        Denied {
            status,
            message: message.into(),
        }
    }
}

/// May `identity` do `action` (one of [`crate::config::ACTIONS`])? `csrf_form`
/// is the CSRF token a form post carried.
pub fn authorize(
    key: &SessionKey,
    auth: Option<&AuthConfig>,
    identity: &Identity,
    action: &str,
    csrf_form: Option<&str>,
) -> Result<(), Denied> {
    permitted(auth, identity, action)?;
    let from_browser = match auth {
        // Anonymous pages on loopback carry the anonymous CSRF token; JSON API
        // calls without a cookie are checked for their content type instead.
        None => true,
        Some(_) => identity
            .user
            .as_ref()
            .is_some_and(|u| u.via == Via::Session),
    };
    if from_browser {
        check_csrf(key, identity, csrf_form)?;
    }
    Ok(())
}

/// Whether the rules let `identity` do `action` (no CSRF check: pages use
/// this to decide which buttons to show).
pub fn permitted(
    auth: Option<&AuthConfig>,
    identity: &Identity,
    action: &str,
) -> Result<(), Denied> {
    let Some(auth) = auth else {
        if identity.loopback {
            return Ok(());
        }
        return Err(Denied::new(
            StatusCode::FORBIDDEN,
            "control actions are only allowed from this machine until `auth` is configured in master.lua",
        ));
    };
    if identity.bad_token {
        return Err(Denied::new(
            StatusCode::UNAUTHORIZED,
            "the API token is not valid",
        ));
    }
    let Some(user) = &identity.user else {
        return Err(Denied::new(
            StatusCode::UNAUTHORIZED,
            format!("log in to {action}"),
        ));
    };
    match auth.rules.get(action) {
        None => Ok(()),
        Some(roles) if roles.iter().any(|r| r == "*" || user.roles.contains(r)) => Ok(()),
        Some(roles) => Err(Denied::new(
            StatusCode::FORBIDDEN,
            format!(
                "user '{}' may not {action} (needs one of the roles: {})",
                user.name,
                roles.join(", ")
            ),
        )),
    }
}

/// A browser request that changes something must prove it came from one of
/// our pages: the token in its form or header matches its cookie.
fn check_csrf(key: &SessionKey, identity: &Identity, form: Option<&str>) -> Result<(), Denied> {
    let Some(given) = form.or(identity.csrf_header.as_deref()) else {
        if identity.cookie.is_none() && form.is_none() {
            // A script on loopback (no cookie, no form): nothing to forge.
            return Ok(());
        }
        return Err(Denied::new(
            StatusCode::FORBIDDEN,
            "the request carries no CSRF token; reload the page and try again",
        ));
    };
    let signed = format!("csrf:{}", identity.cookie.as_deref().unwrap_or("anonymous"));
    if key.verify(&signed, given) {
        Ok(())
    } else {
        Err(Denied::new(
            StatusCode::FORBIDDEN,
            "the CSRF token does not match this session; reload the page and try again",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password_with("s3cret", 1000);
        assert!(is_password_hash(&hash));
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "s3cret "));
        assert!(!verify_password("pbkdf2-sha256$1000$zz$00", "s3cret"));
        assert_ne!(hash, hash_password_with("s3cret", 1000), "salted");
    }

    #[test]
    fn tokens_hash_to_their_config_form() {
        let (token, hash) = new_api_token();
        assert!(token.starts_with("mbt_"));
        assert!(is_token_hash(&hash));
        assert_eq!(token_hash(&token), hash);
        assert!(!is_token_hash("sha256:abc"));
    }

    #[test]
    fn session_cookies_are_signed_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(dir.path()).unwrap();
        let cookie = key.session_cookie("ana", 1000);
        assert_eq!(key.session_user(&cookie, 1001).as_deref(), Some("ana"));
        assert_eq!(key.session_user(&cookie, 1000 + SESSION_SECONDS), None);
        let forged = cookie.replacen("ana", "bob", 1);
        assert_eq!(key.session_user(&forged, 1001), None);
        // The same key is read back after a restart.
        let again = SessionKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.session_user(&cookie, 1001).as_deref(), Some("ana"));
        assert_ne!(key.csrf_token(Some(&cookie)), key.csrf_token(None));
    }
}
