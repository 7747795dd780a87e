//! `moonbot`: the master and its admin commands.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use moonbot_master::runtime::{self, Master};
use moonbot_master::{config, pki};
use moonbot_worker::signal::{SIGTERM, SIGUSR1, process_alive, signal_process};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "moonbot", version, about = "moonbot CI master")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a master directory: master.lua and a new CA with the master's certificate.
    CreateMaster {
        dir: PathBuf,
        /// Extra host name or address workers use to reach the master (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Sign a worker's certificate request with the master's CA.
    SignWorker {
        master_dir: PathBuf,
        csr: PathBuf,
        /// Where to write the certificate (default: worker.crt beside the CSR).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long the certificate is valid (s, m, h or d).
        #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = moonbot_master::duration::parse)]
        cert_validity: Duration,
    },
    /// Make a one-time enrollment token for a new worker; the token is the last
    /// line printed. On the worker: moonbot-worker create-worker WDIR --token TOKEN
    WorkerToken {
        dir: PathBuf,
        /// The worker's name (as master.lua lists it).
        name: String,
        /// The address the worker dials, HOST:PORT (default: the first extra
        /// --host of the master's certificate, else this machine's host name,
        /// and master.lua's QUIC port).
        #[arg(long, value_name = "HOST:PORT")]
        master: Option<String>,
        /// How long the token can be used (s, m, h or d).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = moonbot_master::duration::parse)]
        expires: Duration,
        /// How long the worker's certificate is valid (it renews itself before then).
        #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = moonbot_master::duration::parse)]
        cert_validity: Duration,
    },
    /// Revoke every certificate of a worker signed until now: the master refuses
    /// it from its next connection on (enroll it again with a new token).
    RevokeWorker { dir: PathBuf, name: String },
    /// Run the master in the foreground (logs to stderr and DIR/master.log).
    Start { dir: PathBuf },
    /// Stop a running master: running builds are interrupted and run again later.
    Stop {
        dir: PathBuf,
        /// Start no new builds and wait for the running ones to finish first.
        #[arg(long)]
        clean: bool,
    },
    /// Load and check DIR/master.lua without starting anything.
    Checkconfig {
        dir: PathBuf,
        /// Also show what a reconfig would change in the master running from DIR
        /// (a dry run: nothing is applied).
        #[arg(long)]
        diff: bool,
        /// With --diff: the API token to ask with (default: $MOONBOT_API_TOKEN,
        /// else DIR/cli-token).
        #[arg(long)]
        token: Option<String>,
        /// Check a master.lua you did not write: without Lua's `os`, `io` and
        /// C modules, reading Lua files only from DIR.
        #[arg(long, conflicts_with = "diff")]
        sandbox: bool,
    },
    /// Make the master running from DIR reload master.lua; prints what changed,
    /// or the errors (exit status 1) while the running configuration stays.
    Reconfig {
        dir: PathBuf,
        /// The API token to ask with (default: $MOONBOT_API_TOKEN, else
        /// DIR/cli-token, which the master makes and accepts for anything).
        #[arg(long)]
        token: Option<String>,
    },
    /// Hash a web user's password for `auth.users` in master.lua (reads it from
    /// the terminal without echo, or from standard input).
    HashPassword,
    /// Make a new API token for scripts: prints the token (give it to the
    /// script) and the `token_hash` line for `auth.tokens` in master.lua.
    ApiToken {
        /// Who the token acts as (shown as the owner of what it forces).
        name: String,
    },
    /// Report a change to a master, as Buildbot's `sendchange` does: FILES are
    /// the files it touched. Sent through the master's API (JSON-RPC `add` on
    /// /api/v2/changes), with an API token when master.lua has `auth`.
    Sendchange(Box<SendchangeArgs>),
    /// Create (if needed) and run a master with a local worker, and force the sample builds.
    Quickstart {
        #[arg(default_value = "moonbot-quickstart")]
        dir: PathBuf,
    },
}

