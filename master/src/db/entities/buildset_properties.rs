//! `buildset_properties`: One property of a buildset; `property_value` is the JSON `[value, source]`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "buildset_properties")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub buildsetid: i64,
    pub property_name: String,
    #[sea_orm(column_type = "Text")]
    pub property_value: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
