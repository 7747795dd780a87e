//! `change_hook_deliveries`: the delivery ids of forge webhooks already
//! turned into changes (GitHub's `X-GitHub-Delivery`, …). A forge redelivers
//! an event when it did not see our answer, or when someone presses
//! "Redeliver": the id is the same, and the change must not be made twice.

use crate::columns::*;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ChangeHookDeliveries::Table)
                .col(pk(ChangeHookDeliveries::Id))
                .col(string(ChangeHookDeliveries::Dialect))
                .col(string(ChangeHookDeliveries::DeliveryId))
                .col(double(ChangeHookDeliveries::ReceivedAt))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("uq_change_hook_deliveries")
                .table(ChangeHookDeliveries::Table)
                .col(ChangeHookDeliveries::Dialect)
                .col(ChangeHookDeliveries::DeliveryId)
                .unique()
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
enum ChangeHookDeliveries {
    Table,
    Id,
    Dialect,
    DeliveryId,
    ReceivedAt,
}
