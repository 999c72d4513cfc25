//! Webhooks: which are due (and claimed by this node), the attempts made, and their health.

use sqlx::Row;

use super::SqlStore;
use crate::domain::{
    AccountId, AttemptOutcome, DeliveryAttempt, DeliveryRecord, WebhookHealth, WebhookOutcome,
};
use crate::store::{Resend, StoreError, WebhookTarget};

impl SqlStore {
    pub(super) async fn webhook_allow(&self, app_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT webhook_allow FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(super) async fn set_webhook_allow(&self, app_id: &str, ranges: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query("UPDATE apps SET webhook_allow = $2 WHERE app_id = $1")
            .bind(app_id)
            .bind(ranges)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(changed == 1)
    }

    pub(super) async fn due_webhooks(
        &self,
        now: i64,
        sent_before: i64,
        claim_until: i64,
    ) -> Result<Vec<WebhookTarget>, StoreError> {
        const DUE: &str = "webhook_url IS NOT NULL AND webhook_disabled_at IS NULL AND disabled_at IS NULL
               AND last_seq > webhook_cursor AND webhook_next_attempt_at <= $1
               AND (webhook_last_sent_at IS NULL OR webhook_last_sent_at <= $3)
               AND (webhook_node IS NULL OR webhook_node = $2 OR webhook_claimed_until < $1
                    OR webhook_node NOT IN (SELECT id FROM nodes))";
        // Most scans find nothing due: ask a reader first, and write the claims only when needed.
        let any_due = sqlx::query(&format!("SELECT 1 FROM apps WHERE {DUE} LIMIT 1"))
            .bind(now)
            .bind(&self.node)
            .bind(sent_before)
            .fetch_optional(&self.pool)
            .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE apps SET webhook_node = $2, webhook_claimed_until = $4 WHERE {DUE}
             RETURNING app_id, webhook_url, webhook_secret, webhook_cursor, webhook_attempts, webhook_failing_since,
                 webhook_allow, webhook_secret_previous, webhook_secret_previous_until, webhook_format"
        ))
        .bind(now)
        .bind(&self.node)
        .bind(sent_before)
        .bind(claim_until)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| WebhookTarget {
                app_id: row.get(0),
                url: row.get(1),
                secret_sealed: row.get(2),
                cursor: row.get::<i64, _>(3) as u64,
                attempts: row.get::<i64, _>(4) as u32,
                failing_since: row.get(5),
                allow: row.get(6),
                previous_secret_sealed: row.get(7),
                previous_until: row.get(8),
                format: crate::domain::EventFormat::parse(row.get::<&str, _>(9)).unwrap_or_default(),
            })
            .collect())
    }

    pub(super) async fn record_attempt(
        &self,
        app_id: &str,
        record: &DeliveryRecord,
        outcome: &WebhookOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if record.events > 0 || record.error.is_some() || record.status_code.is_some() {
            sqlx::query(
                "INSERT INTO deliveries (app_id, at, message_id, events, status_code, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(app_id)
            .bind(record.at)
            .bind(&record.message_id)
            .bind(i64::from(record.events))
            .bind(record.status_code.map(i64::from))
            .bind(&record.error)
            .bind(record.duration_ms as i64)
            .execute(&mut *tx)
            .await?;
            // Keep the latest hundred attempts per app.
            sqlx::query(
                "DELETE FROM deliveries WHERE app_id = $1 AND id NOT IN
                     (SELECT id FROM deliveries WHERE app_id = $1 ORDER BY id DESC LIMIT 100)",
            )
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        }
        match outcome {
            WebhookOutcome::Delivered { cursor } => {
                sqlx::query(
                    "UPDATE apps SET webhook_cursor = CASE WHEN webhook_cursor > $2 THEN webhook_cursor ELSE $2 END,
                         webhook_attempts = 0,
                         webhook_failing_since = NULL, webhook_next_attempt_at = 0, webhook_last_sent_at = $3
                     WHERE app_id = $1",
                )
                .bind(app_id)
                .bind(*cursor as i64)
                .bind(record.at)
                .execute(&mut *tx)
                .await?;
            }
            WebhookOutcome::Failed { retry_at, disable } => {
                sqlx::query(
                    "UPDATE apps SET webhook_attempts = webhook_attempts + 1,
                         webhook_failing_since = COALESCE(webhook_failing_since, $2),
                         webhook_next_attempt_at = $3, webhook_last_sent_at = $2,
                         webhook_disabled_at = CASE WHEN $4 IS NULL THEN NULL ELSE $2 END,
                         webhook_disabled_reason = $4
                     WHERE app_id = $1",
                )
                .bind(app_id)
                .bind(record.at)
                .bind(*retry_at)
                .bind(disable)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn delivery_attempts(
        &self,
        app_id: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let before = before.map_or(i64::MAX, |id| i64::try_from(id).unwrap_or(i64::MAX));
        let rows = sqlx::query(
            "SELECT id, at, message_id, events, status_code, error, duration_ms FROM deliveries
             WHERE app_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(app_id)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let record = DeliveryRecord {
                    at: row.get(1),
                    message_id: row.get(2),
                    events: row.get::<i64, _>(3) as u32,
                    status_code: row.get::<Option<i64>, _>(4).map(|c| c as u16),
                    error: row.get(5),
                    duration_ms: row.get::<i64, _>(6) as u64,
                };
                let outcome =
                    if record.delivered() { AttemptOutcome::Delivered } else { AttemptOutcome::Failed };
                DeliveryAttempt { id: row.get::<i64, _>(0) as u64, record, outcome }
            })
            .collect())
    }

    pub(super) async fn resend_delivery(&self, app_id: &str, attempt: u64) -> Result<Resend, StoreError> {
        let Ok(attempt) = i64::try_from(attempt) else { return Ok(Resend::Unknown) };
        let mut tx = self.begin().await?;
        let status = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT status_code FROM deliveries WHERE app_id = $1 AND id = $2",
        )
        .bind(app_id)
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        match status {
            None => return Ok(Resend::Unknown),
            Some(Some(code)) if (200..300).contains(&code) => return Ok(Resend::NotFailed),
            Some(_) => {}
        }
        let webhook = sqlx::query(
            "SELECT CASE WHEN webhook_disabled_at IS NULL THEN 0 ELSE 1 END,
                    CASE WHEN webhook_url IS NOT NULL AND last_seq > webhook_cursor THEN 1 ELSE 0 END
             FROM apps WHERE app_id = $1",
        )
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(webhook) = webhook else { return Ok(Resend::Unknown) };
        let (disabled, pending) = (webhook.get::<i64, _>(0) != 0, webhook.get::<i64, _>(1) != 0);
        if !pending {
            return Ok(Resend::NothingPending);
        }
        // The next scan finds it due: its backoff (or `Retry-After`) is dropped. A disabled
        // webhook starts afresh, as when its owner re-enables it; otherwise its failures still
        // count towards `webhook_disable_after`.
        sqlx::query(
            "UPDATE apps SET webhook_next_attempt_at = 0,
                 webhook_attempts = CASE WHEN webhook_disabled_at IS NULL THEN webhook_attempts ELSE 0 END,
                 webhook_failing_since = CASE WHEN webhook_disabled_at IS NULL THEN webhook_failing_since
                                              ELSE NULL END,
                 webhook_disabled_reason = NULL,
                 webhook_disabled_at = NULL
             WHERE app_id = $1",
        )
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Resend::Scheduled { reenabled: disabled })
    }

    pub(super) async fn webhook_health(&self, app_id: &str) -> Result<Option<WebhookHealth>, StoreError> {
        let row = sqlx::query(
            "SELECT webhook_failing_since, webhook_attempts, webhook_disabled_at, webhook_disabled_reason,
                    last_seq - webhook_cursor
             FROM apps WHERE app_id = $1 AND webhook_url IS NOT NULL",
        )
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| WebhookHealth {
            failing_since: row.get(0),
            attempts: row.get::<i64, _>(1) as u32,
            disabled_at: row.get(2),
            disabled_reason: row.get(3),
            pending: row.get::<i64, _>(4).max(0) as u64,
        }))
    }

    pub(super) async fn enable_webhook(&self, owner: AccountId, app_id: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE apps SET webhook_disabled_at = NULL, webhook_disabled_reason = NULL, webhook_attempts = 0,
                 webhook_failing_since = NULL, webhook_next_attempt_at = 0
             WHERE owner_id = $1 AND app_id = $2",
        )
        .bind(owner.0)
        .bind(app_id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
}
