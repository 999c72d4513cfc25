//! The store: everything Presence must remember across restarts, behind one trait in domain
//! verbs. SQLite is the embedded default and PostgreSQL serves a cluster; the database URL scheme
//! picks the backend, so callers never know which one they talk to.

use async_trait::async_trait;

use crate::domain::Status;
use crate::domain::{
    AccountId, AccountSummary, App, AppEvent, AuthCode, ChannelId, DeliveryAttempt, DeliveryRecord,
    DeviceBinding, DeviceId, DeviceInfo, GrantInfo, LiveNotification, NotificationState, Policy,
    PresenceChange, PushUpdate, Uaid, WebhookHealth, WebhookOutcome,
};

mod sql;
mod types;

pub use sql::{Backend, SqlStore};
pub use types::{AccountRecord, AppRecord, DisabledAccount, NotificationRecord, SessionRecord, TokenKind};
pub use types::{
    AppChanges, Credentials, EventPage, Expired, Granted, Grantee, LogBounds, NewDevice, NewNotification,
    NotifiedDevice, PresenceBatch, PresenceLoad, Registration, RemovedDevice, Resend, Revoked, Saved,
    SentCount, Snapshot, UaidOwner, UidStatus, WebhookTarget,
};

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
    /// A write panicked (a bug); the batch it held was not recorded.
    #[error("the write panicked")]
    Panicked,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database can be read; used by `/healthz`.
    async fn check(&self) -> Result<(), StoreError>;

    /// Whether the UAID is known, and which device holds it; a known UAID's reconnect keeps its
    /// channels.
    async fn uaid_owner(&self, uaid: &Uaid) -> Result<UaidOwner, StoreError>;

    /// Records a new UAID, or notes that a known one connected (to this node).
    async fn connect_uaid(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError>;

    /// The node the UAID last connected to.
    async fn uaid_node(&self, uaid: &Uaid) -> Result<Option<String>, StoreError>;

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

    // Accounts and tokens.

    /// Creates a local account; `None` if the email is taken.
    async fn create_local_account(
        &self,
        email: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<AccountId>, StoreError>;

    /// The account and password hash for a local email.
    async fn local_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError>;

    /// The account of an OpenID Connect subject, created on first use.
    async fn oidc_account(&self, issuer: &str, subject: &str, now: i64) -> Result<AccountId, StoreError>;

    async fn create_token(
        &self,
        hash: &str,
        account: AccountId,
        kind: TokenKind,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// The account of an unexpired token (none for a disabled account).
    async fn token_account(&self, hash: &str, now: i64) -> Result<Option<AccountId>, StoreError>;

    async fn revoke_token(&self, hash: &str) -> Result<(), StoreError>;

    async fn account(&self, account: AccountId) -> Result<Option<AccountSummary>, StoreError>;

    /// Sets the policy; returns the change of visible status it caused, if any.
    async fn set_policy(
        &self,
        account: AccountId,
        policy: &Policy,
        now: i64,
    ) -> Result<Option<PresenceChange>, StoreError>;

    // Devices and presence.

    /// Creates the device; `false` (and nothing created) when its UAID belongs to another device.
    async fn create_device(&self, device: &NewDevice<'_>, now: i64) -> Result<bool, StoreError>;

    async fn devices(&self, account: AccountId) -> Result<Vec<DeviceInfo>, StoreError>;

    /// Removes one of the account's devices (revoking its PrID). `None` if the account has no
    /// such device; otherwise the UAID it was bound to and the change of status, if any.
    async fn delete_device(
        &self,
        account: AccountId,
        device: &DeviceId,
        now: i64,
    ) -> Result<Option<RemovedDevice>, StoreError>;

    async fn device_by_prid(&self, prid_hash: &str) -> Result<Option<DeviceBinding>, StoreError>;

    /// Ties the device to the UAID it connected with (replacing any earlier UAID), on this node:
    /// from now on only this node sets the device's status. `false` (and nothing changed) when
    /// another device holds the UAID.
    async fn bind_device(&self, device: &DeviceId, uaid: &Uaid, now: i64) -> Result<bool, StoreError>;

    /// Records devices' statuses and recomputes their users', in one transaction (a group
    /// commit); returns, per entry, the change of the user's visible status, if any. A device
    /// bound to another node since is left as that node says.
    async fn set_device_statuses(
        &self,
        batch: &[(DeviceId, Status)],
        now: i64,
    ) -> Result<Vec<Option<PresenceChange>>, StoreError>;

    /// Records a device's status and recomputes its user's, in one transaction; returns the
    /// change of the user's visible status, if any.
    async fn set_device_status(
        &self,
        device: &DeviceId,
        status: Status,
        now: i64,
    ) -> Result<Option<PresenceChange>, StoreError> {
        let mut changes = self.set_device_statuses(&[(device.clone(), status)], now).await?;
        Ok(changes.pop().flatten())
    }

    /// Notes that a device is not silent: its status stays, its silence clock restarts.
    async fn touch_device(&self, device: &DeviceId, now: i64) -> Result<(), StoreError>;

    /// Every device offline (a lone node starting with no knowledge of who is connected).
    async fn reset_presence(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError>;

    // Nodes.

    /// How many nodes hold a lease that has not run out (running, or died less than a lease ago).
    async fn live_nodes(&self, now: i64) -> Result<u64, StoreError>;

    /// Takes a lease for this node until `until` (at start, or after losing it).
    async fn take_lease(&self, until: i64, now: i64) -> Result<(), StoreError>;

    /// Extends this node's lease to `until`; `false` if it had run out (another node may have
    /// ended it and set this node's devices offline).
    async fn renew_lease(&self, until: i64, now: i64) -> Result<bool, StoreError>;

    /// Ends the leases that ran out before `now`: their nodes' devices become offline.
    async fn expire_leases(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError>;

    /// Devices shown online on a node that holds no lease become offline (a node starting in a
    /// cluster clears whatever an earlier failure left; the periodic `expire_leases` is cheaper).
    async fn expire_orphans(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError>;

    /// Ends this node's lease (a clean shutdown): its devices become offline.
    async fn end_lease(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError>;

    /// Devices not offline whose last status report is older than `cutoff` become offline.
    async fn expire_stale(&self, cutoff: i64, now: i64) -> Result<Vec<PresenceChange>, StoreError>;

    // Apps, grants and consent codes.

    async fn create_app(&self, app: &App) -> Result<(), StoreError>;

    async fn app(&self, app_id: &str) -> Result<Option<App>, StoreError>;

    /// The app whose current secret has this digest, or whose previous one has it and is still
    /// valid at `now` (a rotation's overlap).
    async fn app_by_secret(&self, secret_hash: &str, now: i64) -> Result<Option<App>, StoreError>;

    async fn apps_of(&self, owner: AccountId) -> Result<Vec<App>, StoreError>;

    /// Applies changes to an app of this owner; `false` if the owner has no such app.
    async fn update_app(
        &self,
        owner: AccountId,
        app_id: &str,
        changes: &AppChanges,
    ) -> Result<bool, StoreError>;

    /// Replaces the app's secret; the one it replaces keeps working until `previous_until`
    /// (`None`: it stops at once), and any earlier previous secret stops. `false` if the owner
    /// has no such app.
    async fn rotate_app_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_hash: &str,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Replaces the app's webhook secret (sealed). With `previous_until`, the replaced one is
    /// kept and still signs until then; without, it is forgotten. `false` if the owner has no
    /// such app.
    async fn rotate_webhook_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_sealed: &str,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Grants the app access (enabled), keeping the uid of an existing grant; returns the uid
    /// and the event telling the app the user's current status, if it did not know it.
    async fn grant(
        &self,
        account: AccountId,
        app_id: &str,
        new_uid: &str,
        now: i64,
    ) -> Result<Granted, StoreError>;

    async fn grants_of(&self, account: AccountId) -> Result<Vec<GrantInfo>, StoreError>;

    /// The uid of an existing grant (enabled or not).
    async fn grant_uid(&self, account: AccountId, app_id: &str) -> Result<Option<String>, StoreError>;

    /// Pauses or resumes a grant, and/or sets its coarse mode; `None` if there is no grant.
    /// Pausing drops the user's undelivered events for the app; resuming (or a coarse change)
    /// tells the app the user's current status.
    async fn set_grant(
        &self,
        account: AccountId,
        app_id: &str,
        enabled: Option<bool>,
        coarse: Option<bool>,
        now: i64,
    ) -> Result<Option<Vec<AppEvent>>, StoreError>;

    /// Removes the grant, drops the user's events for the app and appends one `revoked`;
    /// returns the uid and that event, or `None` if there was no grant.
    async fn revoke_grant(
        &self,
        account: AccountId,
        app_id: &str,
        now: i64,
    ) -> Result<Option<Revoked>, StoreError>;

    // The event log and delivery.

    async fn log_bounds(&self, app_id: &str) -> Result<Option<LogBounds>, StoreError>;

    /// Up to `limit` deliverable events after `since`: events of paused or revoked grants are
    /// withheld (except the `revoked` itself).
    async fn events_after(&self, app_id: &str, since: u64, limit: u32) -> Result<EventPage, StoreError>;

    /// Every enabled grant's current status as the app sees it, and the seq it is current at.
    async fn snapshot(&self, app_id: &str) -> Result<Snapshot, StoreError>;

    /// The current status of these uids, for those with an enabled grant to the app.
    async fn presence_of(&self, app_id: &str, uids: &[String]) -> Result<Vec<UidStatus>, StoreError>;

    /// Removes events older than `cutoff`; returns how many.
    async fn purge_events(&self, cutoff: i64) -> Result<u64, StoreError>;

    /// Webhooks with undelivered events, whose next attempt is due and that last sent at or
    /// before `sent_before`, and that no other node dispatches: this node claims them until
    /// `claim_until` (one node at a time sends an app's webhooks; another takes over when the
    /// claim runs out or the claiming node's lease has ended).
    async fn due_webhooks(
        &self,
        now: i64,
        sent_before: i64,
        claim_until: i64,
    ) -> Result<Vec<WebhookTarget>, StoreError>;

    async fn record_attempt(
        &self,
        app_id: &str,
        record: &DeliveryRecord,
        outcome: &WebhookOutcome,
    ) -> Result<(), StoreError>;

    /// Up to `limit` of the app's recorded webhook attempts, newest first, older than the
    /// attempt `before` when given.
    async fn delivery_attempts(
        &self,
        app_id: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeliveryAttempt>, StoreError>;

    /// Asks for the app's pending events to be sent again at once, skipping the backoff, when
    /// `attempt` is one of its failed attempts; a disabled webhook is enabled again.
    async fn resend_delivery(&self, app_id: &str, attempt: u64) -> Result<Resend, StoreError>;

    async fn webhook_health(&self, app_id: &str) -> Result<Option<WebhookHealth>, StoreError>;

    /// Re-enables a disabled webhook of this owner; `false` if there is no such app.
    async fn enable_webhook(&self, owner: AccountId, app_id: &str) -> Result<bool, StoreError>;

    /// The non-public ranges the app's webhook may reach besides everyone's (`None`: no such
    /// app).
    async fn webhook_allow(&self, app_id: &str) -> Result<Option<String>, StoreError>;

    /// Sets them (the operator's verb); `false` when there is no such app.
    async fn set_webhook_allow(&self, app_id: &str, ranges: &str) -> Result<bool, StoreError>;

    async fn create_code(&self, hash: &str, code: &AuthCode) -> Result<(), StoreError>;

    /// Removes and returns the code: a code works once.
    async fn take_code(&self, hash: &str) -> Result<Option<AuthCode>, StoreError>;

    // Live notifications.

    /// The account behind an enabled grant's uid, and the status its app was last told.
    async fn grantee(&self, app_id: &str, uid: &str) -> Result<Option<Grantee>, StoreError>;

    /// Stores a notification for every device of its account, keeping at most
    /// `max_per_device` undelivered per device (the oldest go first); returns the devices and
    /// the UAIDs they last connected with.
    async fn create_notification(
        &self,
        notification: &NewNotification,
        max_per_device: u32,
    ) -> Result<Vec<NotifiedDevice>, StoreError>;

    /// Notes that the device was sent these notifications.
    async fn mark_delivered(&self, device: &DeviceId, ids: &[String], now: i64) -> Result<(), StoreError>;

    /// The device's unacked, unexpired, uncancelled notifications, oldest first.
    async fn pending_notifications(
        &self,
        device: &DeviceId,
        now: i64,
    ) -> Result<Vec<LiveNotification>, StoreError>;

    /// The device has these; they are never sent to it again.
    async fn ack_notifications(&self, device: &DeviceId, ids: &[String]) -> Result<(), StoreError>;

    async fn notification_state(
        &self,
        app_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<NotificationState>, StoreError>;

    /// How many notifications each app sent the account since `since`.
    async fn notifications_sent(&self, account: AccountId, since: i64) -> Result<Vec<SentCount>, StoreError>;

    // The roster: a lone node's presence in memory.

    /// The presence of these accounts (every account with `None`) and the last event seq of
    /// the apps they granted and of `apps` (every app with `None`).
    async fn load_presence(
        &self,
        accounts: Option<&[AccountId]>,
        apps: &[String],
    ) -> Result<PresenceLoad, StoreError>;

    /// Records a batch the roster applied, in one transaction.
    async fn record_presence(&self, batch: &PresenceBatch) -> Result<(), StoreError>;

    // The life of accounts and apps: sessions, passwords, export, disabling, deleting.

    /// The account's unexpired sessions and tokens.
    async fn sessions(&self, account: AccountId, now: i64) -> Result<Vec<SessionRecord>, StoreError>;

    /// Ends one of the account's tokens; `false` if it has no such token.
    async fn revoke_account_token(&self, account: AccountId, hash: &str) -> Result<bool, StoreError>;

    /// Replaces the password hash and ends every token but `keep_token` (by digest); returns
    /// how many ended.
    async fn set_password(
        &self,
        account: AccountId,
        password_hash: &str,
        keep_token: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// Every notification apps sent the account that is still kept.
    async fn notifications_for(&self, account: AccountId) -> Result<Vec<NotificationRecord>, StoreError>;

    /// Every account (`None`) or one, for the operator and the user's export.
    async fn account_records(&self, account: Option<AccountId>) -> Result<Vec<AccountRecord>, StoreError>;

    /// Disables (signing it out everywhere, its devices offline) or re-enables an account;
    /// `None` if there is no such account.
    async fn set_account_disabled(
        &self,
        account: AccountId,
        disabled: bool,
        now: i64,
    ) -> Result<Option<DisabledAccount>, StoreError>;

    /// Deletes the account and everything that hangs from it, and these UAIDs' records;
    /// `false` if there was no such account.
    async fn delete_account(&self, account: AccountId, uaids: &[Uaid]) -> Result<bool, StoreError>;

    /// Every app (`None`) or one, for the operator.
    async fn app_records(&self, app_id: Option<&str>) -> Result<Vec<AppRecord>, StoreError>;

    /// `false` if there is no such app.
    async fn set_app_disabled(&self, app_id: &str, disabled: bool, now: i64) -> Result<bool, StoreError>;

    /// Whether an operator disabled the app.
    async fn app_disabled(&self, app_id: &str) -> Result<bool, StoreError>;

    /// Deletes the app with its grants and logs; returns the accounts that had granted it, or
    /// `None` if there was no such app.
    async fn delete_app(&self, app_id: &str) -> Result<Option<Vec<AccountId>>, StoreError>;

    // Expiry.

    /// These UAIDs' connections on this node closed (they count as seen now): one write for
    /// all of them.
    async fn uaids_closed(&self, uaids: &[Uaid], now: i64) -> Result<(), StoreError>;

    /// Removes UAIDs (with their channels) that no device is bound to, that are connected
    /// nowhere and were last seen before `uaids_seen_before`; tokens, consent codes and apps'
    /// previous secrets expired by `now`; notifications that expired before `notifications_expired_before`.
    async fn purge_expired(
        &self,
        now: i64,
        uaids_seen_before: i64,
        notifications_expired_before: i64,
    ) -> Result<Expired, StoreError>;

    /// Waits for in-flight writes and closes the database.
    async fn close(&self);
}

/// Opens the store the URL names (`sqlite:` or `postgres:`, checked by the configuration),
/// applying migrations; `node` is this node's id in the cluster.
pub async fn open(
    url: &str,
    config: &crate::config::Config,
    node: &str,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(std::sync::Arc::new(SqlStore::open(url, config, node).await?))
}
