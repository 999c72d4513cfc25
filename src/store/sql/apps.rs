//! Apps, the grants users give them, and the one-use codes of the consent flow.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::events::{append_event, tell_app};
use super::notifications::cancel_notifications;
use super::{lock_account, SqlStore};
use crate::domain::{AccountId, App, AppEvent, AuthCode, EventFormat, GrantInfo, Status};
use crate::store::{AppChanges, Granted, Grantee, Revoked, StoreError};

const APP_COLUMNS: &str =
    "app_id, owner_id, name, redirect_uris, webhook_url, secret_hash, webhook_secret, created_at, webhook_format";

fn app_from_row(row: AnyRow) -> App {
    App {
        app_id: row.get(0),
        owner: AccountId(row.get(1)),
        name: row.get(2),
        redirect_uris: serde_json::from_str(row.get::<&str, _>(3)).unwrap_or_default(),
        webhook_url: row.get(4),
        secret_hash: row.get(5),
        webhook_secret_sealed: row.get(6),
        created_at: row.get(7),
        webhook_format: EventFormat::parse(row.get::<&str, _>(8)).unwrap_or_default(),
    }
}

impl SqlStore {
    pub(super) async fn create_app(&self, app: &App) -> Result<(), StoreError> {
        sqlx::query(&format!("INSERT INTO apps ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&app.app_id)
            .bind(app.owner.0)
            .bind(&app.name)
            .bind(serde_json::to_string(&app.redirect_uris).expect("strings serialize"))
            .bind(&app.webhook_url)
            .bind(&app.secret_hash)
            .bind(&app.webhook_secret_sealed)
            .bind(app.created_at)
            .bind(app.webhook_format.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(super) async fn app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE app_id = $1"))
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(app_from_row))
    }

    pub(super) async fn app_by_secret(&self, secret_hash: &str, now: i64) -> Result<Option<App>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE secret_hash = $1
             UNION ALL
             SELECT {APP_COLUMNS} FROM apps WHERE previous_secret_hash = $1 AND previous_secret_expires_at > $2"
        ))
        .bind(secret_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(app_from_row))
    }

    pub(super) async fn apps_of(&self, owner: AccountId) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE owner_id = $1 ORDER BY created_at, app_id"
        ))
        .bind(owner.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(app_from_row).collect())
    }

    pub(super) async fn update_app(
        &self,
        owner: AccountId,
        app_id: &str,
        changes: &AppChanges,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE apps SET
                name = COALESCE($3, name),
                redirect_uris = COALESCE($4, redirect_uris),
                webhook_cursor = CASE WHEN $5 = 1 AND webhook_url IS NULL AND $6 IS NOT NULL THEN last_seq
                                      ELSE webhook_cursor END,
                webhook_url = CASE WHEN $5 = 1 THEN $6 ELSE webhook_url END,
                webhook_format = COALESCE($7, webhook_format)
             WHERE owner_id = $1 AND app_id = $2",
        )
        .bind(owner.0)
        .bind(app_id)
        .bind(&changes.name)
        .bind(changes.redirect_uris.as_ref().map(|u| serde_json::to_string(u).expect("strings serialize")))
        .bind(i64::from(changes.webhook_url.is_some()))
        .bind(changes.webhook_url.clone().flatten())
        .bind(changes.webhook_format.map(EventFormat::as_str))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub(super) async fn rotate_app_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_hash: &str,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError> {
        // The right-hand sides read the row as it was: the current secret becomes the previous
        // one (replacing any earlier previous one), or none is kept.
        let updated = sqlx::query(
            "UPDATE apps SET secret_hash = $1,
                 previous_secret_hash = CASE WHEN $4 IS NULL THEN NULL ELSE secret_hash END,
                 previous_secret_expires_at = $4
             WHERE owner_id = $2 AND app_id = $3",
        )
        .bind(secret_hash)
        .bind(owner.0)
        .bind(app_id)
        .bind(previous_until)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub(super) async fn rotate_webhook_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_sealed: &str,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError> {
        // The right-hand sides read the row as it was: the current secret becomes the previous.
        let updated = sqlx::query(
            "UPDATE apps SET
                webhook_secret_previous = CASE WHEN $4 IS NULL THEN NULL ELSE webhook_secret END,
                webhook_secret_previous_until = $4,
                webhook_secret = $3
             WHERE owner_id = $1 AND app_id = $2",
        )
        .bind(owner.0)
        .bind(app_id)
        .bind(secret_sealed)
        .bind(previous_until)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub(super) async fn grant(
        &self,
        account: AccountId,
        app_id: &str,
        new_uid: &str,
        now: i64,
    ) -> Result<Granted, StoreError> {
        let mut tx = self.begin().await?;
        // Before the grant row: a status change of this user (account, then grants) must not
        // interleave with telling the app the current status.
        lock_account(&mut tx, self.backend, account.0).await?;
        let uid: String = sqlx::query_scalar(
            "INSERT INTO grants (account_id, app_id, uid, enabled, created_at) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (account_id, app_id) DO UPDATE SET enabled = 1
             RETURNING uid",
        )
        .bind(account.0)
        .bind(app_id)
        .bind(new_uid)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let events = tell_app(&mut tx, account.0, app_id, now).await?;
        tx.commit().await?;
        Ok(Granted { uid, events })
    }

    pub(super) async fn grants_of(&self, account: AccountId) -> Result<Vec<GrantInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.app_id, a.name, g.uid, g.enabled, g.coarse, g.created_at, g.last_update_at, g.last_status
             FROM grants g JOIN apps a ON a.app_id = g.app_id
             WHERE g.account_id = $1 ORDER BY a.name, g.app_id",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| GrantInfo {
                app_id: row.get(0),
                app_name: row.get(1),
                uid: row.get(2),
                enabled: row.get::<i64, _>(3) != 0,
                coarse: row.get::<i64, _>(4) != 0,
                created_at: row.get(5),
                last_update_at: row.get(6),
                last_status: row.get(7),
            })
            .collect())
    }

    pub(super) async fn grant_uid(
        &self,
        account: AccountId,
        app_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT uid FROM grants WHERE account_id = $1 AND app_id = $2")
            .bind(account.0)
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(super) async fn set_grant(
        &self,
        account: AccountId,
        app_id: &str,
        enabled: Option<bool>,
        coarse: Option<bool>,
        now: i64,
    ) -> Result<Option<Vec<AppEvent>>, StoreError> {
        let mut tx = self.begin().await?;
        lock_account(&mut tx, self.backend, account.0).await?;
        // Pausing forgets what the app was told: resuming tells it the status again. Nothing
        // about a paused user leaves, including what was already in the log: the log's reads
        // withhold this user's events up to the app's last seq now (`hidden_through`).
        let Some(_) = sqlx::query_scalar::<_, String>(
            "UPDATE grants SET enabled = COALESCE($3, enabled), coarse = COALESCE($4, coarse),
                 last_status = CASE WHEN $3 = 0 THEN NULL ELSE last_status END,
                 visible_since = CASE WHEN $3 = 0 THEN NULL ELSE visible_since END,
                 hidden_through = CASE WHEN $3 = 0
                     THEN (SELECT last_seq FROM apps WHERE apps.app_id = grants.app_id)
                     ELSE hidden_through END
             WHERE account_id = $1 AND app_id = $2 RETURNING uid",
        )
        .bind(account.0)
        .bind(app_id)
        .bind(enabled.map(i64::from))
        .bind(coarse.map(i64::from))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        if enabled == Some(false) {
            cancel_notifications(&mut tx, account.0, app_id, now).await?;
        }
        let events = tell_app(&mut tx, account.0, app_id, now).await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    pub(super) async fn revoke_grant(
        &self,
        account: AccountId,
        app_id: &str,
        now: i64,
    ) -> Result<Option<Revoked>, StoreError> {
        let mut tx = self.begin().await?;
        let Some(uid) = sqlx::query_scalar::<_, String>(
            "DELETE FROM grants WHERE account_id = $1 AND app_id = $2 RETURNING uid",
        )
        .bind(account.0)
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        // The log's reads withhold this user's events from now on (no grant), and the app
        // hears one last `revoked`.
        cancel_notifications(&mut tx, account.0, app_id, now).await?;
        let event = append_event(&mut tx, app_id, &uid, "revoked", now).await?;
        tx.commit().await?;
        Ok(Some(Revoked { uid, events: vec![event] }))
    }

    pub(super) async fn grantee(&self, app_id: &str, uid: &str) -> Result<Option<Grantee>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id, last_status FROM grants WHERE app_id = $1 AND uid = $2 AND enabled = 1",
        )
        .bind(app_id)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| Grantee {
            account: AccountId(row.get(0)),
            app_view: row.get::<Option<&str>, _>(1).and_then(Status::named).unwrap_or(Status::Offline),
        }))
    }

    pub(super) async fn create_code(&self, hash: &str, code: &AuthCode) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_codes (hash, app_id, account_id, redirect_uri, code_challenge, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(&code.app_id)
        .bind(code.account.0)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(code.expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn take_code(&self, hash: &str) -> Result<Option<AuthCode>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM auth_codes WHERE hash = $1 RETURNING app_id, account_id, redirect_uri, code_challenge, expires_at",
        )
        .bind(hash)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(|row| AuthCode {
            app_id: row.get(0),
            account: AccountId(row.get(1)),
            redirect_uri: row.get(2),
            code_challenge: row.get(3),
            expires_at: row.get(4),
        }))
    }
}