/// `moonbot sendchange`'s flags, Buildbot's names and short forms.
#[derive(clap::Args, Debug)]
struct SendchangeArgs {
    /// The master's web address: `http://HOST:PORT` or `HOST:PORT`.
    #[arg(long, short = 'm')]
    master: String,
    /// The change's author.
    #[arg(long, short = 'W')]
    who: String,
    #[arg(long, short = 'R', default_value = "")]
    repository: String,
    #[arg(long, short = 'P', default_value = "")]
    project: String,
    #[arg(long, short = 'b')]
    branch: Option<String>,
    #[arg(long, short = 'C')]
    category: Option<String>,
    #[arg(long, short = 'r')]
    revision: Option<String>,
    /// A property of the change (repeatable).
    #[arg(long, short = 'p', value_name = "NAME:VALUE")]
    property: Vec<String>,
    /// The commit message.
    #[arg(long, short = 'c', default_value = "")]
    comments: String,
    /// Read the commit message from this file (`-`: standard input).
    #[arg(long, short = 'F', conflicts_with = "comments")]
    logfile: Option<PathBuf>,
    /// When the change was made, in seconds since 1970 (default: now).
    #[arg(long, short = 'w')]
    when: Option<f64>,
    /// A link to the change in a repository browser.
    #[arg(long, short = 'l')]
    revlink: Option<String>,
    #[arg(long, default_value = "")]
    codebase: String,
    /// The API token to send (default: $MOONBOT_API_TOKEN).
    #[arg(long)]
    token: Option<String>,
    files: Vec<String>,
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let code = match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// A password from the terminal (not echoed) or one line of standard input.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::CreateMaster { dir, hosts } => {
            create_master(&dir, &hosts)?;
            println!("created master in {}", dir.display());
            println!(
                "  edit {}/master.lua, then run: moonbot start {}",
                dir.display(),
                dir.display()
            );
            println!(
                "  workers need the CA certificate {}/pki/ca.crt",
                dir.display()
            );
            Ok(0)
        }
        Command::SignWorker {
            master_dir,
            csr,
            out,
            cert_validity,
        } => {
            let csr_pem = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading {}", csr.display()))?;
            let signed = pki::sign_worker_csr(&master_dir, &csr_pem, cert_validity)?;
            let out = out.unwrap_or_else(|| csr.with_file_name("worker.crt"));
            std::fs::write(&out, &signed.cert_pem)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "signed worker '{}' (valid until {}): {}",
                signed.name,
                signed.not_after,
                out.display()
            );
            if let Ok(loaded) = config::load(&master_dir)
                && loaded.config.worker(&signed.name).is_none()
            {
                println!(
                    "note: master.lua does not list worker '{}' yet; the master will refuse it until it does",
                    signed.name
                );
            }
            Ok(0)
        }
        Command::WorkerToken {
            dir,
            name,
            master,
            expires,
            cert_validity,
        } => worker_token(&dir, &name, master, expires, cert_validity),
        Command::RevokeWorker { dir, name } => revoke_worker(&dir, &name),
        Command::Start { dir } => start(&dir),
        Command::Stop { dir, clean } => stop(&dir, clean),
        Command::Checkconfig {
            dir,
            diff: true,
            token,
            ..
        } => checkconfig_diff(&dir, token),
        Command::Reconfig { dir, token } => reconfig(&dir, token),
        Command::HashPassword => {
            let password = read_password()?;
            if password.is_empty() {
                anyhow::bail!("the password is empty");
            }
            println!("{}", moonbot_master::credentials::hash_password(&password));
            Ok(0)
        }
        Command::ApiToken { name } => {
            let (token, hash) = moonbot_master::credentials::new_api_token();
            println!("token (give this to the script; it is not stored anywhere): {token}");
            println!(
                "for master.lua: auth.tokens = {{ {{ name = {name:?}, token_hash = \"{hash}\", roles = {{}} }} }}"
            );
            Ok(0)
        }
        Command::Checkconfig {
            dir,
            diff: false,
            sandbox,
            ..
        } => match config::load_with(&dir, sandbox) {
            Ok(loaded) => {
                println!(
                    "{}/master.lua is valid: {}",
                    dir.display(),
                    loaded.config.summary()
                );
                Ok(0)
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                Ok(1)
            }
        },
        Command::Quickstart { dir } => quickstart(&dir),
        Command::Sendchange(args) => sendchange(*args),
    }
}

