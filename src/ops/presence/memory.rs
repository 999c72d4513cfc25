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
use tokio::sync::{mpsc, oneshot, Mutex, Notify, Semaphore};

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

/// The way to the store's catching up (`apply`). Batches wait until its next transaction
/// without waking it; a barrier wakes it at once.
struct ToStore {
    queue: mpsc::UnboundedSender<Applying>,
    urgent: Arc<Notify>,
}

impl ToStore {
    fn batch(&self, batch: PresenceBatch, segment: journal::Segment) {
        let _ = self.queue.send(Applying::Batch(batch, segment));
    }

    fn barrier(&self, done: oneshot::Sender<()>, last: bool) {
        let _ = self.queue.send(Applying::Barrier(done, last));
        self.urgent.notify_one();
    }
}

pub(super) struct Memory {
    pub roster: Arc<Mutex<Roster>>,
    pub journal: Arc<Log>,
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
        let recent = Arc::new(RecentLogs::default());
        let wake = Arc::new(Notify::new());
        let journal = Arc::new(Log {
            queue: std::sync::Mutex::new(Queue {
                entries: Vec::new(),
                writer: Some(Writer { file: None }),
                last_commit: Instant::now() - window,
            }),
            room: Semaphore::new(QUEUED_AT_MOST),
            wake: wake.clone(),
            window,
            parts: Parts { store, bus, roster: roster.clone(), recent: recent.clone(), metrics, interval },
        });
        tokio::spawn(write_journal(Arc::downgrade(&journal), wake));
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
        self.journal.hand_over(Entry::Barrier(done, last)).await;
        let _ = written.await;
    }

    /// Sends batches to this journal file from now on.
    pub async fn open(&self, journal: journal::Journal) {
        self.journal.hand_over(Entry::Open(journal)).await;
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

/// Entries waiting for the journal at most (a reporter waits for room beyond that).
const QUEUED_AT_MOST: usize = 16 * MAX_BATCH;

/// The journal's queue and its one writer at a time. Entries wait in the order the roster
/// applied them. Whoever finds the writer free and the last write at least `window` old writes
/// everything waiting: on a quiet node that is the reporting connection itself, so its answer
/// is ready when its report returns (no hand-off to a writer task and back). The journal task
/// (`write_journal`) writes what has to wait for the window, and anything else queued: the
/// journal's opening, barriers, and the batches recorded straight in the store before it opens.
pub(super) struct Log {
    queue: std::sync::Mutex<Queue>,
    /// Room in the queue.
    room: Semaphore,
    /// Wakes the journal task.
    wake: Arc<Notify>,
    window: Duration,
    parts: Parts,
}

struct Queue {
    entries: Vec<Entry>,
    /// `None` while a write is under way: its writer holds it.
    writer: Option<Writer>,
    last_commit: Instant,
}

/// What writing needs besides the file.
struct Parts {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    roster: Arc<Mutex<Roster>>,
    recent: Arc<RecentLogs>,
    metrics: Arc<Metrics>,
    interval: Duration,
}

/// The journal file once open, and the way to the store's catching up.
struct Writer {
    file: Option<(journal::Journal, ToStore)>,
}

impl Drop for Log {
    fn drop(&mut self) {
        // The journal task ends (and with it the store's catching up, once it has recorded all).
        self.wake.notify_one();
    }
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an entry (after those already queued), once there is room.
    pub async fn push(&self, entry: Entry) {
        if let Ok(permit) = self.room.acquire().await {
            permit.forget();
        }
        self.lock().entries.push(entry);
    }

    /// Queues an entry for the journal task to take.
    async fn hand_over(&self, entry: Entry) {
        self.push(entry).await;
        self.wake.notify_one();
    }

    /// Writes what waits now if it may (the writer is free, the window has passed, only reports
    /// wait and the file is open); otherwise leaves it to the journal task.
    pub fn write_now(&self) {
        let now = Instant::now();
        let (entries, mut writer) = {
            let mut queue = self.lock();
            let free = queue.writer.as_ref().is_some_and(|writer| writer.file.is_some());
            let only_reports = queue.entries.iter().all(|entry| matches!(entry, Entry::Applied(..)));
            if !free || !only_reports || queue.entries.is_empty() || now < queue.last_commit + self.window {
                drop(queue);
                self.wake.notify_one();
                return;
            }
            queue.last_commit = now;
            let Some(writer) = queue.writer.take() else { return };
            (self.take(&mut queue), writer)
        };
        let mut taken = writer.sort(entries, &self.parts);
        // (The file is open: checked above. Were it not, nothing was written.)
        let written = writer.append(&mut taken, &self.parts).unwrap_or(Err(ReportError::Stopped));
        writer.finish(&mut taken, written, &self.parts);
        let more = {
            let mut queue = self.lock();
            queue.writer = Some(writer);
            !queue.entries.is_empty()
        };
        if more {
            self.wake.notify_one();
        }
    }

    /// Takes up to `MAX_BATCH` entries, oldest first, and gives their room back.
    fn take(&self, queue: &mut Queue) -> Vec<Entry> {
        let n = queue.entries.len().min(MAX_BATCH);
        self.room.add_permits(n);
        queue.entries.drain(..n).collect()
    }
}

/// Entries taken for one write, sorted out.
struct Taken {
    now: i64,
    batch: PresenceBatch,
    applied: Vec<(Box<Applied>, Instant)>,
    waiting: Vec<oneshot::Sender<Result<(), ReportError>>>,
    barriers: Vec<(oneshot::Sender<()>, bool)>,
}

impl Writer {
    fn sort(&mut self, entries: Vec<Entry>, parts: &Parts) -> Taken {
        let now = unix_now();
        let mut taken = Taken {
            now,
            batch: PresenceBatch::default(),
            applied: Vec::new(),
            waiting: Vec::new(),
            barriers: Vec::new(),
        };
        for entry in entries {
            match entry {
                Entry::Applied(report, done, received) => {
                    taken.batch.add(&report, now);
                    taken.waiting.extend(done);
                    taken.applied.push((report, received));
                }
                // Everything before a barrier is in this batch: answered once it is recorded.
                Entry::Barrier(done, last) => taken.barriers.push((done, last)),
                Entry::Open(journal) => {
                    let (queue, applying) = mpsc::unbounded_channel();
                    let urgent = Arc::new(Notify::new());
                    let dir = journal.dir().to_owned();
                    let store = parts.store.clone();
                    let (interval, metrics) = (parts.interval, parts.metrics.clone());
                    tokio::spawn(apply(store, applying, urgent.clone(), dir, interval, metrics));
                    self.file = Some((journal, ToStore { queue, urgent }));
                }
            }
        }
        taken
    }

    /// Appends the batch to the journal file: `None` when there is nothing to write or no file
    /// yet (then the store records it, `record`).
    fn append(&mut self, taken: &mut Taken, parts: &Parts) -> Option<Result<(), ReportError>> {
        if taken.applied.is_empty() {
            return Some(Ok(()));
        }
        let (journal, to_store) = self.file.as_mut()?;
        let started = Instant::now();
        let written = match journal.append(&taken.batch) {
            Ok(segment) => {
                to_store.batch(std::mem::take(&mut taken.batch), segment);
                Ok(())
            }
            Err(error) => Err(ReportError::Journal(Arc::new(error))),
        };
        parts.metrics.timings.store_query("journal_append", started.elapsed());
        Some(written)
    }

    /// Before the journal is open: the store records the batch at once. A panic fails this
    /// batch only.
    async fn record(taken: &Taken, parts: &Parts) -> Result<(), ReportError> {
        let started = Instant::now();
        let recorded = std::panic::AssertUnwindSafe(parts.store.record_presence(&taken.batch))
            .catch_unwind()
            .await
            .unwrap_or(Err(StoreError::Panicked))
            .map_err(|error| ReportError::Store(Arc::new(error)));
        parts.metrics.timings.store_query("record_presence", started.elapsed());
        recorded
    }

    /// Once written (or not): answers each report, announces the changes, passes barriers on.
    fn finish(&self, taken: &mut Taken, written: Result<(), ReportError>, parts: &Parts) {
        let Taken { now, applied, waiting, barriers, .. } = taken;
        let now = *now;
        match written {
            Ok(()) => {
                // Durable now: streams may read these from memory (before they are woken).
                for (report, _) in applied.iter() {
                    parts.recent.remember(&report.events, now);
                }
                let mut changes = Vec::with_capacity(applied.len());
                for (report, received) in applied.drain(..) {
                    let Some(change) = report.change(now) else { continue };
                    changes.push(change);
                    parts.metrics.timings.status_event.observe(received.elapsed().as_secs_f64());
                }
                // One wake per app for the whole batch.
                changes.announce(parts.bus.as_ref());
                for done in waiting.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), reports = applied.len(), "status reports not recorded");
                for done in waiting.drain(..) {
                    let _ = done.send(Err(error.clone()));
                }
                // Memory ran ahead of the store: read those accounts back once the store has
                // everything the journal holds.
                let accounts: Vec<AccountId> = applied.iter().map(|(report, _)| report.account).collect();
                let (store, roster) = (parts.store.clone(), parts.roster.clone());
                let caught_up = self.file.as_ref().map(|(_, to_store)| {
                    let (done, recorded) = oneshot::channel();
                    to_store.barrier(done, false);
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
        for (done, last) in barriers.drain(..) {
            match &self.file {
                Some((_, to_store)) => to_store.barrier(done, last),
                None => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// The journal task: writes what a reporter could not (see `Log`), each write at least
/// `window` after the last so that a busy node gathers what arrives meanwhile into fewer,
/// larger writes. A barrier (a write or a stop waiting) is not kept waiting. Ends with the log.
async fn write_journal(log: std::sync::Weak<Log>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(log) = log.upgrade() else { return };
        loop {
            let next = {
                let mut queue = log.lock();
                let due = queue.last_commit + log.window;
                match queue.entries.first() {
                    None => None,
                    // A write under way: its writer wakes this task if more waits once it is done.
                    Some(_) if queue.writer.is_none() => None,
                    Some(Entry::Applied(..)) if Instant::now() < due => Some(Err(due)),
                    Some(_) => {
                        queue.last_commit = Instant::now();
                        queue.writer.take().map(|writer| Ok((log.take(&mut queue), writer)))
                    }
                }
            };
            let (entries, mut writer) = match next {
                None => break,
                Some(Err(due)) => {
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
                Some(Ok(taken)) => taken,
            };
            let mut taken = writer.sort(entries, &log.parts);
            let written = match writer.append(&mut taken, &log.parts) {
                Some(written) => written,
                None => Writer::record(&taken, &log.parts).await,
            };
            writer.finish(&mut taken, written, &log.parts);
            log.lock().writer = Some(writer);
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
    urgent: Arc<Notify>,
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
        // Batches queue without waking this task; it takes them at the deadline, or at once
        // for a barrier.
        let mut due = false;
        loop {
            if let Some(item) = next.take() {
                caught_up.take(item, &mut barriers);
            }
            loop {
                match queue.try_recv() {
                    Ok(item) => caught_up.take(item, &mut barriers),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if due || !barriers.is_empty() || !open {
                break;
            }
            // At the deadline, what came meanwhile is taken once more (above) and goes too.
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => due = true,
                _ = urgent.notified() => {}
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
    fn take(&mut self, item: Applying, barriers: &mut Vec<(oneshot::Sender<()>, bool)>) {
        match item {
            Applying::Batch(batch, from) => self.add(batch, from),
            Applying::Barrier(done, last) => barriers.push((done, last)),
        }
    }

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
