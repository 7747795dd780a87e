//! `mb.steps.git { repourl, branch, mode, method, … }`: check out exactly what
//! the build builds (Buildbot's `Git` source step), as a series of `git`
//! commands on the worker, each shown in the step's log.
//!
//! What it checks out: the revision of the build's source stamp for the
//! step's `codebase`; without one (a forced build naming only a branch) the
//! head of the stamp's branch, else of `branch`, else of the remote's
//! default branch. The stamp's branch wins over `branch`, as in Buildbot.
//! A branch may be a full ref (`refs/pull/7/head`, a merge request's ref),
//! which is fetched as it is. `got_revision` is set to the commit checked
//! out (a table by codebase when `codebase` is not empty).
//!
//! Why a shared object store (★, `shared = true`, the default): every
//! builder of one worker that builds the same repository would otherwise
//! keep its own full clone. The step keeps one bare mirror per repository
//! under the worker's builds directory (`.moonbot-git/<sha256 of the URL>`),
//! fetches into it, and points each checkout's object store at it (git's
//! alternates, what `clone --reference` does); a checkout then holds only
//! its work tree and index. The mirror never prunes or garbage-collects,
//! so no checkout loses an object it borrows. `shallow` fetches only what
//! it needs into the checkout instead (the wanted revision itself, so an
//! older revision builds too, which Buildbot's shallow mode cannot).
//!
//! An ssh key (`ssh_private_key`, from a secret) is written to a file only
//! the worker's user may read, for this step alone, and removed after it.

use super::shell::{self, ShellStep};
use super::{Collected, Compiled, StepContext, StepHost, StepKind};
use crate::lua::Fields;
use crate::render::Renderable;
use crate::results::{EXCEPTION, FAILURE, RETRY, SUCCESS};
use moonbot_worker::protocol::{CommandLine, RemoteCommand, ShellCommand};
use serde_json::Value;
use std::collections::BTreeMap;

/// How much of a previous checkout is reused (Buildbot's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Update the checkout in place; untracked files stay.
    Incremental,
    /// A clean tree, made as `method` says.
    Full,
}

/// How a full checkout is made clean (Buildbot's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Remove the checkout and start again.
    Clobber,
    /// Remove every untracked and ignored file (`git clean -xdf`).
    Fresh,
    /// Remove untracked files, keep ignored ones (`git clean -df`).
    Clean,
    /// Keep an incremental checkout in `source` and copy it to the workdir.
    Copy,
}

/// The step as master.lua describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GitStep {
    pub repourl: Renderable,
    pub branch: Option<Renderable>,
    pub mode: Mode,
    pub method: Method,
    /// Fetch this many commits (`shallow = true` is 1).
    pub shallow: Option<u32>,
    pub submodules: bool,
    /// A repository on the worker whose objects the checkout may borrow.
    pub reference: Option<Renderable>,
    /// Try a failed fetch once more.
    pub retry_fetch: bool,
    /// When the update fails, remove the checkout and check out anew once.
    pub clobber_on_failure: bool,
    pub ssh_private_key: Option<Renderable>,
    pub ssh_known_hosts: Option<Renderable>,
    /// Borrow objects from the worker's mirror of the repository.
    pub shared: bool,
    pub codebase: String,
    /// `workdir` (default `build`), `env` and time limits.
    pub shell: ShellStep,
}

