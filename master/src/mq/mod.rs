//! The event bus: every state change the data layer stores is published here.
//!
//! Topics are Buildbot-style paths (`builds/42/new`, `workers/3/connected`); the
//! payload is the same JSON the REST API returns for that object, so the web UI,
//! reporters and internal waiters all read one shape. In-process for now
//! (a tokio broadcast channel); several masters on one database will relay it
//! through PostgreSQL LISTEN/NOTIFY.

use std::sync::Arc;
use tokio::sync::broadcast;

/// One published change.
#[derive(Debug, Clone)]
pub struct Event {
    /// `collection/id/event`, e.g. `builds/42/finished`.
    pub topic: String,
    pub payload: Arc<serde_json::Value>,
}

impl Event {
    /// The first path element (`builds`, `buildrequests` …).
    pub fn collection(&self) -> &str {
        self.topic.split('/').next().unwrap_or("")
    }

    /// The last path element (`new`, `finished` …).
    pub fn kind(&self) -> &str {
        self.topic.rsplit('/').next().unwrap_or("")
    }
}

/// Publisher and subscription point; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Bus { tx }
    }

    pub fn publish(&self, topic: String, payload: serde_json::Value) {
        // No subscriber is not an error: nobody is watching right now.
        let _ = self.tx.send(Event {
            topic,
            payload: Arc::new(payload),
        });
    }

    /// A receiver of every event published from now on. A slow subscriber sees
    /// `Lagged` and must re-read state from the data layer.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
