//! The presence engine: device statuses become one status per user, and apps hear a change only
//! when what they may see changes. The rules themselves are the domain's (`domain::presence`).
//!
//! Two ways to hold the truth:
//! - a lone node keeps everyone's presence in memory (`memory`): a report is applied at once
//!   and appended to the journal file (`journal`) in batches, events announced only once
//!   written; the store follows the journal in the background;
//! - a node of a cluster shares users with other nodes, so the store stays the truth
//!   (`shared`): reports are recomputed there in batched transactions.
//!
//! Writes that change presence otherwise (grants, policies, devices, leases, sweeps) run through
//! `Engine::write`, which on a lone node holds the roster, drains the journal, runs the write and
//! reads the accounts it touched back: seqs are never handed out twice.
//!
//! This module also keeps the time rules: the grace after a socket closes, the sweep of devices
//! silent past `stale_after`, and "everyone offline" when a lone node starts.

mod announce;
mod journal;
mod memory;
mod shared;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

pub use announce::Announce;

use crate::bus::Bus;
use crate::clock::unix_now;
use crate::domain::{AccountId, DeviceId, PresenceChange, Status};
use crate::store::{Store, StoreError};

/// Why a status report was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    #[error("the presence writer stopped")]
    Stopped,
    #[error("status reports not recorded")]
    Store(#[source] Arc<StoreError>),
    #[error("status reports not written to the journal")]
    Journal(#[source] Arc<std::io::Error>),
}

/// Most reports recorded in one transaction.
const MAX_BATCH: usize = 512;

/// What a write touched, for the roster to read back.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub accounts: Vec<AccountId>,
    pub apps: Vec<String>,
}

impl Touched {
    pub fn account(account: AccountId) -> Touched {
        Touched { accounts: vec![account], apps: Vec::new() }
    }

    pub fn changes(changes: &[PresenceChange]) -> Touched {
        Touched { accounts: changes.iter().map(|change| change.account).collect(), apps: Vec::new() }
    }
}

/// The engine's times (see the configuration: `presence_grace`, `stale_after`,
/// `presence_commit_window`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub grace: Duration,
    pub stale_after: Duration,
    pub commit_window: Duration,
    /// How far a lone node's store may lag its journal (`presence_store_interval`).
    pub store_interval: Duration,
}

/// Journal lines recorded per transaction when a start catches up with what a crash left.
const REPLAY_PER_TRANSACTION: usize = 256;

enum Truth {
    Memory(memory::Memory),
    Shared(mpsc::Sender<shared::Report>),
}

/// A closed connection in its grace.
struct Leaving {
    ends: tokio::time::Instant,
    device: DeviceId,
    connection: u64,
}

/// Time rules around the presence rules, and the one writer of status reports.
pub struct Engine {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    truth: Truth,
    /// Where a lone node keeps its journal files.
    journal_dir: std::path::PathBuf,
    grace: Duration,
    stale_after: Duration,
    /// The current connection of each connected device, to tell a reconnect within the grace.
    connections: Mutex<HashMap<DeviceId, u64>>,
    /// Closed connections in their grace, oldest first (one grace for all, so their ends come
    /// in order): one task (`end_graces`) marks their devices offline, many at once.
    leaving: Mutex<VecDeque<Leaving>>,
    /// Rung when a connection starts its grace.
    left: Notify,
    next_connection: AtomicU64,
    /// Fires when the node stops: graces still running end without a write (the node's clean
    /// stop sets its devices offline at once, and the store is about to close).
    stopping: CancellationToken,
}

impl Engine {
    /// Must be called inside the runtime: it starts the writer task. `alone` says that no other
    /// node writes these users (no bus): then presence is held in memory, and its journal
    /// gathers changes for `commit_window` before each commit.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        timing: Timing,
        alone: bool,
        journal_dir: std::path::PathBuf,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Engine {
        let Timing { grace, stale_after, commit_window, store_interval } = timing;
        let truth = if alone {
            Truth::Memory(memory::Memory::new(
                store.clone(),
                bus.clone(),
                commit_window,
                store_interval,
                metrics,
            ))
        } else {
            let (reports, queue) = mpsc::channel(16 * MAX_BATCH);
            tokio::spawn(shared::write_reports(store.clone(), bus.clone(), queue));
            Truth::Shared(reports)
        };
        Engine {
            store,
            bus,
            truth,
            journal_dir,
            grace,
            stale_after,
            connections: Mutex::new(HashMap::new()),
            leaving: Mutex::new(VecDeque::new()),
            left: Notify::new(),
            next_connection: AtomicU64::new(1),
            stopping: CancellationToken::new(),
        }
    }

