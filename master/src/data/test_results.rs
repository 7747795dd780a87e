//! Buildbot's `test_result_sets` and `test_results` collections: what a
//! `test` step read from its reports, stored in one batch per set.

use super::batch::Batch;
use super::query::{FieldKind, ListQuery, apply, fetch_page};
use super::{Data, DataError};
use crate::db::entities::{test_result_sets as sets, test_results as results};
use sea_orm::sea_query::Query;
use sea_orm::{EntityTrait, Order};
use serde_json::{Value, json};

/// Rows per insert statement of a set's results.
const ROWS_PER_INSERT: usize = 500;

/// A set of test results, as a step reports it.
#[derive(Debug, Clone)]
pub struct NewTestResultSet {
    pub builderid: i64,
    pub buildid: i64,
    pub stepid: i64,
    pub description: String,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub results: Vec<NewTestResult>,
}

/// One test case.
#[derive(Debug, Clone)]
pub struct NewTestResult {
    pub test_name: String,
    pub test_code_path: Option<String>,
    pub line: Option<u32>,
    pub duration_ns: Option<u64>,
    /// `passed`, `failure`, `error` or `skipped`.
    pub outcome: &'static str,
    pub message: Option<String>,
}

fn set_fields(name: &str) -> Option<FieldKind<sets::Column>> {
    use sets::Column as C;
    Some(match name {
        "test_result_setid" => FieldKind::Int(C::Id),
        "builderid" => FieldKind::Int(C::Builderid),
        "buildid" => FieldKind::Int(C::Buildid),
        "stepid" => FieldKind::Int(C::Stepid),
        "category" => FieldKind::Text(C::Category),
        "complete" => FieldKind::Bool(C::Complete),
        "tests_passed" => FieldKind::Int(C::TestsPassed),
        "tests_failed" => FieldKind::Int(C::TestsFailed),
        _ => return None,
    })
}

fn result_fields(name: &str) -> Option<FieldKind<results::Column>> {
    use results::Column as C;
    Some(match name {
        "test_resultid" => FieldKind::Int(C::Id),
        "builderid" => FieldKind::Int(C::Builderid),
        "test_result_setid" => FieldKind::Int(C::TestResultSetid),
        "test_name" => FieldKind::Text(C::TestName),
        "test_code_path" => FieldKind::Text(C::TestCodePath),
        "line" => FieldKind::Int(C::Line),
        "duration_ns" => FieldKind::Int(C::DurationNs),
        "value" => FieldKind::Text(C::Value),
        "outcome" => FieldKind::Text(C::Outcome),
        _ => return None,
    })
}

fn set_json(s: &sets::Model) -> Value {
    json!({
        "test_result_setid": s.id,
        "builderid": s.builderid,
        "buildid": s.buildid,
        "stepid": s.stepid,
        "description": s.description,
        "category": s.category,
        "value_unit": s.value_unit,
        "tests_passed": s.tests_passed,
        "tests_failed": s.tests_failed,
        "tests_skipped": s.tests_skipped,
        "complete": s.complete,
    })
}

fn result_json(r: &results::Model) -> Value {
    json!({
        "test_resultid": r.id,
        "builderid": r.builderid,
        "test_result_setid": r.test_result_setid,
        "test_name": r.test_name,
        "test_code_path": r.test_code_path,
        "line": r.line,
        "duration_ns": r.duration_ns,
        "value": r.value,
        "outcome": r.outcome,
        "message": r.message,
    })
}

impl Data {
    /// Store a set and all its results in one transaction; returns the set's id.
    pub async fn add_test_result_set(&self, set: &NewTestResultSet) -> Result<i64, DataError> {
        use results::Column as R;
        use sets::Column as S;
        let mut batch = Batch::new(self);
        let inserted = batch.push(
            Query::insert()
                .into_table(sets::Entity)
                .columns([
                    S::Builderid,
                    S::Buildid,
                    S::Stepid,
                    S::Description,
                    S::Category,
                    S::ValueUnit,
                    S::TestsPassed,
                    S::TestsFailed,
                    S::TestsSkipped,
                    S::Complete,
                ])
                .values([
                    set.builderid.into(),
                    set.buildid.into(),
                    set.stepid.into(),
                    set.description.clone().into(),
                    "pass_fail".into(),
                    "boolean".into(),
                    (set.passed as i64).into(),
                    (set.failed as i64).into(),
                    (set.skipped as i64).into(),
                    true.into(),
                ])?
                .returning_all(),
        );
        for chunk in set.results.chunks(ROWS_PER_INSERT) {
            let mut insert = Query::insert();
            insert.into_table(results::Entity).columns([
                R::Builderid,
                R::TestResultSetid,
                R::TestName,
                R::TestCodePath,
                R::Line,
                R::DurationNs,
                R::Value,
                R::Outcome,
                R::Message,
            ]);
            for r in chunk {
                let value = if r.outcome == "passed" { "1" } else { "0" };
                insert.values([
                    set.builderid.into(),
                    batch.last_id("test_result_sets"),
                    r.test_name.clone().into(),
                    r.test_code_path.clone().into(),
                    r.line.map(|l| l as i32).into(),
                    r.duration_ns.map(|d| d.min(i64::MAX as u64) as i64).into(),
                    value.into(),
                    r.outcome.into(),
                    r.message.clone().into(),
                ])?;
            }
            batch.push(&insert);
        }
        let mut rows = self.run_batch(batch).await?;
        let row: sets::Model = rows.one(inserted, "returned no new test result set")?;
        Ok(row.id)
    }

    pub async fn list_test_result_sets(
        &self,
        q: &ListQuery,
    ) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(sets::Entity::find(), q, &set_fields)?;
        let (rows, total) = fetch_page(&self.db, select, q, (sets::Column::Id, Order::Asc)).await?;
        Ok((rows.iter().map(set_json).collect(), total))
    }

    pub async fn list_test_results(&self, q: &ListQuery) -> Result<(Vec<Value>, u64), DataError> {
        let select = apply(results::Entity::find(), q, &result_fields)?;
        let (rows, total) =
            fetch_page(&self.db, select, q, (results::Column::Id, Order::Asc)).await?;
        Ok((rows.iter().map(result_json).collect(), total))
    }
}
