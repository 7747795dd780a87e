//! History at scale: a master whose database holds N finished builds (each
//! with 3 steps, a small log per step and 4 properties, as a build of the
//! builds scenario leaves them), loaded in bulk with the same rows the data
//! layer writes, then the latency of the API lists and the pages a user opens
//! first, median and p99 over fresh connections, and the master's start-up.
//!
//! The loader writes through one connection in large transactions of
//! multi-row inserts; the master is stopped meanwhile. Rows get explicit ids,
//! and PostgreSQL's sequences are moved past them afterwards.

use crate::figures::Figures;
use moonbot_tests::{Backend, TestMaster};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, TransactionTrait};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Builders the history is spread over.
const BUILDERS: usize = 10;
/// Builds per loader transaction.
const BATCH: usize = 2_000;
/// Requests per measured endpoint.
const SAMPLES: usize = 50;

const LUA: &str = r#"local mb = require "moonbot"
local builders = {}
for i = 0, 9 do
  builders[#builders + 1] = mb.builder { name = string.format("b%04d", i), workernames = { "w1" }, steps = {
    mb.steps.shell { name = "checkout", command = "true" },
    mb.steps.shell { name = "compile", command = "true" },
    mb.steps.shell { name = "test", command = "true" },
  } }
end
return {
  www = { port = 0, bind = "127.0.0.1" },
  protocols = { quic = { port = 0, bind = "127.0.0.1" } },
  db = { url = "@DB@" },
  reconfig = { watch = false },
  collapse_requests = false, -- as the Buildbot baseline: every request is a build
  workers = { mb.worker { name = "w1" } },
  builders = builders,
  schedulers = {},
}
"#;

/// The endpoints measured, as (figure name, path); `{b}` is a builder id.
const ENDPOINTS: &[(&str, &str)] = &[
    ("api_builds", "/api/v2/builds?limit=100&order=-number"),
    ("api_builder_builds", "/api/v2/builders/{b}/builds?limit=20"),
    (
        "api_pending_requests",
        "/api/v2/buildrequests?complete=false",
    ),
    ("page_home", "/"),
    ("page_builder", "/builders/{b}"),
    ("page_waterfall", "/waterfall"),
    ("page_grid", "/grid"),
];

/// Run the scenario at 1,000 builds and at `builds`, on SQLite and, when
/// `MOONBOT_TEST_POSTGRES_URL` is set, on PostgreSQL.
pub(crate) fn history(builds: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let mut backends = vec![("sqlite", Backend::Sqlite)];
    if let Some(pg) = Backend::postgres() {
        backends.push(("postgres", pg));
    }
    for (db, backend) in &backends {
        for n in [1_000, builds] {
            one(db, backend, n, figures)?;
        }
    }
    Ok(())
}

fn one(db: &str, backend: &Backend, n: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let mut m = TestMaster::create(backend, LUA);
    // A first start creates the schema and the builder and worker rows.
    m.start();
    let builderids: Vec<i64> = (0..BUILDERS)
        .map(|i| m.builderid(&format!("b{i:04}")))
        .collect();
    let workerid = m.get("/api/v2/workers")["workers"][0]["workerid"]
        .as_i64()
        .unwrap_or(1);
    let masterid = m.get("/api/v2/masters")["masters"][0]["masterid"]
        .as_i64()
        .unwrap_or(1);
    m.stop(false);

    let url = m.database_url();
    let loaded = Instant::now();
    let size = block_on(load(&url, n, &builderids, workerid, masterid))?;
    let prefix = format!("history_{db}_{n}");
    figures.add(
        &format!("{prefix}_load_s"),
        loaded.elapsed().as_secs_f64(),
        "s",
    );
    figures.add(
        &format!("{prefix}_db_bytes_per_build"),
        size as f64 / n as f64,
        "B",
    );

    let started = Instant::now();
    m.start();
    // Started means the API answers.
    m.get("/api/v2");
    figures.add(
        &format!("{prefix}_startup_s"),
        started.elapsed().as_secs_f64(),
        "s",
    );
    for (name, path) in ENDPOINTS {
        let path = path.replace("{b}", &builderids[0].to_string());
        let url = format!("{}{path}", m.www);
        let mut times = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let t = Instant::now();
            // A new connection each time, as a script or a browser tab makes it.
            let response = ureq::AgentBuilder::new().build().get(&url).call()?;
            response.into_string()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if std::env::var_os("MOONBOT_BENCH_DUMP").is_some() {
            eprintln!("{prefix}_{name}: {times:.1?}");
        }
        times.sort_by(f64::total_cmp);
        figures.add(
            &format!("{prefix}_{name}_median_ms"),
            times[times.len() / 2],
            "ms",
        );
        figures.add(
            &format!("{prefix}_{name}_p99_ms"),
            times[(times.len() * 99 / 100).min(times.len() - 1)],
            "ms",
        );
    }
    if n >= 100_000 {
        janitor(&m, n, &prefix, figures)?;
    }
    m.stop(false);
    Ok(())
}