    /// A device reported a status on connection `from` (see `connected`). It is applied now;
    /// the returned receiver hears when it is durable (or why it is not). A report from a
    /// connection the device has since replaced is dropped: the newer connection speaks for it.
    pub async fn submit(
        &self,
        device: &DeviceId,
        from: Option<u64>,
        status: Status,
    ) -> oneshot::Receiver<Result<(), ReportError>> {
        let received = Instant::now();
        let (done, committed) = oneshot::channel();
        if from.is_some() && self.lock().get(device).copied() != from {
            let _ = done.send(Ok(()));
            return committed;
        }
        match &self.truth {
            Truth::Memory(memory) => {
                let mut roster = memory.roster.lock().await;
                match roster.report(device, status) {
                    // Queued under the roster's lock, so the journal writes seqs in order.
                    Some(applied) => {
                        memory
                            .journal
                            .push(memory::Entry::Applied(Box::new(applied), Some(done), received))
                            .await;
                        drop(roster);
                        // On a quiet node this report is written here and now, and answered.
                        memory.journal.write_now();
                    }
                    None => {
                        let _ = done.send(Ok(())); // removed meanwhile
                    }
                }
            }
            Truth::Shared(reports) => {
                let _ = reports.send(shared::Report { device: Some(device.clone()), status, done }).await;
            }
        }
        committed
    }

    /// A device reported a status; returns once it is durable.
    pub async fn report(&self, device: &DeviceId, status: Status) -> Result<(), ReportError> {
        self.submit(device, None, status).await.await.map_err(|_| ReportError::Stopped)?
    }

    /// Runs a write that changes presence outside the status path. On a lone node the roster
    /// waits meanwhile, and reads back what the write touched.
    pub async fn write<T, E>(
        &self,
        touched: impl FnOnce(&T) -> Touched,
        write: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let Truth::Memory(memory) = &self.truth else {
            return write.await;
        };
        // The store catches up first without holding reports up (up to `presence_store_interval`
        // of changes), then again under the roster's lock with only what came meanwhile.
        memory.flush().await;
        let mut roster = memory.roster.lock().await;
        memory.flush().await;
        let result = write.await;
        // What apps may see of events already held may have changed (a pause, a revoke).
        memory.recent.clear();
        if let Ok(value) = &result {
            let Touched { accounts, apps } = touched(value);
            if let Err(error) = memory::load(self.store.as_ref(), &mut roster, Some(&accounts), &apps).await {
                tracing::error!(error = %crate::error::chain(&error), "cannot read presence back after a write");
            }
        }
        result
    }

    /// The app's events after `cursor` from memory, when this node holds them (a lone node keeps
    /// each app's latest committed events); `None` means ask the store.
    pub fn recent_events(&self, app_id: &str, cursor: u64, limit: usize) -> Option<crate::store::EventPage> {
        let Truth::Memory(memory) = &self.truth else { return None };
        let tail = memory.recent.after(app_id, cursor, limit)?;
        Some(crate::store::EventPage {
            events: tail.events,
            scanned_to: tail.scanned_to,
            complete: tail.complete,
        })
    }

    /// Returns once the store holds every status change answered so far (on a lone node the
    /// store follows the journal a little behind; a cluster's store is always current).
    pub async fn settle(&self) {
        if let Truth::Memory(memory) = &self.truth {
            memory.flush().await;
        }
    }

    /// A device's connection is up; returns its connection number for `disconnected`.
    pub fn connected(&self, device: &DeviceId) -> u64 {
        let number = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(device.clone(), number);
        number
    }

    /// A device's connection closed: unless it reconnects within the grace, it is offline.
    pub fn disconnected(&self, device: DeviceId, connection: u64) {
        let ends = tokio::time::Instant::now() + self.grace;
        self.leaving.lock().unwrap_or_else(|e| e.into_inner()).push_back(Leaving {
            ends,
            device,
            connection,
        });
        self.left.notify_one();
    }

