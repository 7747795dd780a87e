//! The worker directory (WDIR): creating it, loading it, and what it says about
//! this worker.
//!
//! Everything the worker knows about itself lives in one directory so that a
//! volunteer can inspect, back up or delete it as a unit:
//!
//! ```text
//! WDIR/worker.json    {"master":"HOST:PORT","name":"NAME"}
//! WDIR/worker.key     PKCS#8 PEM private key, mode 0600; made here, never leaves
//! WDIR/worker.csr     PEM certificate signing request for the master's admin
//! WDIR/ca.crt         the master's CA certificate (the only trusted root)
//! WDIR/worker.crt     the signed certificate: from `moonbot sign-worker` or enrollment
//!                     (`create-worker --token`); renewal replaces it
//! WDIR/info/admin     optional: who to contact about this worker
//! WDIR/info/host      optional: free text about the machine
//! WDIR/builds/        build directories; relative command paths resolve here
//! WDIR/worker.log     log of `moonbot-worker start`
//! WDIR/worker.pid     pid of the running worker
//! ```

use crate::protocol::WorkerInfo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const CONFIG_FILE: &str = "worker.json";
const KEY_FILE: &str = "worker.key";
const CSR_FILE: &str = "worker.csr";
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "worker.crt";
const BUILDS_DIR: &str = "builds";
const INFO_DIR: &str = "info";
const ADMIN_FILE: &str = "admin";
const HOST_FILE: &str = "host";
const LOG_FILE: &str = "worker.log";
const PID_FILE: &str = "worker.pid";

/// Longest accepted worker name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a worker directory could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    /// The worker name breaks the naming rules.
    #[error("invalid worker name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The master address is not `HOST:PORT`.
    #[error(
        "invalid master address {address:?}: {reason} (expected HOST:PORT, e.g. ci.example.org:9989)"
    )]
    InvalidMaster {
        address: String,
        reason: &'static str,
    },
    /// The CA text holds no PEM certificate.
    #[error("the master's CA certificate is not usable: {0}")]
    InvalidCa(String),
    /// `create` found an existing key and will not overwrite it.
    #[error(
        "{0} already exists: this directory already holds a worker key; refusing to overwrite it \
         (delete the directory first to make a new worker)"
    )]
    AlreadyExists(PathBuf),
    /// Key or CSR generation failed.
    #[error("could not generate the worker's key or certificate request: {0}")]
    Crypto(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// `load` on a directory without `worker.json`.
    #[error(
        "{} is not a worker directory (no worker.json); create one with \
         `moonbot-worker create-worker`",
        .0.display()
    )]
    NotAWorkerDir(PathBuf),
    /// `worker.json` exists but does not parse.
    #[error("{}: malformed worker configuration: {source}", path.display())]
    BadConfig {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A file `create` writes is missing.
    #[error("{} is missing; the worker directory is incomplete", .0.display())]
    MissingFile(PathBuf),
    /// The master has not signed this worker's CSR yet.
    #[error(
        "{} does not exist yet: the master's admin must sign this worker first: run \
         `moonbot sign-worker MASTERDIR {}` and put the signed certificate at {}",
        crt.display(),
        csr.display(),
        crt.display()
    )]
    NotSigned { crt: PathBuf, csr: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WorkdirError + '_ {
    move |source| WorkdirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `moonbot-worker create-worker` (or `moonbot quickstart`) asks for.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The master's QUIC address, `HOST:PORT`.
    pub master: String,
    /// The worker's name; becomes the CN of its certificate.
    pub name: String,
    /// The master's CA certificate, PEM.
    pub ca_pem: String,
    /// Who to contact about this worker (`WDIR/info/admin`).
    pub admin: Option<String>,
    /// Free text about the host (`WDIR/info/host`).
    pub host_description: Option<String>,
}

/// The master's address split into host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterAddress {
    /// Host name or IP literal, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
}

