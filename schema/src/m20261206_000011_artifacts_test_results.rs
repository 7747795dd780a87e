//! What a build leaves behind besides its logs.
//!
//! - `artifacts`: files and directories a build uploaded to the master
//!   (`file_upload`, `directory_upload`, `multiple_file_upload`), where they
//!   lie under the artifacts directory, and when the janitor removes them.
//!   Buildbot only drops uploads on the master's disk; here they are listed
//!   and served.
//! - `test_result_sets` and `test_results`: Buildbot's tables for test
//!   reports (a `test` step's JUnit files), with the test's name and code
//!   path kept in the row rather than in Buildbot's lookup tables, and
//!   moonbot's `outcome` and `message` beside Buildbot's `value`.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Artifacts::Table)
                .col(pk(Artifacts::Id))
                .col(big_integer(Artifacts::Buildid))
                .col(big_integer(Artifacts::Stepid))
                .col(text(Artifacts::Name))
                .col(string(Artifacts::Kind))
                .col(big_integer(Artifacts::Size))
                .col(big_integer(Artifacts::Files))
                .col(text(Artifacts::Path))
                .col(double(Artifacts::CreatedAt))
                .col(double(Artifacts::ExpiresAt))
                .foreign_key(&mut fk(
                    "fk_artifacts_buildid",
                    Artifacts::Table,
                    Artifacts::Buildid,
                    Builds::Table,
                    Builds::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_artifacts_stepid",
                    Artifacts::Table,
                    Artifacts::Stepid,
                    Steps::Table,
                    Steps::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_artifacts_buildid",
            Artifacts::Table,
            &[Artifacts::Buildid],
        ))
        .await?;
        m.create_index(index(
            "idx_artifacts_expires_at",
            Artifacts::Table,
            &[Artifacts::ExpiresAt],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(TestResultSets::Table)
                .col(pk(TestResultSets::Id))
                .col(big_integer(TestResultSets::Builderid))
                .col(big_integer(TestResultSets::Buildid))
                .col(big_integer(TestResultSets::Stepid))
                .col(text_null(TestResultSets::Description))
                .col(string(TestResultSets::Category))
                .col(string(TestResultSets::ValueUnit))
                .col(big_integer_null(TestResultSets::TestsPassed))
                .col(big_integer_null(TestResultSets::TestsFailed))
                .col(big_integer(TestResultSets::TestsSkipped))
                .col(boolean(TestResultSets::Complete))
                .foreign_key(&mut fk(
                    "fk_test_result_sets_buildid",
                    TestResultSets::Table,
                    TestResultSets::Buildid,
                    Builds::Table,
                    Builds::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_test_result_sets_stepid",
                    TestResultSets::Table,
                    TestResultSets::Stepid,
                    Steps::Table,
                    Steps::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_test_result_sets_buildid",
            TestResultSets::Table,
            &[TestResultSets::Buildid],
        ))
        .await?;
        m.create_index(index(
            "idx_test_result_sets_stepid",
            TestResultSets::Table,
            &[TestResultSets::Stepid],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(TestResults::Table)
                .col(pk(TestResults::Id))
                .col(big_integer(TestResults::Builderid))
                .col(big_integer(TestResults::TestResultSetid))
                .col(text_null(TestResults::TestName))
                .col(text_null(TestResults::TestCodePath))
                .col(integer_null(TestResults::Line))
                .col(big_integer_null(TestResults::DurationNs))
                .col(string(TestResults::Value))
                .col(string(TestResults::Outcome))
                .col(text_null(TestResults::Message))
                .foreign_key(&mut fk(
                    "fk_test_results_setid",
                    TestResults::Table,
                    TestResults::TestResultSetid,
                    TestResultSets::Table,
                    TestResultSets::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_test_results_setid",
            TestResults::Table,
            &[TestResults::TestResultSetid],
        ))
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Artifacts {
    Table,
    Id,
    Buildid,
    Stepid,
    Name,
    Kind,
    Size,
    Files,
    Path,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum TestResultSets {
    Table,
    Id,
    Builderid,
    Buildid,
    Stepid,
    Description,
    Category,
    ValueUnit,
    TestsPassed,
    TestsFailed,
    TestsSkipped,
    Complete,
}

#[derive(DeriveIden, Clone, Copy)]
enum TestResults {
    Table,
    Id,
    Builderid,
    TestResultSetid,
    TestName,
    TestCodePath,
    Line,
    DurationNs,
    Value,
    Outcome,
    Message,
}

#[derive(DeriveIden, Clone, Copy)]
enum Builds {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Steps {
    Table,
    Id,
}
