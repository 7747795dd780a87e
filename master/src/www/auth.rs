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
//! Hashing passwords and tokens, and the session key, live in
//! [`crate::credentials`].

use crate::config::AuthConfig;
use crate::credentials::{SessionKey, token_hash};
use std::net::IpAddr;
use warp::http::{HeaderMap, StatusCode};

/// The cookie holding a browser session.
pub const SESSION_COOKIE: &str = "moonbot_session";
/// The cookie that tells one visitor's browser from another before any
/// login: its CSRF token signs it (see [`crate::credentials::browser_nonce`]).
pub const BROWSER_COOKIE: &str = "moonbot_browser";
/// The form field (and, as `X-CSRF-Token`, header) with the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
    /// The master directory's own token (`cli-token`): may do anything.
    Cli,
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
    /// The browser cookie's value, when there is one.
    pub browser: Option<String>,
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
    cli_token_hash: &str,
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
        browser: cookie_value(headers, BROWSER_COOKIE).filter(|b| is_nonce(b)),
        csrf_header,
        bad_token: false,
    };
    let Some(auth) = auth else {
        return identity;
    };
    if let Some(token) = bearer {
        let hash = token_hash(&token);
        if hash == cli_token_hash {
            identity.user = Some(User {
                name: "moonbot-cli".into(),
                roles: Vec::new(),
                via: Via::Cli,
            });
            return identity;
        }
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

/// A browser cookie's value as [`crate::credentials::browser_nonce`] makes
/// them; anything else is ignored (and replaced).
fn is_nonce(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
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
        // Anonymous pages on loopback carry their browser's CSRF token; JSON
        // API calls without a cookie are checked for their content type
        // instead.
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
    if user.via == Via::Cli {
        return Ok(());
    }
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
        if identity.cookie.is_none() && identity.browser.is_none() {
            // A script on loopback (no cookie, no form): nothing to forge.
            return Ok(());
        }
        return Err(Denied::new(
            StatusCode::FORBIDDEN,
            "the request carries no CSRF token; reload the page and try again",
        ));
    };
    if key.csrf_matches(
        identity.cookie.as_deref(),
        identity.browser.as_deref(),
        given,
    ) {
        Ok(())
    } else {
        Err(Denied::new(
            StatusCode::FORBIDDEN,
            "the CSRF token does not match this session; reload the page and try again",
        ))
    }
}
