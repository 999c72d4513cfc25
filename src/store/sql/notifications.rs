//! Live notifications: queued per device, delivered, acked, cancelled, and counted.

use sqlx::{AnyConnection, Row};

use super::SqlStore;
use crate::domain::{AccountId, DeviceId, LiveNotification, NotificationState, Uaid};
use crate::store::{NewNotification, NotifiedDevice, SentCount, StoreError};

/// Drops the app's queued notifications to the account: none is sent after a pause or revoke.
pub(super) async fn cancel_notifications(
    conn: &mut AnyConnection,
    account: i64,
    app_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM device_notifications WHERE acked = 0 AND notification_id IN
             (SELECT id FROM notifications WHERE app_id = $1 AND account_id = $2)",
    )
    .bind(app_id)
    .bind(account)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE notifications SET cancelled_at = $1 WHERE app_id = $2 AND account_id = $3
             AND shown_delivered_at IS NULL AND cancelled_at IS NULL",
    )
    .bind(now)
    .bind(app_id)
    .bind(account)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl SqlStore {
    pub(super) async fn create_notification(
        &self,
        notification: &NewNotification,
        max_per_device: u32,
    ) -> Result<Vec<NotifiedDevice>, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO notifications (id, app_id, account_id, title, body, url, sent_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&notification.id)
        .bind(&notification.app_id)
        .bind(notification.account.0)
        .bind(&notification.title)
        .bind(&notification.body)
        .bind(&notification.url)
        .bind(notification.sent_at)
        .bind(notification.expires_at)
        .execute(&mut *tx)
        .await?;
        let devices = sqlx::query("SELECT id, uaid FROM devices WHERE account_id = $1")
            .bind(notification.account.0)
            .fetch_all(&mut *tx)
            .await?;
        let mut found = Vec::with_capacity(devices.len());
        for row in devices {
            let device: String = row.get(0);
            sqlx::query(
                "INSERT INTO device_notifications (device_id, notification_id, queued_at) VALUES ($1, $2, $3)",
            )
            .bind(&device)
            .bind(&notification.id)
            .bind(notification.sent_at)
            .execute(&mut *tx)
            .await?;
            // Past the cap, the oldest undelivered notifications of the device are dropped.
            sqlx::query(
                "DELETE FROM device_notifications WHERE device_id = $1 AND acked = 0 AND notification_id NOT IN
                     (SELECT notification_id FROM device_notifications WHERE device_id = $1 AND acked = 0
                      ORDER BY queued_at DESC, notification_id DESC LIMIT $2)",
            )
            .bind(&device)
            .bind(i64::from(max_per_device))
            .execute(&mut *tx)
            .await?;
            if let Some(id) = DeviceId::parse(&device) {
                let uaid = row.get::<Option<&str>, _>(1).and_then(Uaid::parse);
                found.push(NotifiedDevice { device: id, uaid });
            }
        }
        tx.commit().await?;
        Ok(found)
    }

    pub(super) async fn mark_delivered(
        &self,
        device: &DeviceId,
        ids: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for id in ids {
            let first = sqlx::query(
                "UPDATE device_notifications SET delivered_at = $3
                 WHERE device_id = $1 AND notification_id = $2 AND delivered_at IS NULL",
            )
            .bind(device.as_str())
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if first == 1 {
                // The app is shown the delivery only if it sees the user now; otherwise once it
                // does (see `notification_state`).
                sqlx::query(
                    "UPDATE notifications SET delivered_to = delivered_to + 1, delivered_at = COALESCE(delivered_at, $2),
                         shown_delivered_at = COALESCE(shown_delivered_at, CASE WHEN EXISTS (
                             SELECT 1 FROM grants g WHERE g.app_id = notifications.app_id
                                 AND g.account_id = notifications.account_id AND g.enabled = 1
                                 AND g.last_status IN ('online', 'away')) THEN $2 END)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn pending_notifications(
        &self,
        device: &DeviceId,
        now: i64,
    ) -> Result<Vec<LiveNotification>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.id, a.name, n.title, n.body, n.url, n.sent_at
             FROM device_notifications d
             JOIN notifications n ON n.id = d.notification_id
             JOIN apps a ON a.app_id = n.app_id
             WHERE d.device_id = $1 AND d.acked = 0 AND n.expires_at > $2 AND n.cancelled_at IS NULL
             ORDER BY n.sent_at, n.id",
        )
        .bind(device.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| LiveNotification {
                id: row.get(0),
                app: row.get(1),
                title: row.get(2),
                body: row.get(3),
                url: row.get(4),
                sent: row.get(5),
            })
            .collect())
    }

    pub(super) async fn ack_notifications(
        &self,
        device: &DeviceId,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE device_notifications SET acked = 1 WHERE device_id = $1 AND notification_id = $2",
            )
            .bind(device.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Where a notification stands, as its app may know it: a delivery is shown only from a
    /// time the app could see the user (online or away). A delivery to a user the app sees
    /// offline (appearing offline, every device unavailable) stays hidden, as if no device had
    /// been connected, until the app sees the user again before the notification expires; it
    /// is then shown as delivered at that time, as a device coming back would have had it.
    pub(super) async fn notification_state(
        &self,
        app_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<NotificationState>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT n.sent_at, n.expires_at, n.delivered_at, n.delivered_to, n.cancelled_at,
                    n.shown_delivered_at, g.last_status, g.visible_since
             FROM notifications n
             LEFT JOIN grants g ON g.app_id = n.app_id AND g.account_id = n.account_id AND g.enabled = 1
             WHERE n.app_id = $1 AND n.id = $2",
        )
        .bind(app_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let (sent_at, expires_at): (i64, i64) = (row.get(0), row.get(1));
        let delivered_at: Option<i64> = row.get(2);
        let cancelled: Option<i64> = row.get(4);
        let mut shown: Option<i64> = row.get(5);
        let sees_user = matches!(row.get::<Option<&str>, _>(6), Some("online" | "away"));
        if let (None, Some(delivered), true, Some(since)) =
            (shown, delivered_at, sees_user, row.get::<Option<i64>, _>(7))
        {
            let at = delivered.max(since);
            if at < expires_at && cancelled.is_none() {
                sqlx::query(
                    "UPDATE notifications SET shown_delivered_at = $3
                     WHERE app_id = $1 AND id = $2 AND shown_delivered_at IS NULL",
                )
                .bind(app_id)
                .bind(id)
                .bind(at)
                .execute(&self.writer)
                .await?;
                shown = Some(at);
            }
        }
        let status = match (shown, cancelled) {
            (Some(_), _) => "delivered",
            (None, Some(_)) => "cancelled",
            (None, None) if expires_at <= now => "expired",
            (None, None) => "queued",
        };
        Ok(Some(NotificationState {
            id: id.to_owned(),
            status,
            sent_at,
            expires_at,
            delivered_at: shown,
            delivered_to: if shown.is_some() { row.get::<i64, _>(3) as u32 } else { 0 },
        }))
    }

    pub(super) async fn notifications_sent(
        &self,
        account: AccountId,
        since: i64,
    ) -> Result<Vec<SentCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT app_id, COUNT(*) FROM notifications WHERE account_id = $1 AND sent_at >= $2 GROUP BY app_id",
        )
        .bind(account.0)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| SentCount { app_id: row.get(0), count: row.get::<i64, _>(1) as u32 })
            .collect())
    }
}