pub fn compile(f: &mut Fields<'_>, builder: &str) -> Compiled {
    let what = f.what.clone();
    let repourl = crate::render::field(f, "repourl");
    if f.get("repourl").is_none() {
        f.error(format!("{what}: 'repourl' is required"));
    }
    let branch = crate::render::field(f, "branch");
    let mode = match f.string("mode").as_deref() {
        None | Some("incremental") => Mode::Incremental,
        Some("full") => Mode::Full,
        Some(other) => {
            f.error(format!(
                "{what}: 'mode' must be \"incremental\" or \"full\", not \"{other}\""
            ));
            Mode::Incremental
        }
    };
    let method = match f.string("method").as_deref() {
        None | Some("fresh") => Method::Fresh,
        Some("clobber") => Method::Clobber,
        Some("clean") => Method::Clean,
        Some("copy") => Method::Copy,
        Some(other) => {
            f.error(format!(
                "{what}: 'method' must be \"clobber\", \"fresh\", \"clean\" or \"copy\", not \"{other}\""
            ));
            Method::Fresh
        }
    };
    if mode == Mode::Incremental && f.get("method").is_some() {
        f.error(format!(
            "{what}: 'method' applies to mode = \"full\" only (an incremental checkout keeps what is there)"
        ));
    }
    let shallow = match f.get("shallow") {
        None | Some(crate::lua::RawValue::Bool(false)) => None,
        Some(crate::lua::RawValue::Bool(true)) => Some(1),
        Some(_) => f.integer("shallow", 1, 1_000_000).map(|n| n as u32),
    };
    let submodules = f.boolean("submodules", false);
    let reference = crate::render::field(f, "reference");
    let retry_fetch = f.boolean("retry_fetch", false);
    let clobber_on_failure = f.boolean("clobber_on_failure", false);
    let ssh_private_key = crate::render::field(f, "ssh_private_key");
    let ssh_known_hosts = crate::render::field(f, "ssh_known_hosts");
    let shared = f.boolean("shared", true);
    let codebase = f.string("codebase").unwrap_or_default();
    let shell = shell::compile_settings(f, builder);
    Compiled {
        kind: repourl.map(|repourl| {
            StepKind::Git(Box::new(GitStep {
                repourl,
                branch,
                mode,
                method,
                shallow,
                submodules,
                reference,
                retry_fetch,
                clobber_on_failure,
                ssh_private_key,
                ssh_known_hosts,
                shared,
                codebase,
                shell,
            }))
        }),
        default_name: "git".into(),
    }
}

/// Why the checkout stopped: a step result, or the master's own failure.
enum Stop<E> {
    Result(i32),
    Host(E),
}

impl<E> From<E> for Stop<E> {
    fn from(e: E) -> Self {
        Stop::Host(e)
    }
}

/// What one run of the step works with, rendered.
struct Plan {
    repourl: String,
    /// The ref to fetch: a branch name, a full ref, or `HEAD`.
    branch: String,
    /// The revision to check out, when the build names one.
    revision: Option<String>,
    /// The checkout, relative to the worker's builds directory.
    repo: String,
    /// Where `copy` keeps its incremental checkout.
    source: Option<String>,
    /// The shared mirror, relative to the builds directory.
    mirror: Option<String>,
    reference: Option<String>,
    env: BTreeMap<String, Option<String>>,
    /// The directory holding the ssh key, relative to the builds directory.
    ssh_dir: Option<String>,
}

pub async fn run<H: StepHost>(
    step: &GitStep,
    ctx: &mut StepContext<'_, H>,
) -> Result<i32, H::Error> {
    let plan = match plan(step, ctx).await {
        Ok(plan) => plan,
        Err(e) => {
            return ctx
                .cannot_start(&format!("could not render the git step: {e}"))
                .await;
        }
    };
    let short = plan
        .revision
        .as_deref()
        .map(|r| r.chars().take(12).collect::<String>());
    ctx.host
        .begin(&format!(
            "git {}{}",
            plan.branch,
            short.map(|r| format!(" {r}")).unwrap_or_default()
        ))
        .await?;
    let mut git = Git {
        ctx,
        env: plan.env.clone(),
        step,
        builds_dir: None,
    };
    let outcome = git.checkout(&plan).await;
    if let Some(dir) = &plan.ssh_dir {
        // The key leaves the worker whatever happened.
        let _ = git
            .ctx
            .run_command(RemoteCommand::Rmdir { path: dir.clone() })
            .await?;
    }
    match outcome {
        Ok(result) => Ok(result),
        Err(Stop::Result(result)) => Ok(result),
        Err(Stop::Host(e)) => Err(e),
    }
}

/// Render what master.lua gave and decide the paths.
async fn plan<H: StepHost>(
    step: &GitStep,
    ctx: &StepContext<'_, H>,
) -> Result<Plan, crate::render::RenderError> {
    let r = ctx.render;
    let repourl = r.render_string(&step.repourl).await?;
    let stamp = r.sources.iter().find(|s| s.codebase == step.codebase);
    let step_branch = match &step.branch {
        Some(b) => Some(r.render_string(b).await?),
        None => None,
    };
    let branch = stamp
        .and_then(|s| s.branch.clone())
        .filter(|b| !b.is_empty())
        .or(step_branch.filter(|b| !b.is_empty()))
        .unwrap_or_else(|| "HEAD".into());
    let revision = stamp
        .and_then(|s| s.revision.clone())
        .filter(|r| !r.is_empty());
    let workdir = r.render_string(&step.shell.workdir).await?;
    let (repo, source) = if step.mode == Mode::Full && step.method == Method::Copy {
        (ctx.path("source"), Some(ctx.path(&workdir)))
    } else {
        (ctx.path(&workdir), None)
    };
    let mut env = BTreeMap::from([("GIT_TERMINAL_PROMPT".to_string(), Some("0".to_string()))]);
    env.extend(shell::render_env(&step.shell.env, r).await?);
    let reference = match &step.reference {
        Some(p) => Some(r.render_string(p).await?),
        None => None,
    };
    let mirror = (step.shared && step.shallow.is_none()).then(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, repourl.as_bytes());
        format!(".moonbot-git/{}.git", &hex::encode(digest.as_ref())[..24])
    });
    let ssh_dir = step
        .ssh_private_key
        .is_some()
        .then(|| ctx.path(".moonbot-ssh"));
    Ok(Plan {
        repourl,
        branch,
        revision,
        repo,
        source,
        mirror,
        reference,
        env,
        ssh_dir,
    })
}

