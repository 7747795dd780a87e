//! `buildsets`: A set of build requests submitted together by one scheduler decision.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "buildsets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub external_idstring: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub submitted_at: f64,
    pub complete: bool,
    pub complete_at: Option<f64>,
    pub results: Option<i32>,
    pub parent_buildid: Option<i64>,
    pub parent_relationship: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
