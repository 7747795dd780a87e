//! The status pages, rendered on the master (no JavaScript build step).
//!
//! Each page is plain HTML that works without scripts; `moonbot.js` makes it
//! live: it consumes the page's bus paths over `/ws` and, on an event, fetches
//! the page again and swaps its `#live` part, and it tails logs line by line.
//! Control buttons are ordinary forms posting to the page routes below, with
//! the CSRF token of [`super::auth`].

mod badge;
mod build;
mod builders;
mod changes;
mod force_form;
mod forms;
mod home;
mod html;
mod janitor;
mod logs;
mod reporters;
mod schedulers;
mod views;
mod workers;

use super::Request;
use super::auth::{self, Identity};
use crate::shared::{RunningConfig, Shared};
use html::Shell;
use std::sync::Arc;
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};

const SCRIPT: &str = include_str!("../assets/moonbot.js");
const STYLE: &str = include_str!("../assets/moonbot.css");

/// A page could not be shown.
pub(super) enum PageError {
    NotFound(String),
    BadRequest(String),
    Denied(auth::Denied),
    Internal(String),
}

impl From<crate::data::DataError> for PageError {
    fn from(e: crate::data::DataError) -> Self {
        match e {
            crate::data::DataError::NotFound(what) => {
                PageError::NotFound(format!("{what} not found"))
            }
            crate::data::DataError::Query(e) => PageError::BadRequest(e.to_string()),
            other => PageError::Internal(super::database_failed("rendering a page", &other).into()),
        }
    }
}

type PageResult = Result<Response, PageError>;

/// The object a `list_*` call filtered by its id found, or "WHAT not found".
fn found_one(found: Vec<serde_json::Value>, what: &str) -> Result<serde_json::Value, PageError> {
    found
        .into_iter()
        .next()
        .ok_or_else(|| PageError::NotFound(format!("{what} not found")))
}

/// What every page handler gets.
pub(super) struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    pub request: &'a Request,
    pub identity: Identity,
    pub running: Arc<RunningConfig>,
    pub csrf: String,
}

impl Ctx<'_> {
    /// Whether the buttons for `action` should be shown to this visitor.
    pub(super) fn may(&self, action: &str) -> bool {
        auth::permitted(
            self.running.loaded.config.auth.as_ref(),
            &self.identity,
            action,
        )
        .is_ok()
    }

    /// The page shell for this visitor.
    fn shell<'s>(
        &'s self,
        title: &'s str,
        nav: &'s str,
        watch: &'s [&'s str],
        banner: &'s str,
    ) -> Shell<'s> {
        let cfg = &self.running.loaded.config;
        Shell {
            title,
            site_title: &cfg.title,
            nav,
            user: self.identity.user.as_ref().map(|u| u.name.as_str()),
            auth_enabled: cfg.auth.is_some(),
            csrf: &self.csrf,
            watch,
            banner,
        }
    }

    /// A complete HTML page.
    pub(super) async fn page(
        &self,
        title: &str,
        nav: &str,
        watch: &[&str],
        body: &str,
    ) -> PageResult {
        let banner = home::reload_banner(self.shared).await?;
        let shell = self.shell(title, nav, watch, &banner);
        Ok(warp::reply::html(html::page(&shell, body)).into_response())
    }

    /// A configured builder's name from its id.
    pub(super) fn configured_builder(&self, builderid: i64) -> Option<String> {
        self.running.builder_name(builderid).map(str::to_string)
    }

    /// A builder's name from its id ("builder N" when it is not configured).
    pub(super) fn builder_name(&self, builderid: i64) -> String {
        self.configured_builder(builderid)
            .unwrap_or_else(|| format!("builder {builderid}"))
    }

    pub(super) fn worker_name(&self, workerid: Option<i64>) -> String {
        let Some(workerid) = workerid else {
            return String::new();
        };
        self.running
            .worker_ids
            .iter()
            .find(|(_, id)| **id == workerid)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| format!("worker {workerid}"))
    }
}

fn id(segment: &str, what: &str) -> Result<i64, PageError> {
    segment
        .parse()
        .map_err(|_| PageError::BadRequest(format!("'{segment}' is not a valid {what} id")))
}

