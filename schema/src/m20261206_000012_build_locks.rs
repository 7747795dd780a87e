//! Issue 17's columns and index:
//! - `builds.locks_duration_s`: the seconds a build waited for its locks
//!   (Buildbot's column of the same name), shown on the build and in the API;
//! - `idx_buildsets_parent_buildid`: the buildsets a build triggered, read by
//!   every build page, `/builds/N/triggered_builds` and a waiting trigger.

use crate::columns::index;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Builds::Table)
                .add_column(
                    ColumnDef::new(Builds::LocksDurationS)
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_buildsets_parent_buildid",
            Buildsets::Table,
            &[Buildsets::ParentBuildid],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("idx_buildsets_parent_buildid")
                .table(Buildsets::Table)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Builds::Table)
                .drop_column(Builds::LocksDurationS)
                .take(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Builds {
    Table,
    LocksDurationS,
}

#[derive(DeriveIden, Clone, Copy)]
enum Buildsets {
    Table,
    ParentBuildid,
}
