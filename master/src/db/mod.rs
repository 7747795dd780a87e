//! sea-orm entities and connection set-up; only `data/` uses this module.
//!
//! [`connect`] opens the database named by `db_url` (SQLite or PostgreSQL), applies the
//! per-connection settings and brings the schema up to date with `moonbot_schema::Migrator`.

pub mod entities;

use std::path::Path;
use std::time::Duration;

use moonbot_schema::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteAutoVacuum, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// The database URL forms [`connect`] accepts, for error messages.
const SUPPORTED_URLS: &str = "`sqlite:PATH` (relative to the master directory; \
                              `sqlite::memory:` for a throw-away database) or \
                              `postgres://USER:PASSWORD@HOST[:PORT]/DATABASE`";

/// How long to wait for a new connection to be established (PostgreSQL unreachable, …).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a query may wait for a free connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite: how long a writer waits for another connection's lock (`PRAGMA busy_timeout`).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite in WAL mode lets readers run beside the one writer.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened; `url` has its password hidden.
    #[error("cannot connect to database {url}: {message}")]
    Connect { url: String, message: String },
    /// The database was opened but the schema could not be brought up to date.
    #[error("database {url}: schema migration failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: DbErr,
    },
    /// `db_url` names a database kind moonbot does not support.
    #[error("unsupported database URL {url}: use {SUPPORTED_URLS}")]
    UnsupportedUrl { url: String },
}

/// Opens the database, applies the connection settings and runs all pending migrations.
///
/// - `sqlite:NAME` / `sqlite://NAME`: a file; a relative NAME is resolved against
///   `master_dir`, and the file is created if missing. `sqlite::memory:` is an in-memory
///   database that lives as long as the returned connection pool.
/// - `postgres://…` / `postgresql://…`: used as given.
pub async fn connect(url: &str, master_dir: &Path) -> Result<DatabaseConnection, DbError> {
    let redacted = redact(url);
    let mut opts;
    if url.starts_with("sqlite:") {
        let (resolved, in_memory) =
            resolve_sqlite_url(url, master_dir).map_err(|message| DbError::Connect {
                url: redacted.clone(),
                message,
            })?;
        opts = ConnectOptions::new(resolved);
        opts.max_connections(SQLITE_MAX_CONNECTIONS)
            // Applied by sqlx to every new connection of the pool.
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    // Takes effect only in a new file (before its first
                    // table): the janitor then hands freed pages back with
                    // `PRAGMA incremental_vacuum`, without stopping the master.
                    .auto_vacuum(SqliteAutoVacuum::Incremental)
            });
        if in_memory {
            // An in-memory database disappears with its last connection: keep one open.
            opts.min_connections(1)
                .idle_timeout(None::<Duration>)
                .max_lifetime(None::<Duration>);
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        opts = ConnectOptions::new(url);
        opts.max_connections(POSTGRES_MAX_CONNECTIONS)
            // An idle connection stays: closing it only moves the cost of
            // opening it again to a later request (see `open_every_connection`).
            .idle_timeout(None::<Duration>);
    } else {
        return Err(DbError::UnsupportedUrl { url: redacted });
    }
    opts.connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .sqlx_logging(false);

    let db = Database::connect(opts)
        .await
        .map_err(|e| DbError::Connect {
            message: scrub(&e.to_string(), url),
            url: redacted.clone(),
        })?;
    Migrator::up(&db, None)
        .await
        .map_err(|source| DbError::Migrate {
            url: redacted,
            source,
        })?;
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        open_every_connection(&db);
    }
    Ok(db)
}

/// PostgreSQL: open the pool's other connections now, in the background.
///
/// A new connection costs about 90 ms on loopback (a backend process and, with
/// the default `sslmode=prefer`, a TLS handshake). Opened on demand, that was a
/// page answering in 90 ms instead of 1 to 3 whenever a request met the pool
/// while it grew (the history bench's p99 on PostgreSQL). sqlx's own
/// `min_connections` would open them one by one before the master starts
/// (0.2 s → 0.95 s); here they open side by side while it starts, and stay
/// (no idle timeout).
fn open_every_connection(db: &DatabaseConnection) {
    let pool = db.get_postgres_connection_pool().clone();
    tokio::spawn(async move {
        // Held together, so each is a new connection; then all go back idle.
        let opened =
            futures_util::future::join_all((0..POSTGRES_MAX_CONNECTIONS).map(|_| pool.acquire()))
                .await;
        if let Some(Err(e)) = opened.into_iter().find(Result::is_err) {
            tracing::warn!("could not open every PostgreSQL connection ahead of need: {e}");
        }
    });
}

