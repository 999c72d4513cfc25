//! The `Store` trait on SQL: each verb forwards to the area file that holds it.

use async_trait::async_trait;

use super::SqlStore;
use crate::domain::{
    AccountId, AccountSummary, App, AppEvent, AuthCode, ChannelId, DeliveryAttempt, DeliveryRecord,
    DeviceBinding, DeviceId, DeviceInfo, GrantInfo, LiveNotification, NotificationState, Policy,
    PresenceChange, PushUpdate, Status, Uaid, WebhookHealth, WebhookOutcome,
};
use crate::store::{AccountRecord, AppRecord, DisabledAccount, NotificationRecord, SessionRecord, TokenKind};
use crate::store::{
    AppChanges, Credentials, EventPage, Expired, Granted, Grantee, LogBounds, NewDevice, NewNotification,
    NotifiedDevice, Registration, RemovedDevice, Resend, Revoked, Saved, SentCount, Snapshot, Store,
    StoreError, UaidOwner, UidStatus, WebhookTarget,
};

#[async_trait]
impl Store for SqlStore {
    async fn check(&self) -> Result<(), StoreError> {
        SqlStore::check(self).await
    }

    async fn uaid_owner(&self, uaid: &Uaid) -> Result<UaidOwner, StoreError> {
        SqlStore::uaid_owner(self, uaid).await
    }

    async fn connect_uaid(&self, uaid: &Uaid, now: i64) -> Result<(), StoreError> {
        SqlStore::connect_uaid(self, uaid, now).await
    }

    async fn register_channel(
        &self,
        uaid: &Uaid,
        channel: &ChannelId,
        max_channels: u32,
        now: i64,
    ) -> Result<Registration, StoreError> {
        SqlStore::register_channel(self, uaid, channel, max_channels, now).await
    }

    async fn unregister_channel(&self, uaid: &Uaid, channel: &ChannelId) -> Result<(), StoreError> {
        SqlStore::unregister_channel(self, uaid, channel).await
    }

    async fn save_update(
        &self,
        uaid: &Uaid,
        update: &PushUpdate,
        max_stored: u32,
    ) -> Result<Saved, StoreError> {
        SqlStore::save_update(self, uaid, update, max_stored).await
    }

    async fn uaid_node(&self, uaid: &Uaid) -> Result<Option<String>, StoreError> {
        SqlStore::uaid_node(self, uaid).await
    }

    async fn pending_updates(&self, uaid: &Uaid) -> Result<Vec<PushUpdate>, StoreError> {
        SqlStore::pending_updates(self, uaid).await
    }

    async fn ack(&self, uaid: &Uaid, channel: &ChannelId, version: u64) -> Result<(), StoreError> {
        SqlStore::ack(self, uaid, channel, version).await
    }

    async fn create_local_account(
        &self,
        email: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<AccountId>, StoreError> {
        SqlStore::create_local_account(self, email, password_hash, now).await
    }

    async fn local_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        SqlStore::local_credentials(self, email).await
    }

    async fn oidc_account(&self, issuer: &str, subject: &str, now: i64) -> Result<AccountId, StoreError> {
        SqlStore::oidc_account(self, issuer, subject, now).await
    }

    async fn create_token(
        &self,
        hash: &str,
        account: AccountId,
        kind: TokenKind,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        SqlStore::create_token(self, hash, account, kind, now, expires_at).await
    }

    async fn token_account(&self, hash: &str, now: i64) -> Result<Option<AccountId>, StoreError> {
        SqlStore::token_account(self, hash, now).await
    }

    async fn revoke_token(&self, hash: &str) -> Result<(), StoreError> {
        SqlStore::revoke_token(self, hash).await
    }

    async fn account(&self, account: AccountId) -> Result<Option<AccountSummary>, StoreError> {
        SqlStore::account(self, account).await
    }

