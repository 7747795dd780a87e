//! moonbot's database schema as sea-orm migrations; the same statements run on SQLite and
//! PostgreSQL. `README.md` in this crate documents every table.
//!
//! The master calls [`Migrator::up`] at start-up (see `master/src/db`); the entities that read
//! and write these tables live in `master/src/db/entities`.

pub use sea_orm_migration::prelude::MigratorTrait;
use sea_orm_migration::prelude::*;

mod columns;
mod m20261121_000001_initial;
mod m20261121_000002_config_reloads;
mod m20261121_000003_worker_graceful;
mod m20261201_000004_janitor;
mod m20261201_000005_history_indexes;
mod m20261204_000006_builder_builds_index;
mod m20261204_000007_revoked_sessions;
mod m20261205_000008_change_hook_deliveries;
mod m20261205_000009_scheduler_changes;
mod m20261206_000010_collapsed_requests;
mod m20261206_000011_artifacts_test_results;
mod m20261206_000012_build_locks;
mod m20261206_000013_reports;
mod m20261206_000014_report_queue_keys;

/// All migrations, oldest first. Append new ones; never edit one that has shipped.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_initial::Migration),
            Box::new(m20261121_000002_config_reloads::Migration),
            Box::new(m20261121_000003_worker_graceful::Migration),
            Box::new(m20261201_000004_janitor::Migration),
            Box::new(m20261201_000005_history_indexes::Migration),
            Box::new(m20261204_000006_builder_builds_index::Migration),
            Box::new(m20261204_000007_revoked_sessions::Migration),
            Box::new(m20261205_000008_change_hook_deliveries::Migration),
            Box::new(m20261205_000009_scheduler_changes::Migration),
            Box::new(m20261206_000010_collapsed_requests::Migration),
            Box::new(m20261206_000011_artifacts_test_results::Migration),
            Box::new(m20261206_000012_build_locks::Migration),
            Box::new(m20261206_000013_reports::Migration),
            Box::new(m20261206_000014_report_queue_keys::Migration),
        ]
    }
}
