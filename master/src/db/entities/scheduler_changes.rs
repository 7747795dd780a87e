//! `scheduler_changes`: a change a scheduler accepted and has not built yet.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "scheduler_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub schedulerid: i64,
    pub changeid: i64,
    /// Whether `file_is_important` said so (true without one).
    pub important: bool,
    pub classified_at: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