/// The step's commands, with the environment they share.
struct Git<'s, 'a, H> {
    ctx: &'s mut StepContext<'a, H>,
    env: BTreeMap<String, Option<String>>,
    step: &'s GitStep,
    /// The worker's builds directory as an absolute path, once asked.
    builds_dir: Option<String>,
}

impl<H: StepHost> Git<'_, '_, H> {
    /// Run `argv` in `workdir` (relative to the builds directory); a result
    /// that is not SUCCESS or FAILURE stops the step.
    async fn run(
        &mut self,
        workdir: &str,
        argv: &[&str],
        collect: Option<&mut Collected>,
    ) -> Result<i32, Stop<H::Error>> {
        self.run_with(workdir, argv, &BTreeMap::new(), collect)
            .await
    }

    async fn run_with(
        &mut self,
        workdir: &str,
        argv: &[&str],
        extra_env: &BTreeMap<String, Option<String>>,
        collect: Option<&mut Collected>,
    ) -> Result<i32, Stop<H::Error>> {
        let mut env = self.env.clone();
        env.extend(extra_env.clone());
        let command = ShellCommand {
            command: CommandLine::Argv(argv.iter().map(|s| s.to_string()).collect()),
            workdir: workdir.to_string(),
            env,
            timeout_s: self.step.shell.timeout_s,
            max_time_s: self.step.shell.max_time_s,
            sigterm_grace_s: self.step.shell.sigterm_grace_s,
            io: Default::default(),
        };
        self.ctx
            .host
            .header(&format!("{} (in {workdir})", command.command.display()))
            .await?;
        let result = self
            .ctx
            .run_command_collecting(RemoteCommand::Shell(command), collect)
            .await?;
        match result {
            SUCCESS | FAILURE => Ok(result),
            other => Err(Stop::Result(other)),
        }
    }

    /// Run `argv`, which must succeed.
    async fn must(&mut self, workdir: &str, argv: &[&str]) -> Result<(), Stop<H::Error>> {
        match self.run(workdir, argv, None).await? {
            SUCCESS => Ok(()),
            other => Err(Stop::Result(other)),
        }
    }

    /// Whether `path` (relative to the builds directory) exists.
    async fn exists(&mut self, path: &str) -> Result<bool, Stop<H::Error>> {
        match self
            .ctx
            .host
            .run_remote(
                RemoteCommand::Stat {
                    path: path.to_string(),
                },
                super::RemoteIo::Log,
            )
            .await
        {
            Ok(outcome) => Ok(outcome.stat.is_some_and(|s| s.exists)),
            Err(super::RemoteFailure::ConnectionLost(why)) => {
                self.ctx
                    .host
                    .header(&format!("lost the connection to the worker: {why}"))
                    .await?;
                Err(Stop::Result(RETRY))
            }
            Err(super::RemoteFailure::Failed(why) | super::RemoteFailure::Refused(why)) => {
                self.ctx.host.header(&why).await?;
                Err(Stop::Result(EXCEPTION))
            }
        }
    }

    /// Stdout of a command that must succeed, trimmed.
    async fn output(&mut self, workdir: &str, argv: &[&str]) -> Result<String, Stop<H::Error>> {
        let mut out = Collected::default();
        match self.run(workdir, argv, Some(&mut out)).await? {
            SUCCESS => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            other => Err(Stop::Result(other)),
        }
    }

    /// The worker's builds directory as an absolute path (`pwd` there, once):
    /// alternates and `GIT_SSH_COMMAND` need absolute paths.
    async fn builds_dir(&mut self) -> Result<String, Stop<H::Error>> {
        if let Some(dir) = &self.builds_dir {
            return Ok(dir.clone());
        }
        let dir = self.output(".", &["pwd"]).await?;
        self.builds_dir = Some(dir.clone());
        Ok(dir)
    }

