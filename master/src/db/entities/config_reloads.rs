//! `config_reloads`: the outcome of one load of master.lua (start-up or reconfig).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "config_reloads")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub masterid: i64,
    pub started_at: f64,
    pub duration_ms: f64,
    pub trigger: String,
    pub success: bool,
    /// JSON list of `{location, message}`.
    #[sea_orm(column_type = "Text")]
    pub errors: String,
    /// JSON [`crate::config::diff::ConfigDiff`].
    #[sea_orm(column_type = "Text")]
    pub changes: String,
    pub summary: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
