//! The store on SQL: SQLite (one file in WAL mode, the embedded default) or PostgreSQL (shared by
//! the nodes of a cluster). One set of statements serves both through `sqlx::Any`; the few
//! places where the two differ ask `Backend`.
//!
//! Durability: a write is durable once its call returns. On SQLite with `sqlite_synchronous =
//! "normal"` (the default) that survives a crash of the process; `"full"` also survives power
//! loss. On PostgreSQL it is whatever the server's `synchronous_commit` promises (on by default).
//!
//! Concurrency: SQLite has one writer connection, so write transactions never interleave. On
//! PostgreSQL, transactions that recompute an account lock its row first, event seqs are taken
//! under the app row's lock, and a transaction that deadlocks with another is run again.

use std::time::Duration;

mod roster;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool};
use sqlx::{Executor, Row};

use super::{
    AppChanges, EventPage, LogBounds, NewDevice, NewNotification, Registration, Saved, Store, StoreError,
    WebhookTarget,
};
use crate::config::{Config, SqliteSync};
use crate::domain::{
    AccountId, AccountSummary, App, AppEvent, AuthCode, DeliveryRecord, DeviceBinding, DeviceId, DeviceInfo,
    Event, GrantInfo, LiveNotification, NotificationState, Policy, PushUpdate, WebhookHealth, WebhookOutcome,
};
use crate::domain::{ChannelId, Uaid};
use crate::domain::{PresenceChange, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    backend: Backend,
    /// Readers (on SQLite, WAL lets them run beside the writer).
    pool: AnyPool,
    /// Where writes go. On SQLite it is one connection: writers queue here instead of sleeping in
    /// SQLite's busy handler, which would wreck latency under load. On PostgreSQL it is `pool`.
    writer: AnyPool,
    /// This node: devices it binds are recorded as connected here.
    node: String,
}

impl SqlStore {
    pub async fn open(url: &str, config: &Config, node: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            Self::open_sqlite(url, config.sqlite_synchronous, node).await
        } else {
            Self::open_postgres(url, config, node).await
        }
    }

    async fn open_sqlite(url: &str, sync: SqliteSync, node: &str) -> Result<SqlStore, StoreError> {
        let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        let path = std::path::Path::new(path.split('?').next().unwrap_or_default());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::DataDir { path: dir.to_owned(), source })?;
        }
        // `mode=rwc` creates the file on first use.
        let url = if url.contains("mode=") {
            url.to_owned()
        } else {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        };
        let pragmas: &'static str = match sync {
            SqliteSync::Normal => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
            }
            SqliteSync::Full => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
            }
        };
        let options = move |connections: u32| {
            AnyPoolOptions::new().max_connections(connections).after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute(pragmas).await?;
                    Ok(())
                })
            })
        };
        let writer = options(1).connect(&url).await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let pool = options(4).connect(&url).await?;
        Ok(SqlStore { backend: Backend::Sqlite, pool, writer, node: node.to_owned() })
    }

    async fn open_postgres(url: &str, config: &Config, node: &str) -> Result<SqlStore, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(config.postgres_max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(SqlStore { backend: Backend::Postgres, writer: pool.clone(), pool, node: node.to_owned() })
    }

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

    /// A write transaction: on SQLite it takes the write lock up front, so it never fails
    /// half-way on a lock upgrade.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        })
    }
}

/// Recomputes an account's best and visible status after its devices changed; returns the
/// change apps must hear about, if any. Runs inside the caller's transaction.
async fn recompute(
    conn: &mut AnyConnection,
    backend: Backend,
    account: i64,
    now: i64,
) -> Result<Option<PresenceChange>, StoreError> {
    // Concurrent changes to one user's devices queue here; the statement below then reads every
    // device as committed (each statement sees what committed before it began).
    lock_account(conn, backend, account).await?;
    let Some(row) = sqlx::query(
        "SELECT visible, appear_offline, (SELECT COALESCE(MAX(status), 0) FROM devices WHERE account_id = $1)
         FROM accounts WHERE id = $1",
    )
    .bind(account)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let old_visible: i64 = row.get(0);
    let appear_offline = row.get::<i64, _>(1) != 0;
    let best: i64 = row.get(2);
    let visible = if appear_offline { 0 } else { best };
    sqlx::query("UPDATE accounts SET status = $2, visible = $3 WHERE id = $1")
        .bind(account)
        .bind(best)
        .bind(visible)
        .execute(&mut *conn)
        .await?;
    if visible == old_visible {
        return Ok(None);
    }
    let status = Status::from_rank(visible);
    let events = tell_apps(conn, account, status, now).await?;
    Ok(Some(PresenceChange { account: AccountId(account), status, at: now, events }))
}

