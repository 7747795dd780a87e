//! `test_result_sets`: one set of test results a step reported (Buildbot's
//! table, with `tests_skipped` added).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "test_result_sets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub builderid: i64,
    pub buildid: i64,
    pub stepid: i64,
    pub description: Option<String>,
    /// `pass_fail`.
    pub category: String,
    /// `boolean`.
    pub value_unit: String,
    pub tests_passed: Option<i64>,
    pub tests_failed: Option<i64>,
    pub tests_skipped: i64,
    pub complete: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