    async fn set_policy(
        &self,
        account: AccountId,
        policy: &Policy,
        now: i64,
    ) -> Result<Option<PresenceChange>, StoreError> {
        SqlStore::set_policy(self, account, policy, now).await
    }

    async fn create_device(&self, device: &NewDevice<'_>, now: i64) -> Result<bool, StoreError> {
        SqlStore::create_device(self, device, now).await
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<DeviceInfo>, StoreError> {
        SqlStore::devices(self, account).await
    }

    async fn delete_device(
        &self,
        account: AccountId,
        device: &DeviceId,
        now: i64,
    ) -> Result<Option<RemovedDevice>, StoreError> {
        SqlStore::delete_device(self, account, device, now).await
    }

    async fn device_by_prid(&self, prid_hash: &str) -> Result<Option<DeviceBinding>, StoreError> {
        SqlStore::device_by_prid(self, prid_hash).await
    }

    async fn bind_device(&self, device: &DeviceId, uaid: &Uaid, now: i64) -> Result<bool, StoreError> {
        SqlStore::bind_device(self, device, uaid, now).await
    }

    async fn set_device_statuses(
        &self,
        batch: &[(DeviceId, Status)],
        now: i64,
    ) -> Result<Vec<Option<PresenceChange>>, StoreError> {
        SqlStore::set_device_statuses(self, batch, now).await
    }

    async fn load_presence(
        &self,
        accounts: Option<&[AccountId]>,
        apps: &[String],
    ) -> Result<crate::store::PresenceLoad, StoreError> {
        self.load_roster(accounts, apps).await
    }

    async fn record_presence(&self, batch: &crate::store::PresenceBatch) -> Result<(), StoreError> {
        super::retrying(|| self.record_roster(batch)).await
    }

    async fn touch_device(&self, device: &DeviceId, now: i64) -> Result<(), StoreError> {
        SqlStore::touch_device(self, device, now).await
    }

    async fn reset_presence(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        SqlStore::reset_presence(self, now).await
    }

    async fn expire_stale(&self, cutoff: i64, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        SqlStore::expire_stale(self, cutoff, now).await
    }

    async fn live_nodes(&self, now: i64) -> Result<u64, StoreError> {
        SqlStore::live_nodes(self, now).await
    }

    async fn take_lease(&self, until: i64, now: i64) -> Result<(), StoreError> {
        SqlStore::take_lease(self, until, now).await
    }

    async fn renew_lease(&self, until: i64, now: i64) -> Result<bool, StoreError> {
        SqlStore::renew_lease(self, until, now).await
    }

    async fn expire_leases(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        SqlStore::expire_leases(self, now).await
    }

    async fn expire_orphans(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        SqlStore::expire_orphans(self, now).await
    }

    async fn end_lease(&self, now: i64) -> Result<Vec<PresenceChange>, StoreError> {
        SqlStore::end_lease(self, now).await
    }

    async fn create_app(&self, app: &App) -> Result<(), StoreError> {
        SqlStore::create_app(self, app).await
    }

    async fn app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        SqlStore::app(self, app_id).await
    }

    async fn app_by_secret(&self, secret_hash: &str, now: i64) -> Result<Option<App>, StoreError> {
        SqlStore::app_by_secret(self, secret_hash, now).await
    }

    async fn apps_of(&self, owner: AccountId) -> Result<Vec<App>, StoreError> {
        SqlStore::apps_of(self, owner).await
    }

    async fn update_app(
        &self,
        owner: AccountId,
        app_id: &str,
        changes: &AppChanges,
    ) -> Result<bool, StoreError> {
        SqlStore::update_app(self, owner, app_id, changes).await
    }

    async fn rotate_app_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_hash: &str,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError> {
        SqlStore::rotate_app_secret(self, owner, app_id, secret_hash, previous_until).await
    }

