//! `janitor_passes`: one pass of the janitor, what it deleted, and how long its
//! longest write statement held the database.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "janitor_passes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub masterid: i64,
    pub started_at: f64,
    pub finished_at: Option<f64>,
    pub logs_expired: i64,
    pub chunks_deleted: i64,
    pub builds_deleted: i64,
    pub changes_deleted: i64,
    pub longest_batch_ms: f64,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
