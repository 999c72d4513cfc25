//! The bus: signals between the parts of a node and, in a cluster, between nodes. It only
//! signals; the store holds the truth, so a lost signal delays and never loses: streams re-read
//! the log on every heartbeat, the webhook dispatcher scans the store every second, and devices
//! re-read what is stored for them when they connect and when the bus comes back.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::Eviction;
use crate::domain::PresenceChange;
use crate::domain::Uaid;
use crate::domain::{LiveNotification, PushUpdate};

mod nats;

pub use nats::{BusError, NatsBus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A user's visible status changed (this node only: other nodes read it from the log).
    Presence(PresenceChange),
    /// An app's event log has entries up to `seq`.
    AppEvents { app_id: String, seq: u64 },
    /// For the node holding this UAID's connection. `origin` sent it, after finding the UAID
    /// not connected there.
    Device { origin: Arc<str>, uaid: Uaid, message: DeviceMessage },
    /// An app opened a stream on `origin`: its stream on any other node is replaced.
    StreamOpened { origin: Arc<str>, app_id: String },
    /// The link to the other nodes was down and is back: signals may have been missed, so
    /// whatever waits on them reads the store again.
    Reconnected,
}

/// What one node asks of a device connected to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    Update(PushUpdate),
    Notification(Arc<LiveNotification>),
    Close(Eviction),
}

pub trait Bus: Send + Sync + 'static {
    fn publish(&self, signal: Signal);
    fn subscribe(&self) -> broadcast::Receiver<Signal>;
    /// Whether signals reach the other nodes right now (always, for a lone node).
    fn is_connected(&self) -> bool {
        true
    }
    /// Resolves once what was published so far has left this process (a command that exits
    /// right after publishing waits for it).
    fn flush(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
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
