//! `buildset_sourcestamps`: Links a buildset to the sourcestamps (one per codebase) it builds.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "buildset_sourcestamps")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub buildsetid: i64,
    pub sourcestampid: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
