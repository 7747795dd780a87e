//! `buildrequest_claims`: Which master has claimed a build request; the row's existence is the claim.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "buildrequest_claims")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub brid: i64,
    #[sea_orm(indexed)]
    pub masterid: i64,
    pub claimed_at: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
