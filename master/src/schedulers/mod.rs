//! Schedulers: turning requests and events into buildsets. `force` builds
//! on request; `changes` runs `single_branch` and `any_branch`, which build
//! the changes their filter (`classify`) takes; `timed` runs `periodic` and
//! `nightly`; `triggerable` builds when a build's `trigger` step asks
//! (`process::trigger` makes its buildset).

pub mod buildset;
pub mod changes;
pub mod classify;
pub mod dependent;
pub mod force;
pub mod force_params;
pub mod timed;
pub mod tree_stable;

use crate::config::SchedulerConfig;
use crate::services::{Service, ServiceConfig, Stopping};

/// The service of a scheduler that builds only when asked (`force`,
/// `triggerable`): the request reads the running configuration, so a
/// reconfigured scheduler's builders apply to the next request, and there is
/// no timer or queue to keep between requests.
pub struct OnDemand {
    name: String,
}

impl OnDemand {
    pub fn start(config: &SchedulerConfig) -> OnDemand {
        OnDemand {
            name: config.name().to_string(),
        }
    }
}

impl Service for OnDemand {
    fn reconfigure(&mut self, config: &ServiceConfig) {
        if let ServiceConfig::Scheduler(s) = config {
            tracing::debug!(scheduler = %self.name, builders = ?s.builder_names(), "scheduler reconfigured");
        }
    }

    fn stop(self: Box<Self>) -> Stopping {
        Box::pin(async {})
    }
}
