//! Secrets the master checks but never stores in the clear: password hashes
//! (PBKDF2-HMAC-SHA256, salted) for `moonbot hash-password` and master.lua's
//! users, API token hashes (SHA-256; a fast hash is enough for a secret of 32
//! random bytes) for `moonbot api-token`, and the key that signs the web UI's
//! session cookies and CSRF tokens.
//!
//! A leaf module: `config/` checks the shape of the hashes master.lua holds and
//! `www/` checks what a request presents, so neither has to import the other.

use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;
use std::path::Path;

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

/// `DIR/cli-token` (mode 0600): an API token for the master's own command
/// line (`moonbot reconfig`, `checkconfig --diff`). Whoever can read the master
/// directory already controls the master, so this token may do anything,
/// whatever `auth` says; it is made by `create-master` or at the master's
/// first start, and never leaves the directory.
pub const CLI_TOKEN_FILE: &str = "cli-token";

/// The hash of the master directory's CLI token, made first if missing.
pub fn cli_token_hash(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(CLI_TOKEN_FILE);
    let token = match read_cli_token(dir) {
        Some(token) => token,
        None => {
            let (token, _) = new_api_token();
            write_private(&path, token.as_bytes())?;
            token
        }
    };
    Ok(token_hash(&token))
}

/// The master directory's CLI token, if there is a readable one.
pub fn read_cli_token(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(CLI_TOKEN_FILE)).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// The key that signs session cookies and CSRF tokens, and the sessions
/// ended before their cookie expired (a logout), which it refuses.
pub struct SessionKey {
    key: hmac::Key,
    /// Session id → its cookie's expiry (Unix seconds). Loaded from the
    /// database at start (`Data::revoked_sessions`), added to at each logout.
    ended: std::sync::RwLock<std::collections::HashMap<String, u64>>,
}

/// A browser session, as its cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Random, one per login: what a logout ends.
    pub nonce: String,
    pub expires: u64,
}

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
        Ok(SessionKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            ended: Default::default(),
        })
    }

    pub(crate) fn sign(&self, text: &str) -> String {
        hex::encode(hmac::sign(&self.key, text.as_bytes()))
    }

    pub(crate) fn verify(&self, text: &str, mac_hex: &str) -> bool {
        hex::decode(mac_hex).is_ok_and(|mac| hmac::verify(&self.key, text.as_bytes(), &mac).is_ok())
    }

    /// The cookie value for a fresh login of `user`: `user:expiry:nonce:mac`.
    pub fn session_cookie(&self, user: &str, now: u64) -> String {
        let nonce = hex::encode(random_bytes::<16>());
        let text = format!("{user}:{}:{nonce}", now + SESSION_SECONDS);
        format!("{text}:{}", self.sign(&text))
    }

    /// The session a cookie value holds, if it is ours, not expired and not
    /// ended by a logout.
    pub fn session(&self, cookie: &str, now: u64) -> Option<Session> {
        let (text, mac) = cookie.rsplit_once(':')?;
        let (user, rest) = text.split_once(':')?;
        let (expires, nonce) = rest.split_once(':')?;
        let expires: u64 = expires.parse().ok()?;
        if expires <= now || !self.verify(text, mac) {
            return None;
        }
        let ended = self.ended.read().unwrap_or_else(|e| e.into_inner());
        if ended.contains_key(nonce) {
            return None;
        }
        Some(Session {
            user: user.to_string(),
            nonce: nonce.to_string(),
            expires,
        })
    }

    /// The user a cookie value names (see [`SessionKey::session`]).
    pub(crate) fn session_user(&self, cookie: &str, now: u64) -> Option<String> {
        self.session(cookie, now).map(|s| s.user)
    }

    /// Refuse these sessions from now on: (nonce, expiry) pairs, from a
    /// logout or from the database at start. Expired ones are forgotten.
    pub fn end_sessions(&self, sessions: impl IntoIterator<Item = (String, u64)>, now: u64) {
        let mut ended = self.ended.write().unwrap_or_else(|e| e.into_inner());
        ended.retain(|_, expires| *expires > now);
        ended.extend(sessions);
    }

    /// The CSRF token that goes with a session cookie, or for a visitor
    /// who has not logged in, with their browser cookie (see
    /// [`browser_nonce`]): each browser its own, so a page of another site
    /// can neither read nor guess it. `None` when the request has neither.
    pub fn csrf_token(&self, session: Option<&str>, browser: Option<&str>) -> Option<String> {
        csrf_text(session, browser).map(|text| self.sign(&text))
    }

    /// Whether `token` is the CSRF token for these cookies.
    pub fn csrf_matches(&self, session: Option<&str>, browser: Option<&str>, token: &str) -> bool {
        csrf_text(session, browser).is_some_and(|text| self.verify(&text, token))
    }
}

/// What a CSRF token signs: the session cookie, else the browser cookie.
fn csrf_text(session: Option<&str>, browser: Option<&str>) -> Option<String> {
    match (session, browser) {
        (Some(session), _) => Some(format!("csrf:{session}")),
        (None, Some(browser)) => Some(format!("csrf-browser:{browser}")),
        (None, None) => None,
    }
}

/// A fresh value for a visitor's browser cookie: random, so that each
/// browser's CSRF token is its own.
pub fn browser_nonce() -> String {
    hex::encode(random_bytes::<16>())
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
        // A logout ends the session; another login of the same user is new.
        let session = key.session(&cookie, 1001).unwrap();
        let other = key.session_cookie("ana", 1000);
        key.end_sessions([(session.nonce, session.expires)], 1001);
        assert_eq!(key.session_user(&cookie, 1002), None);
        assert_eq!(key.session_user(&other, 1002).as_deref(), Some("ana"));
    }

    #[test]
    fn each_browser_has_its_own_csrf_token() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(dir.path()).unwrap();
        let (a, b) = (browser_nonce(), browser_nonce());
        assert_ne!(a, b);
        let token_a = key.csrf_token(None, Some(&a)).unwrap();
        let token_b = key.csrf_token(None, Some(&b)).unwrap();
        assert_ne!(token_a, token_b);
        assert!(key.csrf_matches(None, Some(&a), &token_a));
        assert!(!key.csrf_matches(None, Some(&b), &token_a));
        // Without a cookie there is no token, and nothing matches.
        assert_eq!(key.csrf_token(None, None), None);
        assert!(!key.csrf_matches(None, None, &token_a));
        // A session's token is not its browser's.
        let cookie = key.session_cookie("ana", 1000);
        let session_token = key.csrf_token(Some(&cookie), Some(&a)).unwrap();
        assert_ne!(session_token, token_a);
        assert!(key.csrf_matches(Some(&cookie), Some(&a), &session_token));
        assert!(!key.csrf_matches(Some(&cookie), Some(&a), &token_a));
    }
}
