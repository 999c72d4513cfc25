//! What the store's verbs take and give back, beyond the domain's own types.

use crate::domain::{AccountId, AppEvent, DeviceId, Event, PresenceChange, Status, Uaid};

/// A new device's record; the PrID itself is never stored.
#[derive(Debug, Clone)]
pub struct NewDevice<'a> {
    pub id: &'a DeviceId,
    pub account: AccountId,
    pub name: &'a str,
    pub prid_hash: &'a str,
    pub uaid: Option<Uaid>,
}

/// Changes to an app; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppChanges {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    /// `Some(None)` removes the webhook.
    pub webhook_url: Option<Option<String>>,
    pub webhook_format: Option<crate::domain::EventFormat>,
}

/// Deliverable events after a cursor; `scanned_to` is where the next read starts (events
/// withheld for privacy are skipped, not returned).
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub scanned_to: u64,
    /// Nothing after `scanned_to` existed when the page was read.
    pub complete: bool,
}

/// An app's log: the newest seq, and the highest one removed by retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub last_seq: u64,
    pub purged_seq: u64,
}

/// An app whose webhook has events waiting and is due for an attempt.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub app_id: String,
    pub url: String,
    pub secret_sealed: String,
    /// The secret a rotation replaced, while it still signs (until `previous_until`).
    pub previous_secret_sealed: Option<String>,
    pub previous_until: Option<i64>,
    pub format: crate::domain::EventFormat,
    pub cursor: u64,
    pub attempts: u32,
    pub failing_since: Option<i64>,
    /// The non-public ranges this app's webhook may reach besides everyone's (as stored).
    pub allow: String,
}

/// A notification to store.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: String,
    pub app_id: String,
    pub account: AccountId,
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    pub sent_at: i64,
    pub expires_at: i64,
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

/// A local account's sign-in record.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub account: AccountId,
    pub password_hash: String,
    /// An operator disabled the account: it cannot sign in.
    pub disabled: bool,
}

/// A device that was removed.
#[derive(Debug, Clone)]
pub struct RemovedDevice {
    /// The UAID it was bound to: its socket, if any, must close.
    pub uaid: Option<Uaid>,
    /// The change of its user's visible status, if any.
    pub change: Option<PresenceChange>,
}

/// A grant given (or re-enabled).
#[derive(Debug, Clone)]
pub struct Granted {
    /// The user's uid for the app (an existing grant keeps its own).
    pub uid: String,
    /// The event telling the app the user's current status, if it did not know it.
    pub events: Vec<AppEvent>,
}

/// A grant removed.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub uid: String,
    /// The one `revoked` event the app hears.
    pub events: Vec<AppEvent>,
}

/// A user's status as one app sees it (`online`, `away`, `offline`), by the user's uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidStatus {
    pub uid: String,
    pub status: String,
    /// When the app was last told this status (Unix seconds), if it was.
    pub at: Option<i64>,
}

/// Every enabled grant's status as the app sees it, current at `seq`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entries: Vec<UidStatus>,
    pub seq: u64,
}

/// Whose a UAID is: a UAID belongs to at most one device, of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaidOwner {
    /// Never seen (or forgotten): a hello gets a fresh one instead.
    Unknown,
    /// Known, and no device holds it (a plain SimplePush connection).
    Unbound,
    /// The UAID of this device.
    Device(DeviceId),
}

/// The user behind an enabled grant, and what the grant's app sees of them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grantee {
    pub account: AccountId,
    pub app_view: Status,
}

/// A device a notification was queued for, and the UAID it last connected with.
#[derive(Debug, Clone)]
pub struct NotifiedDevice {
    pub device: DeviceId,
    pub uaid: Option<Uaid>,
}

/// How many notifications one app sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCount {
    pub app_id: String,
    pub count: u32,
}

