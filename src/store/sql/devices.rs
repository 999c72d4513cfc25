//! Devices and the presence transaction: a device's status changes, its user's best status is
//! recomputed with the domain's rules, and the apps whose view changed are told.

use sqlx::{AnyConnection, Row};

use super::events::tell_apps;
use super::{lock_account, Backend, SqlStore};
use crate::domain::presence::{best_of, visible};
use crate::domain::{AccountId, DeviceBinding, DeviceId, DeviceInfo, PresenceChange, Status, Uaid};
use crate::store::{NewDevice, RemovedDevice, StoreError};

/// Recomputes an account's best and visible status after its devices changed; returns the
/// change apps must hear about, if any. Runs inside the caller's transaction.
pub(super) async fn recompute(
    conn: &mut AnyConnection,
    backend: Backend,
    account: i64,
    now: i64,
) -> Result<Option<PresenceChange>, StoreError> {
    // Concurrent changes to one user's devices queue here; the statements below then read every
    // device as committed (each statement sees what committed before it began).
    lock_account(conn, backend, account).await?;
    let Some(row) = sqlx::query("SELECT visible, appear_offline FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let old_visible: i64 = row.get(0);
    let appear_offline = row.get::<i64, _>(1) != 0;
    let devices: Vec<i64> = sqlx::query_scalar("SELECT status FROM devices WHERE account_id = $1")
        .bind(account)
        .fetch_all(&mut *conn)
        .await?;
    let best = best_of(devices.into_iter().map(Status::from_rank));
    let shown = visible(best, appear_offline);
    sqlx::query("UPDATE accounts SET status = $2, visible = $3 WHERE id = $1")
        .bind(account)
        .bind(best.rank())
        .bind(shown.rank())
        .execute(&mut *conn)
        .await?;
    if shown.rank() == old_visible {
        return Ok(None);
    }
    let events = tell_apps(conn, account, shown, now).await?;
    Ok(Some(PresenceChange { account: AccountId(account), status: shown, at: now, events }))
}

impl SqlStore {
    pub(super) async fn create_device(&self, device: &NewDevice<'_>, now: i64) -> Result<bool, StoreError> {
        // A UAID belongs to one device: one held by another device is refused (the unique index
        // on devices.uaid backs this up against a concurrent insert).
        let created = sqlx::query(
            "INSERT INTO devices (id, account_id, name, prid_hash, uaid, created_at, last_seen)
             SELECT $1, $2, $3, $4, $5, $6, NULL
             WHERE NOT EXISTS (SELECT 1 FROM devices WHERE uaid = $5)",
        )
        .bind(device.id.as_str())
        .bind(device.account.0)
        .bind(device.name)
        .bind(device.prid_hash)
        .bind(device.uaid.map(|u| u.to_string()))
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(created == 1)
    }

    pub(super) async fn devices(&self, account: AccountId) -> Result<Vec<DeviceInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, status, last_seen, created_at FROM devices WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(DeviceInfo {
                    device_id: DeviceId::parse(row.get(0))?,
                    name: row.get(1),
                    status: Status::from_rank(row.get(2)),
                    last_seen: row.get(3),
                    created_at: row.get(4),
                })
            })
            .collect())
    }

    pub(super) async fn delete_device(
        &self,
        account: AccountId,
        device: &DeviceId,
        now: i64,
    ) -> Result<Option<RemovedDevice>, StoreError> {
        let mut tx = self.begin().await?;
        let uaid: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM devices WHERE id = $1 AND account_id = $2 RETURNING uaid")
                .bind(device.as_str())
                .bind(account.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(uaid) = uaid else {
            return Ok(None);
        };
        let change = recompute(&mut tx, self.backend, account.0, now).await?;
        tx.commit().await?;
        Ok(Some(RemovedDevice { uaid: uaid.as_deref().and_then(Uaid::parse), change }))
    }

    pub(super) async fn device_by_prid(&self, prid_hash: &str) -> Result<Option<DeviceBinding>, StoreError> {
        // A disabled account's devices are refused, as if their PrIDs were revoked.
        let row = sqlx::query(
            "SELECT d.id, d.account_id FROM devices d JOIN accounts a ON a.id = d.account_id
             WHERE d.prid_hash = $1 AND a.disabled_at IS NULL",
        )
        .bind(prid_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|row| {
            Some(DeviceBinding { device: DeviceId::parse(row.get(0))?, account: AccountId(row.get(1)) })
        }))
    }

    pub(super) async fn bind_device(
        &self,
        device: &DeviceId,
        uaid: &Uaid,
        now: i64,
    ) -> Result<bool, StoreError> {
        let bound = sqlx::query(
            "UPDATE devices SET uaid = $1, last_seen = $2, node_id = $4
             WHERE id = $3 AND NOT EXISTS (SELECT 1 FROM devices other WHERE other.uaid = $1 AND other.id <> $3)",
        )
        .bind(uaid.to_string())
        .bind(now)
        .bind(device.as_str())
        .bind(&self.node)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(bound == 1)
    }

    pub(super) async fn touch_device(&self, device: &DeviceId, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET status_at = $2, last_seen = $2 WHERE id = $1")
            .bind(device.as_str())
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