/// Turns a `sqlite:` URL into one sqlx opens as intended: a relative path is joined to
/// `master_dir` and `mode=rwc` is added unless the URL chooses a mode. Returns the URL and
/// whether it names an in-memory database.
fn resolve_sqlite_url(url: &str, master_dir: &Path) -> Result<(String, bool), String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (name, params) = match rest.split_once('?') {
        Some((name, params)) => (name, Some(params)),
        None => (rest, None),
    };
    let param_values = |key: &str| {
        params
            .into_iter()
            .flat_map(|p| p.split('&'))
            .filter_map(move |kv| kv.split_once('=').filter(|(k, _)| *k == key))
            .map(|(_, v)| v.to_owned())
            .collect::<Vec<_>>()
    };
    let modes = param_values("mode");
    if name.is_empty() || name == ":memory:" || modes.iter().any(|m| m == "memory") {
        return Ok((url.to_owned(), true));
    }
    let path = if name.starts_with('/') {
        name.to_owned()
    } else {
        // Absolute, so the file does not move if the process changes directory, and so the
        // URL never has a host part.
        let dir = std::path::absolute(master_dir).map_err(|e| {
            format!(
                "cannot resolve the master directory {}: {e}",
                master_dir.display()
            )
        })?;
        let dir = dir
            .to_str()
            .ok_or_else(|| format!("the master directory {} is not valid UTF-8", dir.display()))?;
        // `name` is already URL-encoded by whoever wrote it; the directory is a plain path.
        format!("{}/{name}", encode_path(dir.trim_end_matches('/')))
    };
    let mut resolved = format!("sqlite://{path}");
    match params {
        Some(p) if !modes.is_empty() => resolved.push_str(&format!("?{p}")),
        Some(p) if !p.is_empty() => resolved.push_str(&format!("?{p}&mode=rwc")),
        _ => resolved.push_str("?mode=rwc"),
    }
    Ok((resolved, false))
}

/// Escapes the characters sqlx's SQLite URL parser treats specially (it percent-decodes the
/// path and splits at `?`).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Hides the password of a database URL (`postgres://user:secret@host/db` →
/// `postgres://user:***@host/db`, also `?password=secret`), for logs and error messages.
pub fn redact(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// Removes the URL's password from a driver error message that may quote the URL.
fn scrub(message: &str, url: &str) -> String {
    let redacted = redact(url);
    let mut message = message.replace(url, &redacted);
    for secret in passwords(url) {
        if !secret.is_empty() {
            message = message.replace(&secret, "***");
        }
    }
    message
}

/// The password parts of a URL (user-info and `password=` parameter).
fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    if let Some((_, rest)) = before_query.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            found.push(password.to_owned());
        }
    }
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some((k, v)) = kv.split_once('=')
            && k.eq_ignore_ascii_case("password")
        {
            found.push(v.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://bb:s3cret@db.example:5432/moonbot"),
            "postgres://bb:***@db.example:5432/moonbot"
        );
        assert_eq!(
            redact("postgresql://bb@db/moonbot?sslmode=require&password=x"),
            "postgresql://bb@db/moonbot?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgres://a:b@c@host/db"),
            "postgres://a:***@host/db"
        );
        assert_eq!(redact("sqlite:state.sqlite"), "sqlite:state.sqlite");
        assert_eq!(redact("sqlite:///abs/x.db"), "sqlite:///abs/x.db");
        assert_eq!(
            scrub("bad url postgres://u:pw@h/db (pw)", "postgres://u:pw@h/db"),
            "bad url postgres://u:***@h/db (***)"
        );
    }

    #[test]
    fn resolves_sqlite_urls() {
        let dir = Path::new("/srv/bb master");
        let r = |u| resolve_sqlite_url(u, dir).unwrap();
        assert_eq!(
            r("sqlite:state.sqlite"),
            (
                "sqlite:///srv/bb master/state.sqlite?mode=rwc".into(),
                false
            )
        );
        assert_eq!(
            r("sqlite://db/state.sqlite"),
            (
                "sqlite:///srv/bb master/db/state.sqlite?mode=rwc".into(),
                false
            )
        );
        assert_eq!(
            r("sqlite:///var/x.db"),
            ("sqlite:///var/x.db?mode=rwc".into(), false)
        );
        assert_eq!(
            r("sqlite:x.db?mode=ro"),
            ("sqlite:///srv/bb master/x.db?mode=ro".into(), false)
        );
        assert_eq!(
            r("sqlite:x.db?cache=private"),
            (
                "sqlite:///srv/bb master/x.db?cache=private&mode=rwc".into(),
                false
            )
        );
        assert_eq!(r("sqlite::memory:"), ("sqlite::memory:".into(), true));
        assert_eq!(
            resolve_sqlite_url("sqlite:x.db", Path::new("/odd?dir%")).unwrap(),
            ("sqlite:///odd%3Fdir%25/x.db?mode=rwc".into(), false)
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            resolve_sqlite_url("sqlite:x.db", Path::new("rel")).unwrap(),
            (
                format!("sqlite://{}/rel/x.db?mode=rwc", cwd.display()),
                false
            )
        );
        assert_eq!(
            resolve_sqlite_url("sqlite:x.db", Path::new("/")).unwrap(),
            ("sqlite:///x.db?mode=rwc".into(), false)
        );
    }
}
