//! `builds`: One build of a builder, numbered per builder.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "builds")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub number: i32,
    pub builderid: i64,
    #[sea_orm(indexed)]
    pub buildrequestid: i64,
    #[sea_orm(indexed)]
    pub workerid: i64,
    pub masterid: i64,
    pub started_at: f64,
    #[sea_orm(indexed)]
    pub complete_at: Option<f64>,
    #[sea_orm(column_type = "Text")]
    pub state_string: String,
    pub results: Option<i32>,
    pub locks_duration_s: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
