//! Which UAIDs are connected to this node, and a bounded mailbox to each connection.
//!
//! A newer connection for a UAID replaces the older one: attaching evicts the older
//! connection, and its socket loop closes. The map is sharded so that connects, disconnects
//! and deliveries on different UAIDs rarely contend.
//!
//! A connection's mailbox is one small allocation: its queue takes memory only while something
//! waits in it, so an idle connection costs a few words here (most devices are idle).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::domain::{Delivery, Eviction, PushUpdate, Uaid};

const SHARDS: usize = 32;

/// What the rest of the server can hand a connected device.
#[derive(Debug)]
pub enum Outbound {
    /// Boxed so that a queue slot is two words.
    Update(Box<PushUpdate>),
    /// A live notification for the device bound to the connection.
    Notification(std::sync::Arc<crate::domain::LiveNotification>),
    /// Signals for this connection may have been missed: read what is stored for it again.
    CatchUp,
}

/// What one connection has been handed and not taken yet.
#[derive(Default)]
struct Slots {
    queue: VecDeque<Outbound>,
    evicted: Option<Eviction>,
    /// The connection is gone: deliveries must go to the store.
    closed: bool,
    /// The liveness sweep found the connection's time due (`Registry::sweep`).
    tick: bool,
}

/// No time is due: the connection has not said when it next wants a tick.
const NOT_DUE: u64 = u64::MAX;

struct Mailbox {
    slots: Mutex<Slots>,
    /// Woken on a delivery, an eviction or a tick; a wake with no waiter is kept for the next wait.
    wake: Notify,
    capacity: usize,
    /// When the connection next wants a tick, in milliseconds since the registry's epoch
    /// (`NOT_DUE` for never, or once the sweep has ticked it and until it says again).
    due: AtomicU64,
}

impl Mailbox {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, message: Outbound) -> Delivery {
        let mut slots = self.slots();
        if slots.closed || slots.evicted.is_some() {
            return Delivery::NotConnected;
        }
        if slots.queue.len() >= self.capacity {
            return Delivery::QueueFull;
        }
        slots.queue.push_back(message);
        drop(slots);
        self.wake.notify_one();
        Delivery::Queued
    }

    fn evict(&self, reason: Eviction) {
        self.slots().evicted.get_or_insert(reason);
        self.wake.notify_one();
    }
}

struct Entry {
    id: u64,
    mailbox: Arc<Mailbox>,
}

/// What a connection finds in its mailbox.
#[derive(Debug)]
pub enum Mail {
    /// Everything queued, oldest first.
    Work(VecDeque<Outbound>),
    /// The connection must close, for this reason.
    Evicted(Eviction),
    /// The time the connection asked for (`Attachment::wake_at`) has come.
    Tick,
}

/// The receiving side a connection keeps while it is attached.
pub struct Attachment {
    pub id: u64,
    mailbox: Arc<Mailbox>,
}

impl Attachment {
    /// Waits until something is queued (all of it comes at once), the connection is evicted,
    /// or its time has come; an eviction comes first, and work before a tick.
    pub async fn next(&self) -> Mail {
        loop {
            {
                let mut slots = self.mailbox.slots();
                if let Some(reason) = slots.evicted {
                    return Mail::Evicted(reason);
                }
                if !slots.queue.is_empty() {
                    return Mail::Work(std::mem::take(&mut slots.queue));
                }
                if std::mem::take(&mut slots.tick) {
                    return Mail::Tick;
                }
            }
            self.mailbox.wake.notified().await;
        }
    }

    /// Whether the connection was evicted, and why.
    pub fn eviction(&self) -> Option<Eviction> {
        self.mailbox.slots().evicted
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.mailbox.slots().closed = true;
    }
}

pub struct Registry {
    shards: Vec<Mutex<HashMap<Uaid, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    /// Connections' due times count from here.
    epoch: Instant,
    /// UAIDs whose last connection here closed, until the store hears of them (`take_closed`).
    closed: Mutex<Vec<Uaid>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            closed: Mutex::new(Vec::new()),
        }
    }
}