    /// A fetch, tried twice with `retry_fetch`.
    async fn fetch(&mut self, workdir: &str, argv: &[&str]) -> Result<(), Stop<H::Error>> {
        let tries = if self.step.retry_fetch { 2 } else { 1 };
        for attempt in 1..=tries {
            if self.run(workdir, argv, None).await? == SUCCESS {
                return Ok(());
            }
            if attempt < tries {
                self.ctx
                    .host
                    .header("the fetch failed; trying once more")
                    .await?;
            }
        }
        Err(Stop::Result(FAILURE))
    }

    async fn checkout(&mut self, plan: &Plan) -> Result<i32, Stop<H::Error>> {
        let step = self.step;
        if step.ssh_private_key.is_some() {
            self.install_ssh_key(plan).await?;
        }
        if step.mode == Mode::Full && step.method == Method::Clobber {
            self.ctx
                .run_command(RemoteCommand::Rmdir {
                    path: plan.repo.clone(),
                })
                .await?;
        }
        let first = self.update(plan).await;
        let revision = match first {
            Err(Stop::Result(FAILURE)) if step.clobber_on_failure => {
                self.ctx
                    .host
                    .header("the update failed; removing the checkout and starting again (clobber_on_failure)")
                    .await?;
                self.ctx
                    .run_command(RemoteCommand::Rmdir {
                        path: plan.repo.clone(),
                    })
                    .await?;
                self.update(plan).await?
            }
            other => other?,
        };
        if let Some(target) = &plan.source {
            // `copy`: the incremental checkout, copied whole to the workdir.
            self.ctx
                .run_command(RemoteCommand::Rmdir {
                    path: target.clone(),
                })
                .await?;
            self.must(".", &["cp", "-a", &plan.repo, target]).await?;
        }
        let value = if step.codebase.is_empty() {
            Value::String(revision.clone())
        } else {
            Value::Object(
                [(step.codebase.clone(), Value::String(revision.clone()))]
                    .into_iter()
                    .collect(),
            )
        };
        self.ctx.host.set_property("got_revision", value).await?;
        self.ctx
            .host
            .header(&format!("got_revision: {revision}"))
            .await?;
        Ok(SUCCESS)
    }

    /// Bring the checkout to the wanted commit; returns that commit.
    async fn update(&mut self, plan: &Plan) -> Result<String, Stop<H::Error>> {
        let step = self.step;
        let repo = plan.repo.as_str();
        let depth = step.shallow.map(|n| format!("--depth={n}"));
        if !self.exists(&format!("{repo}/.git")).await? {
            self.must(".", &["git", "init", "--quiet", repo]).await?;
        }
        let mut alternates = Vec::new();
        if let Some(reference) = &plan.reference {
            alternates.push(format!("{}/objects", reference.trim_end_matches('/')));
        }
        let wanted = match &plan.mirror {
            Some(mirror) => {
                let revision = self.update_mirror(mirror, plan).await?;
                let builds = self.builds_dir().await?;
                alternates.push(format!("{builds}/{mirror}/objects"));
                Some(revision)
            }
            None => None,
        };
        if !alternates.is_empty() {
            let file = format!("{repo}/.git/objects/info/alternates");
            let mut argv = vec![
                "sh",
                "-c",
                "f=$1; shift; printf '%s\\n' \"$@\" > \"$f\"",
                "sh",
            ];
            argv.push(&file);
            argv.extend(alternates.iter().map(String::as_str));
            self.must(".", &argv).await?;
        }
        let target = match wanted {
            Some(revision) => revision,
            None => {
                // No mirror: fetch the revision itself (any depth), or the branch.
                let what = plan.revision.as_deref().unwrap_or(&plan.branch);
                let mut argv = vec!["git", "fetch", "--quiet", "--force"];
                if let Some(d) = &depth {
                    argv.push(d);
                }
                argv.extend([plan.repourl.as_str(), what]);
                self.fetch(repo, &argv).await?;
                self.output(
                    repo,
                    &["git", "rev-parse", "--verify", "FETCH_HEAD^{commit}"],
                )
                .await?
            }
        };
        let plain_branch = plan.branch != "HEAD" && !plan.branch.starts_with("refs/");
        let mut checkout = vec![
            "git",
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "-f",
        ];
        if plain_branch {
            checkout.extend(["-B", plan.branch.as_str()]);
        } else {
            checkout.push("--detach");
        }
        checkout.push(&target);
        self.must(repo, &checkout).await?;
        let clean = match (step.mode, step.method) {
            (Mode::Full, Method::Fresh) => Some("-ffdx"),
            (Mode::Full, Method::Clean) => Some("-ffd"),
            _ => None,
        };
        if let Some(flags) = clean {
            self.must(repo, &["git", "clean", flags]).await?;
        }
        if step.submodules {
            self.must(repo, &["git", "submodule", "sync", "--recursive"])
                .await?;
            let mut argv = vec![
                "git",
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--force",
            ];
            if let Some(d) = &depth {
                argv.push(d);
            }
            self.must(repo, &argv).await?;
            if let Some(flags) = clean {
                self.must(
                    repo,
                    &[
                        "git",
                        "submodule",
                        "foreach",
                        "--recursive",
                        "git",
                        "clean",
                        flags,
                    ],
                )
                .await?;
            }
        }
        self.output(repo, &["git", "rev-parse", "HEAD"]).await
    }

