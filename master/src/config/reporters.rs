//! `reporters = { mb.reporters.http_push{…} }`: who is told about builds, and
//! which builds (each reporter's `generators`, Buildbot's report generators).

use super::FILE;
use crate::lua::fields::tagged;
use crate::lua::{ConfigError, Fields, LuaFn, RawValue};
use std::collections::BTreeMap;
use std::fmt;

/// A reporter of master.lua.
#[derive(Debug, Clone, PartialEq)]
pub struct ReporterConfig {
    /// Unique among reporters; its queue and record are kept under it.
    pub name: String,
    pub kind: ReporterKind,
    pub generators: Vec<GeneratorConfig>,
    pub defined_at: String,
}

/// How a reporter delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum ReporterKind {
    HttpPush(HttpPushConfig),
    CommitStatus(StatusConfig),
    Chat(ChatConfig),
    Mail(Box<MailConfig>),
    GitHubComment(CommentConfig),
}

/// `mb.reporters.github_comment{…}`: a comment on the built pull request.
#[derive(Clone, PartialEq)]
pub struct CommentConfig {
    pub token: String,
    pub base_url: String,
    /// The text (a `format_fn`'s string, nil: no comment).
    pub format: Formatter,
    pub max_attempts: u32,
    pub timeout_s: u64,
}

impl fmt::Debug for CommentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommentConfig")
            .field("token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("format", &self.format)
            .finish()
    }
}

/// `mb.reporters.mail{…}`, Buildbot's `MailNotifier`.
#[derive(Clone, PartialEq)]
pub struct MailConfig {
    pub from: String,
    pub extra_recipients: Vec<String>,
    /// Mail the authors of the build's changes too.
    pub send_to_interested_users: bool,
    /// An author without an address: name → address.
    pub lookup: Option<Lookup>,
    pub extra_headers: BTreeMap<String, String>,
    pub smtp: SmtpConfig,
    /// The message (a `format_fn` returns `{ subject = …, body = … }`; a
    /// template left out keeps the default subject or body).
    pub format: Formatter,
    /// `add_logs`: which logs of the reported builds go with the mail as
    /// attachments (Buildbot's option of the same name).
    pub add_logs: AddLogs,
    pub max_attempts: u32,
    pub timeout_s: u64,
}

/// Which logs a mail attaches.
#[derive(Debug, Clone, PartialEq)]
pub enum AddLogs {
    /// None (the default; the failing step's last lines are in the body).
    No,
    /// `true`: every log of every step.
    All,
    /// Those named, as `log` or `step.log`.
    Named(Vec<String>),
}

/// How an author's name becomes an address.
#[derive(Clone, PartialEq)]
pub enum Lookup {
    /// `name@domain`.
    Domain(String),
    Function(LuaFn),
}

/// The mail relay.
#[derive(Clone, PartialEq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on this machine).
    None,
    StartTls,
    /// SMTPS: TLS from the first byte.
    Tls,
}

impl fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailConfig")
            .field("from", &self.from)
            .field("extra_recipients", &self.extra_recipients)
            .field("smtp_host", &self.smtp.host)
            .field("smtp_port", &self.smtp.port)
            .field("smtp_tls", &self.smtp.tls)
            .field(
                "smtp_password",
                &self.smtp.password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `mb.reporters.slack{…}`, `discord`, `matrix`, `zulip`: a line in a channel.
#[derive(Clone, PartialEq)]
pub struct ChatConfig {
    pub service: ChatService,
    /// The text (a `format_fn`'s string).
    pub format: Formatter,
    pub max_attempts: u32,
    pub timeout_s: u64,
}

/// Where a chat message goes, with its credentials.
#[derive(Clone, PartialEq)]
pub enum ChatService {
    /// A Slack-compatible incoming webhook (Mattermost, Rocket.Chat).
    Slack {
        webhook: String,
    },
    Discord {
        webhook: String,
    },
    Matrix {
        homeserver: String,
        room: String,
        token: String,
    },
    Zulip {
        site: String,
        stream: String,
        topic: String,
        email: String,
        api_key: String,
    },
}

impl fmt::Debug for ChatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = match &self.service {
            ChatService::Slack { .. } => "slack",
            ChatService::Discord { .. } => "discord",
            ChatService::Matrix { .. } => "matrix",
            ChatService::Zulip { .. } => "zulip",
        };
        f.debug_struct("ChatConfig")
            .field("service", &service)
            .field("format", &self.format)
            .finish()
    }
}

