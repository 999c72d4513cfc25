//! Which UAIDs are connected to this node, and a bounded queue to each connection.
//!
//! A newer connection for a UAID replaces the older one: attaching cancels the older
//! connection's `replaced` token, and its socket loop closes. The map is sharded so that
//! connects, disconnects and deliveries on different UAIDs rarely contend.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{Delivery, Eviction, PushUpdate, Uaid};

const SHARDS: usize = 32;

/// What the rest of the server can hand a connected device.
#[derive(Debug)]
pub enum Outbound {
    /// Boxed so that a queue slot is two words: every connection's queue allocates its first
    /// block of slots up front.
    Update(Box<PushUpdate>),
    /// A live notification for the device bound to the connection.
    Notification(std::sync::Arc<crate::domain::LiveNotification>),
    /// Signals for this connection may have been missed: read what is stored for it again.
    CatchUp,
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<Outbound>,
    evicted: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl Entry {
    fn evict(&self, reason: Eviction) {
        self.reason.store(reason as u8, Ordering::Relaxed);
        self.evicted.cancel();
    }
}

/// The receiving side a connection keeps while it is attached.
pub struct Attachment {
    pub id: u64,
    pub rx: mpsc::Receiver<Outbound>,
    /// Fires when the connection must close; `eviction` says why.
    pub evicted: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl Attachment {
    pub fn eviction(&self) -> Eviction {
        match self.reason.load(Ordering::Relaxed) {
            r if r == Eviction::Revoked as u8 => Eviction::Revoked,
            r if r == Eviction::LeaseLost as u8 => Eviction::LeaseLost,
            _ => Eviction::Replaced,
        }
    }
}

pub struct Registry {
    shards: Vec<Mutex<HashMap<Uaid, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

impl Registry {
    fn shard(&self, uaid: &Uaid) -> std::sync::MutexGuard<'_, HashMap<Uaid, Entry>> {
        let index = (self.hasher.hash_one(uaid) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked mid-update of a plain map.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes this connection the UAID's live one, replacing (and closing) any older one.
    pub fn attach(&self, uaid: Uaid, queue: usize) -> Attachment {
        let (tx, rx) = mpsc::channel(queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let reason = Arc::new(AtomicU8::new(0));
        let entry = Entry { id, tx, evicted: evicted.clone(), reason: reason.clone() };
        if let Some(older) = self.shard(&uaid).insert(uaid, entry) {
            older.evict(Eviction::Replaced);
        }
        Attachment { id, rx, evicted, reason }
    }

    /// Tells the UAID's connection, if any, to close.
    pub fn evict(&self, uaid: &Uaid, reason: Eviction) -> bool {
        match self.shard(uaid).remove(uaid) {
            Some(entry) => {
                entry.evict(reason);
                true
            }
            None => false,
        }
    }

    /// Forgets the connection, unless a newer one has already taken its place.
    pub fn detach(&self, uaid: &Uaid, id: u64) {
        let mut shard = self.shard(uaid);
        if shard.get(uaid).is_some_and(|e| e.id == id) {
            shard.remove(uaid);
        }
    }

    pub fn deliver(&self, uaid: &Uaid, message: Outbound) -> Delivery {
        let shard = self.shard(uaid);
        let Some(entry) = shard.get(uaid) else {
            return Delivery::NotConnected;
        };
        match entry.tx.try_send(message) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::NotConnected,
        }
    }

    pub fn is_connected(&self, uaid: &Uaid) -> bool {
        self.shard(uaid).contains_key(uaid)
    }

    /// Asks every connection to read its stored notifications again (a full queue already has
    /// work pending, so it is skipped).
    pub fn catch_up_all(&self) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for entry in shard.values() {
                let _ = entry.tx.try_send(Outbound::CatchUp);
            }
        }
    }

    /// Tells every connection to close.
    pub fn evict_all(&self, reason: Eviction) {
        for shard in &self.shards {
            for (_, entry) in shard.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                entry.evict(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update() -> Outbound {
        Outbound::Update(Box::new(PushUpdate {
            channel: crate::domain::ChannelId::from_bytes([1; 16]),
            version: 1,
            data: None,
        }))
    }

    #[test]
    fn a_newer_attachment_replaces_the_older() {
        let registry = Registry::default();
        let uaid = Uaid::random();
        let first = registry.attach(uaid, 4);
        let mut second = registry.attach(uaid, 4);
        assert!(first.evicted.is_cancelled());
        assert_eq!(first.eviction(), Eviction::Replaced);
        assert!(!second.evicted.is_cancelled());
        // The older one detaching must not remove the newer.
        registry.detach(&uaid, first.id);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::Queued);
        assert!(second.rx.try_recv().is_ok());
        assert!(registry.evict(&uaid, Eviction::Revoked));
        assert_eq!(second.eviction(), Eviction::Revoked);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::NotConnected);
    }

    #[test]
    fn a_full_queue_is_reported_not_blocked_on() {
        let registry = Registry::default();
        let uaid = Uaid::random();
        let _attached = registry.attach(uaid, 1);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::Queued);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::QueueFull);
    }
}
