//! `test_results`: one test case of a set (Buildbot's table, with the name
//! and code path in the row, and moonbot's `outcome` and `message`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "test_results")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub builderid: i64,
    pub test_result_setid: i64,
    pub test_name: Option<String>,
    pub test_code_path: Option<String>,
    pub line: Option<i32>,
    pub duration_ns: Option<i64>,
    /// `1` passed, `0` did not.
    pub value: String,
    /// `passed`, `failure`, `error` or `skipped`.
    pub outcome: String,
    pub message: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