/// `mb.reporters.github_status{…}` (and GitLab's, Gitea's, Bitbucket's):
/// a commit status for each commit a build builds.
#[derive(Clone, PartialEq)]
pub struct StatusConfig {
    pub forge: Forge,
    pub token: String,
    /// The forge's API root (`https://api.github.com`, a GitHub Enterprise's
    /// `https://HOST/api/v3`, `https://gitlab.com`, a Gitea's root).
    pub base_url: String,
    /// `%(prop:NAME)s` filled from the build; default `moonbot/%(prop:buildername)s`.
    pub context: String,
    pub max_attempts: u32,
    pub timeout_s: u64,
}

/// Which forge's status API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
    BitbucketCloud,
}

impl fmt::Debug for StatusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusConfig")
            .field("forge", &self.forge)
            .field("token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("context", &self.context)
            .finish()
    }
}

impl ReporterKind {
    /// How its generators are used: statuses report every state of a
    /// build; the others, the messages the generators select.
    pub fn usage(&self) -> Use {
        match self {
            ReporterKind::CommitStatus(_) => Use::Statuses,
            _ => Use::Messages,
        }
    }

    /// Whether its requests name what a build builds (the source stamps).
    pub fn reads_sources(&self) -> bool {
        matches!(
            self,
            ReporterKind::CommitStatus(_) | ReporterKind::GitHubComment(_)
        )
    }

    /// `max_attempts`, and `timeout` in seconds.
    pub fn delivery_limits(&self) -> (u32, u64) {
        match self {
            ReporterKind::HttpPush(p) => (p.max_attempts, p.timeout_s),
            ReporterKind::CommitStatus(s) => (s.max_attempts, s.timeout_s),
            ReporterKind::Chat(c) => (c.max_attempts, c.timeout_s),
            ReporterKind::Mail(m) => (m.max_attempts, m.timeout_s),
            ReporterKind::GitHubComment(c) => (c.max_attempts, c.timeout_s),
        }
    }
}

/// How a reporter kind uses its generators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Messages: what the generators select, modes included.
    Messages,
    /// Commit statuses: every state of a selected builder's requests and
    /// builds (queued, started, finished), the generators' `builders`,
    /// `tags` and `branches` filtering; modes do not apply (a status must
    /// reach its end).
    Statuses,
}

impl ReporterConfig {
    /// Buildbot's class name (the API's `kind`).
    pub fn class_name(&self) -> &'static str {
        match &self.kind {
            ReporterKind::HttpPush(_) => "HttpStatusPush",
            ReporterKind::CommitStatus(s) => match s.forge {
                Forge::GitHub => "GitHubStatusPush",
                Forge::GitLab => "GitLabStatusPush",
                Forge::Gitea => "GiteaStatusPush",
                Forge::BitbucketCloud => "BitbucketStatusPush",
            },
            ReporterKind::Mail(_) => "MailNotifier",
            ReporterKind::GitHubComment(_) => "GitHubCommentPush",
            ReporterKind::Chat(c) => match c.service {
                ChatService::Slack { .. } => "SlackStatusPush",
                ChatService::Discord { .. } => "DiscordStatusPush",
                ChatService::Matrix { .. } => "MatrixStatusPush",
                ChatService::Zulip { .. } => "ZulipStatusPush",
            },
        }
    }

    /// The same reporter placed elsewhere in master.lua compares equal.
    pub fn unplaced(&self) -> ReporterConfig {
        let mut r = self.clone();
        r.defined_at.clear();
        r
    }
}

