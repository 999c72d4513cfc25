//! Operations: what users, devices and apps can do, each written once. An operation checks its
//! input, writes through the store, and announces what changed exactly once (on the bus, or to
//! a device through `DeviceLink`). The JSON API, the web pages, the CLI and the bench all call
//! these; none of them re-implements one. Errors are `ops::Error`, which the HTTP layer maps to
//! status codes.

pub mod accounts;
pub mod apps;
pub mod cluster;
pub mod deliveries;
pub mod devices;
pub mod expiry;
pub mod grants;
pub mod lifecycle;
pub mod notifications;
pub mod presence;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, DeviceMessage};
use crate::config::Config;
use crate::domain::{Delivery, Eviction, Uaid};
use crate::egress::Egress;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError};
use crate::vault::Vault;

pub use presence::Engine;

/// Where operations reach devices: the gateway's connections on this node, and through the bus
/// the connections of other nodes. Implemented by the gateway; operations never see a socket.
pub trait DeviceLink: Send + Sync + 'static {
    /// Hands a message to the UAID's connection, here or (through the bus) on another node;
    /// returns what happened here.
    fn deliver(&self, uaid: Uaid, message: DeviceMessage) -> Delivery;
    /// Tells every connection on this node to close.
    fn evict_all(&self, reason: Eviction);
    /// Asks every connection on this node to read what is stored for it again.
    fn catch_up_all(&self);
}

/// The handles every operation works with, cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub config: Arc<Config>,
    /// This node's id (new at every start), for its lease and the signals it sends.
    pub node: Arc<str>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<Engine>,
    pub devices: Arc<dyn DeviceLink>,
    /// Where webhooks may connect.
    pub egress: Arc<Egress>,
    /// Notification rates, per app and per user.
    pub notify_app_limit: Arc<RateLimiter>,
    pub notify_user_limit: Arc<RateLimiter>,
    /// Password attempts, per email.
    pub login_limit: Arc<RateLimiter>,
    /// Password attempts and sign-ups, per client address.
    pub address_limit: Arc<RateLimiter>,
    /// Password hashes computed at once (`password_hashes_at_once`).
    pub hashing: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Seals webhook signing secrets at rest.
    pub webhook_vault: Arc<Vault>,
    /// Base of push endpoint URLs, without a trailing slash.
    pub public_url: Arc<str>,
    /// Fires when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Connections and deliveries in flight, awaited on shutdown.
    pub tracker: TaskTracker,
}

impl Core {
    /// Whether other nodes may exist: a bus between nodes is configured.
    pub fn is_clustered(&self) -> bool {
        !self.config.bus_url.is_empty()
    }
}

/// Why an operation did not happen. `code` values are stable: the API shows them to clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule.
    #[error("{detail}")]
    Invalid { code: &'static str, detail: String },
    /// Nothing of that name belongs to the caller.
    #[error("{0}")]
    NotFound(&'static str),
    /// The caller's credentials are wrong.
    #[error("{detail}")]
    Unauthorized { code: &'static str, detail: String },
    /// The operator does not allow it here.
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// The request conflicts with what exists (a limit reached).
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// The request is larger than allowed.
    #[error("{detail}")]
    TooLarge { code: &'static str, detail: String },
    /// Too many requests: try again after `retry_after`.
    #[error("{detail}")]
    RateLimited { code: &'static str, detail: String, retry_after: Duration },
    /// A part the operation needs is not available right now.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

impl Error {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Error {
        Error::Invalid { code, detail: detail.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
