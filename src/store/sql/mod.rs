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
//!
//! One file per area, each adding the area's verbs to `SqlStore`; `verbs.rs` maps the `Store`
//! trait onto them. Here: opening the database, and the helpers every area shares (write
//! transactions, row locks, retries).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Executor};

use super::StoreError;
use crate::config::{Config, SqliteSync};

mod accounts;
mod apps;
mod devices;
mod events;
mod expiry;
mod leases;
mod lifecycle;
mod notifications;
mod push;
mod roster;
mod verbs;
mod webhooks;

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
            AnyPoolOptions::new()
                // No ping before each use: a broken connection fails its query and is replaced.
                .test_before_acquire(false)
                .max_connections(connections)
                .after_connect(move |conn, _| {
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
            .test_before_acquire(false)
            .max_connections(config.postgres_max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(SqlStore { backend: Backend::Postgres, writer: pool.clone(), pool, node: node.to_owned() })
    }

    /// A write transaction: on SQLite it takes the write lock up front, so it never fails
    /// half-way on a lock upgrade.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
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