/// Route one page request.
pub(super) async fn dispatch(shared: &Arc<Shared>, request: &Request) -> Response {
    let running = shared.running_config();
    let mut identity = request.identity(shared);
    // A visitor without a session or a browser cookie gets a browser cookie
    // with this answer, and the page's CSRF token goes with it.
    let new_browser = match (&identity.cookie, &identity.browser) {
        (None, None) => Some(crate::credentials::browser_nonce()),
        _ => None,
    };
    if new_browser.is_some() {
        identity.browser = new_browser.clone();
    }
    let csrf = shared
        .session_key
        .csrf_token(identity.cookie.as_deref(), identity.browser.as_deref())
        .unwrap_or_default();
    let ctx = Ctx {
        shared,
        request,
        identity,
        running,
        csrf,
    };
    let mut response = match route(&ctx).await {
        Ok(r) => r,
        Err(e) => error_page(&ctx, e),
    };
    if let Some(nonce) = new_browser {
        let cookie = format!(
            "{}={nonce}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000{}",
            auth::BROWSER_COOKIE,
            secure_attribute(&ctx.running)
        );
        if let Ok(value) = warp::http::HeaderValue::from_str(&cookie) {
            response
                .headers_mut()
                .append(warp::http::header::SET_COOKIE, value);
        }
    }
    response
}

/// `; Secure` when the master's configured URL (`buildbot_url`) is https:
/// its cookies then never travel in clear text.
pub(super) fn secure_attribute(running: &RunningConfig) -> &'static str {
    match &running.loaded.config.buildbot_url {
        Some(url) if url.to_ascii_lowercase().starts_with("https://") => "; Secure",
        _ => "",
    }
}

async fn route(ctx: &Ctx<'_>) -> PageResult {
    let path = ctx.request.path.as_str();
    let decoded = super::paths::decoded_segments(path)
        .ok_or_else(|| PageError::BadRequest(format!("{path} is not UTF-8 once decoded")))?;
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if ctx.request.method == Method::POST {
        return forms::post(ctx, &segments).await;
    }
    if ctx.request.method != Method::GET {
        return Err(PageError::BadRequest(format!(
            "{} is not supported here",
            ctx.request.method
        )));
    }
    match segments.as_slice() {
        [""] => home::home(ctx).await,
        ["builders"] => builders::list(ctx).await,
        ["builders", b] => builders::builder(ctx, id(b, "builder")?).await,
        ["builds", b] => build::build(ctx, id(b, "build")?).await,
        ["logs", l] => logs::viewer(ctx, id(l, "log")?).await,
        ["workers"] => workers::list(ctx).await,
        ["workers", w] => workers::worker(ctx, id(w, "worker")?).await,
        ["waterfall"] => views::waterfall(ctx).await,
        ["console"] => views::console(ctx).await,
        ["changes"] => changes::list(ctx).await,
        ["changes", c] => changes::change(ctx, id(c, "change")?).await,
        ["grid"] => views::grid(ctx).await,
        ["janitor"] => janitor::page(ctx).await,
        ["schedulers"] => schedulers::list(ctx).await,
        ["reporters"] => reporters::list(ctx).await,
        ["badges", file] => badge::badge(ctx, file).await,
        ["login"] => forms::login_page(ctx, None).await,
        ["static", "moonbot.js"] => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        ["static", "moonbot.css"] => Ok(asset(STYLE, "text/css; charset=utf-8")),
        _ => Err(PageError::NotFound(format!("no page at {path}"))),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let reply = warp::reply::with_header(body, "content-type", content_type);
    warp::reply::with_header(reply, "cache-control", "max-age=300").into_response()
}

fn error_page(ctx: &Ctx<'_>, e: PageError) -> Response {
    let (status, message) = match e {
        PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        PageError::Denied(d) => (d.status, d.message),
        PageError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    let login = if status == StatusCode::UNAUTHORIZED {
        " <a href=\"/login\">Log in</a>"
    } else {
        ""
    };
    let title = status.canonical_reason().unwrap_or("error");
    let shell = ctx.shell(title, "", &[], "");
    let body = format!(
        "<p class=\"error\" id=\"error\">{}</p><p>{login}</p>",
        html::esc(&message)
    );
    warp::reply::with_status(warp::reply::html(html::page(&shell, &body)), status).into_response()
}