impl Registry {
    fn shard(&self, uaid: &Uaid) -> std::sync::MutexGuard<'_, HashMap<Uaid, Entry>> {
        let index = (self.hasher.hash_one(uaid) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked mid-update of a plain map.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes this connection the UAID's live one, replacing (and closing) any older one; at
    /// most `queue` messages wait for it.
    pub fn attach(&self, uaid: Uaid, queue: usize) -> Attachment {
        let mailbox = Arc::new(Mailbox {
            slots: Mutex::new(Slots::default()),
            wake: Notify::new(),
            capacity: queue,
            due: AtomicU64::new(NOT_DUE),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry { id, mailbox: mailbox.clone() };
        if let Some(older) = self.shard(&uaid).insert(uaid, entry) {
            older.mailbox.evict(Eviction::Replaced);
        }
        Attachment { id, mailbox }
    }

    /// Asks for `Mail::Tick` on `attachment` once `at` has come, replacing any earlier ask. The
    /// node's sweep delivers it, up to one sweep period late: a connection keeps no timer of its
    /// own (nor a copy of the epoch its time counts from).
    pub fn wake_at(&self, attachment: &Attachment, at: Instant) {
        let millis = at.saturating_duration_since(self.epoch).as_millis();
        // Rounded up, so that a tick never comes before `at`.
        let millis = u64::try_from(millis + 1).unwrap_or(NOT_DUE - 1);
        attachment.mailbox.due.store(millis, Ordering::Relaxed);
    }

    /// The node's liveness sweep: ticks every connection whose asked-for time (`wake_at`) has
    /// come by `now`, once; returns how many it ticked. One pass over the connections replaces
    /// a timer per connection, which would be re-armed on every frame.
    pub fn sweep(&self, now: Instant) -> usize {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(NOT_DUE - 1);
        let mut ticked = 0;
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for entry in shard.values() {
                let mailbox = &entry.mailbox;
                let due = mailbox.due.load(Ordering::Relaxed);
                // Taken only if the connection has not asked anew meanwhile: a newer ask stands.
                if due > now
                    || mailbox
                        .due
                        .compare_exchange(due, NOT_DUE, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                {
                    continue;
                }
                mailbox.slots().tick = true;
                mailbox.wake.notify_one();
                ticked += 1;
            }
        }
        ticked
    }

    /// Tells the UAID's connection, if any, to close.
    pub fn evict(&self, uaid: &Uaid, reason: Eviction) -> bool {
        match self.shard(uaid).remove(uaid) {
            Some(entry) => {
                entry.mailbox.evict(reason);
                true
            }
            None => false,
        }
    }

    /// Forgets the connection, unless a newer one has already taken its place.
    /// Ends this connection's attachment; unless a newer connection has the UAID, it is now
    /// connected nowhere here, and noted for `take_closed`.
    pub fn detach(&self, uaid: &Uaid, id: u64) {
        let mut shard = self.shard(uaid);
        match shard.get(uaid) {
            Some(entry) if entry.id != id => return, // replaced: the newer one has it
            Some(_) => {
                shard.remove(uaid);
            }
            None => {}
        }
        drop(shard);
        self.closed.lock().unwrap_or_else(|e| e.into_inner()).push(*uaid);
    }

    /// The UAIDs whose connections closed since the last call and that have not connected
    /// again since: the store marks them closed in one write.
    pub fn take_closed(&self) -> Vec<Uaid> {
        let mut closed = std::mem::take(&mut *self.closed.lock().unwrap_or_else(|e| e.into_inner()));
        closed.sort_unstable();
        closed.dedup();
        closed.retain(|uaid| !self.is_connected(uaid));
        closed
    }

    pub fn deliver(&self, uaid: &Uaid, message: Outbound) -> Delivery {
        let shard = self.shard(uaid);
        let Some(entry) = shard.get(uaid) else {
            return Delivery::NotConnected;
        };
        entry.mailbox.put(message)
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
                let _ = entry.mailbox.put(Outbound::CatchUp);
            }
        }
    }

    /// Tells every connection to close.
    pub fn evict_all(&self, reason: Eviction) {
        for shard in &self.shards {
            for (_, entry) in shard.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                entry.mailbox.evict(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn update() -> Outbound {
        Outbound::Update(Box::new(PushUpdate {
            channel: crate::domain::ChannelId::from_bytes([1; 16]),
            version: 1,
            data: None,
        }))
    }

    /// What the mailbox holds right now, without waiting.
    fn now(attachment: &Attachment) -> Option<Mail> {
        use std::future::Future as _;
        let mut next = std::pin::pin!(attachment.next());
        match next.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(mail) => Some(mail),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn a_newer_attachment_replaces_the_older() {
        let registry = Registry::default();
        let uaid = Uaid::random();
        let first = registry.attach(uaid, 4);
        let second = registry.attach(uaid, 4);
        assert!(matches!(now(&first), Some(Mail::Evicted(Eviction::Replaced))));
        assert!(now(&second).is_none(), "nothing for the newer one yet");
        // The older one detaching must not remove the newer.
        registry.detach(&uaid, first.id);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::Queued);
        assert!(matches!(now(&second), Some(Mail::Work(queue)) if queue.len() == 1));
        assert!(registry.evict(&uaid, Eviction::Revoked));
        assert_eq!(second.eviction(), Some(Eviction::Revoked));
        assert_eq!(registry.deliver(&uaid, update()), Delivery::NotConnected);
    }

    #[test]
    fn a_full_queue_is_reported_not_blocked_on() {
        let registry = Registry::default();
        let uaid = Uaid::random();
        let attached = registry.attach(uaid, 2);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::Queued);
        assert_eq!(registry.deliver(&uaid, Outbound::CatchUp), Delivery::Queued);
        assert_eq!(registry.deliver(&uaid, update()), Delivery::QueueFull);
        // Taking the queue makes room again, and it comes out in order.
        let Some(Mail::Work(queue)) = now(&attached) else { panic!("the queue is there") };
        assert!(matches!(queue.back(), Some(Outbound::CatchUp)));
        assert_eq!(registry.deliver(&uaid, update()), Delivery::Queued);
    }

    #[test]
    fn a_connection_that_ended_is_not_connected() {
        let registry = Registry::default();
        let uaid = Uaid::random();
        let attached = registry.attach(uaid, 2);
        drop(attached);
        // Until it detaches, its entry is still in the map: deliveries must not vanish there.
        assert_eq!(registry.deliver(&uaid, update()), Delivery::NotConnected);
    }

    #[test]
    fn the_sweep_ticks_a_connection_once_when_its_time_has_come() {
        let registry = Registry::default();
        let uaid = Uaid::random();
        let attached = registry.attach(uaid, 2);
        let t0 = Instant::now();
        assert_eq!(registry.sweep(t0 + Duration::from_secs(60)), 0, "nothing asked, nothing ticked");
        registry.wake_at(&attached, t0 + Duration::from_secs(10));
        assert_eq!(registry.sweep(t0 + Duration::from_secs(9)), 0, "never early");
        assert!(now(&attached).is_none());
        assert_eq!(registry.sweep(t0 + Duration::from_secs(11)), 1);
        assert_eq!(registry.sweep(t0 + Duration::from_secs(12)), 0, "once, until asked again");
        // Queued work comes before the tick, and the tick is not lost behind it.
        assert_eq!(registry.deliver(&uaid, update()), Delivery::Queued);
        assert!(matches!(now(&attached), Some(Mail::Work(_))));
        assert!(matches!(now(&attached), Some(Mail::Tick)));
        assert!(now(&attached).is_none(), "one tick per sweep that found it due");
        // Asking again replaces the earlier time.
        registry.wake_at(&attached, t0 + Duration::from_secs(20));
        registry.wake_at(&attached, t0 + Duration::from_secs(30));
        assert_eq!(registry.sweep(t0 + Duration::from_secs(25)), 0);
        assert_eq!(registry.sweep(t0 + Duration::from_secs(31)), 1);
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_for_a_delivery() {
        let registry = std::sync::Arc::new(Registry::default());
        let uaid = Uaid::random();
        let attached = registry.attach(uaid, 2);
        let sender = registry.clone();
        let deliver = tokio::spawn(async move {
            tokio::task::yield_now().await;
            sender.deliver(&uaid, update())
        });
        assert!(matches!(attached.next().await, Mail::Work(queue) if queue.len() == 1));
        assert_eq!(deliver.await.unwrap(), Delivery::Queued);
    }
}
