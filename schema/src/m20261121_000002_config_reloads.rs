//! `config_reloads`: the outcome of every load of master.lua (start-up and each
//! reconfig), so the API and the status page can say what the last reload did.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConfigReloads::Table)
                .col(pk(ConfigReloads::Id))
                .col(big_integer(ConfigReloads::Masterid))
                .col(double(ConfigReloads::StartedAt))
                .col(double(ConfigReloads::DurationMs))
                .col(string(ConfigReloads::Trigger))
                .col(boolean(ConfigReloads::Success))
                .col(text(ConfigReloads::Errors))
                .col(text(ConfigReloads::Changes))
                .col(string(ConfigReloads::Summary))
                .foreign_key(&mut fk(
                    "fk_config_reloads_masterid",
                    ConfigReloads::Table,
                    ConfigReloads::Masterid,
                    Masters::Table,
                    Masters::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_config_reloads_masterid",
            ConfigReloads::Table,
            &[ConfigReloads::Masterid],
        ))
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ConfigReloads {
    Table,
    Id,
    Masterid,
    StartedAt,
    DurationMs,
    Trigger,
    Success,
    Errors,
    Changes,
    Summary,
}

#[derive(DeriveIden, Clone, Copy)]
enum Masters {
    Table,
    Id,
}
