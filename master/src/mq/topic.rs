//! What an event is about: a typed [`Topic`] per entity and event, rendered to
//! Buildbot's routing keys (`builds/42/finished`) in one place, so publishers
//! cannot misspell a topic and subscribers match on variants, not strings.

use std::fmt;

/// An entity and what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Builder { id: i64, event: BuilderEvent },
    Buildset { id: i64, event: BuildsetEvent },
    BuildRequest { id: i64, event: BuildRequestEvent },
    Build { id: i64, event: BuildEvent },
    Step { id: i64, event: StepEvent },
    Log { id: i64, event: LogEvent },
    Worker { id: i64, event: WorkerEvent },
    ConfigReload { id: i64, event: ConfigReloadEvent },
    Change { id: i64, event: ChangeEvent },
    Scheduler { id: i64, event: SchedulerEvent },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerEvent {
    /// Enabled or disabled.
    Updated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEvent {
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderEvent {
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildsetEvent {
    New,
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildRequestEvent {
    New,
    Claimed,
    Unclaimed,
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildEvent {
    New,
    /// Its state string or locks wait changed while it runs.
    Update,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent {
    Started,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    New,
    Append,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    Connected,
    Disconnected,
    StateUpdated,
    /// Away longer than its `missing_timeout` (Buildbot's `missing`).
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigReloadEvent {
    New,
}

impl Topic {
    /// The collection, as in the REST API's paths (`builds`, `buildrequests` …).
    pub fn collection(&self) -> &'static str {
        match self {
            Topic::Builder { .. } => "builders",
            Topic::Buildset { .. } => "buildsets",
            Topic::BuildRequest { .. } => "buildrequests",
            Topic::Build { .. } => "builds",
            Topic::Step { .. } => "steps",
            Topic::Log { .. } => "logs",
            Topic::Worker { .. } => "workers",
            Topic::ConfigReload { .. } => "config_reloads",
            Topic::Change { .. } => "changes",
            Topic::Scheduler { .. } => "schedulers",
        }
    }

    /// The id of the entity.
    pub fn id(&self) -> i64 {
        match *self {
            Topic::Builder { id, .. }
            | Topic::Buildset { id, .. }
            | Topic::BuildRequest { id, .. }
            | Topic::Build { id, .. }
            | Topic::Step { id, .. }
            | Topic::Log { id, .. }
            | Topic::Worker { id, .. }
            | Topic::ConfigReload { id, .. }
            | Topic::Change { id, .. }
            | Topic::Scheduler { id, .. } => id,
        }
    }

    /// What happened, as the last element of the routing key.
    pub fn event(&self) -> &'static str {
        match self {
            Topic::Builder { event, .. } => match event {
                BuilderEvent::New => "new",
            },
            Topic::Buildset { event, .. } => match event {
                BuildsetEvent::New => "new",
                BuildsetEvent::Complete => "complete",
            },
            Topic::BuildRequest { event, .. } => match event {
                BuildRequestEvent::New => "new",
                BuildRequestEvent::Claimed => "claimed",
                BuildRequestEvent::Unclaimed => "unclaimed",
                BuildRequestEvent::Complete => "complete",
            },
            Topic::Build { event, .. } => match event {
                BuildEvent::New => "new",
                BuildEvent::Update => "update",
                BuildEvent::Finished => "finished",
            },
            Topic::Step { event, .. } => match event {
                StepEvent::Started => "started",
                StepEvent::Finished => "finished",
            },
            Topic::Log { event, .. } => match event {
                LogEvent::New => "new",
                LogEvent::Append => "append",
                LogEvent::Finished => "finished",
            },
            Topic::Worker { event, .. } => match event {
                WorkerEvent::Connected => "connected",
                WorkerEvent::Disconnected => "disconnected",
                WorkerEvent::StateUpdated => "state_updated",
                WorkerEvent::Missing => "missing",
            },
            Topic::ConfigReload { event, .. } => match event {
                ConfigReloadEvent::New => "new",
            },
            Topic::Change { event, .. } => match event {
                ChangeEvent::New => "new",
            },
            Topic::Scheduler { event, .. } => match event {
                SchedulerEvent::Updated => "updated",
            },
        }
    }
}

/// Buildbot's routing key: `collection/id/event`.
impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.collection(), self.id(), self.event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_render_as_buildbot_routing_keys() {
        let cases = [
            (
                Topic::Build {
                    id: 42,
                    event: BuildEvent::Finished,
                },
                "builds/42/finished",
            ),
            (
                Topic::BuildRequest {
                    id: 7,
                    event: BuildRequestEvent::Unclaimed,
                },
                "buildrequests/7/unclaimed",
            ),
            (
                Topic::Worker {
                    id: 3,
                    event: WorkerEvent::StateUpdated,
                },
                "workers/3/state_updated",
            ),
            (
                Topic::ConfigReload {
                    id: 1,
                    event: ConfigReloadEvent::New,
                },
                "config_reloads/1/new",
            ),
            (
                Topic::Log {
                    id: 9,
                    event: LogEvent::Append,
                },
                "logs/9/append",
            ),
            (
                Topic::Change {
                    id: 5,
                    event: ChangeEvent::New,
                },
                "changes/5/new",
            ),
        ];
        for (topic, key) in cases {
            assert_eq!(topic.to_string(), key);
        }
    }
}
