//! Schedulers: turning requests and events into buildsets. Only the force
//! scheduler exists so far.

pub mod force;
