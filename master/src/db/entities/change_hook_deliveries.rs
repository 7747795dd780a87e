//! `change_hook_deliveries`: a forge webhook delivery already turned into
//! changes, so a redelivery makes none.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "change_hook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The hook's dialect (`github` …).
    pub dialect: String,
    /// The forge's id for the delivery (`X-GitHub-Delivery` …).
    pub delivery_id: String,
    pub received_at: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
