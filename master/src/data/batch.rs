//! Several statements in one transaction and, on SQLite, in one trip to the
//! database: the write path of a build.
//!
//! Why: sqlx runs each SQLite connection on a thread of its own, so every
//! statement is a hand-off to that thread and back. On this project's 2-core
//! machine that cost about 0.2 ms of CPU a statement, most of a build's master
//! CPU (`bench/README.md`). A [`Batch`] is sent as one multi-statement query,
//! `BEGIN IMMEDIATE; …; COMMIT`, so a whole transaction costs one hand-off
//! however many statements it holds. sqlx's SQLite driver binds the `?`
//! parameters of consecutive statements in order and reports the end of each
//! statement, which is how the rows are split back per statement.
//!
//! On PostgreSQL the statements run one after another in a transaction on one
//! connection (a prepared statement there holds one statement); there is no
//! thread hand-off to save.
//!
//! Invariants: every statement of a batch is committed or none is; the caller
//! publishes its events only after [`Data::run_batch`] returns, so an event
//! never announces a row that is not committed. A statement that needs the id of
//! a row inserted earlier in the same batch uses [`Batch::last_id`].

use super::{Data, DataError};
use futures_util::TryStreamExt;
use sea_orm::sea_query::{Expr, SimpleExpr, Values};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::sqlite::{Sqlite, SqliteConnection};
use sea_orm::sqlx::{self, Either};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, FromQueryResult, QueryResult, RuntimeErr, Statement,
    StatementBuilder, TransactionTrait,
};
use sea_query_sqlx::SqlxValues;
use std::sync::Arc;

/// Statements to run in order, in one transaction.
#[derive(Debug)]
pub(crate) struct Batch {
    backend: DbBackend,
    statements: Vec<Statement>,
    /// The kinds of event recorded for reporters (`push_report_event`).
    pub(super) reported: super::reports::ReportEvents,
    /// It stores a report event: the reporters are woken once it commits.
    pub(super) stores_report_event: bool,
}

/// Which statement of a batch, to find its rows in [`BatchRows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatementIndex(usize);

impl Batch {
    pub(crate) fn new(data: &Data) -> Batch {
        Batch {
            backend: data.db.get_database_backend(),
            statements: Vec::new(),
            reported: data.reported_events(),
            stores_report_event: false,
        }
    }

    /// Adds a statement (an insert, update, delete or select built with
    /// sea-query or sea-orm).
    pub(crate) fn push<S: StatementBuilder>(&mut self, statement: &S) -> StatementIndex {
        self.statements.push(statement.build(&self.backend));
        StatementIndex(self.statements.len() - 1)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The id of the row that an earlier statement of this batch inserted into
    /// `table` (whose key is `id`), as an expression for a later statement.
    ///
    /// SQLite: the batch holds the database's write lock from `BEGIN
    /// IMMEDIATE`, so the highest id is the row it inserted (ids only grow).
    /// PostgreSQL: the session's last value of the table's id sequence.
    pub(crate) fn last_id(&self, table: &'static str) -> SimpleExpr {
        match self.backend {
            DbBackend::Postgres => {
                Expr::cust(format!("currval(pg_get_serial_sequence('{table}', 'id'))"))
            }
            _ => Expr::cust(format!("(SELECT MAX(id) FROM {table})")),
        }
    }
}

/// The rows each statement of a batch returned (`RETURNING`, `SELECT`).
#[derive(Debug)]
pub(crate) struct BatchRows(Vec<Vec<QueryResult>>);

impl BatchRows {
    /// The rows of one statement, read as `M`.
    pub(crate) fn models<M: FromQueryResult>(
        &mut self,
        index: StatementIndex,
    ) -> Result<Vec<M>, DataError> {
        let rows = self
            .0
            .get_mut(index.0)
            .map(std::mem::take)
            .ok_or(DataError::Unexpected(
                "answered fewer statements than a batch held",
            ))?;
        rows.iter()
            .map(|r| M::from_query_result(r, "").map_err(DataError::from))
            .collect()
    }

