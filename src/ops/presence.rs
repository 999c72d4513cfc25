//! The presence engine: device statuses become one status per user, and a change is emitted on
//! the bus only when what an app would see changes.
//!
//! The store is the truth (each device's status, each user's best and visible status) and
//! applies the domain's rules (`domain::presence`) in one transaction, so concurrent devices of
//! one user cannot race. This module adds the time rules: the grace after a socket closes, the sweep of devices silent past
//! `stale_after`, and "everyone offline" when a node starts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Signal};
use crate::clock::unix_now;
use crate::domain::{AppEvent, DeviceId, PresenceChange, Status};
use crate::store::{Store, StoreError};

/// Why a status report was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    #[error("the presence writer stopped")]
    Stopped,
    #[error("status reports not recorded")]
    Store(#[source] Arc<StoreError>),
}

/// A status report waiting for the writer.
struct Report {
    /// `None` is a barrier: answered once everything queued before it is written.
    device: Option<DeviceId>,
    status: Status,
    done: oneshot::Sender<Result<(), ReportError>>,
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
    /// Fires when the node stops: pending grace timers end without a write (the node's clean
    /// stop sets its devices offline at once, and the store is about to close).
    stopping: CancellationToken,
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
            stopping: CancellationToken::new(),
        }
    }

    /// A device reported a status; returns once it is committed.
    pub async fn report(&self, device: &DeviceId, status: Status) -> Result<(), ReportError> {
        let (done, committed) = oneshot::channel();
        self.reports
            .send(Report { device: Some(device.clone()), status, done })
            .await
            .map_err(|_| ReportError::Stopped)?;
        committed.await.map_err(|_| ReportError::Stopped)?
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
            tokio::select! {
                _ = engine.stopping.cancelled() => return,
                _ = tokio::time::sleep(engine.grace) => {}
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

    /// The node is stopping: grace timers still running end without writing, and reports
    /// already queued are written before this returns (the store closes next).
    pub async fn stop(&self) {
        self.stopping.cancel();
        let (done, written) = oneshot::channel();
        if self.reports.send(Report { device: None, status: Status::Offline, done }).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Forgets a removed device's connection so its grace timer does nothing.
    pub fn forget(&self, device: &DeviceId) {
        self.lock().remove(device);
    }

    /// On start: devices from a previous run are offline until they reconnect.
    pub async fn start(&self) -> Result<(), StoreError> {
        let changes = self.store.reset_presence(unix_now()).await?;
        self.announce(changes);
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
            let now = unix_now();
            let cutoff = now - self.stale_after.as_secs() as i64;
            match self.store.expire_stale(cutoff, now).await {
                Ok(changes) => self.announce(changes),
                Err(error) => tracing::error!(error = %crate::error::chain(&error), "stale sweep failed"),
            }
        }
    }

    /// Tells whoever delivers them (streams, the webhook dispatcher, other nodes) what a
    /// committed write changed: the one verb every write's caller uses, once.
    pub fn announce(&self, what: impl Announce) {
        what.announce(self.bus.as_ref());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, u64>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a committed write changed, as the bus carries it.
pub trait Announce {
    fn announce(self, bus: &dyn Bus);
}

impl Announce for PresenceChange {
    fn announce(self, bus: &dyn Bus) {
        tracing::debug!(account = self.account.0, status = self.status.name(), "presence changed");
        self.events.clone().announce(bus);
        bus.publish(Signal::Presence(self));
    }
}

/// Entries appended to apps' event logs wake whoever delivers those apps' events.
impl Announce for Vec<AppEvent> {
    fn announce(self, bus: &dyn Bus) {
        for event in self {
            bus.publish(Signal::AppEvents { app_id: event.app_id, seq: event.seq });
        }
    }
}

impl<T: Announce> Announce for Option<T> {
    fn announce(self, bus: &dyn Bus) {
        if let Some(what) = self {
            what.announce(bus);
        }
    }
}

impl Announce for Vec<PresenceChange> {
    fn announce(self, bus: &dyn Bus) {
        for change in self {
            change.announce(bus);
        }
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
        let entries: Vec<(DeviceId, Status)> =
            batch.iter().filter_map(|r| Some((r.device.clone()?, r.status))).collect();
        let written = if entries.is_empty() {
            Ok(Vec::new())
        } else {
            store.set_device_statuses(&entries, unix_now()).await
        };
        match written {
            Ok(changes) => {
                changes.into_iter().flatten().for_each(|change| change.announce(bus.as_ref()));
                for report in batch {
                    let _ = report.done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), reports = batch.len(), "status reports not recorded");
                let error = ReportError::Store(Arc::new(error));
                for report in batch {
                    let _ = report.done.send(Err(error.clone()));
                }
            }
        }
    }
}
