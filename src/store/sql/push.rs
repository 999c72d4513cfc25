//! Push: UAIDs, their channels, the versions AppServers send and the acks devices return.

use sqlx::{AnyConnection, Row};

use super::{Backend, SqlStore};
use crate::domain::{ChannelId, DeviceId, PushUpdate, Uaid};
use crate::store::{Registration, Saved, StoreError, UaidOwner};

fn version_to_db(version: u64) -> i64 {
    i64::try_from(version).expect("versions are validated to fit in 63 bits")
}

impl SqlStore {
    /// On PostgreSQL, makes concurrent writers of one UAID's channels queue, so that the limits
    /// per UAID hold across nodes (SQLite's single writer already does).
    async fn lock_uaid(&self, conn: &mut AnyConnection, uaid: &Uaid) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM uaids WHERE uaid = $1 FOR UPDATE")
                .bind(uaid.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn uaid_owner(&self, uaid: &Uaid) -> Result<UaidOwner, StoreError> {
        let row =
            sqlx::query("SELECT d.id FROM uaids u LEFT JOIN devices d ON d.uaid = u.uaid WHERE u.uaid = $1")
                .bind(uaid.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => UaidOwner::Unknown,
            Some(row) => match row.get::<Option<&str>, _>(0).and_then(DeviceId::parse) {
                Some(device) => UaidOwner::Device(device),
                None => UaidOwner::Unbound,
            },
        })
    }

    pub(super) async fn connect_uaid(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uaids (uaid, created_at, connected_at, node_id) VALUES ($1, $2, $2, $3)
             ON CONFLICT (uaid) DO UPDATE SET connected_at = excluded.connected_at, node_id = excluded.node_id",
        )
        .bind(uaid.to_string())
        .bind(now)
        .bind(&self.node)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn register_channel(
        &self,
        uaid: &Uaid,
        channel: &ChannelId,
        max_channels: u32,
        now: i64,
    ) -> Result<Registration, StoreError> {
        // The count and the insert in one statement (SQLite has one writer); PostgreSQL first
        // locks the UAID, so concurrent registers on several nodes queue.
        let mut tx = self.begin().await?;
        self.lock_uaid(&mut tx, uaid).await?;
        let inserted = sqlx::query(
            "INSERT INTO channels (uaid, chid, created_at)
             SELECT $1, $2, $3
             WHERE (SELECT COUNT(*) FROM channels WHERE uaid = $1) < $4
             ON CONFLICT (uaid, chid) DO NOTHING",
        )
        .bind(uaid.to_string())
        .bind(channel.to_string())
        .bind(now)
        .bind(i64::from(max_channels))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let exists = inserted == 1
            || sqlx::query("SELECT 1 FROM channels WHERE uaid = $1 AND chid = $2")
                .bind(uaid.to_string())
                .bind(channel.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        tx.commit().await?;
        Ok(if exists { Registration::Registered } else { Registration::TooManyChannels })
    }

    pub(super) async fn unregister_channel(
        &self,
        uaid: &Uaid,
        channel: &ChannelId,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM channels WHERE uaid = $1 AND chid = $2")
            .bind(uaid.to_string())
            .bind(channel.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(super) async fn save_update(
        &self,
        uaid: &Uaid,
        update: &PushUpdate,
        max_stored: u32,
    ) -> Result<Saved, StoreError> {
        let version = version_to_db(update.version);
        let mut tx = self.begin().await?;
        self.lock_uaid(&mut tx, uaid).await?;
        let changed = sqlx::query(
            "UPDATE channels SET version = $3, data = $4, pending = 1
             WHERE uaid = $1 AND chid = $2 AND (version IS NULL OR version < $3)
               AND (pending = 1 OR (SELECT COUNT(*) FROM channels WHERE uaid = $1 AND pending = 1) < $5)",
        )
        .bind(uaid.to_string())
        .bind(update.channel.to_string())
        .bind(version)
        .bind(update.data.as_deref())
        .bind(i64::from(max_stored))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            tx.commit().await?;
            return Ok(Saved::Newer);
        }
        // Nothing changed: say why.
        let row = sqlx::query("SELECT version FROM channels WHERE uaid = $1 AND chid = $2")
            .bind(uaid.to_string())
            .bind(update.channel.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let known = row.is_some()
            || sqlx::query("SELECT 1 FROM uaids WHERE uaid = $1")
                .bind(uaid.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        tx.commit().await?;
        Ok(match row {
            Some(row) => match row.get::<Option<i64>, _>(0) {
                Some(current) if current >= version => Saved::NotNewer,
                _ => Saved::TooManyStored,
            },
            None if known => Saved::ChannelGone,
            None => Saved::UaidGone,
        })
    }

    pub(super) async fn uaid_node(&self, uaid: &Uaid) -> Result<Option<String>, StoreError> {
        let node: Option<Option<String>> = sqlx::query_scalar("SELECT node_id FROM uaids WHERE uaid = $1")
            .bind(uaid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(node.flatten())
    }

    pub(super) async fn pending_updates(&self, uaid: &Uaid) -> Result<Vec<PushUpdate>, StoreError> {
        let rows = sqlx::query(
            "SELECT chid, version, data FROM channels WHERE uaid = $1 AND pending = 1 ORDER BY chid",
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

    pub(super) async fn ack(&self, uaid: &Uaid, channel: &ChannelId, version: u64) -> Result<(), StoreError> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(()); // no stored version can be that high
        };
        sqlx::query(
            "UPDATE channels SET pending = 0 WHERE uaid = $1 AND chid = $2 AND pending = 1 AND version <= $3",
        )
        .bind(uaid.to_string())
        .bind(channel.to_string())
        .bind(version)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
