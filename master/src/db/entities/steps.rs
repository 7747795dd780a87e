//! `steps`: One step of a build, numbered within the build; `urls_json` is a JSON list.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "steps")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub number: i32,
    pub name: String,
    pub buildid: i64,
    pub started_at: Option<f64>,
    pub complete_at: Option<f64>,
    #[sea_orm(column_type = "Text")]
    pub state_string: String,
    pub results: Option<i32>,
    #[sea_orm(column_type = "Text")]
    pub urls_json: String,
    pub hidden: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
