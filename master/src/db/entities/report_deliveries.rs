//! `report_deliveries`: one request a reporter made of an event, queued
//! until delivered, refused or dropped.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "report_deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The reporter's name in master.lua.
    pub reporter: String,
    pub eventid: i64,
    /// Deliveries with the same key go out in id order (one commit's status
    /// for one context, say): a later one waits for an earlier one.
    pub order_key: String,
    pub method: String,
    pub url: String,
    /// `[[name, value], …]`.
    pub headers_json: String,
    pub body: String,
    /// `pending`, `delivered`, `failed` (refused, or out of attempts) or
    /// `dropped` (its reporter was removed).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: f64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: f64,
    pub done_at: Option<f64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