/// The address a token tells the worker to dial when `--master` is not given:
/// the first extra host of the master's certificate (else this machine's host
/// name) and master.lua's QUIC port (else, for port 0, the running master's).
fn default_master_address(
    dir: &Path,
    hosts: &[String],
    loaded: &Result<config::LoadedConfig, String>,
) -> anyhow::Result<String> {
    let host = hosts
        .iter()
        .find(|h| !matches!(h.as_str(), "localhost" | "127.0.0.1" | "::1"))
        .cloned()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let loaded = loaded.as_ref().map_err(|e| {
        anyhow::anyhow!("cannot read master.lua for the QUIC port ({e}); give --master HOST:PORT")
    })?;
    let mut port = loaded.config.quic.port;
    if port == 0 {
        port = runtime::Ports::read(dir)
            .context(
                "master.lua's QUIC port is 0 and no master is running: give --master HOST:PORT",
            )?
            .quic
            .port();
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

fn worker_token(
    dir: &Path,
    name: &str,
    master: Option<String>,
    expires: Duration,
    cert_validity: Duration,
) -> anyhow::Result<i32> {
    use moonbot_master::duration;
    if !dir.join("master.lua").exists() {
        bail!(
            "{} is not a master directory (no master.lua)",
            dir.display()
        );
    }
    // Read once: both the default address and the checks below need them.
    let hosts = pki::master_cert_hosts(dir)?;
    let loaded = config::load(dir).map_err(|e| e.to_string());
    let master = match master {
        Some(m) => m,
        None => default_master_address(dir, &hosts, &loaded)?,
    };
    let address = moonbot_worker::workdir::MasterAddress::parse(&master)?;
    if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&address.host)) {
        eprintln!(
            "warning: the master's certificate is not valid for '{}' (it names {}): the worker \
             will refuse the master. Give --master with one of those, or create the master \
             with --host {}",
            address.host,
            hosts.join(", "),
            address.host
        );
    }
    match &loaded {
        Ok(loaded) if loaded.config.worker(name).is_none() => eprintln!(
            "warning: master.lua does not list worker '{name}' yet: it will enroll, but the \
             master refuses its connections until master.lua lists it"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not check master.lua for worker '{name}': {e}"),
    }
    let made = pki::enroll::create_token(dir, name, &master, expires, cert_validity)?;
    println!(
        "one-time enrollment token for worker '{name}' (master {master}; its certificate will \
         be valid for {})",
        duration::display(cert_validity)
    );
    println!(
        "it can be used once, until {} ({} from now)",
        pki::format_unix(made.expires),
        duration::display(expires)
    );
    println!("on the worker's machine run: moonbot-worker create-worker WDIR --token TOKEN");
    println!("token:");
    println!("{}", made.token);
    Ok(0)
}

fn revoke_worker(dir: &Path, name: &str) -> anyhow::Result<i32> {
    if !pki::valid_worker_name(name) {
        bail!("'{name}' is not a valid worker name");
    }
    if !pki::PkiPaths::new(dir).ca_cert().exists() {
        bail!(
            "{} is not a master directory (no pki/ca.crt)",
            dir.display()
        );
    }
    let outcome = pki::revoke::revoke_worker(dir, name)?;
    println!(
        "revoked {} certificate(s) of worker '{name}' ({} recorded in all); certificates of \
         '{name}' signed before now are refused from the worker's next connection on",
        outcome.certificates, outcome.recorded
    );
    if outcome.recorded == 0 {
        println!(
            "note: this master has no record of certificates for '{name}' (signed before it \
             kept records); they are revoked by name and signing time"
        );
    }
    println!(
        "to let the worker back in, give it a new token: moonbot worker-token {} {name}",
        dir.display()
    );
    Ok(0)
}

fn create_master(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    let lua = dir.join("master.lua");
    if lua.exists() {
        bail!("{} already exists", lua.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    pki::create(dir, hosts)?;
    std::fs::write(&lua, moonbot_master::SAMPLE_MASTER_LUA)
        .with_context(|| format!("writing {}", lua.display()))?;
    moonbot_master::credentials::cli_token_hash(dir).context("writing cli-token")?;
    Ok(())
}

fn init_logging(log_file: &Path) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,quinn=warn,sqlx=warn,sea_orm=warn,warp=warn".into())
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                // Colours only on a terminal: a redirected log stays plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(filter()),
        )
        .init();
    Ok(())
}

fn read_pid(dir: &Path) -> anyhow::Result<Option<i32>> {
    match std::fs::read_to_string(runtime::pid_file(dir)) {
        Ok(text) => Ok(text.trim().parse::<i32>().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading moonbot.pid"),
    }
}

/// Write moonbot.pid, refusing when another master runs from this directory.
fn claim_pid_file(dir: &Path) -> anyhow::Result<()> {
    if let Some(pid) = read_pid(dir)?
        && process_alive(pid)
        && pid != std::process::id() as i32
    {
        bail!(
            "a master is already running from {} (pid {pid})",
            dir.display()
        );
    }
    std::fs::write(runtime::pid_file(dir), std::process::id().to_string())
        .context("writing moonbot.pid")
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn start(dir: &Path) -> anyhow::Result<i32> {
    if !dir.join("master.lua").exists() {
        bail!(
            "{} has no master.lua (create one with: moonbot create-master {})",
            dir.display(),
            dir.display()
        );
    }
    init_logging(&dir.join("master.log"))?;
    claim_pid_file(dir)?;
    let result = tokio_runtime()?.block_on(async {
        let master = Master::start(dir).await?;
        master.run_until(std::future::pending()).await
    });
    let _ = std::fs::remove_file(runtime::pid_file(dir));
    result.map(|_| 0)
}

fn stop(dir: &Path, clean: bool) -> anyhow::Result<i32> {
    // A zombie (stopped, not yet reaped by its parent) counts as stopped.
    let Some(pid) = read_pid(dir)?.filter(|&p| process_alive(p)) else {
        bail!("no master is running from {}", dir.display());
    };
    let signal = if clean { SIGUSR1 } else { SIGTERM };
    signal_process(pid, signal).with_context(|| format!("signalling pid {pid}"))?;
    let started = Instant::now();
    let mut said = false;
    while process_alive(pid) {
        std::thread::sleep(Duration::from_millis(100));
        if clean && !said && started.elapsed() > Duration::from_secs(5) {
            println!("waiting for running builds to finish…");
            said = true;
        }
        if !clean && started.elapsed() > Duration::from_secs(120) {
            bail!("the master (pid {pid}) did not stop within 120 s");
        }
    }
    println!("master stopped");
    Ok(0)
}

/// The API token given on the command line, else `MOONBOT_API_TOKEN`.
fn given_token(given: Option<String>) -> Option<String> {
    given
        .or_else(|| std::env::var("MOONBOT_API_TOKEN").ok())
        .filter(|t| !t.trim().is_empty())
}

/// The API token for the master in `dir`: [`given_token`], else the master
/// directory's `cli-token`.
fn cli_token(dir: &Path, given: Option<String>) -> Option<String> {
    given_token(given).or_else(|| moonbot_master::credentials::read_cli_token(dir))
}

/// Call a JSON-RPC method of `/api/v2/config` on the master running from `dir`.
fn call_config_api(
    dir: &Path,
    method: &str,
    token: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let mut www = runtime::Ports::read(dir)?.www;
    if www.ip().is_unspecified() {
        www.set_ip(match www {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{www}/api/v2/config");
    call_api(&url, method, serde_json::json!({}), cli_token(dir, token))
}

/// Send one change to the master's API; prints its id.
fn sendchange(args: SendchangeArgs) -> anyhow::Result<i32> {
    let SendchangeArgs {
        master,
        who,
        repository,
        project,
        branch,
        category,
        revision,
        property,
        comments,
        logfile,
        when,
        revlink,
        codebase,
        token,
        files,
    } = args;
    let comments = match logfile {
        None => comments,
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            text
        }
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    };
    let mut properties = serde_json::Map::new();
    for p in property {
        let Some((name, value)) = p.split_once(':') else {
            bail!("--property '{p}' must be NAME:VALUE");
        };
        properties.insert(name.to_string(), value.into());
    }
    let params = serde_json::json!({
        "author": who, "repository": repository, "project": project,
        "branch": branch, "category": category, "revision": revision,
        "properties": properties, "comments": comments, "when_timestamp": when,
        "revlink": revlink, "codebase": codebase, "files": files,
    });
    let master = master.trim_end_matches('/');
    let base = if master.contains("://") {
        master.to_string()
    } else {
        format!("http://{master}")
    };
    let changeid = call_api(
        &format!("{base}/api/v2/changes"),
        "add",
        params,
        given_token(token),
    )?;
    println!("change {changeid} added");
    Ok(0)
}

/// One JSON-RPC call to the master's API; its result, or why it failed
/// (the HTTP status and the master's reason).
fn call_api(
    url: &str,
    method: &str,
    params: serde_json::Value,
    token: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let request =
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let mut call = ureq::post(url).timeout(Duration::from_secs(300));
    if let Some(token) = token {
        call = call.set("authorization", &format!("Bearer {}", token.trim()));
    }
    let (status, reply): (u16, serde_json::Value) = match call.send_json(request) {
        Ok(r) => (r.status(), r.into_json()?),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or_default()),
        Err(e) => bail!("cannot reach the master at {url}: {e}"),
    };
    if let Some(error) = reply.get("error") {
        // JSON-RPC errors carry a message; a refusal before the call is a string.
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .or(error.as_str())
            .unwrap_or("no reason given");
        bail!("the master refused (HTTP {status}): {message}");
    }
    if status != 200 {
        bail!("the master answered HTTP {status}: {reply}");
    }
    Ok(reply["result"].clone())
}

/// Print a reload's or a dry run's outcome; returns the exit status.
fn print_outcome(outcome: &serde_json::Value, what: &str) -> anyhow::Result<i32> {
    let errors: Vec<config::ConfigError> =
        serde_json::from_value(outcome["errors"].clone()).unwrap_or_default();
    if !errors.is_empty() {
        eprintln!("{what} failed; the running configuration is unchanged:");
        for e in &errors {
            eprintln!("  {e}");
        }
        return Ok(1);
    }
    let changes: config::diff::ConfigDiff =
        serde_json::from_value(outcome["changes"].clone()).unwrap_or_default();
    let lines = changes.lines();
    if lines.is_empty() {
        println!("{what}: no changes");
    } else {
        println!("{what}: {}", changes.counts());
        for line in lines {
            println!("  {line}");
        }
    }
    Ok(0)
}

fn reconfig(dir: &Path, token: Option<String>) -> anyhow::Result<i32> {
    let outcome = call_config_api(dir, "reload", token)?;
    let code = print_outcome(&outcome, "reconfig")?;
    if code == 0 {
        println!(
            "reconfig took {:.1} ms; now running {}",
            outcome["duration_ms"].as_f64().unwrap_or(0.0),
            outcome["summary"].as_str().unwrap_or("")
        );
    }
    Ok(code)
}

fn checkconfig_diff(dir: &Path, token: Option<String>) -> anyhow::Result<i32> {
    let outcome = call_config_api(dir, "diff", token)?;
    print_outcome(&outcome, "checkconfig --diff (nothing applied)")
}

fn quickstart(base: &Path) -> anyhow::Result<i32> {
    use moonbot_worker::workdir;
    let master_dir = base.join("master");
    let worker_dir = base.join("worker");
    if !master_dir.join("master.lua").exists() {
        create_master(&master_dir, &[])?;
        println!("created a master in {}", master_dir.display());
    }
    if !worker_dir.join("worker.crt").exists() {
        let loaded = config::load(&master_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ca_pem = std::fs::read_to_string(pki::PkiPaths::new(&master_dir).ca_cert())?;
        let csr = workdir::create(
            &worker_dir,
            &workdir::CreateOptions {
                master: format!("127.0.0.1:{}", loaded.config.quic.port),
                name: "local-1".into(),
                ca_pem,
                admin: Some("quickstart".into()),
                host_description: None,
            },
        )?;
        let signed = pki::sign_worker_csr(
            &master_dir,
            &std::fs::read_to_string(&csr)?,
            pki::WORKER_CERT_VALIDITY,
        )?;
        std::fs::write(worker_dir.join("worker.crt"), signed.cert_pem)?;
        println!("created worker 'local-1' in {}", worker_dir.display());
    }
    init_logging(&master_dir.join("master.log"))?;
    claim_pid_file(&master_dir)?;
    let result = tokio_runtime()?.block_on(async {
        let master = Master::start(&master_dir).await?;
        let shared = master.shared.clone();
        let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(moonbot_worker::run(
            workdir::WorkerDir::load(&worker_dir)?,
            async move {
                let _ = worker_stopped.await;
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !shared.workers.is_connected("local-1") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let schedulers: Vec<String> = shared
            .running_config()
            .loaded
            .config
            .schedulers
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        for name in schedulers {
            let mut fields = serde_json::Map::new();
            fields.insert("reason".into(), "quickstart".into());
            fields.insert("owner".into(), "quickstart".into());
            let request = moonbot_master::schedulers::force::ForceRequest {
                fields,
                ..Default::default()
            };
            moonbot_master::schedulers::force::force(&shared, &name, request).await?;
        }
        println!();
        println!(
            "moonbot is running: status page http://{}/",
            master.www_addr
        );
        println!(
            "  builds: http://{}/api/v2/builds?order=-number",
            master.www_addr
        );
        println!("  press Ctrl-C to stop");
        master.run_until(std::future::pending()).await?;
        let _ = stop_worker.send(());
        let _ = worker.await;
        anyhow::Ok(())
    });
    let _ = std::fs::remove_file(runtime::pid_file(&master_dir));
    result.map(|_| 0)
}
