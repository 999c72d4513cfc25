//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability: a write is durable once its call returns. With `sqlite_synchronous = "normal"`
//! (the default) that survives a crash of the process; `"full"` also survives power loss.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::{PushUpdate, Registration, Saved, Store, StoreError};
use crate::config::SqliteSync;
use crate::ids::{ChannelId, Uaid};

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str, sync: SqliteSync) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Normal => SqliteSynchronous::Normal,
                SqliteSync::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

fn version_to_db(version: u64) -> i64 {
    i64::try_from(version).expect("versions are validated to fit in 63 bits")
}

#[async_trait]
impl Store for SqliteStore {
    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn uaid_exists(&self, uaid: &Uaid) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM uaids WHERE uaid = ?")
            .bind(uaid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn connect_uaid(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uaids (uaid, created_at, connected_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (uaid) DO UPDATE SET connected_at = excluded.connected_at",
        )
        .bind(uaid.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn register_channel(
        &self,
        uaid: &Uaid,
        channel: &ChannelId,
        max_channels: u32,
        now: i64,
    ) -> Result<Registration, StoreError> {
        // One statement, so the count and the insert cannot race with another register.
        let inserted = sqlx::query(
            "INSERT INTO channels (uaid, chid, created_at)
             SELECT ?1, ?2, ?3
             WHERE (SELECT COUNT(*) FROM channels WHERE uaid = ?1) < ?4
             ON CONFLICT (uaid, chid) DO NOTHING",
        )
        .bind(uaid.to_string())
        .bind(channel.to_string())
        .bind(now)
        .bind(i64::from(max_channels))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Registration::Registered);
        }
        let exists = sqlx::query("SELECT 1 FROM channels WHERE uaid = ? AND chid = ?")
            .bind(uaid.to_string())
            .bind(channel.to_string())
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        Ok(if exists {
            Registration::Registered
        } else {
            Registration::TooManyChannels
        })
    }

    async fn unregister_channel(&self, uaid: &Uaid, channel: &ChannelId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM channels WHERE uaid = ? AND chid = ?")
            .bind(uaid.to_string())
            .bind(channel.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_update(
        &self,
        uaid: &Uaid,
        update: &PushUpdate,
        max_stored: u32,
    ) -> Result<Saved, StoreError> {
        let version = version_to_db(update.version);
        let changed = sqlx::query(
            "UPDATE channels SET version = ?3, data = ?4, pending = 1
             WHERE uaid = ?1 AND chid = ?2 AND (version IS NULL OR version < ?3)
               AND (pending = 1 OR (SELECT COUNT(*) FROM channels WHERE uaid = ?1 AND pending = 1) < ?5)",
        )
        .bind(uaid.to_string())
        .bind(update.channel.to_string())
        .bind(version)
        .bind(update.data.as_deref())
        .bind(i64::from(max_stored))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 1 {
            return Ok(Saved::Newer);
        }
        // Nothing changed: say why.
        let row = sqlx::query("SELECT version FROM channels WHERE uaid = ? AND chid = ?")
            .bind(uaid.to_string())
            .bind(update.channel.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => match row.get::<Option<i64>, _>(0) {
                Some(current) if current >= version => Saved::NotNewer,
                _ => Saved::TooManyStored,
            },
            None if self.uaid_exists(uaid).await? => Saved::ChannelGone,
            None => Saved::UaidGone,
        })
    }

    async fn pending_updates(&self, uaid: &Uaid) -> Result<Vec<PushUpdate>, StoreError> {
        let rows = sqlx::query(
            "SELECT chid, version, data FROM channels WHERE uaid = ? AND pending = 1 ORDER BY chid",
        )
        .bind(uaid.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(PushUpdate {
                    channel: ChannelId::parse(row.get::<&str, _>(0))?,
                    version: u64::try_from(row.get::<i64, _>(1)).ok()?,
                    data: row.get(2),
                })
            })
            .collect())
    }

    async fn ack(&self, uaid: &Uaid, channel: &ChannelId, version: u64) -> Result<(), StoreError> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(()); // no stored version can be that high
        };
        sqlx::query(
            "UPDATE channels SET pending = 0 WHERE uaid = ? AND chid = ? AND pending = 1 AND version <= ?",
        )
        .bind(uaid.to_string())
        .bind(channel.to_string())
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
