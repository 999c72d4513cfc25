//! Expiry: what the periodic sweep removes (UAIDs nobody uses, expired tokens, consent codes,
//! apps' previous secrets and notifications), and the mark a closing connection leaves on its
//! UAID. Every statement is idempotent, so any number of nodes may sweep at once.

use super::SqlStore;
use crate::domain::Uaid;
use crate::store::{Expired, StoreError};

/// UAIDs per statement when marking closes (SQLite allows 32,766 parameters, PostgreSQL 65,535).
const CLOSES_PER_STATEMENT: usize = 1000;

impl SqlStore {
    /// These UAIDs' connections on this node closed: they are connected nowhere (unless a newer
    /// connection took one elsewhere) and were last seen now. One statement for the lot, in
    /// chunks that keep it within the backends' parameter limits.
    pub(super) async fn uaids_closed(&self, uaids: &[Uaid], now: i64) -> Result<(), StoreError> {
        for chunk in uaids.chunks(CLOSES_PER_STATEMENT) {
            let mut sql = String::from(
                "UPDATE uaids SET connected_at = $1, node_id = NULL WHERE node_id = $2 AND uaid IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 3));
            }
            sql.push(')');
            let mut query = sqlx::query(&sql).bind(now).bind(&self.node);
            for uaid in chunk {
                query = query.bind(uaid.to_string());
            }
            query.execute(&self.writer).await?;
        }
        Ok(())
    }

    pub(super) async fn purge_expired(
        &self,
        now: i64,
        uaids_seen_before: i64,
        notifications_expired_before: i64,
    ) -> Result<Expired, StoreError> {
        // A UAID goes with its channels (cascade) when no device is bound to it, it was last
        // seen before the cutoff, and it is not connected: its node is gone or it closed.
        let uaids = sqlx::query(
            "DELETE FROM uaids WHERE connected_at < $1
               AND NOT EXISTS (SELECT 1 FROM devices WHERE devices.uaid = uaids.uaid)
               AND (node_id IS NULL OR NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = uaids.node_id))",
        )
        .bind(uaids_seen_before)
        .execute(&self.writer)
        .await?
        .rows_affected();
        let tokens = sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let codes = sqlx::query("DELETE FROM auth_codes WHERE expires_at < $1")
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let notifications = sqlx::query("DELETE FROM notifications WHERE expires_at < $1")
            .bind(notifications_expired_before)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let previous_secrets = sqlx::query(
            "UPDATE apps SET previous_secret_hash = NULL, previous_secret_expires_at = NULL
             WHERE previous_secret_expires_at <= $1",
        )
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(Expired { uaids, tokens, codes, notifications, previous_secrets })
    }
}
