//! Workers: the QUIC listener and mTLS identity ([`listener`]), enrollment of
//! a worker without a certificate (`enrollment`), (the registry of
//! connected workers and their build slots is [`crate::worker_registry`]), and running one remote
//! command on a worker ([`remote`]).

mod enrollment;
mod last_word;
pub mod listener;
pub mod remote;
