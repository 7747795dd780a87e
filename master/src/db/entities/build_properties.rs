//! `build_properties`: One property of a build; `value` is JSON, `source` says who set it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "build_properties")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub buildid: i64,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub value: String,
    pub source: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