impl MasterAddress {
    /// Parse `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
    pub fn parse(address: &str) -> Result<MasterAddress, WorkdirError> {
        let invalid = |reason| WorkdirError::InvalidMaster {
            address: address.to_string(),
            reason,
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
        let host = match host.strip_prefix('[') {
            Some(rest) => rest
                .strip_suffix(']')
                .ok_or_else(|| invalid("unbalanced '[' in the host"))?,
            None if host.contains(':') => {
                return Err(invalid("an IPv6 address must be written in brackets"));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid("the host contains a space or '/'"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(invalid("the port is not a number from 1 to 65535"));
        }
        Ok(MasterAddress {
            host: host.to_string(),
            port,
        })
    }

    /// The host as a literal IPv6 address, if it is one.
    pub fn is_ipv6_literal(&self) -> bool {
        self.host.parse::<std::net::Ipv6Addr>().is_ok()
    }
}

/// Check a worker name: 1–64 characters of `[A-Za-z0-9._-]`, not starting with
/// `-` or `.`.
pub fn validate_name(name: &str) -> Result<(), WorkdirError> {
    let invalid = |reason| WorkdirError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    if name.starts_with(['-', '.']) {
        return Err(invalid("it must not start with '-' or '.'"));
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkerConfigFile {
    master: String,
    name: String,
}

/// Create a worker directory: configuration, private key, CSR and the master's
/// CA. Returns the path of the CSR, which the master's admin signs with
/// `moonbot sign-worker`.
///
/// Refuses to touch a directory that already holds `worker.key`.
pub fn create(dir: &Path, opts: &CreateOptions) -> Result<PathBuf, WorkdirError> {
    check_new(dir, opts)?;
    let key = rcgen::KeyPair::generate()?;
    let csr_pem = certificate_request(&key, &opts.name)?;
    write_new(dir, opts, &key, &csr_pem)
}

/// Check what [`create`] checks before it writes anything: no key in `dir`
/// yet, a valid name, master address and CA.
pub fn check_new(dir: &Path, opts: &CreateOptions) -> Result<(), WorkdirError> {
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(WorkdirError::AlreadyExists(key_path));
    }
    validate_name(&opts.name)?;
    MasterAddress::parse(&opts.master)?;
    validate_ca(&opts.ca_pem)
}

/// A PEM certificate signing request for `name` (its CN) with `key`.
pub fn certificate_request(key: &rcgen::KeyPair, name: &str) -> Result<String, WorkdirError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    Ok(params.serialize_request(key)?.pem()?)
}

/// Write a new worker directory from a key made by the caller (checked with
/// [`check_new`]); returns the path of the CSR.
pub fn write_new(
    dir: &Path,
    opts: &CreateOptions,
    key: &rcgen::KeyPair,
    csr_pem: &str,
) -> Result<PathBuf, WorkdirError> {
    check_new(dir, opts)?;
    let key_path = dir.join(KEY_FILE);
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let builds = dir.join(BUILDS_DIR);
    fs::create_dir_all(&builds).map_err(io_error(&builds))?;

    // The key first, with create_new: a concurrent `create` cannot clobber it.
    write_private(&key_path, key.serialize_pem().as_bytes())?;

    let config = WorkerConfigFile {
        master: opts.master.clone(),
        name: opts.name.clone(),
    };
    let mut config_json =
        serde_json::to_string_pretty(&config).expect("worker.json always serializes");
    config_json.push('\n');
    write_file(&dir.join(CONFIG_FILE), config_json.as_bytes())?;
    write_file(&dir.join(CA_FILE), opts.ca_pem.as_bytes())?;
    let csr_path = dir.join(CSR_FILE);
    write_file(&csr_path, csr_pem.as_bytes())?;

    let info = dir.join(INFO_DIR);
    for (file, text) in [
        (ADMIN_FILE, &opts.admin),
        (HOST_FILE, &opts.host_description),
    ] {
        if let Some(text) = text {
            fs::create_dir_all(&info).map_err(io_error(&info))?;
            write_file(&info.join(file), format!("{}\n", text.trim()).as_bytes())?;
        }
    }
    Ok(csr_path)
}

fn validate_ca(ca_pem: &str) -> Result<(), WorkdirError> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        cert.map_err(|e| WorkdirError::InvalidCa(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(WorkdirError::InvalidCa(
            "it contains no PEM CERTIFICATE block".into(),
        ));
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<(), WorkdirError> {
    fs::write(path, contents).map_err(io_error(path))
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), WorkdirError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                WorkdirError::AlreadyExists(path.to_path_buf())
            } else {
                io_error(path)(e)
            }
        })?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// A loaded, complete (signed) worker directory.
#[derive(Debug, Clone)]
pub struct WorkerDir {
    /// The directory itself.
    pub path: PathBuf,
    /// The master's address as written in worker.json (`HOST:PORT`).
    pub master: String,
    /// The worker's name.
    pub name: String,
    /// `master`, parsed.
    pub master_address: MasterAddress,
}

impl WorkerDir {
    /// Load a worker directory made by [`create`] whose certificate has been
    /// signed. Every missing piece is reported with what to do about it.
    pub fn load(dir: &Path) -> Result<WorkerDir, WorkdirError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = match fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(WorkdirError::NotAWorkerDir(dir.to_path_buf()));
            }
            Err(e) => return Err(io_error(&config_path)(e)),
        };
        let config: WorkerConfigFile =
            serde_json::from_str(&text).map_err(|source| WorkdirError::BadConfig {
                path: config_path.clone(),
                source,
            })?;
        validate_name(&config.name)?;
        let master_address = MasterAddress::parse(&config.master)?;
        let wd = WorkerDir {
            path: dir.to_path_buf(),
            master: config.master,
            name: config.name,
            master_address,
        };
        for required in [wd.key_path(), wd.ca_path()] {
            if !required.exists() {
                return Err(WorkdirError::MissingFile(required));
            }
        }
        if !wd.cert_path().exists() {
            return Err(WorkdirError::NotSigned {
                crt: wd.cert_path(),
                csr: wd.csr_path(),
            });
        }
        Ok(wd)
    }

    /// Where build directories live; relative command paths resolve here.
    pub fn builds_dir(&self) -> PathBuf {
        self.path.join(BUILDS_DIR)
    }

    /// The worker's private key (PEM).
    pub fn key_path(&self) -> PathBuf {
        self.path.join(KEY_FILE)
    }

    /// The worker's certificate signing request (PEM).
    pub fn csr_path(&self) -> PathBuf {
        self.path.join(CSR_FILE)
    }

    /// The worker's signed certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.path.join(CERT_FILE)
    }

    /// The master's CA certificate (PEM).
    pub fn ca_path(&self) -> PathBuf {
        self.path.join(CA_FILE)
    }

    /// The log file of `moonbot-worker start`.
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }

    /// The pid file of a running worker.
    pub fn pid_path(&self) -> PathBuf {
        pid_path(&self.path)
    }

    /// What the worker tells the master about itself in its hello.
    pub fn info(&self) -> WorkerInfo {
        machine_info(&self.path)
    }
}

