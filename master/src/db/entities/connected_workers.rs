//! `connected_workers`: Which worker is connected to which master right now.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "connected_workers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub masterid: i64,
    pub workerid: i64,
    pub connected_at: f64,
    /// The worker asked to stop once its running builds are done.
    pub graceful: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