/// On PostgreSQL, takes the account's row lock: every transaction that computes what apps are
/// told about a user takes it first, so they run one after another (SQLite's single writer
/// already does).
async fn lock_account(conn: &mut AnyConnection, backend: Backend, account: i64) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What an app sees of a status: coarse mode shows away as online.
fn app_view(status: Status, coarse: bool) -> &'static str {
    if coarse && status == Status::Away {
        Status::Online.name()
    } else {
        status.name()
    }
}

/// Appends an event to every enabled grant of the account whose view of it changed.
async fn tell_apps(
    conn: &mut AnyConnection,
    account: i64,
    visible: Status,
    now: i64,
) -> Result<Vec<AppEvent>, StoreError> {
    let grants = sqlx::query(
        "SELECT app_id, uid, coarse, last_status FROM grants WHERE account_id = $1 AND enabled = 1 ORDER BY app_id",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::new();
    for grant in grants {
        let (app_id, uid): (String, String) = (grant.get(0), grant.get(1));
        let view = app_view(visible, grant.get::<i64, _>(2) != 0);
        if grant.get::<Option<&str>, _>(3) == Some(view) {
            continue;
        }
        events.push(append_event(conn, &app_id, &uid, view, now).await?);
    }
    Ok(events)
}

/// Appends one event to the app's log with the next seq, and notes it on the grant.
async fn append_event(
    conn: &mut AnyConnection,
    app_id: &str,
    uid: &str,
    status: &str,
    now: i64,
) -> Result<AppEvent, StoreError> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE apps SET last_seq = last_seq + 1 WHERE app_id = $1 RETURNING last_seq")
            .bind(app_id)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("INSERT INTO events (app_id, seq, uid, status, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(app_id)
        .bind(seq)
        .bind(uid)
        .bind(status)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE grants SET last_status = $3, last_update_at = $4 WHERE app_id = $1 AND uid = $2")
        .bind(app_id)
        .bind(uid)
        .bind(status)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(AppEvent { app_id: app_id.to_owned(), seq: seq as u64 })
}

/// Tells one grant's app the user's current status, if it does not know it yet.
async fn tell_app(
    conn: &mut AnyConnection,
    account: i64,
    app_id: &str,
    now: i64,
) -> Result<Vec<AppEvent>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT g.uid, g.coarse, g.last_status, a.visible FROM grants g JOIN accounts a ON a.id = g.account_id
         WHERE g.account_id = $1 AND g.app_id = $2 AND g.enabled = 1",
    )
    .bind(account)
    .bind(app_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Vec::new());
    };
    let uid: String = row.get(0);
    let view = app_view(Status::from_rank(row.get(3)), row.get::<i64, _>(1) != 0);
    if row.get::<Option<&str>, _>(2) == Some(view) {
        return Ok(Vec::new());
    }
    Ok(vec![append_event(conn, app_id, &uid, view, now).await?])
}

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

/// Runs a write transaction again when PostgreSQL chose it as a deadlock's victim or could not
/// serialize it (SQLite's single writer never does either).
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(StoreError::Database(sqlx::Error::Database(error)))
                if retries < 5 && matches!(error.code().as_deref(), Some("40P01" | "40001")) =>
            {
                retries += 1;
                tracing::debug!(retries, "transaction retried after a deadlock");
            }
            outcome => return outcome,
        }
    }
}

const APP_COLUMNS: &str =
    "app_id, owner_id, name, redirect_uris, webhook_url, secret_hash, webhook_secret, created_at";

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
    }
}

/// Drops the app's queued notifications to the account: none is sent after a pause or revoke.
async fn cancel_notifications(
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
        "UPDATE notifications SET cancelled_at = $1 WHERE app_id = $2 AND account_id = $3 AND delivered_at IS NULL
             AND cancelled_at IS NULL",
    )
    .bind(now)
    .bind(app_id)
    .bind(account)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records one device's status and recomputes its user's, inside the caller's transaction.