/// Turn the janitor on over the history (the oldest 5% of builds past
/// `build_horizon`, the next 5% past `log_horizon`) and time its first pass.
fn janitor(m: &TestMaster, n: usize, prefix: &str, figures: &mut Figures) -> anyhow::Result<()> {
    let build_horizon = (n as f64 * 10.0 * 0.95) as u64;
    let log_horizon = (n as f64 * 10.0 * 0.90) as u64;
    m.write_config(&LUA.replace(
        "  schedulers = {},",
        &format!(
            "  schedulers = {{}},\n  janitor = {{ build_horizon = {build_horizon}, log_horizon = {log_horizon}, every = 1 }},"
        ),
    ));
    moonbot_tests::run_ok("moonbot", &["reconfig", m.path()]);
    let pass = m.wait_for(
        "the janitor's first pass",
        std::time::Duration::from_secs(1800),
        || {
            let passes = m.get("/api/v2/janitor_passes?complete=true&order=passid&limit=1");
            passes["janitor_passes"].as_array()?.first().cloned()
        },
    );
    let took =
        pass["finished_at"].as_f64().unwrap_or(0.0) - pass["started_at"].as_f64().unwrap_or(0.0);
    let builds = pass["builds_deleted"].as_f64().unwrap_or(0.0);
    figures.add(
        &format!("{prefix}_janitor_builds_deleted"),
        builds,
        "builds",
    );
    figures.add(
        &format!("{prefix}_janitor_logs_expired"),
        pass["logs_expired"].as_f64().unwrap_or(0.0),
        "logs",
    );
    figures.add(&format!("{prefix}_janitor_pass_s"), took, "s");
    // What the master said about its longest writes (over 50 ms), if any.
    for line in m.log().lines().filter(|l| l.contains("held the database")) {
        eprintln!("  {prefix}: {line}");
    }
    figures.add(
        &format!("{prefix}_janitor_longest_batch_ms"),
        pass["longest_batch_ms"].as_f64().unwrap_or(0.0),
        "ms",
    );
    Ok(())
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(work)
}

/// One build's log: three header lines and one line of output, stored plain,
/// as the data layer stores a chunk under 4 KiB.
fn log_chunk(step: &str) -> Vec<u8> {
    format!("htrue\nh in dir builds/{step}/build\nook\nhprogram finished with exit code 0\n")
        .into_bytes()
}

fn blob(db: DbBackend, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match db {
        DbBackend::Postgres => format!("'\\x{hex}'::bytea"),
        _ => format!("X'{hex}'"),
    }
}

