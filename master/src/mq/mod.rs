//! The event bus: every state change the data layer stores is published here.
//!
//! Topics are typed ([`Topic`]) and rendered once, when published, to
//! Buildbot-style routing keys (`builds/42/new`, `workers/3/connected`); the
//! payload is the same JSON the REST API returns for that object, so the web UI,
//! reporters and internal waiters all read one shape. In-process for now
//! (a tokio broadcast channel); several masters on one database will relay it
//! through PostgreSQL LISTEN/NOTIFY.

pub mod topic;

use std::sync::Arc;
use tokio::sync::broadcast;
pub use topic::Topic;

/// One published change.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: Topic,
    /// The topic's routing key, e.g. `builds/42/finished` (what `/ws` sends).
    pub key: Arc<str>,
    pub payload: Arc<serde_json::Value>,
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

    pub fn publish(&self, topic: Topic, payload: serde_json::Value) {
        // No subscriber is not an error: nobody is watching right now.
        let _ = self.tx.send(Event {
            topic,
            key: topic.to_string().into(),
            payload: Arc::new(payload),
        });
    }

    /// A receiver of every event published from now on. A slow subscriber sees
    /// `Lagged` and must re-read state from the data layer.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
