//! moonbot-worker as a library: the wire protocol (shared with the master), the
//! worker directory, and the worker's connection loop and command runner.
//!
//! The master links this crate for [`protocol`] and [`transport`]; `moonbot
//! quickstart` also uses [`workdir`] and [`run`] to run a local worker in-process.
//!
//! Worker side: [`workdir`] (the worker directory and its identity files),
//! [`tls`] (mutual-TLS client configuration), [`connection`] (serving
//! command streams, reconnecting), `dial` (reaching the master), [`runner`] (running one
//! command), [`files`] (the filesystem commands), [`transfer`] (uploads and
//! downloads) and [`signal`] (signalling process groups); [`enroll`] (getting a
//! certificate with a one-time token) and [`renew`] (replacing it before it
//! expires).

pub mod protocol;
pub mod transport;

pub mod command_io;
pub mod connection;
mod dial;
pub mod enroll;
pub mod files;
pub mod renew;
pub mod runner;
pub mod session;
pub mod signal;
pub mod tls;
pub mod transfer;
pub mod workdir;

pub use connection::{StopMode, run, run_with};
