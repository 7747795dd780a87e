//! Indexes that keep the API and the pages fast as history grows to millions
//! of builds (measured with `moonbot-bench --only history`): without them the
//! newest builds across all builders (`/api/v2/builds?order=-number`, the
//! waterfall's "last builds by start time") were a sort of the whole table.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(index("idx_builds_number", Builds::Table, &[Builds::Number]))
            .await?;
        m.create_index(index(
            "idx_builds_started_at",
            Builds::Table,
            &[Builds::StartedAt],
        ))
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Builds {
    Table,
    Number,
    StartedAt,
}
