//! The shared writer, for a node in a cluster: other nodes write the same users' devices, so
//! the store recomputes each user in a transaction (under the account's row lock) and is the
//! only truth. Reports that queue up meanwhile share one transaction (a group commit).

use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use super::{Announce as _, ReportError, MAX_BATCH};
use crate::bus::Bus;
use crate::clock::unix_now;
use crate::domain::{DeviceId, Status};
use crate::store::Store;

/// A status report waiting for the writer.
pub(super) struct Report {
    /// `None` is a barrier: answered once everything queued before it is written.
    pub device: Option<DeviceId>,
    pub status: Status,
    pub done: oneshot::Sender<Result<(), ReportError>>,
}

/// The writer: takes every report queued so far (up to `MAX_BATCH`), commits them together,
/// then answers each and announces the changes.
pub(super) async fn write_reports(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut queue: mpsc::Receiver<Report>,
) {
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
            Ok(Ok(Vec::new()))
        } else {
            // A panic while writing fails this batch only: the writer goes on with the next.
            std::panic::AssertUnwindSafe(store.set_device_statuses(&entries, unix_now())).catch_unwind().await
        };
        match written.unwrap_or(Err(crate::store::StoreError::Panicked)) {
            Ok(changes) => {
                changes.into_iter().flatten().collect::<Vec<_>>().announce(bus.as_ref());
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
