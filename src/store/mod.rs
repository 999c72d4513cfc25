//! The store: everything Presence must remember across restarts, behind one trait in domain
//! verbs. The SQLite implementation is the embedded default; the database URL scheme picks the
//! backend, so callers never know which one they talk to.

use async_trait::async_trait;

use crate::ids::{ChannelId, Uaid};

mod sqlite;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the data directory {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported database url (expected sqlite: or postgres://)")]
    UnsupportedUrl,
}

/// A notification waiting for a device, or being delivered to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUpdate {
    pub channel: ChannelId,
    /// Versions are non-negative and fit in 63 bits (both databases store a signed 64-bit integer).
    pub version: u64,
    pub data: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Registered now, or already registered to this UAID (registering is idempotent).
    Registered,
    /// The UAID holds its maximum number of channels.
    TooManyChannels,
}

/// What happened to a version an AppServer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Stored as the channel's pending version: deliver it.
    Newer,
    /// The channel already has this version or a higher one; nothing to deliver.
    NotNewer,
    /// The UAID already has its maximum number of undelivered notifications.
    TooManyStored,
    /// The channel was unregistered (or never registered).
    ChannelGone,
    /// The UAID no longer exists.
    UaidGone,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database can be read; used by `/healthz`.
    async fn check(&self) -> Result<(), StoreError>;

    /// Whether the UAID is known; a known UAID's reconnect keeps its channels.
    async fn uaid_exists(&self, uaid: &Uaid) -> Result<bool, StoreError>;

    /// Records a new UAID, or notes that a known one connected.
    async fn connect_uaid(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError>;

    async fn register_channel(
        &self,
        uaid: &Uaid,
        channel: &ChannelId,
        max_channels: u32,
        now: i64,
    ) -> Result<Registration, StoreError>;

    /// Removes the channel and its pending notification, if it belongs to this UAID.
    async fn unregister_channel(&self, uaid: &Uaid, channel: &ChannelId) -> Result<(), StoreError>;

    /// Raises the channel's pending version to `update.version` if that is higher than any
    /// version it had.
    async fn save_update(
        &self,
        uaid: &Uaid,
        update: &PushUpdate,
        max_stored: u32,
    ) -> Result<Saved, StoreError>;

    /// Every unacked notification of the UAID, at most one per channel.
    async fn pending_updates(&self, uaid: &Uaid) -> Result<Vec<PushUpdate>, StoreError>;

    /// Clears the channel's pending notification if its version is at most `version`: a stale
    /// ack never clears a newer pending version.
    async fn ack(&self, uaid: &Uaid, channel: &ChannelId, version: u64) -> Result<(), StoreError>;

    /// Waits for in-flight writes and closes the database.
    async fn close(&self);
}

/// Opens the store the URL names, applying migrations.
pub async fn open(
    url: &str,
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            SqliteStore::open(url, config.sqlite_synchronous).await?,
        ))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}
