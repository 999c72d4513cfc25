//! The lone node's presence: the roster in memory is the truth while the node runs. A report is
//! applied to it at once (no database round trip), and what it changed goes to the journal,
//! which records batches in one transaction each (a group commit) and only then announces the
//! events: an app never sees an event that is not durable. Seqs are taken in memory, in the
//! order reports are applied, and written in that order; a seq is never handed out twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{Announce as _, ReportError, MAX_BATCH};
use crate::bus::Bus;
use crate::clock::unix_now;
use crate::domain::recent::Recent;
use crate::domain::roster::{Applied, Roster};
use crate::domain::{AccountId, AppEvent, PresenceChange};
use crate::metrics::Metrics;
use crate::store::{PresenceBatch, Store, StoreError};

/// What waits for the journal.
pub(super) enum Entry {
    /// A report the roster applied; `done` hears when it is durable.
    /// `received` is when the report arrived, for `presence_status_event_latency_seconds`.
    Applied(Box<Applied>, Option<oneshot::Sender<Result<(), ReportError>>>, Instant),
    /// Answered once everything queued before it is written.
    Barrier(oneshot::Sender<()>),
}

pub(super) struct Memory {
    pub roster: Arc<Mutex<Roster>>,
    pub journal: mpsc::Sender<Entry>,
    /// Each app's latest durable events, for streams that keep up.
    pub recent: Arc<RecentLogs>,
}

/// Events remembered per app (the newest; older ones are read from the store).
const RECENT_PER_APP: usize = 4096;

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
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, window: Duration, metrics: Arc<Metrics>) -> Memory {
        let roster = Arc::new(Mutex::new(Roster::default()));
        let (journal, queue) = mpsc::channel(16 * MAX_BATCH);
        let recent = Arc::new(RecentLogs::default());
        tokio::spawn(write_journal(store, bus, queue, roster.clone(), recent.clone(), window, metrics));
        Memory { roster, journal, recent }
    }

    /// Waits until everything queued so far is written (or failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.journal.send(Entry::Barrier(done)).await.is_ok() {
            let _ = written.await;
        }
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
    for account in loaded.accounts {
        roster.load(account);
    }
    for (app_id, seq) in loaded.seqs {
        roster.load_seq(&app_id, seq);
    }
    Ok(())
}

/// The journal: takes every entry queued so far (up to `MAX_BATCH` reports), records them in
/// one transaction, then answers each and announces the changes.
async fn write_journal(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut queue: mpsc::Receiver<Entry>,
    roster: Arc<Mutex<Roster>>,
    recent: Arc<RecentLogs>,
    window: Duration,
    metrics: Arc<Metrics>,
) {
    // Commits are at least `window` apart: an idle node commits a report at once, a busy one
    // gathers what arrives meanwhile into fewer, larger commits. A barrier (a write or a stop
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
        let mut batch = PresenceBatch::default();
        let mut applied = Vec::new();
        let mut waiting = Vec::new();
        let mut barriers = Vec::new();
        for entry in entries {
            match entry {
                Entry::Applied(report, done, received) => {
                    batch.devices.push((report.device.clone(), report.status));
                    if let Some((best, shown)) = report.totals {
                        batch.accounts.push((report.account, best, shown));
                    }
                    batch.events.extend(report.events.iter().cloned());
                    waiting.extend(done);
                    applied.push((report, received));
                }
                // Everything before a barrier is in this batch: answered once it is written.
                Entry::Barrier(done) => barriers.push(done),
            }
        }
        if applied.is_empty() {
            for done in barriers {
                let _ = done.send(());
            }
            continue;
        }
        let now = unix_now();
        // A panic while writing fails this batch only: the journal goes on with the next.
        let commit = Instant::now();
        let written = std::panic::AssertUnwindSafe(store.record_presence(&batch, now))
            .catch_unwind()
            .await
            .unwrap_or(Err(StoreError::Panicked));
        metrics.timings.store_query("record_presence", commit.elapsed());
        match written {
            Ok(()) => {
                // Durable now: streams may read these from memory (before they are woken).
                for (report, _) in &applied {
                    recent.remember(&report.events, now);
                }
                for (report, received) in applied {
                    if !report.visible_changed {
                        continue;
                    }
                    let Some((_, shown)) = report.totals else { continue };
                    let events = report
                        .events
                        .iter()
                        .map(|event| AppEvent { app_id: event.app_id.to_string(), seq: event.seq })
                        .collect();
                    PresenceChange { account: report.account, status: shown, at: now, events }
                        .announce(bus.as_ref());
                    metrics.timings.status_event.observe(received.elapsed().as_secs_f64());
                }
                for done in waiting {
                    let _ = done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), reports = applied.len(), "status reports not recorded");
                let error = ReportError::Store(Arc::new(error));
                for done in waiting {
                    let _ = done.send(Err(error.clone()));
                }
                // Memory ran ahead of the store: read those accounts back once it answers.
                let accounts: Vec<AccountId> = applied.iter().map(|(report, _)| report.account).collect();
                let (store, roster) = (store.clone(), roster.clone());
                tokio::spawn(async move {
                    let mut roster = roster.lock().await;
                    if let Err(error) = load(store.as_ref(), &mut roster, Some(&accounts), &[]).await {
                        tracing::error!(error = %crate::error::chain(&error), "cannot reload presence after a failed write");
                    }
                });
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}
