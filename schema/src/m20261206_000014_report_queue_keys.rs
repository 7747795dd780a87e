//! `idx_report_deliveries_order_key`: a reporter's pending deliveries by
//! order key. Picking what is due checks, for each pending delivery, that no
//! earlier one of its order key waits for a retry; with only
//! `idx_report_deliveries_queue` that check read every earlier pending row,
//! so a queue grown while a service was down cost its square on every turn
//! (10,000 pending rows: 3.3 s a turn on SQLite; with this index, 7 ms).

use crate::columns::index;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(index(
            "idx_report_deliveries_order_key",
            ReportDeliveries::Table,
            &[
                ReportDeliveries::Reporter,
                ReportDeliveries::State,
                ReportDeliveries::OrderKey,
                ReportDeliveries::Id,
            ],
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("idx_report_deliveries_order_key")
                .table(ReportDeliveries::Table)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ReportDeliveries {
    Table,
    Reporter,
    State,
    OrderKey,
    Id,
}