    /// Fetch the repository into the worker's mirror; returns the commit to
    /// check out (the build's revision, or the branch's head).
    async fn update_mirror(&mut self, mirror: &str, plan: &Plan) -> Result<String, Stop<H::Error>> {
        if !self.exists(mirror).await? {
            self.must(".", &["git", "init", "--quiet", "--bare", mirror])
                .await?;
            // Checkouts borrow its objects: never drop one.
            self.must(".", &["git", "-C", mirror, "config", "gc.auto", "0"])
                .await?;
        }
        let head_ref = "refs/moonbot/wanted";
        let wanted = format!("+{}:{head_ref}", plan.branch);
        let mut argv = vec![
            "git",
            "-C",
            mirror,
            "fetch",
            "--quiet",
            "--force",
            plan.repourl.as_str(),
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ];
        argv.push(&wanted);
        self.fetch(".", &argv).await?;
        // The build's revision, or the branch's head as just fetched.
        let object = match &plan.revision {
            Some(rev) => {
                let object = format!("{rev}^{{commit}}");
                let known = self
                    .run(".", &["git", "-C", mirror, "cat-file", "-e", &object], None)
                    .await?
                    == SUCCESS;
                if !known {
                    // A commit no branch holds (a fork's pull request).
                    self.fetch(
                        ".",
                        &["git", "-C", mirror, "fetch", "--quiet", &plan.repourl, rev],
                    )
                    .await?;
                }
                object
            }
            None => format!("{head_ref}^{{commit}}"),
        };
        self.output(
            ".",
            &["git", "-C", mirror, "rev-parse", "--verify", &object],
        )
        .await
    }

    /// Write the key (and known hosts) where only the worker's user may
    /// read them, and point git's ssh at them.
    async fn install_ssh_key(&mut self, plan: &Plan) -> Result<(), Stop<H::Error>> {
        let step = self.step;
        let Some(dir) = &plan.ssh_dir else {
            return Ok(());
        };
        let mut secret_env = BTreeMap::new();
        for (var, value) in [
            ("MOONBOT_GIT_SSH_KEY", &step.ssh_private_key),
            ("MOONBOT_GIT_KNOWN_HOSTS", &step.ssh_known_hosts),
        ] {
            if let Some(r) = value {
                match self.ctx.render.render_string(r).await {
                    Ok(v) => {
                        secret_env.insert(var.to_string(), Some(v));
                    }
                    Err(e) => {
                        self.ctx
                            .host
                            .header(&format!("could not render the ssh settings: {e}"))
                            .await?;
                        return Err(Stop::Result(EXCEPTION));
                    }
                }
            }
        }
        let builds = self.builds_dir().await?;
        let script = "umask 077 && mkdir -p \"$1\" && printf '%s\\n' \"$MOONBOT_GIT_SSH_KEY\" > \"$1/key\" && \
                      if [ -n \"${MOONBOT_GIT_KNOWN_HOSTS:-}\" ]; then printf '%s\\n' \"$MOONBOT_GIT_KNOWN_HOSTS\" > \"$1/known_hosts\"; fi";
        let status = self
            .run_with(".", &["sh", "-c", script, "sh", dir], &secret_env, None)
            .await?;
        if status != SUCCESS {
            return Err(Stop::Result(FAILURE));
        }
        let abs = format!("{builds}/{dir}");
        let checking = if step.ssh_known_hosts.is_some() {
            "yes"
        } else {
            "accept-new"
        };
        self.env.insert(
            "GIT_SSH_COMMAND".into(),
            Some(format!(
                "ssh -i '{abs}/key' -o IdentitiesOnly=yes -o UserKnownHostsFile='{abs}/known_hosts' -o StrictHostKeyChecking={checking}"
            )),
        );
        Ok(())
    }
}
