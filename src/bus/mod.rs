//! The bus: signals between the parts of a node and, in a cluster, between nodes. It only
//! signals; the store holds the truth, so a lost signal delays and never loses: streams re-read
//! the log on every heartbeat, the webhook dispatcher scans the store every second, and devices
//! re-read what is stored for them when they connect and when the bus comes back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Notify};

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
    /// Sends a signal to whoever it concerns: an app's new events ring that app's doorbell
    /// (`bells`), a presence change goes to `presence_changes`, and every other signal to
    /// `subscribe`rs; in a cluster, what other nodes need goes to them too.
    fn publish(&self, signal: Signal);
    /// The node's signals other than app events and presence changes: devices' messages from
    /// other nodes, streams opened elsewhere, the link coming back. Each subscriber wakes for
    /// each of them, so nothing that happens per status change goes here.
    fn subscribe(&self) -> broadcast::Receiver<Signal>;
    /// Each app's doorbell on this node, rung when the app's log grows here or on another node.
    fn bells(&self) -> &Doorbells;
    /// The presence changes of this node's users. Nothing in the node waits on them (apps
    /// learn of changes through their logs); they are for whoever watches a node from outside
    /// its parts, such as the integration tests.
    fn presence_changes(&self) -> broadcast::Receiver<PresenceChange>;
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

/// Each app's doorbell on this node: rung when the app's event log grows, so that whoever
/// delivers that app's events wakes (its stream), and nobody else does. The webhook
/// dispatcher, which serves every app, hears every ring on a bell of its own (`any`). A bell
/// rung while nobody waits keeps one wake for the next wait, however often it was rung.
#[derive(Default)]
pub struct Doorbells {
    apps: Mutex<HashMap<String, Arc<Notify>>>,
    any: Notify,
}

impl Doorbells {
    /// Rings the app's bell, if one hangs, and the bell for any app.
    pub fn ring(&self, app_id: &str) {
        if let Some(bell) = self.lock().get(app_id) {
            bell.notify_one();
        }
        self.any.notify_one();
    }

    /// Hangs `bell` for the app, in place of the one hung before.
    pub fn hang(&self, app_id: &str, bell: Arc<Notify>) {
        self.lock().insert(app_id.to_owned(), bell);
    }

    /// Takes the app's bell down if it is still `bell` (one hung since stays).
    pub fn take_down(&self, app_id: &str, bell: &Arc<Notify>) {
        let mut apps = self.lock();
        if apps.get(app_id).is_some_and(|hung| Arc::ptr_eq(hung, bell)) {
            apps.remove(app_id);
        }
    }

    /// The bell rung for any app's events.
    pub fn any(&self) -> &Notify {
        &self.any
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-process bus: a broadcast channel for the node's signals, one for presence changes,
/// and the apps' doorbells. A subscriber that falls more than `capacity` signals behind misses
/// the oldest ones (it sees `Lagged`) and must catch up from the store.
#[derive(Clone)]
pub struct LocalBus {
    sender: broadcast::Sender<Signal>,
    changes: broadcast::Sender<PresenceChange>,
    bells: Arc<Doorbells>,
}

impl LocalBus {
    pub fn new(capacity: usize) -> LocalBus {
        LocalBus {
            sender: broadcast::channel(capacity).0,
            changes: broadcast::channel(capacity).0,
            bells: Arc::default(),
        }
    }
}

impl Bus for LocalBus {
    fn publish(&self, signal: Signal) {
        // No subscriber is not an error: nobody is listening yet.
        match signal {
            Signal::AppEvents { app_id, .. } => self.bells.ring(&app_id),
            Signal::Presence(change) => {
                let _ = self.changes.send(change);
            }
            other => {
                let _ = self.sender.send(other);
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.sender.subscribe()
    }

    fn bells(&self) -> &Doorbells {
        &self.bells
    }

    fn presence_changes(&self) -> broadcast::Receiver<PresenceChange> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    fn rung(bell: &Notify) -> bool {
        bell.notified().now_or_never().is_some()
    }

    #[test]
    fn an_apps_events_ring_its_bell_alone_and_other_signals_wake_subscribers() {
        let bus = LocalBus::new(8);
        let mut signals = bus.subscribe();
        let (mine, other) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        bus.bells().hang("mine", mine.clone());
        bus.bells().hang("other", other.clone());
        bus.publish(Signal::AppEvents { app_id: "mine".into(), seq: 1 });
        bus.publish(Signal::AppEvents { app_id: "mine".into(), seq: 2 });
        assert!(rung(&mine), "the app's bell rings");
        assert!(!rung(&mine), "two rings before a wait wake it once");
        assert!(!rung(&other), "another app's bell stays quiet");
        assert!(rung(bus.bells().any()), "whoever serves every app hears it");
        assert!(signals.try_recv().is_err(), "subscribers are not woken by app events");
        bus.publish(Signal::Reconnected);
        assert_eq!(signals.try_recv(), Ok(Signal::Reconnected));
    }

    #[test]
    fn a_bell_taken_down_by_an_older_waiter_leaves_the_newer_one_hanging() {
        let bells = Doorbells::default();
        let (older, newer) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        bells.hang("app", older.clone());
        bells.hang("app", newer.clone());
        bells.take_down("app", &older);
        bells.ring("app");
        assert!(rung(&newer));
        assert!(!rung(&older));
        bells.take_down("app", &newer);
        bells.ring("app");
        assert!(!rung(&newer));
    }
}