    /// The one row a statement must have returned.
    pub(crate) fn one<M: FromQueryResult>(
        &mut self,
        index: StatementIndex,
        what: &'static str,
    ) -> Result<M, DataError> {
        self.models(index)?
            .into_iter()
            .next()
            .ok_or(DataError::Unexpected(what))
    }
}

impl Data {
    /// Runs `batch` in one transaction: every statement or none. Returns each
    /// statement's rows.
    pub(crate) async fn run_batch(&self, batch: Batch) -> Result<BatchRows, DataError> {
        if batch.is_empty() {
            return Ok(BatchRows(Vec::new()));
        }
        let wakes_reporters = batch.stores_report_event;
        let rows = match batch.backend {
            DbBackend::Sqlite => self.run_sqlite_batch(batch).await,
            _ => self.run_batch_in_transaction(batch).await,
        }?;
        if wakes_reporters {
            self.report_events_stored();
        }
        Ok(rows)
    }

    /// One multi-statement query on one pooled connection: one hand-off.
    async fn run_sqlite_batch(&self, batch: Batch) -> Result<BatchRows, DataError> {
        let mut sql = String::from("BEGIN IMMEDIATE;\n");
        let mut values = Vec::new();
        for statement in &batch.statements {
            sql.push_str(&statement.sql);
            sql.push_str(";\n");
            if let Some(v) = &statement.values {
                values.extend(v.0.iter().cloned());
            }
        }
        sql.push_str("COMMIT;");
        let pool = self.db.get_sqlite_connection_pool();
        let _writing = self.write_gate.lock().await;
        let mut conn = OpenUntilAnswered(Some(pool.acquire().await.map_err(conn_err)?));
        // Every statement's end (`BEGIN`'s, each pushed one's, `COMMIT`'s) is
        // a `Left`; a new group starts after each, so group k (1 ≤ k ≤ n)
        // holds the rows of pushed statement k - 1.
        let mut groups: Vec<Vec<QueryResult>> = vec![Vec::new()];
        {
            let query = sqlx::query_with(sqlx::AssertSqlSafe(sql), SqlxValues(Values(values)));
            // Deprecated in sqlx 0.9 because only SQLite supports several
            // statements in one prepared query; that is exactly what is used
            // here, on SQLite only, and `raw_sql` cannot bind parameters.
            #[allow(deprecated)]
            let mut stream = query.fetch_many(conn.connection());
            // On an error the guard below stays armed: the connection, maybe
            // still inside the transaction, is closed, which rolls it back.
            while let Some(item) = stream
                .try_next()
                .await
                .map_err(|e| DataError::Db(DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))))?
            {
                match item {
                    Either::Left(_) => groups.push(Vec::new()),
                    Either::Right(row) => {
                        if let Some(group) = groups.last_mut() {
                            group.push(QueryResult::from(row));
                        }
                    }
                }
            }
        }
        conn.answered();
        let n = batch.statements.len();
        if groups.len() < n + 1 {
            return Err(DataError::Unexpected(
                "answered fewer statements than a batch held",
            ));
        }
        Ok(BatchRows(groups.drain(1..=n).collect()))
    }

    /// Statement by statement in a transaction (PostgreSQL).
    async fn run_batch_in_transaction(&self, batch: Batch) -> Result<BatchRows, DataError> {
        let txn = self.db.begin().await?;
        let mut per_statement = Vec::with_capacity(batch.statements.len());
        for statement in batch.statements {
            per_statement.push(txn.query_all_raw(statement).await?);
        }
        txn.commit().await?;
        Ok(BatchRows(per_statement))
    }
}

/// A pooled SQLite connection while a batch runs on it. If the batch fails,
/// or the caller stops waiting (its future is dropped: an HTTP client hung
/// up, a timeout), the batch may have begun its transaction and not ended it;
/// the connection is then closed instead of going back to the pool, which
/// rolls the transaction back, rather than handing the next user a
/// connection inside it.
struct OpenUntilAnswered(Option<PoolConnection<Sqlite>>);

impl OpenUntilAnswered {
    fn connection(&mut self) -> &mut SqliteConnection {
        self.0.as_mut().expect("held until answered")
    }

    /// The batch committed: the connection goes back to the pool.
    fn answered(mut self) {
        self.0.take();
    }
}

impl Drop for OpenUntilAnswered {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

fn conn_err(e: sqlx::Error) -> DataError {
    DataError::Db(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))
}