/// `mb.reporters.http_push{…}`, Buildbot's `HttpStatusPush`: a JSON POST
/// of each reported build.
#[derive(Clone, PartialEq)]
pub struct HttpPushConfig {
    pub url: String,
    pub auth: Option<HttpAuth>,
    /// Signs the body: `X-Hub-Signature-256: sha256=<HMAC-SHA256 hex>`.
    pub hmac_secret: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The body (a `format_fn`'s table or string); by default the build as
    /// the API shows it.
    pub format: Formatter,
    /// Tries before a message that keeps failing (5xx, timeouts) is given up.
    pub max_attempts: u32,
    /// Seconds one request may take.
    pub timeout_s: u64,
}

/// Credentials an HTTP reporter sends.
#[derive(Clone, PartialEq)]
pub enum HttpAuth {
    Basic { user: String, password: String },
    Bearer(String),
}

impl fmt::Debug for HttpPushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPushConfig")
            .field("url", &self.url)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("format", &self.format)
            .field("max_attempts", &self.max_attempts)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

impl fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a reporter writes its messages (Buildbot's message formatters).
#[derive(Clone, PartialEq)]
pub enum Formatter {
    /// The transport's own default.
    Default,
    /// `format_fn`: a Lua function of the report's table.
    Function(LuaFn),
    /// `template` (and, for mail, `subject`).
    Template(Template),
}

impl fmt::Debug for Formatter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Formatter::Default => "default",
            Formatter::Function(_) => "format_fn",
            Formatter::Template(_) => "template",
        })
    }
}

/// A message template (Buildbot's `MessageFormatter`): Jinja2 text,
/// rendered with minijinja, its syntax checked when master.lua loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// `template`: the text, body or message.
    pub body: Option<String>,
    /// `subject` (mail only).
    pub subject: Option<String>,
}

/// Which builds a reporter reports, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    pub kind: GeneratorKind,
    /// Only these builders (all when empty).
    pub builders: Vec<String>,
    /// Only builders with one of these tags (all when empty).
    pub tags: Vec<String>,
    /// Only builds of these branches (all when empty).
    pub branches: Vec<String>,
    /// Only builds these schedulers asked for (their `scheduler`
    /// property; all when empty).
    pub schedulers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GeneratorKind {
    /// `mb.generators.build_status`: a finished build, if its result is one
    /// of the modes.
    BuildStatus(Vec<Mode>),
    /// `mb.generators.build_start_end`: every build, when it starts and when
    /// it ends.
    BuildStartEnd,
    /// `mb.generators.buildset`: a finished buildset, in one message with
    /// those of its builds that the filters take and whose result is one of
    /// the modes (none: no message).
    Buildset(Vec<Mode>),
    /// `mb.generators.buildset_combined`: every finished buildset, in one
    /// message with all its builds.
    BuildsetCombined,
    /// `mb.generators.worker_missing`: a worker that stayed away longer than
    /// its `missing_timeout` (these workers; all when empty).
    WorkerMissing(Vec<String>),
}

impl GeneratorConfig {
    /// What it reports, in a few words for the API and the page:
    /// `build_status(failing, problem) builders=a,b`.
    pub fn describe(&self) -> String {
        let modes = |modes: &[Mode]| {
            modes
                .iter()
                .filter_map(|m| MODES.iter().find(|(_, x)| x == m).map(|(n, _)| *n))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = match &self.kind {
            GeneratorKind::BuildStatus(m) => format!("build_status({})", modes(m)),
            GeneratorKind::BuildStartEnd => "build_start_end".into(),
            GeneratorKind::Buildset(m) => format!("buildset({})", modes(m)),
            GeneratorKind::BuildsetCombined => "buildset_combined".into(),
            GeneratorKind::WorkerMissing(w) if w.is_empty() => "worker_missing(all)".into(),
            GeneratorKind::WorkerMissing(w) => format!("worker_missing({})", w.join(", ")),
        };
        for (name, list) in [
            ("builders", &self.builders),
            ("tags", &self.tags),
            ("branches", &self.branches),
            ("schedulers", &self.schedulers),
        ] {
            if !list.is_empty() {
                out.push_str(&format!(" {name}={}", list.join(",")));
            }
        }
        out
    }
}

impl GeneratorKind {
    /// Whether it reports single builds (what a commit status or a pull
    /// request comment is about).
    pub fn is_per_build(&self) -> bool {
        matches!(
            self,
            GeneratorKind::BuildStatus(_) | GeneratorKind::BuildStartEnd
        )
    }
}

/// Buildbot's `mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every finished build.
    All,
    Failing,
    Passing,
    Warnings,
    Exception,
    Cancelled,
    /// A failure after a build of the same builder and branch that did not fail.
    Problem,
    /// A result other than the previous build's of the same builder and branch.
    Change,
}

