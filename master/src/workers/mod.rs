//! Workers: the QUIC listener and mTLS identity ([`listener`]), the registry of
//! connected workers and their build slots ([`registry`]), and running one remote
//! command on a worker ([`remote`]).

pub mod listener;
pub mod registry;
pub mod remote;

pub use registry::{WorkerLease, WorkerRegistry};
