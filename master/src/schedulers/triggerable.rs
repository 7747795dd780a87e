//! `mb.schedulers.triggerable{…}`: a scheduler that builds only when a
//! build's `trigger` step names it (Buildbot's `Triggerable`).
//!
//! It has no task of its own: the triggering build makes the buildset
//! (`process::trigger`), reading this scheduler's builders and properties
//! from the running configuration at that moment, so a reload applies to
//! the next trigger and never to one already waiting.

use crate::config::SchedulerConfig;
use crate::services::{Service, ServiceConfig, Stopping};

/// The service of a triggerable scheduler (nothing runs between triggers).
pub struct Triggerable {
    name: String,
}

impl Triggerable {
    pub fn start(config: &SchedulerConfig) -> Triggerable {
        Triggerable {
            name: config.name().to_string(),
        }
    }
}

impl Service for Triggerable {
    fn reconfigure(&mut self, config: &ServiceConfig) {
        if let ServiceConfig::Scheduler(s) = config {
            tracing::debug!(scheduler = %self.name, builders = ?s.builder_names(), "triggerable scheduler reconfigured");
        }
    }

    fn stop(self: Box<Self>) -> Stopping {
        Box::pin(async {})
    }
}
