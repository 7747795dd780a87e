//! `sourcestamps`: One state of one codebase (repository, branch, revision), deduplicated by `ss_hash`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sourcestamps")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub ss_hash: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub patchid: Option<i64>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    pub created_at: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
