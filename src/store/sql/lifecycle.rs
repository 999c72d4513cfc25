//! The life of accounts and apps beyond sign-up and registration: what a user sees of their
//! own data (sessions, notifications), changing a password, and the operator's lists, disabling
//! and deleting.

use sqlx::Row;

use super::devices::recompute;
use super::{lock_account, SqlStore};
use crate::domain::{AccountId, DeviceId, Uaid};
use crate::store::{
    AccountRecord, AppRecord, DisabledAccount, NotificationRecord, SessionRecord, StoreError, TokenKind,
};

impl SqlStore {
    pub(super) async fn sessions(
        &self,
        account: AccountId,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT hash, kind, created_at, expires_at FROM tokens WHERE account_id = $1 AND expires_at > $2
             ORDER BY created_at, hash",
        )
        .bind(account.0)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| SessionRecord {
                hash: row.get(0),
                kind: TokenKind::parse(row.get(1)),
                created_at: row.get(2),
                expires_at: row.get(3),
            })
            .collect())
    }

    pub(super) async fn revoke_account_token(
        &self,
        account: AccountId,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tokens WHERE hash = $1 AND account_id = $2")
            .bind(hash)
            .bind(account.0)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn set_password(
        &self,
        account: AccountId,
        password_hash: &str,
        keep_token: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE accounts SET password_hash = $2 WHERE id = $1")
            .bind(account.0)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        // Every other session and token ends with the old password.
        let revoked = sqlx::query("DELETE FROM tokens WHERE account_id = $1 AND hash <> $2")
            .bind(account.0)
            .bind(keep_token.unwrap_or(""))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(revoked)
    }

    pub(super) async fn notifications_for(
        &self,
        account: AccountId,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, app_id, title, body, url, sent_at, expires_at, delivered_at, cancelled_at
             FROM notifications WHERE account_id = $1 ORDER BY sent_at, id",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| NotificationRecord {
                id: row.get(0),
                app_id: row.get(1),
                title: row.get(2),
                body: row.get(3),
                url: row.get(4),
                sent_at: row.get(5),
                expires_at: row.get(6),
                delivered_at: row.get(7),
                cancelled_at: row.get(8),
            })
            .collect())
    }

    pub(super) async fn account_records(
        &self,
        account: Option<AccountId>,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.email, a.issuer, a.subject, a.created_at, a.disabled_at,
                    (SELECT COUNT(*) FROM devices d WHERE d.account_id = a.id),
                    (SELECT COUNT(*) FROM apps p WHERE p.owner_id = a.id)
             FROM accounts a WHERE $1 = 0 OR a.id = $1 ORDER BY a.id",
        )
        // Account ids start at 1: 0 asks for every account.
        .bind(account.map_or(0, |a| a.0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| AccountRecord {
                id: AccountId(row.get(0)),
                email: row.get(1),
                issuer: row.get(2),
                subject: row.get(3),
                created_at: row.get(4),
                disabled_at: row.get(5),
                devices: row.get::<i64, _>(6).max(0) as u64,
                apps: row.get::<i64, _>(7).max(0) as u64,
            })
            .collect())
    }

    pub(super) async fn set_account_disabled(
        &self,
        account: AccountId,
        disabled: bool,
        now: i64,
    ) -> Result<Option<DisabledAccount>, StoreError> {
        let mut tx = self.begin().await?;
        lock_account(&mut tx, self.backend, account.0).await?;
        let found = sqlx::query("UPDATE accounts SET disabled_at = $2 WHERE id = $1")
            .bind(account.0)
            .bind(disabled.then_some(now))
            .execute(&mut *tx)
            .await?;
        if found.rows_affected() == 0 {
            return Ok(None);
        }
        if !disabled {
            tx.commit().await?;
            return Ok(Some(DisabledAccount::default()));
        }
        // Signed out everywhere, and every device offline at once.
        sqlx::query("DELETE FROM tokens WHERE account_id = $1").bind(account.0).execute(&mut *tx).await?;
        let rows = sqlx::query("SELECT id, uaid FROM devices WHERE account_id = $1")
            .bind(account.0)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("UPDATE devices SET status = 0, status_at = $2 WHERE account_id = $1 AND status > 0")
            .bind(account.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let change = recompute(&mut tx, self.backend, account.0, now).await?;
        tx.commit().await?;
        let devices = rows
            .into_iter()
            .filter_map(|row| {
                let device = DeviceId::parse(row.get(0))?;
                Some((device, row.get::<Option<&str>, _>(1).and_then(Uaid::parse)))
            })
            .collect();
        Ok(Some(DisabledAccount { devices, change }))
    }

    pub(super) async fn delete_account(
        &self,
        account: AccountId,
        uaids: &[Uaid],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        lock_account(&mut tx, self.backend, account.0).await?;
        // The devices' SimplePush records go with them; the rest follows the account by cascade.
        for uaid in uaids {
            sqlx::query("DELETE FROM uaids WHERE uaid = $1").bind(uaid.to_string()).execute(&mut *tx).await?;
        }
        let deleted =
            sqlx::query("DELETE FROM accounts WHERE id = $1").bind(account.0).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    pub(super) async fn app_records(&self, app_id: Option<&str>) -> Result<Vec<AppRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.app_id, p.name, p.owner_id, a.email, p.created_at, p.disabled_at,
                    (SELECT COUNT(*) FROM grants g WHERE g.app_id = p.app_id)
             FROM apps p JOIN accounts a ON a.id = p.owner_id
             WHERE $1 = '' OR p.app_id = $1 ORDER BY p.created_at, p.app_id",
        )
        .bind(app_id.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| AppRecord {
                app_id: row.get(0),
                name: row.get(1),
                owner: AccountId(row.get(2)),
                owner_email: row.get(3),
                created_at: row.get(4),
                disabled_at: row.get(5),
                grants: row.get::<i64, _>(6).max(0) as u64,
            })
            .collect())
    }

    pub(super) async fn set_app_disabled(
        &self,
        app_id: &str,
        disabled: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE apps SET disabled_at = $2 WHERE app_id = $1")
            .bind(app_id)
            .bind(disabled.then_some(now))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn app_disabled(&self, app_id: &str) -> Result<bool, StoreError> {
        let disabled: Option<Option<i64>> =
            sqlx::query_scalar("SELECT disabled_at FROM apps WHERE app_id = $1")
                .bind(app_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(disabled.flatten().is_some())
    }

    pub(super) async fn delete_app(&self, app_id: &str) -> Result<Option<Vec<AccountId>>, StoreError> {
        let mut tx = self.begin().await?;
        let grantees: Vec<i64> = sqlx::query_scalar("SELECT account_id FROM grants WHERE app_id = $1")
            .bind(app_id)
            .fetch_all(&mut *tx)
            .await?;
        // Its grants, events, deliveries, codes and notifications go by cascade.
        let deleted =
            sqlx::query("DELETE FROM apps WHERE app_id = $1").bind(app_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((deleted.rows_affected() > 0).then(|| grantees.into_iter().map(AccountId).collect()))
    }
}
