//! The lone node's presence: the roster in memory is the truth while the node runs. A report is
//! applied to it at once (no database round trip), and what it changed goes to the journal
//! writer, which appends each batch to the journal file with one write (`journal`) and only
//! then announces the events: an app never sees an event that is not durable. The store
//! catches up in the background (`apply`): many batches per transaction, at most
//! `presence_store_interval` behind, and at once for a write that needs it current (`flush`).
//! Seqs are taken in memory, in the order reports are applied, and written in that order; a seq
//! is never handed out twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{journal, Announce as _, ReportError, MAX_BATCH};
use crate::bus::Bus;
use crate::clock::unix_now;
use crate::domain::recent::Recent;
use crate::domain::roster::{Applied, Roster};
use crate::domain::AccountId;
use crate::metrics::Metrics;
use crate::store::{PresenceBatch, Store, StoreError};

/// What waits for the journal.
pub(super) enum Entry {
    /// A report the roster applied; `done` hears when it is durable.
    /// `received` is when the report arrived, for `presence_status_event_latency_seconds`.
    Applied(Box<Applied>, Option<oneshot::Sender<Result<(), ReportError>>>, Instant),
    /// Answered once everything queued before it is in the store. `last`: the node stops, the
    /// journal's files go once recorded.
    Barrier(oneshot::Sender<()>, bool),
    /// From now on batches go to this journal file (the node's start has recorded what a
    /// previous run left). Until then each batch is recorded in the store at once.
    Open(journal::Journal),
}

/// What the journal writer hands the store's catching up.
enum Applying {
    Batch(PresenceBatch, journal::Segment),
    Barrier(oneshot::Sender<()>, bool),
}

pub(super) struct Memory {
    pub roster: Arc<Mutex<Roster>>,
    pub journal: mpsc::Sender<Entry>,
    /// Each app's latest durable events, for streams that keep up.
    pub recent: Arc<RecentLogs>,
}

/// Events remembered per app (the newest; older ones are read from the store).
const RECENT_PER_APP: usize = 16_384;

/// The recent part of every app's log: the journal adds what it committed, writes outside the
/// status path clear it (they may change what apps may see of events already held).
#[derive(Default)]
pub(super) struct RecentLogs {
    apps: std::sync::Mutex<HashMap<Arc<str>, Recent>>,
}

impl RecentLogs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Recent>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, events: &[crate::domain::roster::NewEvent], at: i64) {
        let mut apps = self.lock();
        for event in events {
            let recent = match apps.get_mut(&event.app_id) {
                Some(recent) => recent,
                None => apps.entry(event.app_id.clone()).or_insert_with(|| Recent::new(RECENT_PER_APP)),
            };
            recent.push(event.seq, event.uid.clone(), event.status, at);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn after(&self, app_id: &str, cursor: u64, limit: usize) -> Option<crate::domain::recent::Tail> {
        self.lock().get(app_id)?.after(cursor, limit)
    }
}

impl Memory {
    /// `window`: the least time between journal writes; `interval`: how far the store may lag
    /// the journal.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        window: Duration,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Memory {
        let roster = Arc::new(Mutex::new(Roster::default()));
        let (journal, queue) = mpsc::channel(16 * MAX_BATCH);
        let recent = Arc::new(RecentLogs::default());
        let timing = (window, interval);
        tokio::spawn(write_journal(store, bus, queue, roster.clone(), recent.clone(), timing, metrics));
        Memory { roster, journal, recent }
    }

    /// Waits until everything queued so far is in the store (or failed to be).
    pub async fn flush(&self) {
        self.barrier(false).await;
    }

    /// As `flush`, for the last time: the node stops.
    pub async fn close(&self) {
        self.barrier(true).await;
    }

