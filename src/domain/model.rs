//! The plain model types the parts exchange: apps, grants, devices, notifications, webhook
//! outcomes. Data only; the rules live in `presence`, the storage in `store`.

use super::ids::{AccountId, ChannelId, DeviceId};
use super::presence::{Policy, Status};

/// A notification waiting for a device, or being delivered to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUpdate {
    pub channel: ChannelId,
    /// Versions are non-negative and fit in 63 bits (both databases store a signed 64-bit integer).
    pub version: u64,
    pub data: Option<String>,
}

/// A device as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    pub device_id: DeviceId,
    pub name: String,
    pub status: Status,
    /// Unix seconds of the last status report or connection change.
    pub last_seen: Option<i64>,
    pub created_at: i64,
}

/// The device a PrID belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBinding {
    pub device: DeviceId,
    pub account: AccountId,
}

/// An account as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub id: AccountId,
    pub email: Option<String>,
    pub issuer: Option<String>,
    /// Best status over the devices.
    pub status: Status,
    /// What apps see (offline while appearing offline).
    pub visible: Status,
    pub policy: Policy,
    /// An operator disabled the account: it cannot sign in.
    pub disabled: bool,
}

/// A registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub app_id: String,
    pub owner: AccountId,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub webhook_url: Option<String>,
    /// How its webhook bodies are written.
    pub webhook_format: EventFormat,
    pub secret_hash: String,
    /// Sealed with the server key (see `vault`).
    pub webhook_secret_sealed: String,
    pub created_at: i64,
}

/// How an app's updates are written: the seed's `[uid, status]` pairs (the default), or
/// versioned objects `{uid, status, seq, time}` (`v1`; webhooks then use the Standard
/// Webhooks envelope).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    #[default]
    Pairs,
    V1,
}

impl EventFormat {
    /// `pairs` or `v1`; anything else is `None`.
    pub fn parse(text: &str) -> Option<EventFormat> {
        match text {
            "pairs" => Some(EventFormat::Pairs),
            "v1" => Some(EventFormat::V1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventFormat::Pairs => "pairs",
            EventFormat::V1 => "v1",
        }
    }
}

/// A user's grant to an app, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GrantInfo {
    pub app_id: String,
    pub app_name: String,
    /// The user's id at this app.
    #[serde(skip)]
    pub uid: String,
    pub enabled: bool,
    /// Away is shown to this app as online.
    pub coarse: bool,
    pub created_at: i64,
    /// When the app last received an update about this user.
    pub last_update_at: Option<i64>,
    /// The last status the app was told (`online`, `away`, `offline`), if any.
    pub last_status: Option<String>,
}

/// What a consent code was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub app_id: String,
    pub account: AccountId,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub expires_at: i64,
}

/// An entry appended to an app's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEvent {
    pub app_id: String,
    pub seq: u64,
}

/// One entry of an app's event log: `status` is `online`, `away`, `offline` or `revoked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub uid: String,
    pub status: String,
    pub at: i64,
}

/// A webhook's health, for its developer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookHealth {
    pub failing_since: Option<i64>,
    pub attempts: u32,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    /// Events not yet delivered.
    pub pending: u64,
}

/// One webhook attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub at: i64,
    pub message_id: String,
    pub events: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl DeliveryRecord {
    /// The endpoint answered a 2xx.
    pub fn delivered(&self) -> bool {
        self.status_code.is_some_and(|code| (200..300).contains(&code))
    }
}

/// A recorded webhook attempt, by its stable id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub id: u64,
    #[serde(flatten)]
    pub record: DeliveryRecord,
    pub outcome: AttemptOutcome,
}

/// Whether an attempt delivered its events (a 2xx) or not (any other answer, or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Failed,
}

/// How an attempt ended, for the webhook's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A 2xx: everything up to `cursor` is delivered.
    Delivered { cursor: u64 },
    /// Try again at `retry_at`, or never (`disable` says why).
    Failed { retry_at: i64, disable: Option<String> },
}

/// A live notification as a device receives it (`xpn` entries).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveNotification {
    pub id: String,
    /// The sending app's name.
    pub app: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Unix seconds.
    pub sent: i64,
}

/// Where a notification stands, for its app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct NotificationState {
    pub id: String,
    /// `queued`, `delivered`, `expired` or `cancelled`.
    #[schema(value_type = String, pattern = "^(queued|delivered|expired|cancelled)$")]
    pub status: &'static str,
    pub sent_at: i64,
    pub expires_at: i64,
    pub delivered_at: Option<i64>,
    pub delivered_to: u32,
}

/// The outcome of handing something to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on the device's live connection.
    Queued,
    /// The device is not connected here.
    NotConnected,
    /// The connection's queue is full (a slow reader); the caller falls back to storage.
    QueueFull,
}

/// Why a connection was told to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// A newer connection for the same UAID took its place.
    Replaced,
    /// Its device was removed (its PrID revoked).
    Revoked,
    /// This node lost its lease: other nodes have set its devices offline, so they must
    /// reconnect (here or elsewhere) to be seen again.
    LeaseLost,
    /// The node is stopping.
    ShuttingDown,
}

/// A user's visible status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub account: AccountId,
    pub status: Status,
    pub at: i64,
    /// The entries this change appended to apps' event logs (committed with it).
    pub events: Vec<AppEvent>,
}