#[cfg(test)]
mod tests {
    //! The build's write path on a real SQLite file and, with
    //! `MOONBOT_TEST_POSTGRES_URL` (as `./test` sets), a real PostgreSQL
    //! database of its own.
    use super::*;
    use crate::data::buildsets::PendingRequest;
    use crate::db::entities::{builders, buildrequest_claims};
    use crate::mq::Bus;
    use crate::results::{FAILURE, SKIPPED, SUCCESS, WARNINGS};
    use sea_orm::sea_query::Query;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait};
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A data layer on a fresh database: a SQLite file, or a PostgreSQL
    /// database created for this test (dropped by [`Fixture::drop_database`]).
    struct Fixture {
        data: Data,
        _dir: tempfile::TempDir,
        postgres: Option<(String, String)>,
    }

    impl Fixture {
        async fn sqlite() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::db::connect("sqlite:state.sqlite", dir.path())
                .await
                .unwrap();
            Fixture::with(db, dir, None).await
        }

        /// None (and a message) when no PostgreSQL is configured; a failure
        /// when `MOONBOT_REQUIRE_POSTGRES=1` says one must be.
        async fn postgres(test: &str) -> Option<Fixture> {
            let base = match std::env::var("MOONBOT_TEST_POSTGRES_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    assert!(
                        std::env::var("MOONBOT_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                        "MOONBOT_REQUIRE_POSTGRES=1 but MOONBOT_TEST_POSTGRES_URL is not set"
                    );
                    eprintln!("skipped: set MOONBOT_TEST_POSTGRES_URL (./test does)");
                    return None;
                }
            };
            // PostgreSQL names are at most 63 bytes.
            let test: String = test.chars().take(30).collect();
            let name = format!("moonbot_unit_{test}_{}", std::process::id());
            let admin = sea_orm::Database::connect(&base).await.unwrap();
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            admin.close().await.ok();
            let (prefix, _) = base.rsplit_once('/').expect("URL with a database");
            let dir = tempfile::tempdir().unwrap();
            let db = crate::db::connect(&format!("{prefix}/{name}"), dir.path())
                .await
                .unwrap();
            Some(Fixture::with(db, dir, Some((base, name))).await)
        }

        async fn with(
            db: sea_orm::DatabaseConnection,
            dir: tempfile::TempDir,
            postgres: Option<(String, String)>,
        ) -> Fixture {
            let masterid = crate::data::masters::register(&db, "test:master")
                .await
                .unwrap();
            Fixture {
                data: Data::new(db, Bus::new(), masterid),
                _dir: dir,
                postgres,
            }
        }

        async fn drop_database(self) {
            let Fixture { data, postgres, .. } = self;
            data.db.close().await.ok();
            if let Some((base, name)) = postgres {
                let admin = sea_orm::Database::connect(&base).await.unwrap();
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await
                    .unwrap();
            }
        }

        async fn builder(&self, name: &str) -> i64 {
            builders::ActiveModel {
                name: Set(name.into()),
                tags: Set("[]".into()),
                ..Default::default()
            }
            .insert(&self.data.db)
            .await
            .unwrap()
            .id
        }

        async fn request(&self, brid: i64) -> PendingRequest {
            let mut request = self
                .data
                .pending_requests(&[self.request_builder(brid).await], 0, 100)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.brid == brid)
                .expect("the request is pending");
            assert!(self.data.claim_request(&mut request).await.unwrap());
            request
        }

        async fn request_builder(&self, brid: i64) -> i64 {
            let (rows, _) = self
                .data
                .list_buildrequests(&Default::default())
                .await
                .unwrap();
            rows.iter()
                .find(|r| r["buildrequestid"] == brid)
                .and_then(|r| r["builderid"].as_i64())
                .expect("the request exists")
        }
    }

    /// Everything one build writes, batch by batch, as a user reads it back
    /// through the API's lists; and the events, each after its rows.
    async fn a_build_is_recorded_whole(f: &Fixture) {
        let data = &f.data;
        let mut events = data.bus.subscribe();
        let builder = f.builder("linux").await;
        let workerid = data.sync_workers(&["w1".into()]).await.unwrap()["w1"];
        let props = BTreeMap::from([(
            "branch".to_string(),
            (json!("main"), "Force Build Form".to_string()),
        )]);
        let (bsid, brids) = data
            .add_buildset("forced", &[builder], &props)
            .await
            .unwrap();
        let request = f.request(brids[&builder]).await;
        assert_eq!(request.buildsetid, bsid);

        let started = data.start_build(&request, workerid, &[]).await.unwrap();
        assert_eq!(started.number, 1);
        assert_eq!(started.buildset_properties, props);
        let (stepid, mut log) = data
            .start_step(started.buildid, 1, "compile", "compiling", "stdio")
            .await
            .unwrap();
        log.append(crate::data::logs::LogStream::Stdout, b"hello\n")
            .await
            .unwrap();
        let closed = log.close().await.unwrap();
        assert_eq!(closed.lines, 1);
        data.finish_step(stepid, SUCCESS, "compiled", false, &[closed])
            .await
            .unwrap();
        data.finish_build(started.buildid, SUCCESS, "build successful", Some(&request))
            .await
            .unwrap();

        let q = Default::default();
        let (steps, _) = data.list_steps(&q).await.unwrap();
        assert_eq!(steps[0]["stepid"], stepid);
        assert_eq!(steps[0]["buildid"], started.buildid);
        assert_eq!(steps[0]["results"], SUCCESS);
        assert_eq!(steps[0]["state_string"], "compiled");
        let (logs, _) = data.list_logs(&q).await.unwrap();
        assert_eq!(logs[0]["stepid"], stepid);
        assert_eq!(logs[0]["complete"], true);
        assert_eq!(logs[0]["num_lines"], 1);
        let (requests, _) = data.list_buildrequests(&q).await.unwrap();
        assert_eq!(requests[0]["complete"], true);
        assert_eq!(requests[0]["results"], SUCCESS);
        let (buildsets, _) = data.list_buildsets(&q).await.unwrap();
        assert_eq!(buildsets[0]["complete"], true);
        assert_eq!(buildsets[0]["results"], SUCCESS);

        let mut keys = Vec::new();
        while let Ok(event) = events.try_recv() {
            keys.push(event.key.to_string());
        }
        let logid = logs[0]["logid"].as_i64().unwrap();
        let (build, brid) = (started.buildid, request.brid);
        for expected in [
            format!("buildsets/{bsid}/new"),
            format!("buildrequests/{brid}/new"),
            format!("buildrequests/{brid}/claimed"),
            format!("builds/{build}/new"),
            format!("steps/{stepid}/started"),
            format!("logs/{logid}/new"),
            format!("logs/{logid}/finished"),
            format!("steps/{stepid}/finished"),
            format!("builds/{build}/finished"),
            format!("buildrequests/{brid}/complete"),
            format!("buildsets/{bsid}/complete"),
        ] {
            assert!(keys.contains(&expected), "no {expected} in {keys:?}");
        }
    }

    /// A buildset of three requests completes with the last of them, with
    /// the worst result in Buildbot's order (SKIPPED is better than SUCCESS).
    async fn a_buildset_completes_with_its_last_request(f: &Fixture) {
        let data = &f.data;
        let mut builders = Vec::new();
        for name in ["a", "b", "c", "d"] {
            builders.push(f.builder(name).await);
        }
        let buildset_results = |bsid: i64| async move {
            let (sets, _) = data.list_buildsets(&Default::default()).await.unwrap();
            let set = sets.into_iter().find(|s| s["bsid"] == bsid).unwrap();
            (set["complete"].clone(), set["results"].clone())
        };
        for (results, expected) in [
            ([SUCCESS, WARNINGS, SKIPPED], WARNINGS),
            ([SKIPPED, SKIPPED, SKIPPED], SUCCESS),
            ([FAILURE, SUCCESS, WARNINGS], FAILURE),
        ] {
            let (bsid, brids) = data
                .add_buildset("three", &builders[..3], &BTreeMap::new())
                .await
                .unwrap();
            for (i, result) in results.into_iter().enumerate() {
                let request = f.request(brids[&builders[i]]).await;
                data.complete_request(&request, result).await.unwrap();
                let (complete, got) = buildset_results(bsid).await;
                if i < 2 {
                    assert_eq!(complete, false, "{results:?}: open after {}", i + 1);
                } else {
                    assert_eq!(complete, true, "{results:?}");
                    assert_eq!(got, expected, "{results:?}");
                }
            }
        }
    }

    /// A batch that fails part-way leaves nothing behind, and the connection
    /// it ran on is not left inside a transaction: later writes go through.
    async fn a_failed_batch_changes_nothing(f: &Fixture) {
        let data = &f.data;
        let builder = f.builder("x").await;
        let (_, brids) = data
            .add_buildset("one", &[builder], &BTreeMap::new())
            .await
            .unwrap();
        let brid = brids[&builder];
        let claim = |brid: i64| {
            Query::insert()
                .into_table(buildrequest_claims::Entity)
                .columns([
                    buildrequest_claims::Column::Brid,
                    buildrequest_claims::Column::Masterid,
                    buildrequest_claims::Column::ClaimedAt,
                ])
                .values_panic([brid.into(), data.masterid.into(), 1.0.into()])
                .to_owned()
        };
        // More failures than the pool has connections.
        for _ in 0..10 {
            let mut batch = Batch::new(data);
            batch.push(&claim(brid));
            batch.push(&claim(brid));
            let err = data.run_batch(batch).await.unwrap_err();
            assert!(
                matches!(&err, DataError::Db(e) if crate::data::buildsets::is_unique_violation(e)),
                "{err}"
            );
        }
        let claims = buildrequest_claims::Entity::find()
            .all(&data.db)
            .await
            .unwrap();
        assert!(claims.is_empty(), "a failed batch left {claims:?}");
        for _ in 0..10 {
            data.add_buildset("after", &[builder], &BTreeMap::new())
                .await
                .unwrap();
        }
        let (sets, total) = data.list_buildsets(&Default::default()).await.unwrap();
        assert_eq!(total, 11, "{sets:?}");
    }

    /// A batch whose caller gives up part-way (an HTTP client that hangs
    /// up, a timeout) is all or nothing, and leaves no transaction open on a
    /// pooled connection: later writes are not locked out.
    async fn a_dropped_batch_leaves_nothing_open(f: &Fixture) {
        let data = &f.data;
        let batch_of = |n: usize| {
            let mut batch = Batch::new(data);
            for i in 0..n {
                batch.push(
                    Query::insert()
                        .into_table(crate::db::entities::buildsets::Entity)
                        .columns([
                            crate::db::entities::buildsets::Column::Reason,
                            crate::db::entities::buildsets::Column::SubmittedAt,
                            crate::db::entities::buildsets::Column::Complete,
                        ])
                        .values_panic([format!("dropped {i}").into(), 1.0.into(), false.into()]),
                );
            }
            batch
        };
        for _ in 0..20 {
            // Given up on after its first polls, mid-way through its statements.
            let _ = tokio::time::timeout(
                std::time::Duration::from_micros(200),
                data.run_batch(batch_of(300)),
            )
            .await;
        }
        // A transaction left open would hold SQLite's write lock: these would
        // wait out the busy timeout (10 s) and fail.
        let after = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            for _ in 0..10 {
                data.add_buildset("after", &[], &BTreeMap::new())
                    .await
                    .unwrap();
            }
        })
        .await;
        assert!(
            after.is_ok(),
            "writes were locked out after dropped batches"
        );
        // Counted in the database: a list's `total` is at most its page
        // (500), which 2 stored batches of 300 pass.
        use sea_orm::{EntityTrait, PaginatorTrait};
        let total = crate::db::entities::buildsets::Entity::find()
            .count(&data.db)
            .await
            .unwrap();
        assert_eq!(
            (total - 10) % 300,
            0,
            "a dropped batch was half stored: {total}"
        );
    }

    macro_rules! on_both_databases {
        ($($scenario:ident),* $(,)?) => {$(
            mod $scenario {
                #[tokio::test]
                async fn sqlite() {
                    let f = super::Fixture::sqlite().await;
                    super::$scenario(&f).await;
                    f.drop_database().await;
                }
                #[tokio::test]
                async fn postgres() {
                    if let Some(f) = super::Fixture::postgres(stringify!($scenario)).await {
                        super::$scenario(&f).await;
                        f.drop_database().await;
                    }
                }
            }
        )*};
    }

    on_both_databases!(
        a_build_is_recorded_whole,
        a_buildset_completes_with_its_last_request,
        a_failed_batch_changes_nothing,
        a_dropped_batch_leaves_nothing_open,
    );
}
