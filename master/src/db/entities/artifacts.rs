//! `artifacts`: a file or directory a build uploaded, where it lies under the
//! artifacts directory and when the janitor removes it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "artifacts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub buildid: i64,
    pub stepid: i64,
    /// The destination the step gave, relative to the build's artifacts.
    pub name: String,
    /// `file` or `directory`.
    pub kind: String,
    /// Bytes received (a directory: of its files).
    pub size: i64,
    /// 1 for a file; the files of a directory.
    pub files: i64,
    /// Relative to the artifacts directory.
    pub path: String,
    pub created_at: f64,
    pub expires_at: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
