//! moonbot-master: the master of the moonbot CI system, as a library so the
//! `moonbot` binary, `quickstart` and tests share one implementation.
//!
//! See ARCHITECTURE.md for the map; in short: [`config`] runs master.lua,
//! [`runtime`] starts and stops the master, [`reconfig`] reloads master.lua live, [`workers`] talks QUIC to workers,
//! [`process`] runs builds (its steps' arguments made concrete by [`render`], with [`secrets`]), [`schedulers`] makes build requests, [`data`] is the
//! only way state is read or written (and publishes on [`mq`]), [`www`] serves
//! the API, [`pki`] is the CA; [`artifacts`] keeps what builds upload and
//! [`test_reports`] reads their test reports.

pub mod artifacts;
pub mod changes;
pub mod config;
pub mod credentials;
pub mod data;
pub mod db;
pub mod duration;
pub mod janitor;
pub mod locks;
pub mod login_throttle;
pub mod lua;
pub mod mq;
pub mod pki;
pub mod process;
pub mod reconfig;
pub mod render;
pub mod reporters;
pub mod results;
pub mod running_builds;
pub mod runtime;
pub mod schedulers;
pub mod secrets;
pub mod services;
pub mod shared;
pub mod steps;
pub mod test_reports;
pub mod worker_registry;
pub mod workers;
pub mod www;

/// The master.lua `create-master` writes.
pub const SAMPLE_MASTER_LUA: &str = include_str!("../../sample-configs/hello/master.lua");
