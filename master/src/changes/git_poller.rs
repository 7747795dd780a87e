//! `mb.changes.git_poller`: a service that asks a git remote every
//! `poll_interval` what moved, and makes a change of each new commit
//! (Buildbot's `GitPoller`).
//!
//! A poll is one `ls-remote` (every branch's head, cheap however many
//! branches there are), then one `fetch` of only the branches that moved,
//! then `rev-list` per moved branch against every head already known, so a
//! commit merged from a known branch is not reported again. The heads are
//! kept in the poller's object state (`lastRev`, as Buildbot names it) and
//! written in the same transaction as the changes they produced: a restart
//! neither repeats nor misses a commit, and commits pushed while the master
//! was down are reported by the first poll after it.
//!
//! The first poll ever records the heads and reports nothing; a branch that
//! appears later reports the commits no known branch has. A force-push (the
//! old head is not an ancestor of the new) reports the new head only.

use super::git::{Git, GitError, RemoteRefs};
use crate::config::{BranchSelection, ChangeSourceConfig, GitPollerConfig, LuaGeneration};
use crate::data::DataError;
use crate::data::changes::NewChange;
use crate::lua::RawValue;
use crate::services::TaskService;
use crate::shared::Shared;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// The object class under which a poller's state is kept.
pub const STATE_CLASS: &str = "GitPoller";
/// The state key of the last head seen per branch (Buildbot's name).
pub const LAST_REVISIONS: &str = "lastRev";

/// Why a poll did not finish; the next one tries again.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Data(#[from] DataError),
}

/// What one poll did.
#[derive(Debug, Default, PartialEq)]
pub struct PollOutcome {
    /// Branches (or tags) followed.
    pub followed: usize,
    /// Of those, how many moved since the last poll.
    pub moved: usize,
    /// Changes made.
    pub changes: Vec<i64>,
}

/// Start the git poller `config.name` (a [`TaskService`]).
pub fn start(shared: Arc<Shared>, config: &GitPollerConfig) -> TaskService {
    let name = config.name.clone();
    TaskService::spawn("git poller", &config.name, move |(settings, shutdown)| {
        run(shared, name, settings, shutdown)
    })
}

/// The poller's settings in the running configuration, with its Lua state.
fn settings_of(shared: &Shared, name: &str) -> Option<(GitPollerConfig, Arc<LuaGeneration>)> {
    let running = shared.running_config();
    let ChangeSourceConfig::GitPoller(poller) = running.loaded.config.change_source(name)?;
    Some(((**poller).clone(), running.loaded.lua.clone()))
}

async fn run(
    shared: Arc<Shared>,
    name: String,
    mut settings: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let Some((config, _)) = settings_of(&shared, &name) else {
            return;
        };
        let wait = if first && config.poll_at_launch {
            Duration::ZERO
        } else {
            Duration::from_secs(config.poll_interval_s) + random_delay(config.poll_random_delay_s)
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            // New settings: wait again with the new interval.
            _ = settings.changed() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        first = false;
        let started = std::time::Instant::now();
        let polled = tokio::select! {
            _ = shutdown.changed() => return,
            polled = poll(&shared, &name) => polled,
        };
        match polled {
            Ok(outcome) if !outcome.changes.is_empty() => info!(
                poller = %name,
                followed = outcome.followed,
                moved = outcome.moved,
                changes = outcome.changes.len(),
                poll_ms = started.elapsed().as_millis() as u64,
                "new commits"
            ),
            Ok(_) => {}
            Err(e) => warn!(poller = %name, "poll failed, the next one tries again: {e}"),
        }
    }
}

