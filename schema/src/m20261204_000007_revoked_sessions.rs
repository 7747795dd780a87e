//! `revoked_sessions`: browser sessions ended by logging out before their
//! cookie expired. Session cookies are signed, not stored, so a logout must
//! leave a mark the master checks: without it, a copied cookie kept working
//! until its expiry. A row is kept until its cookie would have expired.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(RevokedSessions::Table)
                .col(pk(RevokedSessions::Id))
                .col(string(RevokedSessions::Nonce).unique_key())
                .col(big_integer(RevokedSessions::ExpiresAt))
                .take(),
        )
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum RevokedSessions {
    Table,
    Id,
    Nonce,
    ExpiresAt,
}
