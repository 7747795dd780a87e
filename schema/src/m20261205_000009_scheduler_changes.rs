//! `scheduler_changes`: the changes a scheduler has accepted and not yet
//! built, each marked important or not (Buildbot's table of the same name).
//! Kept in the database so changes waiting for a tree-stable timer survive
//! a reload and a master restart, and so a buildset and the removal of the
//! changes it builds are one transaction: a change is built once, never
//! twice and never not at all.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SchedulerChanges::Table)
                .col(pk(SchedulerChanges::Id))
                .col(big_integer(SchedulerChanges::Schedulerid))
                .col(big_integer(SchedulerChanges::Changeid))
                .col(boolean(SchedulerChanges::Important))
                .col(double(SchedulerChanges::ClassifiedAt))
                .foreign_key(&mut fk(
                    "fk_scheduler_changes_schedulerid",
                    SchedulerChanges::Table,
                    SchedulerChanges::Schedulerid,
                    Schedulers::Table,
                    Schedulers::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_scheduler_changes_changeid",
                    SchedulerChanges::Table,
                    SchedulerChanges::Changeid,
                    Changes::Table,
                    Changes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_scheduler_changes",
            SchedulerChanges::Table,
            &[SchedulerChanges::Schedulerid, SchedulerChanges::Changeid],
        ))
        .await?;
        m.create_index(index(
            "idx_scheduler_changes_changeid",
            SchedulerChanges::Table,
            &[SchedulerChanges::Changeid],
        ))
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum SchedulerChanges {
    Table,
    Id,
    Schedulerid,
    Changeid,
    Important,
    ClassifiedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Schedulers {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Changes {
    Table,
    Id,
}
