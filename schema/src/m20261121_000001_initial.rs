//! The initial schema: every table of `README.md`, built with sea-query's schema builder so the
//! same statements run on SQLite and PostgreSQL.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, NoAction, SetNull};

        // --- masters, workers, builders -------------------------------------------------------
        m.create_table(
            Table::create()
                .table(Masters::Table)
                .col(pk(Masters::Id))
                .col(string(Masters::Name).unique_key())
                .col(boolean(Masters::Active))
                .col(double(Masters::LastActive))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Workers::Table)
                .col(pk(Workers::Id))
                .col(string(Workers::Name).unique_key())
                .col(text(Workers::Info).default("{}"))
                .col(boolean(Workers::Paused).default(false))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ConnectedWorkers::Table)
                .col(pk(ConnectedWorkers::Id))
                .col(big_integer(ConnectedWorkers::Masterid))
                .col(big_integer(ConnectedWorkers::Workerid))
                .col(double(ConnectedWorkers::ConnectedAt))
                .foreign_key(&mut fk(
                    "fk_connected_workers_masterid",
                    ConnectedWorkers::Table,
                    ConnectedWorkers::Masterid,
                    Masters::Table,
                    Masters::Id,
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_connected_workers_workerid",
                    ConnectedWorkers::Table,
                    ConnectedWorkers::Workerid,
                    Workers::Table,
                    Workers::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        use ConnectedWorkers as Cw;
        m.create_index(unique(
            "uq_connected_workers_masterid_workerid",
            Cw::Table,
            &[Cw::Masterid, Cw::Workerid],
        ))
        .await?;
        m.create_index(index(
            "idx_connected_workers_workerid",
            Cw::Table,
            &[Cw::Workerid],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Builders::Table)
                .col(pk(Builders::Id))
                .col(string(Builders::Name).unique_key())
                .col(text_null(Builders::Description))
                .col(text(Builders::Tags).default("[]"))
                .take(),
        )
        .await?;

        // --- buildsets and sourcestamps -------------------------------------------------------
        m.create_table(
            Table::create()
                .table(Buildsets::Table)
                .col(pk(Buildsets::Id))
                .col(string_null(Buildsets::ExternalIdstring))
                .col(text(Buildsets::Reason))
                .col(double(Buildsets::SubmittedAt))
                .col(boolean(Buildsets::Complete))
                .col(double_null(Buildsets::CompleteAt))
                .col(integer_null(Buildsets::Results))
                .col(big_integer_null(Buildsets::ParentBuildid))
                .col(string_null(Buildsets::ParentRelationship))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(BuildsetProperties::Table)
                .col(pk(BuildsetProperties::Id))
                .col(big_integer(BuildsetProperties::Buildsetid))
                .col(string(BuildsetProperties::PropertyName))
                .col(text(BuildsetProperties::PropertyValue))
                .foreign_key(&mut fk(
                    "fk_buildset_properties_buildsetid",
                    BuildsetProperties::Table,
                    BuildsetProperties::Buildsetid,
                    Buildsets::Table,
                    Buildsets::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_buildset_properties_buildsetid",
            BuildsetProperties::Table,
            &[BuildsetProperties::Buildsetid],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Sourcestamps::Table)
                .col(pk(Sourcestamps::Id))
                .col(string(Sourcestamps::SsHash).unique_key())
                .col(string_null(Sourcestamps::Branch))
                .col(string_null(Sourcestamps::Revision))
                .col(big_integer_null(Sourcestamps::Patchid))
                .col(string(Sourcestamps::Repository).default(""))
                .col(string(Sourcestamps::Codebase).default(""))
                .col(string(Sourcestamps::Project).default(""))
                .col(double(Sourcestamps::CreatedAt))
                .take(),
        )
        .await?;

        use BuildsetSourcestamps as Bss;
        m.create_table(
            Table::create()
                .table(Bss::Table)
                .col(pk(Bss::Id))
                .col(big_integer(Bss::Buildsetid))
                .col(big_integer(Bss::Sourcestampid))
                .foreign_key(&mut fk(
                    "fk_buildset_sourcestamps_buildsetid",
                    Bss::Table,
                    Bss::Buildsetid,
                    Buildsets::Table,
                    Buildsets::Id,
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_buildset_sourcestamps_sourcestampid",
                    Bss::Table,
                    Bss::Sourcestampid,
                    Sourcestamps::Table,
                    Sourcestamps::Id,
                    NoAction,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_buildset_sourcestamps_buildsetid_sourcestampid",
            Bss::Table,
            &[Bss::Buildsetid, Bss::Sourcestampid],
        ))
        .await?;
        m.create_index(index(
            "idx_buildset_sourcestamps_sourcestampid",
            Bss::Table,
            &[Bss::Sourcestampid],
        ))
        .await?;

        // --- changes ----------------------------------------------------------------------------
        m.create_table(
            Table::create()
                .table(Changes::Table)
                .col(pk(Changes::Id))
                .col(string(Changes::Author))
                .col(string_null(Changes::Committer))
                .col(text(Changes::Comments))
                .col(string_null(Changes::Branch))
                .col(string_null(Changes::Revision))
                .col(string_null(Changes::Revlink))
                .col(double(Changes::WhenTimestamp))
                .col(string_null(Changes::Category))
                .col(string(Changes::Repository))
                .col(string(Changes::Codebase))
                .col(string(Changes::Project))
                .col(big_integer_null(Changes::Sourcestampid))
                .col(big_integer_null(Changes::ParentChangeid))
                .foreign_key(&mut fk(
                    "fk_changes_sourcestampid",
                    Changes::Table,
                    Changes::Sourcestampid,
                    Sourcestamps::Table,
                    Sourcestamps::Id,
                    SetNull,
                ))
                .foreign_key(&mut fk(
                    "fk_changes_parent_changeid",
                    Changes::Table,
                    Changes::ParentChangeid,
                    Changes::Table,
                    Changes::Id,
                    SetNull,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_changes_sourcestampid",
            Changes::Table,
            &[Changes::Sourcestampid],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ChangeFiles::Table)
                .col(pk(ChangeFiles::Id))
                .col(big_integer(ChangeFiles::Changeid))
                .col(text(ChangeFiles::Filename))
                .foreign_key(&mut fk(
                    "fk_change_files_changeid",
                    ChangeFiles::Table,
                    ChangeFiles::Changeid,
                    Changes::Table,
                    Changes::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_change_files_changeid",
            ChangeFiles::Table,
            &[ChangeFiles::Changeid],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ChangeProperties::Table)
                .col(pk(ChangeProperties::Id))
                .col(big_integer(ChangeProperties::Changeid))
                .col(string(ChangeProperties::PropertyName))
                .col(text(ChangeProperties::PropertyValue))
                .foreign_key(&mut fk(
                    "fk_change_properties_changeid",
                    ChangeProperties::Table,
                    ChangeProperties::Changeid,
                    Changes::Table,
                    Changes::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_change_properties_changeid",
            ChangeProperties::Table,
            &[ChangeProperties::Changeid],
        ))
        .await?;

        // --- build requests -----------------------------------------------------------------------
        m.create_table(
            Table::create()
                .table(Buildrequests::Table)
                .col(pk(Buildrequests::Id))
                .col(big_integer(Buildrequests::Buildsetid))
                .col(big_integer(Buildrequests::Builderid))
                .col(integer(Buildrequests::Priority).default(0))
                .col(boolean(Buildrequests::Complete))
                .col(integer_null(Buildrequests::Results))
                .col(double(Buildrequests::SubmittedAt))
                .col(double_null(Buildrequests::CompleteAt))
                .col(boolean(Buildrequests::WaitedFor).default(false))
                .foreign_key(&mut fk(
                    "fk_buildrequests_buildsetid",
                    Buildrequests::Table,
                    Buildrequests::Buildsetid,
                    Buildsets::Table,
                    Buildsets::Id,
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_buildrequests_builderid",
                    Buildrequests::Table,
                    Buildrequests::Builderid,
                    Builders::Table,
                    Builders::Id,
                    NoAction,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_buildrequests_complete_builderid",
            Buildrequests::Table,
            &[Buildrequests::Complete, Buildrequests::Builderid],
        ))
        .await?;
        m.create_index(index(
            "idx_buildrequests_buildsetid",
            Buildrequests::Table,
            &[Buildrequests::Buildsetid],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(BuildrequestClaims::Table)
                .col(
                    ColumnDef::new(BuildrequestClaims::Brid)
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(big_integer(BuildrequestClaims::Masterid))
                .col(double(BuildrequestClaims::ClaimedAt))
                .foreign_key(&mut fk(
                    "fk_buildrequest_claims_brid",
                    BuildrequestClaims::Table,
                    BuildrequestClaims::Brid,
                    Buildrequests::Table,
                    Buildrequests::Id,
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_buildrequest_claims_masterid",
                    BuildrequestClaims::Table,
                    BuildrequestClaims::Masterid,
                    Masters::Table,
                    Masters::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_buildrequest_claims_masterid",
            BuildrequestClaims::Table,
            &[BuildrequestClaims::Masterid],
        ))
        .await?;

        // --- builds, steps, logs ------------------------------------------------------------------
        m.create_table(
            Table::create()
                .table(Builds::Table)
                .col(pk(Builds::Id))
                .col(integer(Builds::Number))
                .col(big_integer(Builds::Builderid))
                .col(big_integer(Builds::Buildrequestid))
                .col(big_integer(Builds::Workerid))
                .col(big_integer(Builds::Masterid))
                .col(double(Builds::StartedAt))
                .col(double_null(Builds::CompleteAt))
                .col(text(Builds::StateString))
                .col(integer_null(Builds::Results))
                .foreign_key(&mut fk(
                    "fk_builds_builderid",
                    Builds::Table,
                    Builds::Builderid,
                    Builders::Table,
                    Builders::Id,
                    NoAction,
                ))
                .foreign_key(&mut fk(
                    "fk_builds_buildrequestid",
                    Builds::Table,
                    Builds::Buildrequestid,
                    Buildrequests::Table,
                    Buildrequests::Id,
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_builds_workerid",
                    Builds::Table,
                    Builds::Workerid,
                    Workers::Table,
                    Workers::Id,
                    NoAction,
                ))
                .foreign_key(&mut fk(
                    "fk_builds_masterid",
                    Builds::Table,
                    Builds::Masterid,
                    Masters::Table,
                    Masters::Id,
                    NoAction,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_builds_builderid_number",
            Builds::Table,
            &[Builds::Builderid, Builds::Number],
        ))
        .await?;
        m.create_index(index(
            "idx_builds_buildrequestid",
            Builds::Table,
            &[Builds::Buildrequestid],
        ))
        .await?;
        m.create_index(index(
            "idx_builds_workerid",
            Builds::Table,
            &[Builds::Workerid],
        ))
        .await?;
        m.create_index(index(
            "idx_builds_complete_at",
            Builds::Table,
            &[Builds::CompleteAt],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(BuildProperties::Table)
                .col(pk(BuildProperties::Id))
                .col(big_integer(BuildProperties::Buildid))
                .col(string(BuildProperties::Name))
                .col(text(BuildProperties::Value))
                .col(string(BuildProperties::Source))
                .foreign_key(&mut fk(
                    "fk_build_properties_buildid",
                    BuildProperties::Table,
                    BuildProperties::Buildid,
                    Builds::Table,
                    Builds::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_build_properties_buildid_name",
            BuildProperties::Table,
            &[BuildProperties::Buildid, BuildProperties::Name],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Steps::Table)
                .col(pk(Steps::Id))
                .col(integer(Steps::Number))
                .col(string(Steps::Name))
                .col(big_integer(Steps::Buildid))
                .col(double_null(Steps::StartedAt))
                .col(double_null(Steps::CompleteAt))
                .col(text(Steps::StateString))
                .col(integer_null(Steps::Results))
                .col(text(Steps::UrlsJson).default("[]"))
                .col(boolean(Steps::Hidden).default(false))
                .foreign_key(&mut fk(
                    "fk_steps_buildid",
                    Steps::Table,
                    Steps::Buildid,
                    Builds::Table,
                    Builds::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_steps_buildid_number",
            Steps::Table,
            &[Steps::Buildid, Steps::Number],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Logs::Table)
                .col(pk(Logs::Id))
                .col(string(Logs::Name))
                .col(string(Logs::Slug))
                .col(big_integer(Logs::Stepid))
                .col(boolean(Logs::Complete))
                .col(big_integer(Logs::NumLines))
                .col(string(Logs::Type).check(Expr::col(Logs::Type).is_in(["s", "t", "h"])))
                .foreign_key(&mut fk(
                    "fk_logs_stepid",
                    Logs::Table,
                    Logs::Stepid,
                    Steps::Table,
                    Steps::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_logs_stepid_slug",
            Logs::Table,
            &[Logs::Stepid, Logs::Slug],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Logchunks::Table)
                .col(pk(Logchunks::Id))
                .col(big_integer(Logchunks::Logid))
                .col(big_integer(Logchunks::FirstLine))
                .col(big_integer(Logchunks::LastLine))
                .col(ColumnDef::new(Logchunks::Content).blob().not_null())
                .col(
                    ColumnDef::new(Logchunks::Compressed)
                        .small_integer()
                        .not_null(),
                )
                .foreign_key(&mut fk(
                    "fk_logchunks_logid",
                    Logchunks::Table,
                    Logchunks::Logid,
                    Logs::Table,
                    Logs::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(index(
            "idx_logchunks_logid_first_line",
            Logchunks::Table,
            &[Logchunks::Logid, Logchunks::FirstLine],
        ))
        .await?;

        // --- configured components, users, object state ------------------------------------------
        m.create_table(
            Table::create()
                .table(Schedulers::Table)
                .col(pk(Schedulers::Id))
                .col(string(Schedulers::Name).unique_key())
                .col(boolean(Schedulers::Enabled).default(true))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Changesources::Table)
                .col(pk(Changesources::Id))
                .col(string(Changesources::Name).unique_key())
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Users::Table)
                .col(pk(Users::Id))
                .col(string(Users::Identifier).unique_key())
                .col(string_null(Users::BbUsername).unique_key())
                .col(string_null(Users::BbPassword))
                .take(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Objects::Table)
                .col(pk(Objects::Id))
                .col(string(Objects::Name))
                .col(string(Objects::ClassName))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_objects_name_class_name",
            Objects::Table,
            &[Objects::Name, Objects::ClassName],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ObjectState::Table)
                .col(pk(ObjectState::Id))
                .col(big_integer(ObjectState::Objectid))
                .col(string(ObjectState::Name))
                .col(text(ObjectState::ValueJson))
                .foreign_key(&mut fk(
                    "fk_object_state_objectid",
                    ObjectState::Table,
                    ObjectState::Objectid,
                    Objects::Table,
                    Objects::Id,
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(unique(
            "uq_object_state_objectid_name",
            ObjectState::Table,
            &[ObjectState::Objectid, ObjectState::Name],
        ))
        .await?;

        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents, so foreign keys never block a drop.
        let tables: [DynIden; 23] = [
            ObjectState::Table.into_iden(),
            Objects::Table.into_iden(),
            Users::Table.into_iden(),
            Changesources::Table.into_iden(),
            Schedulers::Table.into_iden(),
            Logchunks::Table.into_iden(),
            Logs::Table.into_iden(),
            Steps::Table.into_iden(),
            BuildProperties::Table.into_iden(),
            Builds::Table.into_iden(),
            BuildrequestClaims::Table.into_iden(),
            Buildrequests::Table.into_iden(),
            ChangeProperties::Table.into_iden(),
            ChangeFiles::Table.into_iden(),
            Changes::Table.into_iden(),
            BuildsetSourcestamps::Table.into_iden(),
            Sourcestamps::Table.into_iden(),
            BuildsetProperties::Table.into_iden(),
            Buildsets::Table.into_iden(),
            Builders::Table.into_iden(),
            ConnectedWorkers::Table.into_iden(),
            Workers::Table.into_iden(),
            Masters::Table.into_iden(),
        ];
        for table in tables {
            m.drop_table(Table::drop().table(table).if_exists().take())
                .await?;
        }
        Ok(())
    }

    /// DDL is transactional on both backends: a failed migration leaves no half-made schema.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

// --- identifiers (DeriveIden turns `Table` into the snake_case enum name, variants into
// snake_case column names) ------------------------------------------------------------------

#[derive(DeriveIden, Clone, Copy)]
enum Masters {
    Table,
    Id,
    Name,
    Active,
    LastActive,
}

#[derive(DeriveIden, Clone, Copy)]
enum Workers {
    Table,
    Id,
    Name,
    Info,
    Paused,
}

#[derive(DeriveIden, Clone, Copy)]
enum ConnectedWorkers {
    Table,
    Id,
    Masterid,
    Workerid,
    ConnectedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Builders {
    Table,
    Id,
    Name,
    Description,
    Tags,
}

#[derive(DeriveIden, Clone, Copy)]
enum Buildsets {
    Table,
    Id,
    ExternalIdstring,
    Reason,
    SubmittedAt,
    Complete,
    CompleteAt,
    Results,
    ParentBuildid,
    ParentRelationship,
}

#[derive(DeriveIden, Clone, Copy)]
enum BuildsetProperties {
    Table,
    Id,
    Buildsetid,
    PropertyName,
    PropertyValue,
}

#[derive(DeriveIden, Clone, Copy)]
enum Sourcestamps {
    Table,
    Id,
    SsHash,
    Branch,
    Revision,
    Patchid,
    Repository,
    Codebase,
    Project,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum BuildsetSourcestamps {
    Table,
    Id,
    Buildsetid,
    Sourcestampid,
}

#[derive(DeriveIden, Clone, Copy)]
enum Changes {
    Table,
    Id,
    Author,
    Committer,
    Comments,
    Branch,
    Revision,
    Revlink,
    WhenTimestamp,
    Category,
    Repository,
    Codebase,
    Project,
    Sourcestampid,
    ParentChangeid,
}

#[derive(DeriveIden, Clone, Copy)]
enum ChangeFiles {
    Table,
    Id,
    Changeid,
    Filename,
}

#[derive(DeriveIden, Clone, Copy)]
enum ChangeProperties {
    Table,
    Id,
    Changeid,
    PropertyName,
    PropertyValue,
}

#[derive(DeriveIden, Clone, Copy)]
enum Buildrequests {
    Table,
    Id,
    Buildsetid,
    Builderid,
    Priority,
    Complete,
    Results,
    SubmittedAt,
    CompleteAt,
    WaitedFor,
}

#[derive(DeriveIden, Clone, Copy)]
enum BuildrequestClaims {
    Table,
    Brid,
    Masterid,
    ClaimedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Builds {
    Table,
    Id,
    Number,
    Builderid,
    Buildrequestid,
    Workerid,
    Masterid,
    StartedAt,
    CompleteAt,
    StateString,
    Results,
}

#[derive(DeriveIden, Clone, Copy)]
enum BuildProperties {
    Table,
    Id,
    Buildid,
    Name,
    Value,
    Source,
}

#[derive(DeriveIden, Clone, Copy)]
enum Steps {
    Table,
    Id,
    Number,
    Name,
    Buildid,
    StartedAt,
    CompleteAt,
    StateString,
    Results,
    UrlsJson,
    Hidden,
}

#[derive(DeriveIden, Clone, Copy)]
enum Logs {
    Table,
    Id,
    Name,
    Slug,
    Stepid,
    Complete,
    NumLines,
    Type,
}

#[derive(DeriveIden, Clone, Copy)]
enum Logchunks {
    Table,
    Id,
    Logid,
    FirstLine,
    LastLine,
    Content,
    Compressed,
}

#[derive(DeriveIden, Clone, Copy)]
enum Schedulers {
    Table,
    Id,
    Name,
    Enabled,
}

#[derive(DeriveIden, Clone, Copy)]
enum Changesources {
    Table,
    Id,
    Name,
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    Identifier,
    BbUsername,
    BbPassword,
}

#[derive(DeriveIden, Clone, Copy)]
enum Objects {
    Table,
    Id,
    Name,
    ClassName,
}

#[derive(DeriveIden, Clone, Copy)]
enum ObjectState {
    Table,
    Id,
    Objectid,
    Name,
    ValueJson,
}
