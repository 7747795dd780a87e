//! The build process: matching build requests to free workers ([`distributor`])
//! and running a build's steps ([`build`]). The set of running builds, through
//! which they are stopped, is [`crate::running_builds`].

pub mod build;
pub mod distributor;
