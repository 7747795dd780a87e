//! Collapsing build requests without losing any (`collapse_requests`).
//!
//! - `buildset_changes`: the changes a buildset was made from. Buildbot keeps
//!   only one source stamp per codebase and works a build's changes out from
//!   the builds before it; here a buildset names its changes, so a
//!   tree-stable batch and a collapsed request report every change they
//!   carry.
//! - `buildrequests.collapsed_into`: the build a request was collapsed into.
//!   Such a request ends SKIPPED instead of vanishing, and that build's
//!   changes are the union of its own and every collapsed request's.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(BuildsetChanges::Table)
                .col(pk(BuildsetChanges::Id))
                .col(big_integer(BuildsetChanges::Buildsetid))
                .col(big_integer(BuildsetChanges::Changeid))
                .foreign_key(&mut fk(
                    "fk_buildset_changes_buildsetid",
                    BuildsetChanges::Table,
                    BuildsetChanges::Buildsetid,
                    Buildsets::Table,
                    Buildsets::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_buildset_changes_changeid",
                    BuildsetChanges::Table,
                    BuildsetChanges::Changeid,
                    Changes::Table,
                    Changes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_buildset_changes",
            BuildsetChanges::Table,
            &[BuildsetChanges::Buildsetid, BuildsetChanges::Changeid],
        ))
        .await?;
        m.create_index(index(
            "idx_buildset_changes_changeid",
            BuildsetChanges::Table,
            &[BuildsetChanges::Changeid],
        ))
        .await?;
        // SQLite cannot add a foreign key to an existing table: the build id
        // is checked by the code that sets it, in the transaction that
        // inserts that build.
        m.alter_table(
            Table::alter()
                .table(Buildrequests::Table)
                .add_column(big_integer_null(Buildrequests::CollapsedInto))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_buildrequests_collapsed_into")
                .table(Buildrequests::Table)
                .col(Buildrequests::CollapsedInto)
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
enum BuildsetChanges {
    Table,
    Id,
    Buildsetid,
    Changeid,
}

#[derive(DeriveIden, Clone, Copy)]
enum Buildsets {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Changes {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Buildrequests {
    Table,
    CollapsedInto,
}
