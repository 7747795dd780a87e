//! `change_sources = { mb.changes.git_poller{…} }`: what the master watches
//! for new commits itself (webhooks are `www.change_hooks`, in `settings`).

use super::FILE;
use crate::lua::fields::tagged;
use crate::lua::{ConfigError, Fields, LuaFn, RawValue};
use std::fmt;

/// A change source of master.lua.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeSourceConfig {
    GitPoller(Box<GitPollerConfig>),
}

impl ChangeSourceConfig {
    pub fn name(&self) -> &str {
        match self {
            ChangeSourceConfig::GitPoller(p) => &p.name,
        }
    }

    pub fn defined_at(&self) -> &str {
        match self {
            ChangeSourceConfig::GitPoller(p) => &p.defined_at,
        }
    }

    /// The same source placed elsewhere in master.lua compares equal.
    pub fn unplaced(&self) -> ChangeSourceConfig {
        let mut s = self.clone();
        match &mut s {
            ChangeSourceConfig::GitPoller(p) => p.defined_at.clear(),
        }
        s
    }
}

/// Which branches a git poller follows.
#[derive(Debug, Clone, PartialEq)]
pub enum BranchSelection {
    /// The remote's default branch (what its `HEAD` names): the default.
    RemoteHead,
    /// These branches.
    Listed(Vec<String>),
    /// `"all"`: every branch.
    All,
    /// A Lua function of the branch name.
    Lua(LuaFn),
}

/// How the poller proves who it is to the remote.
#[derive(Clone, PartialEq, Default)]
pub struct GitCredentials {
    /// An SSH private key (the key's text), for `ssh://` and `user@host:` URLs.
    pub ssh_private_key: Option<String>,
    /// An HTTPS token, sent as the password of `http_user`.
    pub http_token: Option<String>,
    pub http_user: String,
}

impl fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("GitCredentials")
            .field("ssh_private_key", &shown(&self.ssh_private_key))
            .field("http_token", &shown(&self.http_token))
            .field("http_user", &self.http_user)
            .finish()
    }
}

/// `mb.changes.git_poller{…}`, Buildbot's `GitPoller`.
#[derive(Debug, Clone, PartialEq)]
pub struct GitPollerConfig {
    /// Unique among change sources; the repository URL by default.
    pub name: String,
    pub repourl: String,
    pub branches: BranchSelection,
    /// Follow tags instead of branches.
    pub only_tags: bool,
    pub poll_interval_s: u64,
    pub poll_at_launch: bool,
    /// Up to this many seconds are added at random to each wait.
    pub poll_random_delay_s: u64,
    pub project: String,
    pub category: Option<String>,
    pub codebase: String,
    /// A branch that moves with no new commit (a new branch at a known
    /// commit, a reset) still makes a change for its head.
    pub build_pushes_with_no_commits: bool,
    pub credentials: GitCredentials,
    pub defined_at: String,
}

/// Buildbot's default poll interval: ten minutes.
pub const DEFAULT_POLL_INTERVAL_S: u64 = 600;

pub(super) fn compile_change_source(
    raw: &RawValue,
    errors: &mut Vec<ConfigError>,
) -> Option<ChangeSourceConfig> {
    let (kind, at, entries) = tagged(
        raw,
        "a change source (mb.changes.*{…})",
        "change_sources",
        FILE,
        errors,
    )?;
    let mut f = Fields::new("git_poller", at.clone(), entries);
    let source = match kind {
        "changes.git_poller" => {
            compile_git_poller(&mut f, at).map(|p| ChangeSourceConfig::GitPoller(Box::new(p)))
        }
        other => {
            f.error(format!(
                "change_sources: expected a change source (mb.changes.*{{…}}), got a {other}"
            ));
            None
        }
    };
    f.finish(errors);
    source
}

fn compile_git_poller(f: &mut Fields<'_>, at: String) -> Option<GitPollerConfig> {
    let repourl = f.required_string("repourl");
    let name = f.string("name");
    if let Some(n) = &name
        && !crate::lua::fields::valid_label(n)
    {
        f.error(format!(
            "git_poller: name {n:?} must be 1-{} characters, not blank, without control characters",
            crate::lua::fields::MAX_LABEL_CHARS
        ));
    }
    let branches = match f.get("branches") {
        None => BranchSelection::RemoteHead,
        Some(RawValue::Str(s)) if s == "all" => BranchSelection::All,
        Some(RawValue::Function(function)) => BranchSelection::Lua(function.clone()),
        Some(RawValue::Table(_)) => {
            let listed = f.string_list("branches");
            if listed.is_empty() {
                f.error("git_poller: 'branches' lists no branch".into());
            }
            BranchSelection::Listed(
                listed
                    .into_iter()
                    .map(|b| {
                        b.strip_prefix("refs/heads/")
                            .map(str::to_string)
                            .unwrap_or(b)
                    })
                    .collect(),
            )
        }
        Some(other) => {
            let shown = match other {
                RawValue::Str(s) => format!("\"{s}\""),
                other => format!("a {}", other.type_name()),
            };
            f.error(format!(
                "git_poller: 'branches' must be a list of branch names, \"all\" or a function of the branch name, not {shown}"
            ));
            BranchSelection::RemoteHead
        }
    };
    let only_tags = f.boolean("only_tags", false);
    let poll_interval_s = f
        .duration_s("poll_interval")
        .unwrap_or(DEFAULT_POLL_INTERVAL_S);
    let poll_at_launch = f.boolean("poll_at_launch", false);
    let poll_random_delay_s = match f.get("poll_random_delay") {
        Some(RawValue::Int(0)) | None => 0,
        Some(_) => f.duration_s("poll_random_delay").unwrap_or(0),
    };
    let project = f.string("project").unwrap_or_default();
    let category = f.string("category");
    let codebase = f.string("codebase").unwrap_or_default();
    let build_pushes_with_no_commits = f.boolean("build_pushes_with_no_commits", false);
    let credentials = GitCredentials {
        ssh_private_key: f.string("ssh_private_key"),
        http_token: f.string("http_token"),
        http_user: f.string("http_user").unwrap_or_else(|| "git".into()),
    };
    if credentials.ssh_private_key.is_some() && credentials.http_token.is_some() {
        f.error("git_poller: give 'ssh_private_key' or 'http_token', not both".into());
    }
    if let Some(url) = &repourl
        && credentials.http_token.is_some()
        && !url.starts_with("https://")
    {
        f.error("git_poller: 'http_token' is only sent to an https:// repourl".into());
    }
    if let Some(url) = &repourl
        && url
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next())
            .is_some_and(|authority| authority.contains(':') && authority.contains('@'))
    {
        f.error(
            "git_poller: 'repourl' holds a password, which would show in every change; give it as 'http_token'".into(),
        );
    }
    let repourl = repourl?;
    Some(GitPollerConfig {
        name: name.unwrap_or_else(|| repourl.clone()),
        repourl,
        branches,
        only_tags,
        poll_interval_s,
        poll_at_launch,
        poll_random_delay_s,
        project,
        category,
        codebase,
        build_pushes_with_no_commits,
        credentials,
        defined_at: at,
    })
}