/// Insert `n` finished builds; returns the database's size in bytes.
async fn load(
    url: &str,
    n: usize,
    builderids: &[i64],
    workerid: i64,
    masterid: i64,
) -> anyhow::Result<u64> {
    let db = Database::connect(url).await?;
    let backend = db.get_database_backend();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let first = now - n as f64 * 10.0;
    let chunks: Vec<String> = ["checkout", "compile", "test"]
        .iter()
        .map(|s| blob(backend, &log_chunk(s)))
        .collect();
    let mut numbers = vec![0i64; builderids.len()];
    let mut start = 0;
    while start < n {
        let end = (start + BATCH).min(n);
        let mut buildsets = Vec::new();
        let mut requests = Vec::new();
        let mut builds = Vec::new();
        let mut props = Vec::new();
        let mut steps = Vec::new();
        let mut logs = Vec::new();
        let mut logchunks = Vec::new();
        for i in start..end {
            let id = i as i64 + 1;
            let b = i % builderids.len();
            numbers[b] += 1;
            let number = numbers[b];
            let builderid = builderids[b];
            let t0 = first + i as f64 * 10.0;
            let t1 = t0 + 3.0;
            buildsets.push(format!(
                "({id}, 'A build was forced by ''bench''', {t0}, {}, {t1}, 0)",
                bool_sql(backend, true)
            ));
            requests.push(format!(
                "({id}, {id}, {builderid}, 0, {}, 0, {t0}, {t1}, {})",
                bool_sql(backend, true),
                bool_sql(backend, false)
            ));
            builds.push(format!(
                "({id}, {number}, {builderid}, {id}, {workerid}, {masterid}, {t0}, {t1}, 'build successful', 0)"
            ));
            for (k, (name, value, source)) in [
                (
                    "buildername",
                    format!("[\"b{b:04}\",\"Builder\"]"),
                    "Builder",
                ),
                ("buildnumber", format!("[{number},\"Build\"]"), "Build"),
                ("workername", "[\"w1\",\"Worker\"]".to_string(), "Worker"),
                (
                    "owner",
                    "[\"bench\",\"Force Build Form\"]".to_string(),
                    "Force Build Form",
                ),
            ]
            .iter()
            .enumerate()
            {
                props.push(format!(
                    "({}, {id}, '{name}', '{}', '{source}')",
                    id * 4 + k as i64,
                    value.replace('\'', "''")
                ));
            }
            for (s, name) in ["checkout", "compile", "test"].iter().enumerate() {
                let sid = id * 3 + s as i64;
                steps.push(format!(
                    "({sid}, {}, '{name}', {id}, {t0}, {t1}, '''true''', 0, '[]', {})",
                    s + 1,
                    bool_sql(backend, false)
                ));
                logs.push(format!(
                    "({sid}, 'stdio', 'stdio', {sid}, {}, 4, 's')",
                    bool_sql(backend, true)
                ));
                logchunks.push(format!("({sid}, {sid}, 0, 3, {}, 0)", chunks[s]));
            }
        }
        let statements = [
            format!(
                "INSERT INTO buildsets (id, reason, submitted_at, complete, complete_at, results) VALUES {}",
                buildsets.join(",")
            ),
            format!(
                "INSERT INTO buildrequests (id, buildsetid, builderid, priority, complete, results, submitted_at, complete_at, waited_for) VALUES {}",
                requests.join(",")
            ),
            format!(
                "INSERT INTO builds (id, number, builderid, buildrequestid, workerid, masterid, started_at, complete_at, state_string, results) VALUES {}",
                builds.join(",")
            ),
            format!(
                "INSERT INTO build_properties (id, buildid, name, value, source) VALUES {}",
                props.join(",")
            ),
            format!(
                "INSERT INTO steps (id, number, name, buildid, started_at, complete_at, state_string, results, urls_json, hidden) VALUES {}",
                steps.join(",")
            ),
            format!(
                "INSERT INTO logs (id, name, slug, stepid, complete, num_lines, type) VALUES {}",
                logs.join(",")
            ),
            format!(
                "INSERT INTO logchunks (id, logid, first_line, last_line, content, compressed) VALUES {}",
                logchunks.join(",")
            ),
        ];
        let txn = db.begin().await?;
        for s in &statements {
            txn.execute_unprepared(s).await?;
        }
        txn.commit().await?;
        start = end;
    }
    if backend == DbBackend::Postgres {
        for table in [
            "buildsets",
            "buildrequests",
            "builds",
            "build_properties",
            "steps",
            "logs",
            "logchunks",
        ] {
            db.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            ))
            .await?;
        }
        // What autovacuum does to a database in use: statistics, and the
        // visibility map that lets a count read the index alone.
        db.execute_unprepared("VACUUM ANALYZE").await?;
    } else {
        db.execute_unprepared("ANALYZE").await?;
        db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await?;
    }
    let size = database_size(&db, url).await?;
    db.close().await?;
    Ok(size)
}

fn bool_sql(db: DbBackend, v: bool) -> &'static str {
    match (db, v) {
        (DbBackend::Postgres, true) => "TRUE",
        (DbBackend::Postgres, false) => "FALSE",
        (_, true) => "1",
        (_, false) => "0",
    }
}

async fn database_size(db: &DatabaseConnection, url: &str) -> anyhow::Result<u64> {
    if db.get_database_backend() == DbBackend::Postgres {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_database_size(current_database())",
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no size"))?;
        return Ok(row.try_get_by_index::<i64>(0)? as u64);
    }
    let path = url
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
    Ok(std::fs::metadata(path)?.len() + wal)
}
