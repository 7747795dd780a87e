//! `buildset_changes`: a change a buildset was made from.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "buildset_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub buildsetid: i64,
    pub changeid: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
