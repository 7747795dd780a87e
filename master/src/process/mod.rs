//! The build process: matching build requests to free workers ([`distributor`])
//! (with the requests that collapse into a build, [`collapse`]) and running a
//! build's steps ([`build`]). The set of running builds, through
//! which they are stopped, is [`crate::running_builds`]; a builder's
//! `cancel_superseded` is [`supersede`].

pub mod build;
pub mod choices;
pub mod collapse;
pub mod distributor;
pub mod supersede;
pub mod trigger;
