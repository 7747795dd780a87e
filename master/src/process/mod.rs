//! The build process: matching build requests to free workers ([`distributor`])
//! (with the requests that collapse into a build, [`collapse`]) and running a
//! build's steps ([`build`]). The set of running builds, through
//! which they are stopped, is [`crate::running_builds`].

pub mod build;
pub mod collapse;
pub mod distributor;
