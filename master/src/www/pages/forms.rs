//! What the pages' forms post: log in and out, and the control actions (force,
//! stop, rebuild, cancel, pause, unpause, a worker's stop and kill, a
//! scheduler's enable and disable, reload), each parsed into a
//! [`crate::www::actions::Action`] and authorized with the form's CSRF token.
//! Each answers with a redirect to the page to look at next, so the browser's
//! back button and reload behave.

use super::html::esc;
use super::{Ctx, PageError, PageResult, id};
use crate::config::SchedulerConfig;
use crate::credentials::{self, SESSION_SECONDS};
use crate::schedulers::force::ForceRequest;
use crate::schedulers::force_params;
use crate::www::actions::{self, Action, ActionError, ActionKind, Authorized, Outcome};
use crate::www::auth::{self, SESSION_COOKIE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

fn see_other(location: &str) -> Response {
    warp::reply::with_status(
        warp::reply::with_header(warp::reply(), header::LOCATION, location),
        StatusCode::SEE_OTHER,
    )
    .into_response()
}

/// Only paths on this site, so `next=` cannot send a user elsewhere. Browsers
/// read a backslash in a URL as a slash, so `/\evil.example/` is
/// `//evil.example/`, another site: a path with a backslash or a control
/// character (which browsers strip) is refused along with `//…`.
fn local_path(next: Option<&String>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.clone()
        }
        _ => "/".into(),
    }
}

