//! Test reports a worker uploaded, turned into Buildbot's test results.
//!
//! A build step can name report files (JUnit/xUnit XML, written by pytest,
//! Surefire, go-junit-report, jest-junit, nextest, ...); the worker uploads
//! them and the master parses them into per-test outcomes and counts that the
//! API and UI show. The worker is not trusted: a report may be truncated,
//! enormous, deeply nested or plain garbage, so every parser here bounds what
//! it keeps (see [`Limits`]) and answers bad input with an error, never a
//! panic.

pub mod junit;

pub use junit::{Counts, Declared, JunitError, Limits, Outcome, Report, TestCase, parse};
