//! `logchunks`: A run of whole lines `first_line..=last_line` of a log; `compressed` 0 none, 1 zstd.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "logchunks")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub logid: i64,
    pub first_line: i64,
    pub last_line: i64,
    #[sea_orm(column_type = "Blob")]
    pub content: Vec<u8>,
    pub compressed: i16,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
