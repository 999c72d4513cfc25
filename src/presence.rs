//! The presence engine: device statuses become one status per user, and a change is emitted on
//! the bus only when what an app would see changes.
//!
//! The store is the truth (each device's status, each user's best and visible status) and does
//! the aggregation in one transaction, so concurrent devices of one user cannot race. This
//! module adds the time rules: the grace after a socket closes, the sweep of devices silent past
//! `stale_after`, and "everyone offline" when a node starts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Signal};
use crate::store::{AccountId, DeviceId, Store, StoreError};

/// A status as devices report it (`O`, `A`, `U`) and apps see it (`online`, `away`, `offline`).
/// Ordered: the best of a user's devices is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Offline = 0,
    Away = 1,
    Online = 2,
}

impl Status {
    /// From a device's `xps` code.
    pub fn from_code(code: &str) -> Option<Status> {
        match code {
            "O" => Some(Status::Online),
            "A" => Some(Status::Away),
            "U" => Some(Status::Offline),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Status::Online => "O",
            Status::Away => "A",
            Status::Offline => "U",
        }
    }

    /// The name apps and users see.
    pub fn name(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Status {
        match rank {
            2 => Status::Online,
            1 => Status::Away,
            _ => Status::Offline,
        }
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A user's visible status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub account: AccountId,
    pub status: Status,
    pub at: i64,
    /// The entries this change appended to apps' event logs (committed with it).
    pub events: Vec<crate::store::AppEvent>,
}

/// A status report waiting for the writer.
struct Report {
    device: DeviceId,
    status: Status,
    done: oneshot::Sender<Result<(), String>>,
}

/// Most reports applied in one transaction.
const MAX_BATCH: usize = 512;

/// Time rules around the store's aggregation, and the one writer of status reports.
pub struct Engine {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Reports go to one task that applies whatever has queued up in one transaction (a group
    /// commit): under load, many reports share one commit instead of queueing for the database.
    reports: mpsc::Sender<Report>,
    grace: Duration,
    stale_after: Duration,
    /// The current connection of each connected device, to tell a reconnect within the grace.
    connections: Mutex<HashMap<DeviceId, u64>>,
    next_connection: AtomicU64,
}

impl Engine {
    /// Must be called inside the runtime: it starts the writer task.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, grace: Duration, stale_after: Duration) -> Engine {
        let (reports, queue) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(write_reports(store.clone(), bus.clone(), queue));
        Engine {
            store,
            bus,
            reports,
            grace,
            stale_after,
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        }
    }

    fn emit(&self, changes: impl IntoIterator<Item = PresenceChange>) {
        emit(self.bus.as_ref(), changes);
    }

    /// Wakes whoever delivers these apps' events (streams, the webhook dispatcher).
    pub fn announce(&self, events: &[crate::store::AppEvent]) {
        announce(self.bus.as_ref(), events);
    }

    /// A device reported a status; returns once it is committed.
    pub async fn report(&self, device: &DeviceId, status: Status) -> Result<(), StoreError> {
        let stopped = || StoreError::Batch("the presence writer stopped".into());
        let (done, committed) = oneshot::channel();
        self.reports.send(Report { device: device.clone(), status, done }).await.map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?.map_err(StoreError::Batch)
    }

    /// A device's connection is up; returns its connection number for `disconnected`.
    pub fn connected(&self, device: &DeviceId) -> u64 {
        let number = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(device.clone(), number);
        number
    }

    /// A device's connection closed: unless it reconnects within the grace, it is offline.
    pub fn disconnected(self: &Arc<Self>, device: DeviceId, connection: u64) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            if !engine.grace.is_zero() {
                tokio::time::sleep(engine.grace).await;
            }
            {
                let mut connections = engine.lock();
                if connections.get(&device) != Some(&connection) {
                    return; // reconnected meanwhile
                }
                connections.remove(&device);
            }
            if let Err(error) = engine.report(&device, Status::Offline).await {
                tracing::error!(error = %crate::error::chain(&error), "cannot mark a device offline");
            }
        });
    }

    /// Forgets a removed device's connection so its grace timer does nothing.
    pub fn forget(&self, device: &DeviceId) {
        self.lock().remove(device);
    }

    /// On start: devices from a previous run are offline until they reconnect.
    pub async fn start(&self) -> Result<(), StoreError> {
        let changes = self.store.reset_presence(crate::ws::unix_now()).await?;
        self.emit(changes);
        Ok(())
    }

    /// Marks devices silent past `stale_after` offline, every `stale_after / 10` (at most a minute).
    pub async fn sweep_stale(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.stale_after / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let now = crate::ws::unix_now();
            let cutoff = now - self.stale_after.as_secs() as i64;
            match self.store.expire_stale(cutoff, now).await {
                Ok(changes) => self.emit(changes),
                Err(error) => tracing::error!(error = %crate::error::chain(&error), "stale sweep failed"),
            }
        }
    }

    /// Publishes changes the store computed elsewhere (a policy change, a removed device, a
    /// node's lease ending).
    pub fn publish(&self, changes: impl IntoIterator<Item = PresenceChange>) {
        self.emit(changes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, u64>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn emit(bus: &dyn Bus, changes: impl IntoIterator<Item = PresenceChange>) {
    for change in changes {
        tracing::debug!(account = change.account.0, status = change.status.name(), "presence changed");
        announce(bus, &change.events);
        bus.publish(Signal::Presence(change));
    }
}

fn announce(bus: &dyn Bus, events: &[crate::store::AppEvent]) {
    for event in events {
        bus.publish(Signal::AppEvents { app_id: event.app_id.clone(), seq: event.seq });
    }
}

/// The writer: takes every report queued so far (up to `MAX_BATCH`), commits them together,
/// then answers each and announces the changes.
async fn write_reports(store: Arc<dyn Store>, bus: Arc<dyn Bus>, mut queue: mpsc::Receiver<Report>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(report) => batch.push(report),
                Err(_) => break,
            }
        }
        let entries: Vec<(DeviceId, Status)> = batch.iter().map(|r| (r.device.clone(), r.status)).collect();
        match store.set_device_statuses(&entries, crate::ws::unix_now()).await {
            Ok(changes) => {
                emit(bus.as_ref(), changes.into_iter().flatten());
                for report in batch {
                    let _ = report.done.send(Ok(()));
                }
            }
            Err(error) => {
                let text = crate::error::chain(&error);
                tracing::error!(error = %text, reports = batch.len(), "status reports not recorded");
                for report in batch {
                    let _ = report.done.send(Err(text.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_ranks_agree() {
        for status in [Status::Online, Status::Away, Status::Offline] {
            assert_eq!(Status::from_code(status.code()), Some(status));
            assert_eq!(Status::from_rank(status.rank()), status);
        }
        assert!(Status::Online > Status::Away && Status::Away > Status::Offline);
        assert_eq!(Status::from_code("o"), None);
        assert_eq!(Status::from_code("X"), None);
    }
}