pub(super) async fn post(ctx: &Ctx<'_>, segments: &[&str]) -> PageResult {
    let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(&ctx.request.body)
        .map_err(|e| PageError::BadRequest(format!("malformed form: {e}")))?;
    match segments {
        ["login"] => login(ctx, &form).await,
        ["logout"] => {
            // End the session on the server too: a copy of the cookie (another
            // tab, a stolen one) stops working now, not when it expires.
            let now = crate::data::now() as u64;
            let session = auth::cookie_value(&ctx.request.headers, SESSION_COOKIE)
                .and_then(|c| ctx.shared.session_key.session(&c, now));
            if let Some(s) = session {
                ctx.shared.data.revoke_session(&s.nonce, s.expires).await?;
                ctx.shared
                    .session_key
                    .end_sessions([(s.nonce, s.expires)], now);
                tracing::info!(user = %s.user.escape_debug(), "logged out");
            }
            let cookie = format!(
                "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
                super::secure_attribute(&ctx.running)
            );
            let reply = warp::reply::with_header(see_other("/"), header::SET_COOKIE, cookie);
            Ok(reply.into_response())
        }
        ["builders", b, "force"] => {
            let builderid = id(b, "builder")?;
            let authorized = allow(ctx, ActionKind::Force, &form)?;
            let scheduler = form.get("scheduler").cloned().unwrap_or_default();
            let mut properties = BTreeMap::new();
            for line in form
                .get("properties")
                .map(String::as_str)
                .unwrap_or("")
                .lines()
            {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let (k, v) = line.split_once('=').ok_or_else(|| {
                    PageError::BadRequest(format!("property line '{line}' is not name=value"))
                })?;
                properties.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            // The typed fields: every pair but the form's own, read through
            // the scheduler's form (a name may repeat).
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&ctx.request.body)
                .map_err(|e| PageError::BadRequest(format!("malformed form: {e}")))?;
            let pairs: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "csrf_token" | "scheduler" | "properties"))
                .collect();
            let fields = match ctx.running.loaded.config.scheduler(&scheduler) {
                Some(SchedulerConfig::Force { form, .. }) => {
                    force_params::from_form_pairs(form, &pairs)
                }
                _ => Default::default(),
            };
            let request = ForceRequest {
                builderid: Some(builderid),
                fields,
                user: authorized.user.clone(),
                properties,
            };
            perform(ctx, authorized, Action::Force { scheduler, request }).await?;
            Ok(see_other(&format!("/builders/{builderid}")))
        }
        ["builds", b, "stop"] => {
            let buildid = id(b, "build")?;
            let authorized = allow(ctx, ActionKind::Stop, &form)?;
            let reason = format!(
                "stopped by {} from the web page",
                authorized.user.as_deref().unwrap_or("a user")
            );
            perform(ctx, authorized, Action::Stop { buildid, reason }).await?;
            Ok(see_other(&format!("/builds/{buildid}")))
        }
        ["builds", b, "rebuild"] => {
            let buildid = id(b, "build")?;
            let authorized = allow(ctx, ActionKind::Rebuild, &form)?;
            match perform(ctx, authorized, Action::Rebuild { buildid }).await? {
                Outcome::Rebuilt(rebuilt) => {
                    Ok(see_other(&format!("/builders/{}", rebuilt.builderid)))
                }
                _ => Ok(see_other(&format!("/builds/{buildid}"))),
            }
        }
        ["config", "reload"] => {
            let authorized = allow(ctx, ActionKind::Reload, &form)?;
            // The outcome shows on the home page (the banner) and in the API.
            perform(ctx, authorized, Action::Reload).await?;
            Ok(see_other("/"))
        }
        ["workers", w, verb @ ("pause" | "unpause")] => {
            let workerid = id(w, "worker")?;
            let (kind, action) = if *verb == "pause" {
                (
                    ActionKind::Pause,
                    Action::Pause {
                        worker: w.to_string(),
                    },
                )
            } else {
                (
                    ActionKind::Unpause,
                    Action::Unpause {
                        worker: w.to_string(),
                    },
                )
            };
            let authorized = allow(ctx, kind, &form)?;
            perform(ctx, authorized, action).await?;
            Ok(see_other(&format!("/workers/{workerid}")))
        }
        ["workers", w, verb @ ("stop" | "kill")] => {
            let workerid = id(w, "worker")?;
            let kill = *verb == "kill";
            let kind = if kill {
                ActionKind::KillWorker
            } else {
                ActionKind::StopWorker
            };
            let authorized = allow(ctx, kind, &form)?;
            let action = Action::StopWorker {
                worker: w.to_string(),
                kill,
            };
            perform(ctx, authorized, action).await?;
            Ok(see_other(&format!("/workers/{workerid}")))
        }
        ["schedulers", s, verb @ ("enable" | "disable")] => {
            let schedulerid = id(s, "scheduler")?;
            let authorized = allow(ctx, ActionKind::EnableScheduler, &form)?;
            let action = Action::EnableScheduler {
                schedulerid,
                enabled: *verb == "enable",
            };
            perform(ctx, authorized, action).await?;
            Ok(see_other("/schedulers"))
        }
        ["buildrequests", r, "cancel"] => {
            let brid = id(r, "build request")?;
            let authorized = allow(ctx, ActionKind::Cancel, &form)?;
            perform(ctx, authorized, Action::Cancel { brid }).await?;
            let back = ctx
                .request
                .headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| {
                    r.split_once("://")
                        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                });
            Ok(see_other(&local_path(back.as_ref())))
        }
        _ => Err(PageError::NotFound(format!(
            "nothing to post to at {}",
            ctx.request.path
        ))),
    }
}

/// Authorize a form's action with the form's CSRF token.
fn allow(
    ctx: &Ctx<'_>,
    kind: ActionKind,
    form: &BTreeMap<String, String>,
) -> Result<Authorized, PageError> {
    let csrf = form.get(auth::CSRF_FIELD).map(String::as_str).unwrap_or("");
    actions::authorize(ctx.shared, &ctx.identity, kind, Some(csrf)).map_err(PageError::Denied)
}

/// Carry out an authorized action; a failure is the user's mistake (400)
/// unless the master could not record a reload.
async fn perform(
    ctx: &Ctx<'_>,
    authorized: Authorized,
    action: Action,
) -> Result<Outcome, PageError> {
    actions::perform(ctx.shared, authorized, action)
        .await
        .map_err(|e| match e {
            ActionError::Reload(_) => PageError::Internal(e.to_string()),
            other => PageError::BadRequest(other.to_string()),
        })
}