    async fn barrier(&self, last: bool) {
        let (done, written) = oneshot::channel();
        if self.journal.send(Entry::Barrier(done, last)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Sends batches to this journal file from now on.
    pub async fn open(&self, journal: journal::Journal) {
        let _ = self.journal.send(Entry::Open(journal)).await;
    }
}

/// Loads these accounts (all with `None`) and apps' seqs from the store into the roster.
pub(super) async fn load(
    store: &dyn Store,
    roster: &mut Roster,
    accounts: Option<&[AccountId]>,
    apps: &[String],
) -> Result<(), StoreError> {
    let loaded = store.load_presence(accounts, apps).await?;
    let found: BTreeSet<AccountId> = loaded.accounts.iter().map(|a| a.account).collect();
    for account in accounts.unwrap_or_default() {
        if !found.contains(account) {
            roster.forget(*account);
        }
    }
    loaded.load_into(roster);
    Ok(())
}

/// The journal writer: takes every entry queued so far (up to `MAX_BATCH` reports), makes them
/// durable in one write (or, before the journal is open, one transaction), then answers each
/// and announces the changes.
async fn write_journal(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut queue: mpsc::Receiver<Entry>,
    roster: Arc<Mutex<Roster>>,
    recent: Arc<RecentLogs>,
    (window, interval): (Duration, Duration),
    metrics: Arc<Metrics>,
) {
    let mut file: Option<(journal::Journal, mpsc::UnboundedSender<Applying>)> = None;
    // Writes are at least `window` apart: an idle node writes a report at once, a busy one
    // gathers what arrives meanwhile into fewer, larger writes. A barrier (a write or a stop
    // waiting) is not kept waiting.
    let mut last_commit = tokio::time::Instant::now() - window;
    while let Some(first) = queue.recv().await {
        if matches!(first, Entry::Applied(..)) {
            tokio::time::sleep_until(last_commit + window).await;
        }
        last_commit = tokio::time::Instant::now();
        let mut entries = vec![first];
        while entries.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(entry) => entries.push(entry),
                Err(_) => break,
            }
        }
        let now = unix_now();
        let mut batch = PresenceBatch::default();
        let mut applied = Vec::new();
        let mut waiting = Vec::new();
        let mut barriers = Vec::new();
        for entry in entries {
            match entry {
                Entry::Applied(report, done, received) => {
                    batch.add(&report, now);
                    waiting.extend(done);
                    applied.push((report, received));
                }
                // Everything before a barrier is in this batch: answered once it is recorded.
                Entry::Barrier(done, last) => barriers.push((done, last)),
                Entry::Open(journal) => {
                    let (to_store, applying) = mpsc::unbounded_channel();
                    let dir = journal.dir().to_owned();
                    tokio::spawn(apply(store.clone(), applying, dir, interval, metrics.clone()));
                    file = Some((journal, to_store));
                }
            }
        }
        let written = if applied.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let written = match &mut file {
                Some((journal, to_store)) => match journal.append(&batch) {
                    Ok(segment) => {
                        let _ = to_store.send(Applying::Batch(batch, segment));
                        Ok(())
                    }
                    Err(error) => Err(ReportError::Journal(Arc::new(error))),
                },
                // A panic while writing fails this batch only: the journal goes on with the next.
                None => std::panic::AssertUnwindSafe(store.record_presence(&batch))
                    .catch_unwind()
                    .await
                    .unwrap_or(Err(StoreError::Panicked))
                    .map_err(|error| ReportError::Store(Arc::new(error))),
            };
            metrics.timings.store_query(
                if file.is_some() { "journal_append" } else { "record_presence" },
                started.elapsed(),
            );
            written
        };
        match written {
            Ok(()) => {
                // Durable now: streams may read these from memory (before they are woken).
                for (report, _) in &applied {
                    recent.remember(&report.events, now);
                }
                for (report, received) in applied {
                    let Some(change) = report.change(now) else { continue };
                    change.announce(bus.as_ref());
                    metrics.timings.status_event.observe(received.elapsed().as_secs_f64());
                }
                for done in waiting {
                    let _ = done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), reports = applied.len(), "status reports not recorded");
                for done in waiting {
                    let _ = done.send(Err(error.clone()));
                }
                // Memory ran ahead of the store: read those accounts back once the store has
                // everything the journal holds.
                let accounts: Vec<AccountId> = applied.iter().map(|(report, _)| report.account).collect();
                let (store, roster) = (store.clone(), roster.clone());
                let caught_up = file.as_ref().map(|(_, to_store)| {
                    let (done, recorded) = oneshot::channel();
                    let _ = to_store.send(Applying::Barrier(done, false));
                    recorded
                });
                tokio::spawn(async move {
                    if let Some(recorded) = caught_up {
                        let _ = recorded.await;
                    }
                    let mut roster = roster.lock().await;
                    if let Err(error) = load(store.as_ref(), &mut roster, Some(&accounts), &[]).await {
                        tracing::error!(error = %crate::error::chain(&error), "cannot reload presence after a failed write");
                    }
                });
            }
        }
        for (done, last) in barriers {
            match &file {
                Some((_, to_store)) => {
                    let _ = to_store.send(Applying::Barrier(done, last));
                }
                None => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// How long devices' rows (each device's status and the time of its last report) may wait in
/// memory before the store catches up with them: a device that reports again meanwhile is
/// written once. A flush (any request or write through the API, and the node's stop) writes
/// them at once. They are the one large table a change touches; nothing reads them unflushed.
const DEVICE_ROWS_EVERY: Duration = Duration::from_secs(5);

/// The store catching up with the journal: gathers batches for up to `interval` (less when a
/// barrier waits), records them in one transaction, then removes the journal segments that
/// are wholly recorded. Devices' rows are held back for up to `DEVICE_ROWS_EVERY` (latest per
/// device). A failed transaction is tried again with what came meanwhile.
async fn apply(
    store: Arc<dyn Store>,
    mut queue: mpsc::UnboundedReceiver<Applying>,
    dir: std::path::PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut caught_up = CatchUp::default();
    let mut barriers: Vec<(oneshot::Sender<()>, bool)> = Vec::new();
    let mut open = true;
    while open {
        // With nothing pending, wait for work; with a failed transaction's batches, try again
        // soon even if nothing comes; with devices' rows held, write them when they are due.
        let wait = if caught_up.pending.is_empty() { caught_up.devices_due_in() } else { Some(interval) };
        let mut next = match wait {
            None => match queue.recv().await {
                Some(item) => Some(item),
                None => break,
            },
            Some(wait) => match tokio::time::timeout(wait, queue.recv()).await {
                Ok(Some(item)) => Some(item),
                Ok(None) => {
                    open = false;
                    None
                }
                Err(_) => None,
            },
        };
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            match next.take() {
                Some(Applying::Batch(batch, from)) => caught_up.add(batch, from),
                Some(Applying::Barrier(done, last)) => barriers.push((done, last)),
                None => {}
            }
            if !barriers.is_empty() {
                // Take what is already queued, then record at once.
                while let Ok(item) = queue.try_recv() {
                    match item {
                        Applying::Batch(batch, from) => caught_up.add(batch, from),
                        Applying::Barrier(done, last) => barriers.push((done, last)),
                    }
                }
                break;
            }
            if !open {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                item = queue.recv() => match item {
                    Some(item) => next = Some(item),
                    None => {
                        open = false;
                        break;
                    }
                },
            }
        }
        if !barriers.is_empty() || !open || caught_up.devices_due_in() == Some(Duration::ZERO) {
            caught_up.release_devices();
        }
        if !caught_up.pending.is_empty() {
            let started = Instant::now();
            let recorded = std::panic::AssertUnwindSafe(store.record_presence(&caught_up.pending))
                .catch_unwind()
                .await
                .unwrap_or(Err(StoreError::Panicked));
            metrics.timings.store_query("record_presence", started.elapsed());
            match recorded {
                Ok(()) => {
                    caught_up.pending = PresenceBatch::default();
                    if let Some(segment) = caught_up.removable() {
                        if let Err(error) = journal::recorded_before(&dir, segment) {
                            tracing::error!(error = %error, "cannot remove a recorded journal segment");
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(error = %crate::error::chain(&error), "the store cannot catch up with the journal; trying again");
                }
            }
        }
        let stopping = barriers.iter().any(|(_, last)| *last);
        if stopping && caught_up.pending.is_empty() {
            if let Err(error) = journal::recorded_all(&dir) {
                tracing::error!(error = %error, "cannot remove the journal at stop");
            }
        }
        for (done, _) in barriers.drain(..) {
            let _ = done.send(());
        }
    }
}

/// What the store has yet to record: the batches' rows (`pending`), and devices' rows held
/// back (the latest of each device) with the journal segment of the oldest of them.
#[derive(Default)]
struct CatchUp {
    pending: PresenceBatch,
    held: HashMap<crate::domain::DeviceId, (crate::domain::Status, i64)>,
    /// While rows are held: since when, and the segment the first of them came from.
    held_since: Option<(Instant, journal::Segment)>,
    /// The segment of the newest batch taken.
    newest: Option<journal::Segment>,
}

impl CatchUp {
    fn add(&mut self, mut batch: PresenceBatch, from: journal::Segment) {
        if !batch.devices.is_empty() && self.held_since.is_none() {
            self.held_since = Some((Instant::now(), from));
        }
        for (device, status, at) in batch.devices.drain(..) {
            self.held.insert(device, (status, at));
        }
        self.pending.absorb(batch);
        self.newest = Some(from);
    }

    /// Devices' rows go with the next transaction. (Rows of a failed one stay in `pending`;
    /// these come after them, and the last row of a device wins.)
    fn release_devices(&mut self) {
        let mut rows: Vec<_> = self.held.drain().map(|(device, (status, at))| (device, status, at)).collect();
        rows.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        self.pending.devices.extend(rows);
        self.held_since = None;
    }

    /// How long until held rows are due (zero: they are); `None` while none are held.
    fn devices_due_in(&self) -> Option<Duration> {
        self.held_since.map(|(since, _)| DEVICE_ROWS_EVERY.saturating_sub(since.elapsed()))
    }

    /// Once `pending` is recorded: the segments before this one hold nothing unrecorded.
    fn removable(&self) -> Option<journal::Segment> {
        self.held_since.map(|(_, from)| from).or(self.newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceId, Status};

    fn device(n: u8) -> DeviceId {
        DeviceId::parse(&format!("d{}", hex::encode([n; 12]))).unwrap()
    }

    fn reported(rows: &[(u8, Status, i64)]) -> PresenceBatch {
        PresenceBatch {
            devices: rows.iter().map(|(n, status, at)| (device(*n), *status, *at)).collect(),
            ..PresenceBatch::default()
        }
    }

    #[test]
    fn held_device_rows_keep_their_journal_segments() {
        let mut caught_up = CatchUp::default();
        caught_up.add(PresenceBatch::default(), 1);
        caught_up.add(reported(&[(1, Status::Online, 10)]), 2);
        caught_up.add(reported(&[(2, Status::Away, 11)]), 3);
        // The rows from segment 2 are not recorded yet: only segment 1 may go.
        assert_eq!(caught_up.removable(), Some(2));
        assert!(caught_up.pending.devices.is_empty());
        caught_up.release_devices();
        assert_eq!(caught_up.removable(), Some(3));
        assert_eq!(caught_up.pending.devices.len(), 2);
    }

    #[test]
    fn a_device_reporting_again_while_held_is_written_once_with_its_latest_status() {
        let mut caught_up = CatchUp::default();
        caught_up.add(reported(&[(1, Status::Online, 10), (2, Status::Online, 10)]), 1);
        caught_up.add(reported(&[(1, Status::Away, 12)]), 1);
        caught_up.release_devices();
        assert_eq!(
            caught_up.pending.devices,
            vec![(device(1), Status::Away, 12), (device(2), Status::Online, 10)]
        );
        assert!(caught_up.held_since.is_none());
    }
}