    async fn rotate_webhook_secret(
        &self,
        owner: AccountId,
        app_id: &str,
        secret_sealed: &str,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError> {
        SqlStore::rotate_webhook_secret(self, owner, app_id, secret_sealed, previous_until).await
    }

    async fn grant(
        &self,
        account: AccountId,
        app_id: &str,
        new_uid: &str,
        now: i64,
    ) -> Result<Granted, StoreError> {
        SqlStore::grant(self, account, app_id, new_uid, now).await
    }

    async fn grants_of(&self, account: AccountId) -> Result<Vec<GrantInfo>, StoreError> {
        SqlStore::grants_of(self, account).await
    }

    async fn grant_uid(&self, account: AccountId, app_id: &str) -> Result<Option<String>, StoreError> {
        SqlStore::grant_uid(self, account, app_id).await
    }

    async fn set_grant(
        &self,
        account: AccountId,
        app_id: &str,
        enabled: Option<bool>,
        coarse: Option<bool>,
        now: i64,
    ) -> Result<Option<Vec<AppEvent>>, StoreError> {
        SqlStore::set_grant(self, account, app_id, enabled, coarse, now).await
    }

    async fn revoke_grant(
        &self,
        account: AccountId,
        app_id: &str,
        now: i64,
    ) -> Result<Option<Revoked>, StoreError> {
        SqlStore::revoke_grant(self, account, app_id, now).await
    }

    async fn log_bounds(&self, app_id: &str) -> Result<Option<LogBounds>, StoreError> {
        SqlStore::log_bounds(self, app_id).await
    }

    async fn events_after(&self, app_id: &str, since: u64, limit: u32) -> Result<EventPage, StoreError> {
        SqlStore::events_after(self, app_id, since, limit).await
    }

    async fn snapshot(&self, app_id: &str) -> Result<Snapshot, StoreError> {
        SqlStore::snapshot(self, app_id).await
    }

    async fn presence_of(&self, app_id: &str, uids: &[String]) -> Result<Vec<UidStatus>, StoreError> {
        SqlStore::presence_of(self, app_id, uids).await
    }

    async fn purge_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        SqlStore::purge_events(self, cutoff).await
    }

    async fn due_webhooks(
        &self,
        now: i64,
        sent_before: i64,
        claim_until: i64,
    ) -> Result<Vec<WebhookTarget>, StoreError> {
        SqlStore::due_webhooks(self, now, sent_before, claim_until).await
    }

    async fn record_attempt(
        &self,
        app_id: &str,
        record: &DeliveryRecord,
        outcome: &WebhookOutcome,
    ) -> Result<(), StoreError> {
        SqlStore::record_attempt(self, app_id, record, outcome).await
    }

    async fn delivery_attempts(
        &self,
        app_id: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        SqlStore::delivery_attempts(self, app_id, before, limit).await
    }

    async fn resend_delivery(&self, app_id: &str, attempt: u64) -> Result<Resend, StoreError> {
        SqlStore::resend_delivery(self, app_id, attempt).await
    }

    async fn webhook_health(&self, app_id: &str) -> Result<Option<WebhookHealth>, StoreError> {
        SqlStore::webhook_health(self, app_id).await
    }

    async fn enable_webhook(&self, owner: AccountId, app_id: &str) -> Result<bool, StoreError> {
        SqlStore::enable_webhook(self, owner, app_id).await
    }

    async fn webhook_allow(&self, app_id: &str) -> Result<Option<String>, StoreError> {
        SqlStore::webhook_allow(self, app_id).await
    }

    async fn set_webhook_allow(&self, app_id: &str, ranges: &str) -> Result<bool, StoreError> {
        SqlStore::set_webhook_allow(self, app_id, ranges).await
    }

    async fn create_code(&self, hash: &str, code: &AuthCode) -> Result<(), StoreError> {
        SqlStore::create_code(self, hash, code).await
    }

    async fn take_code(&self, hash: &str) -> Result<Option<AuthCode>, StoreError> {
        SqlStore::take_code(self, hash).await
    }

