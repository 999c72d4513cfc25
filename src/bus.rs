//! The bus: signals between the parts of a node (and, in a cluster, between nodes). It only
//! signals; the store holds the truth, so a lost signal delays and never loses.

use tokio::sync::broadcast;

use crate::presence::PresenceChange;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A user's visible status changed.
    Presence(PresenceChange),
    /// An app's event log has entries up to `seq`.
    AppEvents { app_id: String, seq: u64 },
}

pub trait Bus: Send + Sync + 'static {
    fn publish(&self, signal: Signal);
    fn subscribe(&self) -> broadcast::Receiver<Signal>;
}

/// The in-process bus: a broadcast channel. A subscriber that falls more than `capacity`
/// signals behind misses the oldest ones (it sees `Lagged`) and must catch up from the store.
pub struct LocalBus {
    sender: broadcast::Sender<Signal>,
}

impl LocalBus {
    pub fn new(capacity: usize) -> LocalBus {
        LocalBus { sender: broadcast::channel(capacity).0 }
    }
}

impl Bus for LocalBus {
    fn publish(&self, signal: Signal) {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.sender.send(signal);
    }

    fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.sender.subscribe()
    }
}
