//! The `git` command line, as the git poller uses it: which refs a remote
//! has (`ls-remote`), one fetch of the refs that moved into a bare
//! repository of the master's, and what the new commits are (`rev-list`,
//! `show`, `diff-tree`). No database and no scheduling here: the poller
//! (`git_poller.rs`) decides what to ask.
//!
//! Credentials never go on a command line (where `ps` shows them): an HTTPS
//! token is an `http.extraHeader` given through `GIT_CONFIG_*` variables,
//! and an SSH key is a 0600 file named by `GIT_SSH_COMMAND`.

use crate::config::GitCredentials;
use base64::Engine;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest a git command may run (a fetch of a large repository).
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
#[error("git {command}: {message}")]
pub struct GitError {
    pub command: String,
    pub message: String,
}

/// A commit as a change needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitInfo {
    pub author: String,
    pub committer: String,
    pub when: f64,
    pub comments: String,
    pub files: Vec<String>,
}

/// What a remote has: its default branch and the refs asked for.
#[derive(Debug, Default, PartialEq)]
pub struct RemoteRefs {
    /// The branch its `HEAD` names.
    pub head: Option<String>,
    /// Short name (`main`, `v1.0`) → the commit it points at (a tag peeled).
    pub refs: BTreeMap<String, String>,
}

/// A bare repository of the master's that mirrors what a poller follows.
pub struct Git {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Git {
    /// The repository at `dir` (made by [`Git::init`]), with credentials.
    pub fn new(dir: &Path, credentials: &GitCredentials) -> Result<Git, GitError> {
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("LC_ALL".to_string(), "C".to_string()),
        ];
        if let Some(token) = &credentials.http_token {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{token}", credentials.http_user));
            env.extend([
                ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
                (
                    "GIT_CONFIG_KEY_0".to_string(),
                    "http.extraHeader".to_string(),
                ),
                (
                    "GIT_CONFIG_VALUE_0".to_string(),
                    format!("Authorization: Basic {basic}"),
                ),
            ]);
        }
        if let Some(key) = &credentials.ssh_private_key {
            let key_file = dir.with_extension("ssh-key");
            write_private(&key_file, key)?;
            let known_hosts = dir.with_extension("known_hosts");
            env.push((
                "GIT_SSH_COMMAND".to_string(),
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile='{}'",
                    key_file.display(),
                    known_hosts.display()
                ),
            ));
        }
        Ok(Git {
            dir: dir.to_path_buf(),
            env,
        })
    }

    /// Make the bare repository if it is not there yet.
    pub async fn init(&self) -> Result<(), GitError> {
        if self.dir.join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| GitError {
            command: "init".into(),
            message: format!("cannot create {}: {e}", self.dir.display()),
        })?;
        self.run(&["init", "--bare", "--quiet"], None).await?;
        Ok(())
    }

    /// The remote's branches (or tags) and default branch, in one
    /// `ls-remote`: what a poll asks before fetching anything.
    pub async fn ls_remote(&self, url: &str, tags: bool) -> Result<RemoteRefs, GitError> {
        let pattern = if tags { "refs/tags/*" } else { "refs/heads/*" };
        let out = self
            .run(&["ls-remote", "--symref", url, "HEAD", pattern], None)
            .await?;
        let mut remote = RemoteRefs::default();
        let mut peeled = BTreeMap::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("ref: ") {
                if let Some((target, "HEAD")) = rest.split_once('\t') {
                    remote.head = target.strip_prefix("refs/heads/").map(str::to_string);
                }
                continue;
            }
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            let short = name
                .strip_prefix("refs/heads/")
                .or_else(|| name.strip_prefix("refs/tags/"));
            let Some(short) = short else {
                continue;
            };
            match short.strip_suffix("^{}") {
                Some(tag) => {
                    peeled.insert(tag.to_string(), sha.to_string());
                }
                None => {
                    remote.refs.insert(short.to_string(), sha.to_string());
                }
            }
        }
        remote.refs.extend(peeled);
        Ok(remote)
    }

    /// Fetch these refs (short names) of `url` in one `git fetch`.
    pub async fn fetch(&self, url: &str, refs: &[String], tags: bool) -> Result<(), GitError> {
        if refs.is_empty() {
            return Ok(());
        }
        let kind = if tags { "tags" } else { "heads" };
        let mut refspecs = String::new();
        for name in refs {
            refspecs.push_str(&format!("+refs/{kind}/{name}:refs/moonbot/{kind}/{name}\n"));
        }
        self.run(
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--stdin",
                url,
            ],
            Some(refspecs),
        )
        .await?;
        Ok(())
    }

    /// Whether `sha` is a commit this repository has.
    pub async fn has_commit(&self, sha: &str) -> bool {
        self.run(&["cat-file", "-e", &format!("{sha}^{{commit}}")], None)
            .await
            .is_ok()
    }

    /// Whether `old` is an ancestor of `new` (a fast-forward).
    pub async fn is_ancestor(&self, old: &str, new: &str) -> bool {
        self.run(&["merge-base", "--is-ancestor", old, new], None)
            .await
            .is_ok()
    }

    /// The commits reachable from `new` and from none of `known`, oldest first.
    pub async fn new_commits(&self, new: &str, known: &[&str]) -> Result<Vec<String>, GitError> {
        let mut input = format!("{new}\n");
        for k in known {
            input.push_str(&format!("^{k}\n"));
        }
        let out = self
            .run(
                &[
                    "rev-list",
                    "--reverse",
                    "--topo-order",
                    "--ignore-missing",
                    "--stdin",
                ],
                Some(input),
            )
            .await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// A commit's author, committer, time, message and files.
    pub async fn commit(&self, sha: &str) -> Result<CommitInfo, GitError> {
        let out = self
            .run(
                &[
                    "show",
                    "-s",
                    "--format=%an <%ae>%x00%cn <%ce>%x00%ct%x00%B",
                    sha,
                ],
                None,
            )
            .await?;
        let mut parts = out.splitn(4, '\0');
        let mut next = || parts.next().unwrap_or("").to_string();
        let (author, committer, when, comments) = (next(), next(), next(), next());
        let files = self
            .run(
                &[
                    "diff-tree",
                    "--root",
                    "--no-commit-id",
                    "--name-only",
                    "-r",
                    "-z",
                    sha,
                ],
                None,
            )
            .await?;
        Ok(CommitInfo {
            author,
            committer,
            when: when.trim().parse().unwrap_or(0.0),
            comments: comments.trim_end().to_string(),
            files: files
                .split('\0')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    async fn run(&self, args: &[&str], stdin: Option<String>) -> Result<String, GitError> {
        let failed = |message: String| GitError {
            command: args.first().copied().unwrap_or("").to_string(),
            message,
        };
        let mut command = tokio::process::Command::new("git");
        command
            .arg("--git-dir")
            .arg(&self.dir)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot run git: {e}")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|e| failed(format!("writing to git: {e}")))?;
        }
        let output = tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| failed(format!("no answer in {} s", GIT_TIMEOUT.as_secs())))?
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(
                stderr.trim().lines().last().unwrap_or("failed").to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Write `text` to `path`, readable by this user only.
fn write_private(path: &Path, text: &str) -> Result<(), GitError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| GitError {
        command: "ssh key".into(),
        message: format!("cannot write {}: {e}", path.display()),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    // An older file keeps its mode through `open`: make it private too.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(failed)?;
    let mut text = text.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    file.write_all(text.as_bytes()).map_err(failed)
}
