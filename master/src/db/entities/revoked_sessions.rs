//! `revoked_sessions`: a browser session ended by logging out, kept until its
//! cookie would have expired.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "revoked_sessions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The session's random id, from its cookie.
    pub nonce: String,
    /// When the cookie expires (Unix seconds).
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
