//! The janitor (master.lua's `janitor = {…}`): `logs.content_expired_at`, set
//! when a log's chunks were deleted while its build was kept, so the viewer can
//! say the content expired instead of showing an empty log; and
//! `janitor_passes`, one row per pass with what it deleted, so the status page
//! and the API show its progress.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Logs::Table)
                .add_column(double_null(Logs::ContentExpiredAt))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(JanitorPasses::Table)
                .col(pk(JanitorPasses::Id))
                .col(big_integer(JanitorPasses::Masterid))
                .col(double(JanitorPasses::StartedAt))
                .col(double_null(JanitorPasses::FinishedAt))
                .col(big_integer(JanitorPasses::LogsExpired))
                .col(big_integer(JanitorPasses::ChunksDeleted))
                .col(big_integer(JanitorPasses::BuildsDeleted))
                .col(big_integer(JanitorPasses::ChangesDeleted))
                .col(double(JanitorPasses::LongestBatchMs))
                .col(text_null(JanitorPasses::Error))
                .foreign_key(&mut fk(
                    "fk_janitor_passes_masterid",
                    JanitorPasses::Table,
                    JanitorPasses::Masterid,
                    Masters::Table,
                    Masters::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_janitor_passes_masterid",
            JanitorPasses::Table,
            &[JanitorPasses::Masterid],
        ))
        .await?;
        // The janitor finds old builds by `idx_builds_complete_at` (migration
        // 1), and old changes by their time.
        m.create_index(index(
            "idx_changes_when_timestamp",
            Changes::Table,
            &[Changes::WhenTimestamp],
        ))
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Logs {
    Table,
    ContentExpiredAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum JanitorPasses {
    Table,
    Id,
    Masterid,
    StartedAt,
    FinishedAt,
    LogsExpired,
    ChunksDeleted,
    BuildsDeleted,
    ChangesDeleted,
    LongestBatchMs,
    Error,
}

#[derive(DeriveIden, Clone, Copy)]
enum Masters {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Changes {
    Table,
    WhenTimestamp,
}
