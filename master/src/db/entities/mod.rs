//! One module per table, named after the table; field names are the column names
//! (except `logs.log_type`, column `type`). `schema/README.md` documents the tables.

pub mod artifacts;
pub mod build_properties;
pub mod builders;
pub mod buildrequest_claims;
pub mod buildrequests;
pub mod builds;
pub mod buildset_changes;
pub mod buildset_properties;
pub mod buildset_sourcestamps;
pub mod buildsets;
pub mod change_files;
pub mod change_hook_deliveries;
pub mod change_properties;
pub mod changes;
pub mod changesources;
pub mod config_reloads;
pub mod connected_workers;
pub mod janitor_passes;
pub mod logchunks;
pub mod logs;
pub mod masters;
pub mod object_state;
pub mod objects;
pub mod report_deliveries;
pub mod report_events;
pub mod revoked_sessions;
pub mod scheduler_changes;
pub mod schedulers;
pub mod sourcestamps;
pub mod steps;
pub mod test_result_sets;
pub mod test_results;
pub mod users;
pub mod workers;
