//! Expiry: what the periodic sweep removes (UAIDs nobody uses, expired tokens, consent codes,
//! apps' previous secrets and notifications), and the mark a closing connection leaves on its
//! UAID. Every statement is idempotent, so any number of nodes may sweep at once.

use super::SqlStore;
use crate::domain::Uaid;
use crate::store::{Expired, StoreError};

impl SqlStore {
    /// The UAID's connection on this node closed: it is connected nowhere (unless a newer
    /// connection took it elsewhere) and was last seen now.
    pub(super) async fn uaid_closed(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE uaids SET connected_at = $2, node_id = NULL WHERE uaid = $1 AND node_id = $3")
            .bind(uaid.to_string())
            .bind(now)
            .bind(&self.node)
            .execute(&self.writer)
            .await?;
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