/// Every loaded account's presence, and the last event seq of the apps concerned.
#[derive(Debug, Clone, Default)]
pub struct PresenceLoad {
    pub accounts: Vec<crate::domain::roster::AccountPresence>,
    pub seqs: Vec<(String, u64)>,
}

impl PresenceLoad {
    /// Puts what was read into the roster: each account replaces what it knew of it.
    pub fn load_into(self, roster: &mut crate::domain::roster::Roster) {
        for account in self.accounts {
            roster.load(account);
        }
        for (app_id, seq) in self.seqs {
            roster.load_seq(&app_id, seq);
        }
    }
}

/// What a lone node's roster applied, to record: one journal entry, or several merged for one
/// transaction. Each row carries the time of its change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceBatch {
    /// Devices' statuses and when they were reported (their silence clock restarts too); the
    /// last row of a device wins.
    pub devices: Vec<(crate::domain::DeviceId, crate::domain::Status, i64)>,
    /// Accounts' new best and visible status; the last row of an account wins.
    pub accounts: Vec<(crate::domain::AccountId, crate::domain::Status, crate::domain::Status)>,
    /// Events appended, in seq order per app, with their time; each also records what its
    /// grant's app was told.
    pub events: Vec<(crate::domain::roster::NewEvent, i64)>,
}

impl PresenceBatch {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.accounts.is_empty() && self.events.is_empty()
    }

    /// Adds the rows of what the roster applied for one report, at `at`.
    pub fn add(&mut self, applied: &crate::domain::roster::Applied, at: i64) {
        self.devices.push((applied.device.clone(), applied.status, at));
        if let Some((best, shown)) = applied.totals {
            self.accounts.push((applied.account, best, shown));
        }
        self.events.extend(applied.events.iter().map(|event| (event.clone(), at)));
    }

    /// Appends a later batch: recording the two as one gives the same rows as one after the other.
    pub fn absorb(&mut self, later: PresenceBatch) {
        self.devices.extend(later.devices);
        self.accounts.extend(later.accounts);
        self.events.extend(later.events);
    }
}

/// Whether a bearer token is a browser's session (the cookie) or a token from `POST /v1/tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Browser,
    Api,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Browser => "browser",
            TokenKind::Api => "api",
        }
    }

    pub fn parse(text: &str) -> TokenKind {
        if text == "browser" {
            TokenKind::Browser
        } else {
            TokenKind::Api
        }
    }
}

/// A signed-in session or token of an account, by the digest it is stored under.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub hash: String,
    pub kind: TokenKind,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An account as the operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountRecord {
    pub id: AccountId,
    pub email: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub devices: u64,
    pub apps: u64,
}

/// An app as the operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppRecord {
    pub app_id: String,
    pub name: String,
    pub owner: AccountId,
    pub owner_email: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// Users who granted it (enabled or paused).
    pub grants: u64,
}

/// What disabling an account ended: its devices' connections, and the change of status.
#[derive(Debug, Clone, Default)]
pub struct DisabledAccount {
    pub devices: Vec<(DeviceId, Option<Uaid>)>,
    pub change: Option<PresenceChange>,
}

/// A notification sent to a user, as their data export shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NotificationRecord {
    pub id: String,
    pub app_id: String,
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    pub sent_at: i64,
    pub expires_at: i64,
    pub delivered_at: Option<i64>,
    pub cancelled_at: Option<i64>,
}

/// What one expiry sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub uaids: u64,
    pub tokens: u64,
    pub codes: u64,
    pub notifications: u64,
    /// Apps' previous secrets whose overlap ended.
    pub previous_secrets: u64,
}

/// What asking to resend a webhook attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// The app's pending events go out at the next scan; `reenabled` when the webhook had been
    /// disabled.
    Scheduled { reenabled: bool },
    /// The attempt succeeded: there is nothing to resend.
    NotFailed,
    /// The attempt failed, but no event is pending any more (a later attempt delivered them,
    /// or the webhook was removed).
    NothingPending,
    /// The app has no such attempt.
    Unknown,
}