async fn login(ctx: &Ctx<'_>, form: &BTreeMap<String, String>) -> PageResult {
    let Some(auth) = ctx.running.loaded.config.auth.clone() else {
        return Err(PageError::BadRequest(
            "this master has no users: add an `auth` section to master.lua".into(),
        ));
    };
    let name = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let from = ctx.request.remote.map(|a| a.ip());
    let throttle = &ctx.shared.login_throttle;
    // Names are escaped in the log: a newline or terminal escapes in one
    // would forge log lines.
    if let Some(wait) = throttle.wait(&name, from, Instant::now()) {
        tracing::warn!(user = %name.escape_debug(), from = ?from, "web login refused: too many failed attempts");
        return too_many_attempts(ctx, wait).await;
    }
    let user = auth.users.iter().find(|u| u.name == name).cloned();
    // PBKDF2 is slow on purpose: keep it off the async threads, and run one
    // at a time so a flood cannot take every core.
    let ok = {
        let _hashing = throttle.hashing.lock().await;
        tokio::task::spawn_blocking(move || match user {
            Some(u) => credentials::verify_password(&u.password_hash, &password),
            None => credentials::verify_unknown_user(&password),
        })
        .await
        .unwrap_or(false)
    };
    if !ok {
        throttle.failed(&name, from, Instant::now());
        tracing::warn!(user = %name.escape_debug(), from = ?from, "failed web login");
        return login_page(ctx, Some("Wrong user name or password.")).await;
    }
    throttle.succeeded(&name, from);
    let now = crate::data::now() as u64;
    let cookie = ctx.shared.session_key.session_cookie(&name, now);
    let set = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECONDS}{}",
        super::secure_attribute(&ctx.running)
    );
    let next = local_path(form.get("next"));
    Ok(warp::reply::with_header(see_other(&next), header::SET_COOKIE, set).into_response())
}

/// 429 with the login form again, saying how long to wait (also in
/// `Retry-After`).
async fn too_many_attempts(ctx: &Ctx<'_>, wait: Duration) -> PageResult {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let message = format!("Too many failed logins: try again in {seconds} s.");
    let response = login_page(ctx, Some(&message)).await?;
    let (mut parts, body) = response.into_parts();
    parts.status = StatusCode::TOO_MANY_REQUESTS;
    parts.headers.insert(header::RETRY_AFTER, seconds.into());
    Ok(Response::from_parts(parts, body))
}

pub(super) async fn login_page(ctx: &Ctx<'_>, error: Option<&str>) -> PageResult {
    let next = local_path(ctx.request.param("next").as_ref());
    let message = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{message}<form method=\"post\" action=\"/login\" id=\"login-form\">\
<input type=\"hidden\" name=\"next\" value=\"{}\">\
<p><label>user <input name=\"username\" autocomplete=\"username\" autofocus></label></p>\
<p><label>password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label></p>\
<p><button>log in</button></p></form>",
        esc(&next)
    );
    let response = ctx.page("Log in", "", &[], &body).await?;
    if error.is_some() {
        let (mut parts, body) = response.into_parts();
        parts.status = StatusCode::UNAUTHORIZED;
        return Ok(Response::from_parts(parts, body));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn next_only_follows_paths_on_this_site() {
        let next = |n: &str| local_path(Some(&n.to_string()));
        assert_eq!(next("/builders/3?offset=25"), "/builders/3?offset=25");
        assert_eq!(local_path(None), "/");
        for elsewhere in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example/",
            "/\\/evil.example/",
            "\\evil.example",
            "/\t/evil.example/",
            "/\n/evil.example/",
            "evil",
        ] {
            assert_eq!(next(elsewhere), "/", "{elsewhere:?}");
        }
    }
}
