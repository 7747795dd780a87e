//! Schedulers: turning requests and events into buildsets. `force` builds
//! on request; `changes` runs `single_branch` and `any_branch`, which build
//! the changes their filter (`classify`) takes; `timed` runs `periodic` and
//! `nightly`.

pub mod buildset;
pub mod changes;
pub mod classify;
pub mod dependent;
pub mod force;
pub mod force_params;
pub mod timed;
pub mod tree_stable;
pub mod triggerable;
