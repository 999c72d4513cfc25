//! Expiry: one periodic sweep removes what nobody needs any more, so that the database does not
//! grow without bound (anyone can open connections; a hello with an unknown UAID adds a row):
//! events past `event_retention`, UAIDs no device is bound to that have not been seen for
//! `uaid_expiry` (with their channels), expired tokens and consent codes, apps' previous secrets
//! once their rotation's overlap ended, and notifications `notification_retention` after they
//! expired. Each node sweeps; the deletes are idempotent.

use std::time::Duration;

use super::Core;
use crate::clock::unix_now;

/// How often the sweep runs: a tenth of the shortest retention, between 200 ms and 10 minutes.
pub fn period(config: &crate::config::Config) -> Duration {
    let shortest = config.event_retention.min(config.uaid_expiry).min(config.notification_retention);
    (shortest / 10).clamp(Duration::from_millis(200), Duration::from_secs(600))
}

/// Sweeps every `period` until shutdown.
pub async fn sweep(state: Core) {
    let period = period(&state.config);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        sweep_once(&state).await;
    }
}

async fn sweep_once(state: &Core) {
    let config = &state.config;
    let now = unix_now();
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match state.store.purge_events(now.saturating_sub(secs(config.event_retention))).await {
        Ok(0) => {}
        Ok(removed) => tracing::debug!(removed, "old events removed"),
        Err(error) => tracing::error!(error = %crate::error::chain(&error), "cannot remove old events"),
    }
    let expired = state
        .store
        .purge_expired(
            now,
            now.saturating_sub(secs(config.uaid_expiry)),
            now.saturating_sub(secs(config.notification_retention)),
        )
        .await;
    match expired {
        Ok(expired) if expired == Default::default() => {}
        Ok(expired) => tracing::debug!(?expired, "expired rows removed"),
        Err(error) => tracing::error!(error = %crate::error::chain(&error), "cannot remove expired rows"),
    }
}