const MODES: &[(&str, Mode)] = &[
    ("all", Mode::All),
    ("failing", Mode::Failing),
    ("passing", Mode::Passing),
    ("warnings", Mode::Warnings),
    ("exception", Mode::Exception),
    ("cancelled", Mode::Cancelled),
    ("problem", Mode::Problem),
    ("change", Mode::Change),
];

/// Buildbot's default for a failed delivery: try for a while, then give up.
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const DEFAULT_TIMEOUT_S: u64 = 10;

pub(super) fn compile_reporter(
    raw: &RawValue,
    errors: &mut Vec<ConfigError>,
) -> Option<ReporterConfig> {
    let (kind, at, entries) = tagged(
        raw,
        "a reporter (mb.reporters.*{…})",
        "reporters",
        FILE,
        errors,
    )?;
    let mut f = Fields::new("reporter", at.clone(), entries);
    let name = f.string("name");
    let generators: Option<Vec<GeneratorConfig>> = f.list("generators").map(|list| {
        list.iter()
            .filter_map(|g| compile_generator(g, errors))
            .collect()
    });
    let reporter = match kind {
        "reporters.http_push" => {
            let url = f.required_string("url");
            let auth = match (f.string("user"), f.string("password"), f.string("token")) {
                (Some(user), Some(password), None) => Some(HttpAuth::Basic { user, password }),
                (None, None, Some(token)) => Some(HttpAuth::Bearer(token)),
                (None, None, None) => None,
                _ => {
                    f.error("http_push: give 'user' and 'password' (basic auth) or 'token' (bearer), not a mix".into());
                    None
                }
            };
            let hmac_secret = f.string("hmac_secret");
            let mut headers = BTreeMap::new();
            for (name, value) in f.properties("headers") {
                match value {
                    serde_json::Value::String(v) => {
                        headers.insert(name, v);
                    }
                    other => f.error(format!(
                        "http_push: header '{name}' must be a string, not {other}"
                    )),
                }
            }
            let format = formatter(&mut f, false);
            let (max_attempts, timeout_s) = delivery_limits(&mut f);
            url.map(|url| {
                ReporterKind::HttpPush(HttpPushConfig {
                    url,
                    auth,
                    hmac_secret,
                    headers,
                    format,
                    max_attempts,
                    timeout_s,
                })
            })
        }
        status @ ("reporters.github_status"
        | "reporters.gitlab_status"
        | "reporters.gitea_status"
        | "reporters.bitbucket_status") => {
            let (forge, default_base) = match status {
                "reporters.github_status" => (Forge::GitHub, Some("https://api.github.com")),
                "reporters.gitlab_status" => (Forge::GitLab, Some("https://gitlab.com")),
                "reporters.bitbucket_status" => {
                    (Forge::BitbucketCloud, Some("https://api.bitbucket.org"))
                }
                _ => (Forge::Gitea, None),
            };
            let token = f.required_string("token");
            let base_url = match (f.string("base_url"), default_base) {
                (Some(url), _) => Some(url),
                (None, Some(url)) => Some(url.to_string()),
                (None, None) => {
                    f.error("gitea_status: 'base_url' is required (the Gitea's root URL)".into());
                    None
                }
            };
            let context = f
                .string("context")
                .unwrap_or_else(|| "moonbot/%(prop:buildername)s".into());
            let (max_attempts, timeout_s) = delivery_limits(&mut f);
            match (token, base_url) {
                (Some(token), Some(base_url)) => Some(ReporterKind::CommitStatus(StatusConfig {
                    forge,
                    token,
                    base_url,
                    context,
                    max_attempts,
                    timeout_s,
                })),
                _ => None,
            }
        }
        "reporters.mail" => compile_mail(&mut f).map(|m| ReporterKind::Mail(Box::new(m))),
        "reporters.github_comment" => {
            let token = f.required_string("token");
            let base_url = f
                .string("base_url")
                .unwrap_or_else(|| "https://api.github.com".into());
            let format = formatter(&mut f, false);
            let (max_attempts, timeout_s) = delivery_limits(&mut f);
            token.map(|token| {
                ReporterKind::GitHubComment(CommentConfig {
                    token,
                    base_url,
                    format,
                    max_attempts,
                    timeout_s,
                })
            })
        }
        chat @ ("reporters.slack" | "reporters.discord" | "reporters.matrix"
        | "reporters.zulip") => {
            let service = match chat {
                "reporters.slack" => f
                    .required_string("webhook")
                    .map(|webhook| ChatService::Slack { webhook }),
                "reporters.discord" => f
                    .required_string("webhook")
                    .map(|webhook| ChatService::Discord { webhook }),
                "reporters.matrix" => match (
                    f.required_string("homeserver"),
                    f.required_string("room"),
                    f.required_string("token"),
                ) {
                    (Some(homeserver), Some(room), Some(token)) => Some(ChatService::Matrix {
                        homeserver,
                        room,
                        token,
                    }),
                    _ => None,
                },
                _ => match (
                    f.required_string("site"),
                    f.required_string("stream"),
                    f.required_string("email"),
                    f.required_string("api_key"),
                ) {
                    (Some(site), Some(stream), Some(email), Some(api_key)) => {
                        Some(ChatService::Zulip {
                            site,
                            stream,
                            topic: f.string("topic").unwrap_or_else(|| "builds".into()),
                            email,
                            api_key,
                        })
                    }
                    _ => None,
                },
            };
            let format = formatter(&mut f, false);
            let (max_attempts, timeout_s) = delivery_limits(&mut f);
            service.map(|service| {
                ReporterKind::Chat(ChatConfig {
                    service,
                    format,
                    max_attempts,
                    timeout_s,
                })
            })
        }
        other => {
            f.error(format!(
                "reporters: expected a reporter (mb.reporters.*{{…}}), got a {other}"
            ));
            None
        }
    };
    // Each kind's default: http_push every build's start and end; chat every
    // finished build; statuses every state of every build.
    let generators = generators.unwrap_or_else(|| {
        let kind = match &reporter {
            Some(ReporterKind::Chat(_) | ReporterKind::GitHubComment(_)) => {
                GeneratorKind::BuildStatus(vec![Mode::All])
            }
            // Buildbot's MailNotifier default.
            Some(ReporterKind::Mail(_)) => {
                GeneratorKind::BuildStatus(vec![Mode::Failing, Mode::Passing, Mode::Warnings])
            }
            _ => GeneratorKind::BuildStartEnd,
        };
        vec![GeneratorConfig {
            kind,
            builders: Vec::new(),
            tags: Vec::new(),
            branches: Vec::new(),
            schedulers: Vec::new(),
        }]
    });
    // A commit status or a pull request comment is about one build.
    if matches!(
        reporter,
        Some(ReporterKind::CommitStatus(_) | ReporterKind::GitHubComment(_))
    ) && generators.iter().any(|g| !g.kind.is_per_build())
    {
        f.error(format!(
            "{}: its generators must be build_status or build_start_end (it reports single builds)",
            kind.trim_start_matches("reporters.")
        ));
    }
    let url_name = match &reporter {
        Some(ReporterKind::HttpPush(p)) => p.url.clone(),
        Some(ReporterKind::CommitStatus(s)) => format!("{:?}", s.forge).to_lowercase() + "_status",
        Some(ReporterKind::Chat(_) | ReporterKind::Mail(_) | ReporterKind::GitHubComment(_)) => {
            kind.trim_start_matches("reporters.").to_string()
        }
        None => String::new(),
    };
    f.finish(errors);
    Some(ReporterConfig {
        name: name.unwrap_or(url_name),
        kind: reporter?,
        generators,
        defined_at: at,
    })
}

