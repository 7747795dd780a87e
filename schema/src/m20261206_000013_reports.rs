//! The reporters' outbox. `report_events` gets a row in the same
//! transaction as each event a reporter may report (a buildset's requests
//! queued, a build started, a build finished), so no event is lost whatever
//! stops the master; each reporter reads them in order from its own position
//! (object state). `report_deliveries` holds what a reporter made of an
//! event, one request each, until it is delivered, refused, or dropped with
//! its reporter; their rows are the queue, the retries and the record.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ReportEvents::Table)
                .col(pk(ReportEvents::Id))
                .col(string(ReportEvents::Kind))
                .col(big_integer(ReportEvents::Objectid))
                .col(double(ReportEvents::At))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ReportDeliveries::Table)
                .col(pk(ReportDeliveries::Id))
                .col(string(ReportDeliveries::Reporter))
                .col(big_integer(ReportDeliveries::Eventid))
                .col(string(ReportDeliveries::OrderKey))
                .col(string(ReportDeliveries::Method))
                .col(text(ReportDeliveries::Url))
                .col(text(ReportDeliveries::HeadersJson))
                .col(text(ReportDeliveries::Body))
                .col(string(ReportDeliveries::State))
                .col(integer(ReportDeliveries::Attempts))
                .col(double(ReportDeliveries::NextAttemptAt))
                .col(integer_null(ReportDeliveries::LastStatus))
                .col(text_null(ReportDeliveries::LastError))
                .col(double(ReportDeliveries::CreatedAt))
                .col(double_null(ReportDeliveries::DoneAt))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_report_deliveries_queue")
                .table(ReportDeliveries::Table)
                .col(ReportDeliveries::Reporter)
                .col(ReportDeliveries::State)
                .col(ReportDeliveries::Id)
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
enum ReportEvents {
    Table,
    Id,
    Kind,
    Objectid,
    At,
}

#[derive(DeriveIden, Clone, Copy)]
enum ReportDeliveries {
    Table,
    Id,
    Reporter,
    Eventid,
    OrderKey,
    Method,
    Url,
    HeadersJson,
    Body,
    State,
    Attempts,
    NextAttemptAt,
    LastStatus,
    LastError,
    CreatedAt,
    DoneAt,
}
