//! `object_state`: One named JSON value of an object's state.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "object_state")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub objectid: i64,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub value_json: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