fn compile_generator(raw: &RawValue, errors: &mut Vec<ConfigError>) -> Option<GeneratorConfig> {
    let (kind, at, entries) = tagged(
        raw,
        "a generator (mb.generators.*{…})",
        "generators",
        FILE,
        errors,
    )?;
    let mut f = Fields::new("generator", at, entries);
    // Filters of builds: the generators that report builds take them.
    let filtered = matches!(
        kind,
        "generators.build_status" | "generators.build_start_end" | "generators.buildset"
    );
    let mut filter = |name: &'static str| {
        if filtered {
            f.string_list(name)
        } else {
            Vec::new()
        }
    };
    let (builders, tags, branches, schedulers) = (
        filter("builders"),
        filter("tags"),
        filter("branches"),
        filter("schedulers"),
    );
    let kind = match kind {
        "generators.build_status" => Some(GeneratorKind::BuildStatus(modes(
            &mut f,
            "build_status",
            &["all"],
        ))),
        "generators.build_start_end" => Some(GeneratorKind::BuildStartEnd),
        // Buildbot's BuildSetStatusGenerator default.
        "generators.buildset" => Some(GeneratorKind::Buildset(modes(
            &mut f,
            "buildset",
            &["failing", "passing", "warnings"],
        ))),
        "generators.buildset_combined" => Some(GeneratorKind::BuildsetCombined),
        "generators.worker_missing" => {
            let workers = match f.get("workers") {
                None => Vec::new(),
                Some(RawValue::Str(w)) if w == "all" => Vec::new(),
                Some(RawValue::Str(_)) => {
                    f.error(
                        "worker_missing: 'workers' must be \"all\" or a list of worker names"
                            .into(),
                    );
                    Vec::new()
                }
                Some(_) => f.string_list("workers"),
            };
            Some(GeneratorKind::WorkerMissing(workers))
        }
        other => {
            f.error(format!(
                "generators: expected a generator (mb.generators.*{{…}}), got a {other}"
            ));
            None
        }
    };
    f.finish(errors);
    Some(GeneratorConfig {
        kind: kind?,
        builders,
        tags,
        branches,
        schedulers,
    })
}

