//! Accounts: local and OpenID Connect sign-in, bearer tokens, and the presence policy.

use sqlx::Row;

use super::devices::recompute;
use super::SqlStore;
use crate::domain::{AccountId, AccountSummary, Policy, PresenceChange, Status};
use crate::store::{Credentials, StoreError, TokenKind};

impl SqlStore {
    pub(super) async fn create_local_account(
        &self,
        email: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<AccountId>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO accounts (email, password_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        Ok(id.map(AccountId))
    }

    pub(super) async fn local_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(
            "SELECT id, password_hash, disabled_at FROM accounts WHERE email = $1 AND password_hash IS NOT NULL",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| Credentials {
            account: AccountId(row.get(0)),
            password_hash: row.get(1),
            disabled: row.get::<Option<i64>, _>(2).is_some(),
        }))
    }

    pub(super) async fn oidc_account(
        &self,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<AccountId, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (issuer, subject, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (issuer, subject) DO UPDATE SET issuer = excluded.issuer RETURNING id",
        )
        .bind(issuer)
        .bind(subject)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        Ok(AccountId(id))
    }

    pub(super) async fn create_token(
        &self,
        hash: &str,
        account: AccountId,
        kind: TokenKind,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (hash, account_id, created_at, expires_at, kind) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(account.0)
        .bind(now)
        .bind(expires_at)
        .bind(kind.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn token_account(&self, hash: &str, now: i64) -> Result<Option<AccountId>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT t.account_id FROM tokens t JOIN accounts a ON a.id = t.account_id
                 WHERE t.hash = $1 AND t.expires_at > $2 AND a.disabled_at IS NULL",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(AccountId))
    }

    pub(super) async fn revoke_token(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tokens WHERE hash = $1").bind(hash).execute(&self.writer).await?;
        Ok(())
    }

    pub(super) async fn account(&self, account: AccountId) -> Result<Option<AccountSummary>, StoreError> {
        let row = sqlx::query(
            "SELECT email, issuer, status, visible, idle_away_minutes, idle_offline_minutes, appear_offline,
                    disabled_at
             FROM accounts WHERE id = $1",
        )
        .bind(account.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| AccountSummary {
            id: account,
            email: row.get(0),
            issuer: row.get(1),
            status: Status::from_rank(row.get(2)),
            visible: Status::from_rank(row.get(3)),
            policy: Policy {
                idle_away_minutes: row.get::<i64, _>(4).try_into().unwrap_or(u32::MAX),
                idle_offline_minutes: row.get::<i64, _>(5).try_into().unwrap_or(u32::MAX),
                appear_offline: row.get::<i64, _>(6) != 0,
            },
            disabled: row.get::<Option<i64>, _>(7).is_some(),
        }))
    }

    pub(super) async fn set_policy(
        &self,
        account: AccountId,
        policy: &Policy,
        now: i64,
    ) -> Result<Option<PresenceChange>, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE accounts SET idle_away_minutes = $2, idle_offline_minutes = $3, appear_offline = $4 WHERE id = $1",
        )
        .bind(account.0)
        .bind(i64::from(policy.idle_away_minutes))
        .bind(i64::from(policy.idle_offline_minutes))
        .bind(i64::from(policy.appear_offline))
        .execute(&mut *tx)
        .await?;
        let change = recompute(&mut tx, self.backend, account.0, now).await?;
        tx.commit().await?;
        Ok(change)
    }
}
