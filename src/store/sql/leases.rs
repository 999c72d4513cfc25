//! Nodes and their leases, and the sweeps that set devices offline in bulk: silent devices,
//! nodes whose lease ran out, orphans, this node at shutdown, everyone on a lone node's start.

use super::devices::recompute;
use super::{retrying, SqlStore};
use crate::domain::PresenceChange;
use crate::store::StoreError;

/// Which devices `offline_before` sets offline.
#[derive(Debug, Clone, Copy)]
enum Offline {
    /// All of them (a lone node starting); also recomputes accounts still shown as present
    /// without a present device (say, a device removed mid-crash).
    Everyone,
    /// Those whose last report is older than this.
    SilentSince(i64),
    /// Those of nodes whose lease ran out before this time (the leases end too).
    LeaseEndedBefore(i64),
    /// Those whose node holds no lease (a node's start in a cluster: whatever a crash left).
    Orphaned,
    /// This node's (its lease ends too).
    ThisNode,
}

/// Sets devices offline and recomputes their accounts, in one transaction.
async fn offline_before(
    store: &SqlStore,
    which: Offline,
    now: i64,
) -> Result<Vec<PresenceChange>, StoreError> {
    let mut tx = store.begin().await?;
    let accounts: Vec<i64> = match which {
        Offline::Everyone => {
            // A lone node: whichever node ran before is gone, with its claims.
            sqlx::query("DELETE FROM nodes WHERE id <> $1").bind(&store.node).execute(&mut *tx).await?;
            sqlx::query_scalar("UPDATE devices SET status = 0 WHERE status > 0 RETURNING account_id")
                .fetch_all(&mut *tx)
                .await?
        }
        Offline::SilentSince(cutoff) => {
            sqlx::query_scalar(
                "UPDATE devices SET status = 0
                 WHERE status > 0 AND (status_at IS NULL OR status_at < $1) RETURNING account_id",
            )
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?
        }
        Offline::LeaseEndedBefore(time) => {
            let ended: Vec<String> =
                sqlx::query_scalar("DELETE FROM nodes WHERE expires_at < $1 RETURNING id")
                    .bind(time)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut accounts = Vec::new();
            for node in ended {
                tracing::warn!(%node, "a node's lease ran out; its devices are offline");
                let offline: Vec<i64> = sqlx::query_scalar(
                    "UPDATE devices SET status = 0 WHERE status > 0 AND node_id = $1 RETURNING account_id",
                )
                .bind(&node)
                .fetch_all(&mut *tx)
                .await?;
                accounts.extend(offline);
            }
            accounts
        }
        Offline::Orphaned => {
            sqlx::query_scalar(
                "UPDATE devices SET status = 0
                 WHERE status > 0 AND (node_id IS NULL OR node_id NOT IN (SELECT id FROM nodes))
                 RETURNING account_id",
            )
            .fetch_all(&mut *tx)
            .await?
        }
        Offline::ThisNode => {
            sqlx::query("DELETE FROM nodes WHERE id = $1").bind(&store.node).execute(&mut *tx).await?;
            sqlx::query_scalar(
                "UPDATE devices SET status = 0 WHERE status > 0 AND node_id = $1 RETURNING account_id",
            )
            .bind(&store.node)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    let mut accounts: std::collections::BTreeSet<i64> = accounts.into_iter().collect();
    if matches!(which, Offline::Everyone) {
        let lingering: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE status > 0 OR visible > 0")
                .fetch_all(&mut *tx)
                .await?;
        accounts.extend(lingering);
    }
    let mut changes = Vec::new();
    for account in accounts {
        changes.extend(recompute(&mut tx, store.backend, account, now).await?);
    }
    tx.commit().await?;
    Ok(changes)
}

impl SqlStore {
    pub(super) async fn live_nodes(&self, now: i64) -> Result<u64, StoreError> {
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(live.max(0) as u64)
    }

    pub(super) async fn take_lease(&self, until: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, started_at, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(&self.node)
        .bind(now)
        .bind(until)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn renew_lease(&self, until: i64, now: i64) -> Result<bool, StoreError> {
        let renewed = sqlx::query("UPDATE nodes SET expires_at = $2 WHERE id = $1 AND expires_at >= $3")
            .bind(&self.node)
            .bind(until)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(renewed == 1)
    }

    pub(super) async fn expire_leases(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::LeaseEndedBefore(now), now)).await
    }

    pub(super) async fn expire_orphans(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::Orphaned, now)).await
    }

    pub(super) async fn end_lease(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::ThisNode, now)).await
    }

    pub(super) async fn reset_presence(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::Everyone, now)).await
    }

    pub(super) async fn expire_stale(
        &self,
        cutoff: i64,
        now: i64,
    ) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::SilentSince(cutoff), now)).await
    }
}