/// A generator's `mode` list (`default` when it names none).
fn modes(f: &mut Fields<'_>, generator: &str, default: &[&str]) -> Vec<Mode> {
    let mut names = f.string_list("mode");
    if names.is_empty() {
        names = default.iter().map(|n| n.to_string()).collect();
    }
    let mut modes = Vec::new();
    for name in names {
        match MODES.iter().find(|(n, _)| *n == name) {
            Some((_, m)) => modes.push(*m),
            None => f.error(format!(
                "{generator}: unknown mode '{}' (modes: {})",
                name.escape_debug(),
                MODES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    modes
}

/// A reporter's formatter: its `format_fn`, or its `template` (and
/// `subject`, for mail) with their syntax checked, not both.
fn formatter(f: &mut Fields<'_>, with_subject: bool) -> Formatter {
    let function = match f.get("format_fn") {
        None => None,
        Some(RawValue::Function(func)) => Some(func.clone()),
        Some(other) => {
            f.error(format!(
                "'format_fn' must be a function of the build, not a {}",
                other.type_name()
            ));
            None
        }
    };
    let body = f.string("template");
    let subject = if with_subject {
        f.string("subject")
    } else {
        None
    };
    for (name, text) in [("template", &body), ("subject", &subject)] {
        if let Some(text) = text
            && let Err(e) = minijinja::Environment::new().template_from_str(text)
        {
            f.error(format!("'{name}' is not a valid template: {e}"));
        }
    }
    match (function, body.is_some() || subject.is_some()) {
        (Some(_), true) => {
            f.error("give 'format_fn' or a template, not both".into());
            Formatter::Default
        }
        (Some(function), false) => Formatter::Function(function),
        (None, true) => Formatter::Template(Template { body, subject }),
        (None, false) => Formatter::Default,
    }
}

/// A reporter's `max_attempts` and `timeout` (seconds).
fn delivery_limits(f: &mut Fields<'_>) -> (u32, u64) {
    let max_attempts = f
        .integer("max_attempts", 1, 1000)
        .unwrap_or(DEFAULT_MAX_ATTEMPTS as i64) as u32;
    (
        max_attempts,
        f.duration_s("timeout").unwrap_or(DEFAULT_TIMEOUT_S),
    )
}

/// `mb.reporters.mail{…}`'s fields.
fn compile_mail(f: &mut Fields<'_>) -> Option<MailConfig> {
    let from = f.required_string("from");
    let extra_recipients = f.string_list("extra_recipients");
    let send_to_interested_users = f.boolean("send_to_interested_users", true);
    let lookup = match f.get("lookup") {
        None => None,
        Some(RawValue::Str(domain)) => Some(Lookup::Domain(domain.clone())),
        Some(RawValue::Function(func)) => Some(Lookup::Function(func.clone())),
        Some(other) => {
            f.error(format!(
                "mail: 'lookup' must be a domain or a function of the name, not a {}",
                other.type_name()
            ));
            None
        }
    };
    let mut extra_headers = BTreeMap::new();
    for (name, value) in f.properties("extra_headers") {
        match value {
            serde_json::Value::String(v) => {
                extra_headers.insert(name, v);
            }
            other => f.error(format!(
                "mail: header '{name}' must be a string, not {other}"
            )),
        }
    }
    let format = formatter(f, true);
    let add_logs = match f.get("add_logs") {
        None | Some(RawValue::Bool(false)) => AddLogs::No,
        Some(RawValue::Bool(true)) => AddLogs::All,
        Some(RawValue::Table(_)) => AddLogs::Named(f.string_list("add_logs")),
        Some(other) => {
            f.error(format!(
                "mail: 'add_logs' must be true or a list of log names, not a {}",
                other.type_name()
            ));
            AddLogs::No
        }
    };
    let (max_attempts, timeout_s) = delivery_limits(f);
    let smtp = match f.get("smtp") {
        Some(RawValue::Table(entries)) => {
            let mut s = Fields::new("mail: smtp", f.at.clone(), entries);
            let host = s.required_string("host");
            let tls = match s.string("tls").as_deref() {
                None | Some("starttls") => Some(SmtpTls::StartTls),
                Some("tls") => Some(SmtpTls::Tls),
                Some("none") => Some(SmtpTls::None),
                Some(other) => {
                    s.error(format!(
                        "mail: smtp.tls must be \"none\", \"starttls\" or \"tls\", not '{}'",
                        other.escape_debug()
                    ));
                    None
                }
            };
            let default_port = match tls {
                Some(SmtpTls::Tls) => 465,
                Some(SmtpTls::StartTls) => 587,
                _ => 25,
            };
            let port = s.integer("port", 1, 65535).unwrap_or(default_port) as u16;
            let user = s.string("user");
            let password = s.string("password");
            let mut nested = Vec::new();
            s.finish(&mut nested);
            for e in nested {
                f.error(e.message);
            }
            match (host, tls) {
                (Some(host), Some(tls)) => Some(SmtpConfig {
                    host,
                    port,
                    tls,
                    user,
                    password,
                }),
                _ => None,
            }
        }
        None => {
            f.error("mail: 'smtp = { host = … }' is required".into());
            None
        }
        Some(other) => {
            f.error(format!(
                "mail: 'smtp' must be a table, not a {}",
                other.type_name()
            ));
            None
        }
    };
    Some(MailConfig {
        from: from?,
        extra_recipients,
        send_to_interested_users,
        lookup,
        extra_headers,
        smtp: smtp?,
        format,
        add_logs,
        max_attempts,
        timeout_s,
    })
}
