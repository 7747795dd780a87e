//! `connected_workers.graceful`: the worker asked to stop after its running
//! builds (`moonbot-worker stop`); the master gives it no new builds. It belongs
//! to the connection, so it goes away with it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ConnectedWorkers::Table)
                .add_column(
                    ColumnDef::new(ConnectedWorkers::Graceful)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .take(),
        )
        .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ConnectedWorkers {
    Table,
    Graceful,
}