/// Up to `max_s` seconds, at random.
fn random_delay(max_s: u64) -> Duration {
    if max_s == 0 {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    Duration::from_millis(u64::from_le_bytes(bytes) % (max_s * 1000 + 1))
}

/// Where a poller keeps its bare repository: under the master directory,
/// named by a digest of its name (a name may be a URL).
fn workdir(shared: &Shared, name: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    shared
        .dir
        .join("gitpoller-work")
        .join(&hex::encode(digest)[..16])
}

/// One poll of the poller `name`.
pub async fn poll(shared: &Shared, name: &str) -> Result<PollOutcome, PollError> {
    let Some((config, lua)) = settings_of(shared, name) else {
        return Ok(PollOutcome::default());
    };
    let data = &shared.data;
    let git = Git::new(&workdir(shared, name), &config.credentials)?;
    git.init().await?;
    let objectid = data.object_id(name, STATE_CLASS).await?;
    let last: Option<BTreeMap<String, String>> = data
        .object_state(objectid, LAST_REVISIONS)
        .await?
        .and_then(|v| serde_json::from_value(v).ok());

    let remote = git.ls_remote(&config.repourl, config.only_tags).await?;
    let heads = followed(&config, &lua, &remote).await;
    let mut outcome = PollOutcome {
        followed: heads.len(),
        ..PollOutcome::default()
    };
    let Some(last) = last else {
        // The first poll ever: fetch and record, report nothing.
        let all: Vec<String> = heads.keys().cloned().collect();
        git.fetch(&config.repourl, &all, config.only_tags).await?;
        data.add_polled_changes(Vec::new(), objectid, LAST_REVISIONS, &state_value(&heads))
            .await?;
        info!(poller = %name, branches = heads.len(), "first poll: heads recorded");
        return Ok(outcome);
    };
    let moved: Vec<String> = heads
        .iter()
        .filter(|(branch, sha)| last.get(*branch) != Some(*sha))
        .map(|(branch, _)| branch.clone())
        .collect();
    outcome.moved = moved.len();
    if moved.is_empty() && heads.len() == last.len() {
        // Nothing moved, appeared or went.
        return Ok(outcome);
    }
    git.fetch(&config.repourl, &moved, config.only_tags).await?;

    let mut changes = Vec::new();
    for branch in &moved {
        let new = &heads[branch];
        // Exclude every head already known, so a commit merged from another
        // branch is not reported again.
        let known: Vec<&str> = last.values().map(String::as_str).collect();
        let mut commits = match last.get(branch) {
            Some(old) if git.has_commit(old).await && git.is_ancestor(old, new).await => {
                git.new_commits(new, &known).await?
            }
            // Rewritten history: the new head only, not all it holds.
            Some(_) => vec![new.clone()],
            None => git.new_commits(new, &known).await?,
        };
        if commits.is_empty() && config.build_pushes_with_no_commits {
            commits.push(new.clone());
        }
        for sha in commits {
            let commit = git.commit(&sha).await?;
            changes.push(NewChange {
                author: commit.author,
                committer: Some(commit.committer),
                comments: commit.comments,
                branch: Some(branch.clone()),
                revision: Some(sha),
                revlink: None,
                when_timestamp: Some(commit.when),
                category: config.category.clone(),
                repository: config.repourl.clone(),
                codebase: config.codebase.clone(),
                project: config.project.clone(),
                files: commit.files,
                properties: BTreeMap::new(),
            });
        }
    }
    outcome.changes = data
        .add_polled_changes(changes, objectid, LAST_REVISIONS, &state_value(&heads))
        .await?;
    Ok(outcome)
}

fn state_value(heads: &BTreeMap<String, String>) -> Value {
    serde_json::to_value(heads).unwrap_or(Value::Null)
}

/// The remote's refs this poller follows, short name → head.
async fn followed(
    config: &GitPollerConfig,
    lua: &LuaGeneration,
    remote: &RemoteRefs,
) -> BTreeMap<String, String> {
    if config.only_tags {
        return remote.refs.clone();
    }
    let mut out = BTreeMap::new();
    for (branch, sha) in &remote.refs {
        let wanted = match &config.branches {
            BranchSelection::All => true,
            BranchSelection::RemoteHead => remote.head.as_deref() == Some(branch.as_str()),
            BranchSelection::Listed(names) => names.contains(branch),
            BranchSelection::Lua(function) => {
                match lua.call(function, Value::from(branch.as_str())).await {
                    Ok(RawValue::Nil | RawValue::Bool(false)) => false,
                    Ok(_) => true,
                    Err(e) => {
                        warn!(poller = %config.name, branch = %branch, "the branches function failed, so the branch is not followed: {e}");
                        false
                    }
                }
            }
        };
        if wanted {
            out.insert(branch.clone(), sha.clone());
        }
    }
    out
}
