//! `buildrequests`: A request for one builder to build one buildset.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "buildrequests")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub buildsetid: i64,
    pub builderid: i64,
    pub priority: i32,
    pub complete: bool,
    pub results: Option<i32>,
    pub submitted_at: f64,
    pub complete_at: Option<f64>,
    pub waited_for: bool,
    /// The build this request was collapsed into (it ended SKIPPED).
    pub collapsed_into: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
