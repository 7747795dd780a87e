//! The data layer: the one path through which state is read and changed.
//!
//! Every write stores a row and publishes an [`crate::mq::Event`] whose payload is
//! the object's API shape. Schedulers, the build process, the REST API and
//! (later) reporters never touch the database themselves. Submodules are one per
//! collection, named as in Buildbot's data API.

pub mod artifacts;
pub(crate) mod batch;
pub mod builders;
pub mod builds;
pub mod buildsets;
pub mod change_sources;
pub mod changes;
pub mod collapse;
pub mod config_reloads;
pub mod janitor;
pub mod logs;
pub mod masters;
pub mod query;
pub mod reports;
pub mod schedulers;
pub mod sessions;
pub mod state;
pub mod steps;
pub mod test_results;
pub mod workers;

use crate::mq::Bus;
use sea_orm::DatabaseConnection;

/// What can go wrong reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A list request asked for something that is not there (the caller's
    /// mistake).
    #[error(transparent)]
    Query(#[from] query::QueryError),
    /// A statement could not be built.
    #[error("building a statement: {0}")]
    Statement(#[from] sea_orm::sea_query::error::Error),
    /// The database answered something it should not have.
    #[error("the database {0}")]
    Unexpected(&'static str),
    /// No such object.
    #[error("{0} not found")]
    NotFound(String),
    /// A stored log chunk could not be decompressed.
    #[error("log chunk {0} is corrupt: {1}")]
    CorruptChunk(i64, String),
    /// The task storing a log's chunks stopped, or could not compress one.
    #[error("storing log {0} failed: {1}")]
    LogStore(i64, String),
}

/// Handle to the data layer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Data {
    pub db: DatabaseConnection,
    pub bus: Bus,
    /// This master's row in `masters`.
    pub masterid: i64,
    /// Held by a SQLite batch while it writes. SQLite lets one writer in at
    /// a time anyway; a writer that finds the lock taken sleeps in SQLite's
    /// busy handler (1, 2, 5, 10 ms …) and wakes late. Queuing here instead
    /// hands the lock over as soon as it is free: a burst of webhooks went
    /// from 1,500 to over 2,000 stored a second with the CPU half idle before.
    write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The ids of the disabled schedulers among the configured ones (read by
    /// [`Data::sync_schedulers`], kept by [`Data::set_scheduler_enabled`]).
    disabled_schedulers: std::sync::Arc<std::sync::RwLock<std::collections::BTreeSet<i64>>>,
    /// The kinds of event recorded for reporters (a `ReportEvents`).
    reported_events: std::sync::Arc<std::sync::atomic::AtomicU8>,
    /// Counts the batches that stored report events (wakes reporters).
    report_events_stored: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Data {
    pub fn new(db: DatabaseConnection, bus: Bus, masterid: i64) -> Data {
        Data {
            db,
            bus,
            masterid,
            write_gate: Default::default(),
            disabled_schedulers: Default::default(),
            reported_events: Default::default(),
            report_events_stored: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

/// Seconds since the Unix epoch, the unit of every timestamp in the database.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