/// What a worker in `dir` tells the master about itself: this machine's facts
/// and the optional `info/` files.
pub fn machine_info(dir: &Path) -> WorkerInfo {
    let info_dir = dir.join(INFO_DIR);
    WorkerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        admin: read_info_file(&info_dir.join(ADMIN_FILE)),
        host_description: read_info_file(&info_dir.join(HOST_FILE)),
    }
}

/// The pid file of the worker in `dir` (usable before the directory is loaded,
/// e.g. by `moonbot-worker stop`).
pub fn pid_path(dir: &Path) -> PathBuf {
    dir.join(PID_FILE)
}

/// The trimmed contents of an optional info file; `None` when missing or blank.
fn read_info_file(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn options(name: &str) -> CreateOptions {
        CreateOptions {
            master: "ci.example.org:9989".into(),
            name: name.into(),
            ca_pem: test_ca_pem(),
            admin: Some("  Jane <jane@example.org>\n".into()),
            host_description: None,
        }
    }

    #[test]
    fn create_writes_key_csr_and_config() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wdir");
        let csr_path = create(&dir, &options("linux-amd64.1")).unwrap();
        assert_eq!(csr_path, dir.join("worker.csr"));

        let csr = rcgen::CertificateSigningRequestParams::from_pem(
            &fs::read_to_string(&csr_path).unwrap(),
        )
        .unwrap();
        let cn = csr
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .expect("CSR carries a CN");
        let cn = match cn {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
            other => panic!("unexpected CN encoding {other:?}"),
        };
        assert_eq!(cn, "linux-amd64.1");
        assert!(csr.params.subject_alt_names.is_empty());

        let key_meta = fs::metadata(dir.join("worker.key")).unwrap();
        assert_eq!(key_meta.permissions().mode() & 0o777, 0o600);
        let key_pem = fs::read_to_string(dir.join("worker.key")).unwrap();
        assert!(
            key_pem.contains("BEGIN PRIVATE KEY"),
            "PKCS#8 PEM: {key_pem}"
        );
        // The CSR's public key is the stored key's.
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(
            csr.public_key.subject_public_key_info(),
            key.subject_public_key_info()
        );

        let config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("worker.json")).unwrap()).unwrap();
        assert_eq!(config["master"], "ci.example.org:9989");
        assert_eq!(config["name"], "linux-amd64.1");
        assert!(dir.join("builds").is_dir());
        assert!(dir.join("ca.crt").is_file());
        assert_eq!(
            fs::read_to_string(dir.join("info/admin")).unwrap(),
            "Jane <jane@example.org>\n"
        );
        assert!(!dir.join("info/host").exists());
    }

    #[test]
    fn create_refuses_to_overwrite_a_key() {
        let tmp = tempfile::tempdir().unwrap();
        create(tmp.path(), &options("w1")).unwrap();
        let key_before = fs::read(tmp.path().join("worker.key")).unwrap();
        let err = create(tmp.path(), &options("w2")).unwrap_err();
        assert!(matches!(err, WorkdirError::AlreadyExists(_)), "{err}");
        assert_eq!(fs::read(tmp.path().join("worker.key")).unwrap(), key_before);
        let config = fs::read_to_string(tmp.path().join("worker.json")).unwrap();
        assert!(config.contains("\"w1\""));
    }

    #[test]
    fn create_validates_its_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", ".hidden", "-x", "a b", "a/b", "ü", &"x".repeat(65)] {
            let err = create(tmp.path(), &options(bad)).unwrap_err();
            assert!(
                matches!(err, WorkdirError::InvalidName { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(validate_name(&"x".repeat(64)).is_ok());
        assert!(validate_name("a.b_c-D9").is_ok());

        let mut opts = options("w");
        for bad in [
            "ci.example.org",
            ":9989",
            "host:0",
            "host:http",
            "::1:9989",
            "[::1:9989",
        ] {
            opts.master = bad.into();
            let err = create(tmp.path(), &opts).unwrap_err();
            assert!(
                matches!(err, WorkdirError::InvalidMaster { .. }),
                "{bad:?}: {err}"
            );
        }
        let mut opts = options("w");
        opts.ca_pem = "not a certificate".into();
        assert!(matches!(
            create(tmp.path(), &opts).unwrap_err(),
            WorkdirError::InvalidCa(_)
        ));
        assert!(
            !tmp.path().join("worker.key").exists(),
            "nothing written on error"
        );
    }

    #[test]
    fn master_address_parses_names_and_literals() {
        assert_eq!(
            MasterAddress::parse("ci.example.org:9989").unwrap(),
            MasterAddress {
                host: "ci.example.org".into(),
                port: 9989
            }
        );
        let v6 = MasterAddress::parse("[::1]:10000").unwrap();
        assert_eq!(v6.host, "::1");
        assert!(v6.is_ipv6_literal());
        assert!(
            !MasterAddress::parse("127.0.0.1:1")
                .unwrap()
                .is_ipv6_literal()
        );
    }

    #[test]
    fn load_explains_a_missing_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        create(tmp.path(), &options("w1")).unwrap();
        let err = WorkerDir::load(tmp.path()).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, WorkdirError::NotSigned { .. }), "{message}");
        assert!(
            message.contains("moonbot sign-worker MASTERDIR"),
            "{message}"
        );
        assert!(message.contains("worker.csr"), "{message}");

        fs::write(tmp.path().join("worker.crt"), "placeholder").unwrap();
        let wd = WorkerDir::load(tmp.path()).unwrap();
        assert_eq!(wd.name, "w1");
        assert_eq!(wd.master_address.port, 9989);
        assert_eq!(wd.builds_dir(), tmp.path().join("builds"));
        let info = wd.info();
        assert_eq!(info.admin.as_deref(), Some("Jane <jane@example.org>"));
        assert_eq!(info.host_description, None);
        assert!(info.cpus >= 1);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            WorkerDir::load(empty.path()).unwrap_err(),
            WorkdirError::NotAWorkerDir(_)
        ));
    }
}