    /// Marks devices offline once their connection's grace has ended without a newer
    /// connection: every device whose grace ended by then in one go (a drop of thousands is a
    /// few batches, not a task and a timer each). Ends when the node stops: graces still
    /// running end without a write (the node's stop sets its devices offline at once).
    pub async fn end_graces(self: Arc<Self>) {
        loop {
            let next =
                self.leaving.lock().unwrap_or_else(|e| e.into_inner()).front().map(|leaving| leaving.ends);
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                // A connection closing later ends its grace later: only an empty queue waits
                // for the bell.
                () = self.left.notified(), if next.is_none() => continue,
                _ = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => {}
            }
            let now = tokio::time::Instant::now();
            let gone: Vec<DeviceId> = {
                let mut leaving = self.leaving.lock().unwrap_or_else(|e| e.into_inner());
                let mut connections = self.lock();
                let mut gone = Vec::new();
                while leaving.front().is_some_and(|leaving| leaving.ends <= now) {
                    let Some(Leaving { device, connection, .. }) = leaving.pop_front() else { break };
                    // A device that reconnected meanwhile (or was removed) is not offline.
                    if connections.get(&device) == Some(&connection) {
                        connections.remove(&device);
                        gone.push(device);
                    }
                }
                gone
            };
            let mut waiting = Vec::with_capacity(gone.len());
            for devices in gone.chunks(MAX_BATCH) {
                // A bug that panics here must not end every grace to come with this task.
                let submitted = std::panic::AssertUnwindSafe(self.submit_offline(devices));
                match futures_util::FutureExt::catch_unwind(submitted).await {
                    Ok(submitted) => waiting.extend(submitted),
                    Err(_) => tracing::error!(devices = devices.len(), "marking devices offline panicked"),
                }
            }
            for committed in waiting {
                if let Err(error) = committed.await.unwrap_or(Err(ReportError::Stopped)) {
                    tracing::error!(error = %crate::error::chain(&error), "cannot mark a device offline");
                }
            }
        }
    }

    /// Reports these devices offline, whose graces ended, under one hold of the roster, in the
    /// journal's queue in this order. A device that has connected again since its grace ended
    /// is left alone: checked under the roster's hold, so its new connection's first report
    /// comes after this one if it was not there yet.
    async fn submit_offline(&self, devices: &[DeviceId]) -> Vec<oneshot::Receiver<Result<(), ReportError>>> {
        let (received, status) = (Instant::now(), Status::Offline);
        let back = |device: &DeviceId| self.lock().contains_key(device);
        let mut waiting = Vec::with_capacity(devices.len());
        match &self.truth {
            Truth::Memory(memory) => {
                let mut roster = memory.roster.lock().await;
                for device in devices {
                    if back(device) {
                        continue;
                    }
                    // A device removed meanwhile changes nothing.
                    if let Some(applied) = roster.report(device, status) {
                        let (done, committed) = oneshot::channel();
                        memory
                            .journal
                            .push(memory::Entry::Applied(Box::new(applied), Some(done), received))
                            .await;
                        waiting.push(committed);
                    }
                }
                drop(roster);
                memory.journal.write_now();
            }
            Truth::Shared(reports) => {
                for device in devices.iter().filter(|device| !back(device)) {
                    let (done, committed) = oneshot::channel();
                    let _ = reports.send(shared::Report { device: Some(device.clone()), status, done }).await;
                    waiting.push(committed);
                }
            }
        }
        waiting
    }

    /// The node is stopping: graces still running end without writing, and reports
    /// already queued are written before this returns (the store closes next).
    pub async fn stop(&self) {
        self.stopping.cancel();
        match &self.truth {
            Truth::Memory(memory) => memory.close().await,
            Truth::Shared(reports) => {
                let (done, written) = oneshot::channel();
                if reports.send(shared::Report { device: None, status: Status::Offline, done }).await.is_ok()
                {
                    let _ = written.await;
                }
            }
        }
    }

    /// Forgets a removed device's connection so its grace ends without a write.
    pub fn forget(&self, device: &DeviceId) {
        self.lock().remove(device);
    }

    /// On a lone node's start: what a previous run's journal holds is recorded first, devices
    /// from that run are offline until they reconnect, and everyone's presence is loaded.
    pub async fn start(&self) -> Result<(), StoreError> {
        if let Truth::Memory(memory) = &self.truth {
            let journal = self.replay_journal().await?;
            memory.open(journal).await;
        }
        let changes = self.store.reset_presence(unix_now()).await?;
        if let Truth::Memory(memory) = &self.truth {
            let mut roster = memory.roster.lock().await;
            memory::load(self.store.as_ref(), &mut roster, None, &[]).await?;
            tracing::info!(accounts = roster.len(), "presence loaded");
        }
        self.announce(changes);
        Ok(())
    }

    /// Records the batches a previous run's journal holds (all acknowledged, some perhaps not yet
    /// in the store), removes its files, and opens a new one.
    async fn replay_journal(&self) -> Result<journal::Journal, StoreError> {
        let unreadable = |source| StoreError::DataDir { path: self.journal_dir.clone(), source };
        let leftover = journal::Leftover::read(&self.journal_dir).map_err(unreadable)?;
        if !leftover.batches.is_empty() {
            tracing::info!(
                batches = leftover.batches.len(),
                "recording what the journal of the previous run holds"
            );
        }
        for chunk in leftover.batches.chunks(REPLAY_PER_TRANSACTION) {
            let mut batch = crate::store::PresenceBatch::default();
            for line in chunk {
                batch.absorb(line.clone());
            }
            self.store.record_presence(&batch).await?;
        }
        let journal = journal::Journal::open(&leftover).map_err(unreadable)?;
        leftover.recorded().map_err(unreadable)?;
        Ok(journal)
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
            match self.write(|changes| Touched::changes(changes), self.store.expire_stale(cutoff, now)).await
            {
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
