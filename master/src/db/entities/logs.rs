//! `logs`: One log of a step; `log_type` (column `type`) is `s` stdio, `t` text or `h` html.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "logs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub stepid: i64,
    pub complete: bool,
    pub num_lines: i64,
    #[sea_orm(column_name = "type")]
    pub log_type: String,
    /// When the janitor deleted the content (the build was kept).
    pub content_expired_at: Option<f64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