async fn apply_status(
    conn: &mut AnyConnection,
    store: &SqlStore,
    device: &DeviceId,
    status: Status,
    now: i64,
) -> Result<Option<PresenceChange>, StoreError> {
    let Some(row) = sqlx::query("SELECT account_id, status, node_id FROM devices WHERE id = $1")
        .bind(device.as_str())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None); // removed meanwhile
    };
    let (account, old): (i64, i64) = (row.get(0), row.get(1));
    if row.get::<Option<&str>, _>(2).is_some_and(|node| node != store.node) {
        // The device has connected to another node since: that node owns its status now, and
        // this node's late word (say, the old connection's grace running out) must not undo it.
        return Ok(None);
    }
    sqlx::query("UPDATE devices SET status = $2, status_at = $3, last_seen = $3 WHERE id = $1")
        .bind(device.as_str())
        .bind(status.rank())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    if old == status.rank() {
        return Ok(None);
    }
    recompute(conn, store.backend, account, now).await
}

fn version_to_db(version: u64) -> i64 {
    i64::try_from(version).expect("versions are validated to fit in 63 bits")
}

#[async_trait]
impl Store for SqlStore {
    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn uaid_exists(&self, uaid: &Uaid) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM uaids WHERE uaid = $1")
            .bind(uaid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn connect_uaid(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError> {
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

    async fn register_channel(
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

    async fn unregister_channel(&self, uaid: &Uaid, channel: &ChannelId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM channels WHERE uaid = $1 AND chid = $2")
            .bind(uaid.to_string())
            .bind(channel.to_string())
            .execute(&self.writer)
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

    async fn uaid_node(&self, uaid: &Uaid) -> Result<Option<String>, StoreError> {
        let node: Option<Option<String>> = sqlx::query_scalar("SELECT node_id FROM uaids WHERE uaid = $1")
            .bind(uaid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(node.flatten())
    }

    async fn pending_updates(&self, uaid: &Uaid) -> Result<Vec<PushUpdate>, StoreError> {
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

    async fn ack(&self, uaid: &Uaid, channel: &ChannelId, version: u64) -> Result<(), StoreError> {
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

    async fn create_local_account(
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

    async fn local_credentials(&self, email: &str) -> Result<Option<(AccountId, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, password_hash FROM accounts WHERE email = $1 AND password_hash IS NOT NULL",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| (AccountId(row.get(0)), row.get(1))))
    }

    async fn oidc_account(&self, issuer: &str, subject: &str, now: i64) -> Result<AccountId, StoreError> {
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

    async fn create_token(
        &self,
        hash: &str,
        account: AccountId,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tokens (hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(account.0)
            .bind(now)
            .bind(expires_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn token_account(&self, hash: &str, now: i64) -> Result<Option<AccountId>, StoreError> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT account_id FROM tokens WHERE hash = $1 AND expires_at > $2")
                .bind(hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.map(AccountId))
    }

    async fn revoke_token(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tokens WHERE hash = $1").bind(hash).execute(&self.writer).await?;
        Ok(())
    }

    async fn account(&self, account: AccountId) -> Result<Option<AccountSummary>, StoreError> {
        let row = sqlx::query(
            "SELECT email, issuer, status, visible, idle_away_minutes, idle_offline_minutes, appear_offline
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
        }))
    }

    async fn set_policy(
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

    async fn create_device(&self, device: &NewDevice<'_>, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO devices (id, account_id, name, prid_hash, uaid, created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(device.id.as_str())
        .bind(device.account.0)
        .bind(device.name)
        .bind(device.prid_hash)
        .bind(device.uaid.map(|u| u.to_string()))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<DeviceInfo>, StoreError> {
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

    async fn delete_device(
        &self,
        account: AccountId,
        device: &DeviceId,
        now: i64,
    ) -> Result<Option<(Option<Uaid>, Option<PresenceChange>)>, StoreError> {
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
        Ok(Some((uaid.as_deref().and_then(Uaid::parse), change)))
    }

    async fn device_by_prid(&self, prid_hash: &str) -> Result<Option<DeviceBinding>, StoreError> {
        let row = sqlx::query("SELECT id, account_id FROM devices WHERE prid_hash = $1")
            .bind(prid_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|row| {
            Some(DeviceBinding { device: DeviceId::parse(row.get(0))?, account: AccountId(row.get(1)) })
        }))
    }

    async fn bind_device(&self, device: &DeviceId, uaid: &Uaid, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET uaid = $1, last_seen = $2, node_id = $4 WHERE id = $3")
            .bind(uaid.to_string())
            .bind(now)
            .bind(device.as_str())
            .bind(&self.node)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_device_statuses(
        &self,
        batch: &[(DeviceId, Status)],
        now: i64,
    ) -> Result<Vec<Option<PresenceChange>>, StoreError> {
        retrying(|| async {
            let mut tx = self.begin().await?;
            let mut changes = Vec::with_capacity(batch.len());
            for (device, status) in batch {
                changes.push(apply_status(&mut tx, self, device, *status, now).await?);
            }
            tx.commit().await?;
            Ok(changes)
        })
        .await
    }

    async fn load_presence(
        &self,
        accounts: Option<&[AccountId]>,
        apps: &[String],
    ) -> Result<super::PresenceLoad, StoreError> {
        self.load_roster(accounts, apps).await
    }

    async fn record_presence(&self, batch: &super::PresenceBatch, now: i64) -> Result<(), StoreError> {
        retrying(|| self.record_roster(batch, now)).await
    }

    async fn touch_device(&self, device: &DeviceId, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET status_at = $2, last_seen = $2 WHERE id = $1")
            .bind(device.as_str())
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn reset_presence(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::Everyone, now)).await
    }

    async fn expire_stale(&self, cutoff: i64, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::SilentSince(cutoff), now)).await
    }

    async fn take_lease(&self, until: i64, now: i64) -> Result<(), StoreError> {
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

    async fn renew_lease(&self, until: i64, now: i64) -> Result<bool, StoreError> {
        let renewed = sqlx::query("UPDATE nodes SET expires_at = $2 WHERE id = $1 AND expires_at >= $3")
            .bind(&self.node)
            .bind(until)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(renewed == 1)
    }

    async fn expire_leases(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::LeaseEndedBefore(now), now)).await
    }

    async fn expire_orphans(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::Orphaned, now)).await
    }

    async fn end_lease(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        retrying(|| offline_before(self, Offline::ThisNode, now)).await
    }

    async fn create_app(&self, app: &App) -> Result<(), StoreError> {
        sqlx::query(&format!("INSERT INTO apps ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
            .bind(&app.app_id)
            .bind(app.owner.0)
            .bind(&app.name)
            .bind(serde_json::to_string(&app.redirect_uris).expect("strings serialize"))
            .bind(&app.webhook_url)
            .bind(&app.secret_hash)
            .bind(&app.webhook_secret_sealed)
            .bind(app.created_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE app_id = $1"))
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(app_from_row))
    }

    async fn app_by_secret(&self, secret_hash: &str) -> Result<Option<App>, StoreError> {
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE secret_hash = $1"))
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(app_from_row))
    }

    async fn apps_of(&self, owner: AccountId) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE owner_id = $1 ORDER BY created_at, app_id"
        ))
        .bind(owner.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(app_from_row).collect())
    }

    async fn update_app(
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
                webhook_url = CASE WHEN $5 = 1 THEN $6 ELSE webhook_url END
             WHERE owner_id = $1 AND app_id = $2",
        )
        .bind(owner.0)
        .bind(app_id)
        .bind(&changes.name)
        .bind(changes.redirect_uris.as_ref().map(|u| serde_json::to_string(u).expect("strings serialize")))
        .bind(i64::from(changes.webhook_url.is_some()))
        .bind(changes.webhook_url.clone().flatten())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn rotate_app_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_hash: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE apps SET secret_hash = $1 WHERE owner_id = $2 AND app_id = $3")
            .bind(secret_hash)
            .bind(owner.0)
            .bind(app_id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn grant(
        &self,
        account: AccountId,
        app_id: &str,
        new_uid: &str,
        now: i64,
    ) -> Result<(String, Vec<AppEvent>), StoreError> {
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
        Ok((uid, events))
    }

    async fn grants_of(&self, account: AccountId) -> Result<Vec<GrantInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.app_id, a.name, g.uid, g.enabled, g.coarse, g.created_at, g.last_update_at
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
            })
            .collect())
    }

    async fn grant_uid(&self, account: AccountId, app_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT uid FROM grants WHERE account_id = $1 AND app_id = $2")
            .bind(account.0)
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_grant(
        &self,
        account: AccountId,
        app_id: &str,
        enabled: Option<bool>,
        coarse: Option<bool>,
        now: i64,
    ) -> Result<Option<Vec<AppEvent>>, StoreError> {
        let mut tx = self.begin().await?;
        lock_account(&mut tx, self.backend, account.0).await?;
        // Pausing forgets what the app was told: resuming tells it the status again.
        let Some(uid) = sqlx::query_scalar::<_, String>(
            "UPDATE grants SET enabled = COALESCE($3, enabled), coarse = COALESCE($4, coarse),
                 last_status = CASE WHEN $3 = 0 THEN NULL ELSE last_status END
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
            // Nothing about a paused user leaves, including what was already queued.
            sqlx::query("DELETE FROM events WHERE app_id = $1 AND uid = $2")
                .bind(app_id)
                .bind(&uid)
                .execute(&mut *tx)
                .await?;
            cancel_notifications(&mut tx, account.0, app_id, now).await?;
        }
        let events = tell_app(&mut tx, account.0, app_id, now).await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    async fn revoke_grant(
        &self,
        account: AccountId,
        app_id: &str,
        now: i64,
    ) -> Result<Option<(String, Vec<AppEvent>)>, StoreError> {
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
        // Events still queued for this user are dropped; the app hears one last `revoked`.
        sqlx::query("DELETE FROM events WHERE app_id = $1 AND uid = $2")
            .bind(app_id)
            .bind(&uid)
            .execute(&mut *tx)
            .await?;
        cancel_notifications(&mut tx, account.0, app_id, now).await?;
        let event = append_event(&mut tx, app_id, &uid, "revoked", now).await?;
        tx.commit().await?;
        Ok(Some((uid, vec![event])))
    }

    async fn log_bounds(&self, app_id: &str) -> Result<Option<LogBounds>, StoreError> {
        let row = sqlx::query("SELECT last_seq, purged_seq FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| LogBounds {
            last_seq: row.get::<i64, _>(0) as u64,
            purged_seq: row.get::<i64, _>(1) as u64,
        }))
    }

    async fn events_after(&self, app_id: &str, since: u64, limit: u32) -> Result<EventPage, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Read the bound first: every event up to it is committed (seqs are given under the
        // app row's write lock), so nothing below it can appear later.
        let Some(last_seq) = sqlx::query_scalar::<_, i64>("SELECT last_seq FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(EventPage::default());
        };
        let rows = sqlx::query(
            "SELECT e.seq, e.uid, e.status, e.at, g.enabled FROM events e
             LEFT JOIN grants g ON g.app_id = e.app_id AND g.uid = e.uid
             WHERE e.app_id = $1 AND e.seq > $2 AND e.seq <= $3
             ORDER BY e.seq LIMIT $4",
        )
        .bind(app_id)
        .bind(since as i64)
        .bind(last_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let full = rows.len() == limit as usize;
        let mut page = EventPage {
            events: Vec::with_capacity(rows.len()),
            scanned_to: last_seq.max(since as i64) as u64,
            complete: !full,
        };
        for row in rows {
            let event = Event {
                seq: row.get::<i64, _>(0) as u64,
                uid: row.get(1),
                status: row.get(2),
                at: row.get(3),
            };
            if full {
                page.scanned_to = event.seq;
            }
            let enabled: Option<i64> = row.get(4);
            if event.status == "revoked" || enabled == Some(1) {
                page.events.push(event);
            }
        }
        Ok(page)
    }

    async fn snapshot(&self, app_id: &str) -> Result<(Vec<(String, String)>, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        let rows = sqlx::query(
            "SELECT uid, last_status FROM grants WHERE app_id = $1 AND enabled = 1 AND last_status IS NOT NULL ORDER BY uid",
        )
        .bind(app_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((rows.into_iter().map(|row| (row.get(0), row.get(1))).collect(), last_seq as u64))
    }

    async fn presence_of(&self, app_id: &str, uids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        let mut found = Vec::new();
        for uid in uids {
            let status: Option<Option<String>> = sqlx::query_scalar(
                "SELECT last_status FROM grants WHERE app_id = $1 AND uid = $2 AND enabled = 1",
            )
            .bind(app_id)
            .bind(uid)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(status) = status {
                found.push((uid.clone(), status.unwrap_or_else(|| Status::Offline.name().to_owned())));
            }
        }
        Ok(found)
    }

    async fn purge_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE apps SET purged_seq = purged.seq
             FROM (SELECT app_id, MAX(seq) AS seq FROM events WHERE at < $1 GROUP BY app_id) purged
             WHERE purged.app_id = apps.app_id AND purged.seq > apps.purged_seq",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let removed = sqlx::query("DELETE FROM events WHERE at < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }

    async fn due_webhooks(
        &self,
        now: i64,
        sent_before: i64,
        claim_until: i64,
    ) -> Result<Vec<WebhookTarget>, StoreError> {
        const DUE: &str = "webhook_url IS NOT NULL AND webhook_disabled_at IS NULL
               AND last_seq > webhook_cursor AND webhook_next_attempt_at <= $1
               AND (webhook_last_sent_at IS NULL OR webhook_last_sent_at <= $3)
               AND (webhook_node IS NULL OR webhook_node = $2 OR webhook_claimed_until < $1
                    OR webhook_node NOT IN (SELECT id FROM nodes))";
        // Most scans find nothing due: ask a reader first, and write the claims only when needed.
        let any_due = sqlx::query(&format!("SELECT 1 FROM apps WHERE {DUE} LIMIT 1"))
            .bind(now)
            .bind(&self.node)
            .bind(sent_before)
            .fetch_optional(&self.pool)
            .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE apps SET webhook_node = $2, webhook_claimed_until = $4 WHERE {DUE}
             RETURNING app_id, webhook_url, webhook_secret, webhook_cursor, webhook_attempts, webhook_failing_since"
        ))
        .bind(now)
        .bind(&self.node)
        .bind(sent_before)
        .bind(claim_until)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| WebhookTarget {
                app_id: row.get(0),
                url: row.get(1),
                secret_sealed: row.get(2),
                cursor: row.get::<i64, _>(3) as u64,
                attempts: row.get::<i64, _>(4) as u32,
                failing_since: row.get(5),
            })
            .collect())
    }

    async fn record_attempt(
        &self,
        app_id: &str,
        record: &DeliveryRecord,
        outcome: &WebhookOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if record.events > 0 || record.error.is_some() || record.status_code.is_some() {
            sqlx::query(
                "INSERT INTO deliveries (app_id, at, message_id, events, status_code, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(app_id)
            .bind(record.at)
            .bind(&record.message_id)
            .bind(i64::from(record.events))
            .bind(record.status_code.map(i64::from))
            .bind(&record.error)
            .bind(record.duration_ms as i64)
            .execute(&mut *tx)
            .await?;
            // Keep the latest hundred attempts per app.
            sqlx::query(
                "DELETE FROM deliveries WHERE app_id = $1 AND id NOT IN
                     (SELECT id FROM deliveries WHERE app_id = $1 ORDER BY id DESC LIMIT 100)",
            )
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        }
        match outcome {
            WebhookOutcome::Delivered { cursor } => {
                sqlx::query(
                    "UPDATE apps SET webhook_cursor = CASE WHEN webhook_cursor > $2 THEN webhook_cursor ELSE $2 END,
                         webhook_attempts = 0,
                         webhook_failing_since = NULL, webhook_next_attempt_at = 0, webhook_last_sent_at = $3
                     WHERE app_id = $1",
                )
                .bind(app_id)
                .bind(*cursor as i64)
                .bind(record.at)
                .execute(&mut *tx)
                .await?;
            }
            WebhookOutcome::Failed { retry_at, disable } => {
                sqlx::query(
                    "UPDATE apps SET webhook_attempts = webhook_attempts + 1,
                         webhook_failing_since = COALESCE(webhook_failing_since, $2),
                         webhook_next_attempt_at = $3, webhook_last_sent_at = $2,
                         webhook_disabled_at = CASE WHEN $4 IS NULL THEN NULL ELSE $2 END,
                         webhook_disabled_reason = $4
                     WHERE app_id = $1",
                )
                .bind(app_id)
                .bind(record.at)
                .bind(*retry_at)
                .bind(disable)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn deliveries(&self, app_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, message_id, events, status_code, error, duration_ms FROM deliveries
             WHERE app_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(app_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DeliveryRecord {
                at: row.get(0),
                message_id: row.get(1),
                events: row.get::<i64, _>(2) as u32,
                status_code: row.get::<Option<i64>, _>(3).map(|c| c as u16),
                error: row.get(4),
                duration_ms: row.get::<i64, _>(5) as u64,
            })
            .collect())
    }

    async fn webhook_health(&self, app_id: &str) -> Result<Option<WebhookHealth>, StoreError> {
        let row = sqlx::query(
            "SELECT webhook_failing_since, webhook_attempts, webhook_disabled_at, webhook_disabled_reason,
                    last_seq - webhook_cursor
             FROM apps WHERE app_id = $1 AND webhook_url IS NOT NULL",
        )
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| WebhookHealth {
            failing_since: row.get(0),
            attempts: row.get::<i64, _>(1) as u32,
            disabled_at: row.get(2),
            disabled_reason: row.get(3),
            pending: row.get::<i64, _>(4).max(0) as u64,
        }))
    }

    async fn enable_webhook(&self, owner: AccountId, app_id: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE apps SET webhook_disabled_at = NULL, webhook_disabled_reason = NULL, webhook_attempts = 0,
                 webhook_failing_since = NULL, webhook_next_attempt_at = 0
             WHERE owner_id = $1 AND app_id = $2",
        )
        .bind(owner.0)
        .bind(app_id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn create_code(&self, hash: &str, code: &AuthCode) -> Result<(), StoreError> {
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

    async fn take_code(&self, hash: &str) -> Result<Option<AuthCode>, StoreError> {
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

    async fn granted_account(&self, app_id: &str, uid: &str) -> Result<Option<AccountId>, StoreError> {
        let account: Option<i64> = sqlx::query_scalar(
            "SELECT account_id FROM grants WHERE app_id = $1 AND uid = $2 AND enabled = 1",
        )
        .bind(app_id)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(account.map(AccountId))
    }

    async fn create_notification(
        &self,
        notification: &NewNotification,
        max_per_device: u32,
    ) -> Result<Vec<(DeviceId, Option<Uaid>)>, StoreError> {
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
                found.push((id, row.get::<Option<&str>, _>(1).and_then(Uaid::parse)));
            }
        }
        tx.commit().await?;
        Ok(found)
    }

    async fn mark_delivered(&self, device: &DeviceId, ids: &[String], now: i64) -> Result<(), StoreError> {
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
                sqlx::query(
                    "UPDATE notifications SET delivered_to = delivered_to + 1, delivered_at = COALESCE(delivered_at, $2)
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

    async fn pending_notifications(
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

    async fn ack_notifications(&self, device: &DeviceId, ids: &[String]) -> Result<(), StoreError> {
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

    async fn notification_state(
        &self,
        app_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<NotificationState>, StoreError> {
        let row = sqlx::query(
            "SELECT sent_at, expires_at, delivered_at, delivered_to, cancelled_at FROM notifications
             WHERE app_id = $1 AND id = $2",
        )
        .bind(app_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| {
            let (sent_at, expires_at): (i64, i64) = (row.get(0), row.get(1));
            let delivered_at: Option<i64> = row.get(2);
            let cancelled: Option<i64> = row.get(4);
            let status = match (delivered_at, cancelled) {
                (Some(_), _) => "delivered",
                (None, Some(_)) => "cancelled",
                (None, None) if expires_at <= now => "expired",
                (None, None) => "queued",
            };
            NotificationState {
                id: id.to_owned(),
                status,
                sent_at,
                expires_at,
                delivered_at,
                delivered_to: row.get::<i64, _>(3) as u32,
            }
        }))
    }

    async fn notifications_sent(
        &self,
        account: AccountId,
        since: i64,
    ) -> Result<Vec<(String, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT app_id, COUNT(*) FROM notifications WHERE account_id = $1 AND sent_at >= $2 GROUP BY app_id",
        )
        .bind(account.0)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get::<i64, _>(1) as u32)).collect())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}