    async fn grantee(&self, app_id: &str, uid: &str) -> Result<Option<Grantee>, StoreError> {
        SqlStore::grantee(self, app_id, uid).await
    }

    async fn create_notification(
        &self,
        notification: &NewNotification,
        max_per_device: u32,
    ) -> Result<Vec<NotifiedDevice>, StoreError> {
        SqlStore::create_notification(self, notification, max_per_device).await
    }

    async fn mark_delivered(&self, device: &DeviceId, ids: &[String], now: i64) -> Result<(), StoreError> {
        SqlStore::mark_delivered(self, device, ids, now).await
    }

    async fn pending_notifications(
        &self,
        device: &DeviceId,
        now: i64,
    ) -> Result<Vec<LiveNotification>, StoreError> {
        SqlStore::pending_notifications(self, device, now).await
    }

    async fn ack_notifications(&self, device: &DeviceId, ids: &[String]) -> Result<(), StoreError> {
        SqlStore::ack_notifications(self, device, ids).await
    }

    async fn notification_state(
        &self,
        app_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<NotificationState>, StoreError> {
        SqlStore::notification_state(self, app_id, id, now).await
    }

    async fn notifications_sent(&self, account: AccountId, since: i64) -> Result<Vec<SentCount>, StoreError> {
        SqlStore::notifications_sent(self, account, since).await
    }

    async fn sessions(&self, account: AccountId, now: i64) -> Result<Vec<SessionRecord>, StoreError> {
        SqlStore::sessions(self, account, now).await
    }

    async fn revoke_account_token(&self, account: AccountId, hash: &str) -> Result<bool, StoreError> {
        SqlStore::revoke_account_token(self, account, hash).await
    }

    async fn set_password(
        &self,
        account: AccountId,
        password_hash: &str,
        keep_token: Option<&str>,
    ) -> Result<u64, StoreError> {
        SqlStore::set_password(self, account, password_hash, keep_token).await
    }

    async fn notifications_for(&self, account: AccountId) -> Result<Vec<NotificationRecord>, StoreError> {
        SqlStore::notifications_for(self, account).await
    }

    async fn account_records(&self, account: Option<AccountId>) -> Result<Vec<AccountRecord>, StoreError> {
        SqlStore::account_records(self, account).await
    }

    async fn set_account_disabled(
        &self,
        account: AccountId,
        disabled: bool,
        now: i64,
    ) -> Result<Option<DisabledAccount>, StoreError> {
        SqlStore::set_account_disabled(self, account, disabled, now).await
    }

    async fn delete_account(&self, account: AccountId, uaids: &[Uaid]) -> Result<bool, StoreError> {
        SqlStore::delete_account(self, account, uaids).await
    }

    async fn app_records(&self, app_id: Option<&str>) -> Result<Vec<AppRecord>, StoreError> {
        SqlStore::app_records(self, app_id).await
    }

    async fn set_app_disabled(&self, app_id: &str, disabled: bool, now: i64) -> Result<bool, StoreError> {
        SqlStore::set_app_disabled(self, app_id, disabled, now).await
    }

    async fn app_disabled(&self, app_id: &str) -> Result<bool, StoreError> {
        SqlStore::app_disabled(self, app_id).await
    }

    async fn delete_app(&self, app_id: &str) -> Result<Option<Vec<AccountId>>, StoreError> {
        SqlStore::delete_app(self, app_id).await
    }

    async fn uaids_closed(&self, uaids: &[Uaid], now: i64) -> Result<(), StoreError> {
        SqlStore::uaids_closed(self, uaids, now).await
    }

    async fn purge_expired(
        &self,
        now: i64,
        uaids_seen_before: i64,
        notifications_expired_before: i64,
    ) -> Result<Expired, StoreError> {
        SqlStore::purge_expired(self, now, uaids_seen_before, notifications_expired_before).await
    }

    async fn close(&self) {
        SqlStore::close(self).await
    }
}
