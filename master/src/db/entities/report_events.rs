//! `report_events`: an event a reporter may report, stored with the event.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "report_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `buildset_new`, `build_started` or `build_finished`.
    pub kind: String,
    /// The buildset's or the build's id.
    pub objectid: i64,
    pub at: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
