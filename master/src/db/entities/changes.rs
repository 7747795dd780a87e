//! `changes`: One change (commit) reported by a change source, hook or `sendchange`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub author: String,
    pub committer: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    pub when_timestamp: f64,
    pub category: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    #[sea_orm(indexed)]
    pub sourcestampid: Option<i64>,
    pub parent_changeid: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
