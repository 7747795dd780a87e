//! moonbot-worker as a library: the wire protocol (shared with the master), the
//! worker directory, and the worker's connection loop and command runner.
//!
//! The master links this crate for [`protocol`] and [`transport`]; `moonbot
//! quickstart` also uses [`workdir`] and [`run`] to run a local worker in-process.

pub mod protocol;
pub mod transport;

pub mod connection;
pub mod runner;
pub mod signal;
pub mod tls;
pub mod workdir;

pub use connection::run;
