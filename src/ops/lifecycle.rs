//! The life of accounts and apps after they are made: what a user can take with them (the
//! export) and how they leave (deletion), and what an operator can do (list, disable, delete).
//! Each is composed of the other operations, so every app hears through the usual event log.

use serde::Serialize;

use super::accounts::{self, Session};
use super::presence::Touched;
use super::{devices, grants, Core, Error, Result};
use crate::bus::{DeviceMessage, Signal};
use crate::clock::unix_now;
use crate::domain::{AccountId, DeviceInfo, Eviction, GrantInfo, Policy};
use crate::store::{AccountRecord, AppRecord, NotificationRecord};

/// Everything Presence holds about a user, secrets left out (no password hash, no PrIDs, no
/// tokens: sessions appear by their ids).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Export {
    pub account: ExportedAccount,
    pub devices: Vec<DeviceInfo>,
    pub grants: Vec<ExportedGrant>,
    pub apps: Vec<ExportedApp>,
    pub notifications: Vec<NotificationRecord>,
    pub sessions: Vec<Session>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedAccount {
    pub email: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub created_at: i64,
    pub status: crate::domain::Status,
    pub visible_status: crate::domain::Status,
    pub policy: Policy,
}

/// A grant with the uid the app knows the user by (the user's own data).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedGrant {
    pub uid: String,
    #[serde(flatten)]
    pub grant: GrantInfo,
}

/// An app the user registered as a developer (its secrets are not exported).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedApp {
    pub app_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub webhook_url: Option<String>,
    pub created_at: i64,
}

/// The user's data, as `GET /v1/me/export` gives it.
pub async fn export(core: &Core, account: AccountId, current_token: Option<&str>) -> Result<Export> {
    let not_found = || Error::NotFound("no such account");
    let summary = core.store.account(account).await?.ok_or_else(not_found)?;
    let record = core.store.account_records(Some(account)).await?.pop().ok_or_else(not_found)?;
    let grants = core.store.grants_of(account).await?;
    Ok(Export {
        account: ExportedAccount {
            email: summary.email,
            issuer: summary.issuer,
            subject: record.subject,
            created_at: record.created_at,
            status: summary.status,
            visible_status: summary.visible,
            policy: summary.policy,
        },
        devices: core.store.devices(account).await?,
        grants: grants.into_iter().map(|grant| ExportedGrant { uid: grant.uid.clone(), grant }).collect(),
        apps: core
            .store
            .apps_of(account)
            .await?
            .into_iter()
            .map(|app| ExportedApp {
                app_id: app.app_id,
                name: app.name,
                redirect_uris: app.redirect_uris,
                webhook_url: app.webhook_url,
                created_at: app.created_at,
            })
            .collect(),
        notifications: core.store.notifications_for(account).await?,
        sessions: accounts::sessions(core, account, current_token).await?,
    })
}

/// Deletes an account and everything it holds. Its devices are removed (their sockets closed;
/// apps that saw the user online or away get `offline` in their log, which a reader that comes
/// after the revoke no longer sees), every grant is revoked (each app told `revoked`), the apps
/// it registered are deleted, and then the account itself with its tokens, notifications and
/// sessions. An app's log keeps the `revoked` entry (it names only the uid) until
/// `event_retention` removes it, so the app can still be told.
pub async fn delete_account(core: &Core, account: AccountId) -> Result<()> {
    core.store.account(account).await?.ok_or(Error::NotFound("no such account"))?;
    let mut uaids = Vec::new();
    for device in core.store.devices(account).await? {
        match devices::remove_device(core, account, &device.device_id).await {
            Ok(uaid) => uaids.extend(uaid),
            Err(Error::NotFound(_)) => {} // removed meanwhile
            Err(error) => return Err(error),
        }
    }
    for grant in core.store.grants_of(account).await? {
        match grants::revoke(core, account, &grant.app_id).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    for app in core.store.apps_of(account).await? {
        match delete_app(core, &app.app_id).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    let write = core.store.delete_account(account, &uaids);
    if !core.presence.write(|_| Touched::account(account), write).await? {
        return Err(Error::NotFound("no such account"));
    }
    tracing::info!(account = account.0, "account deleted");
    Ok(())
}

/// Every account, for the operator.
pub async fn list_accounts(core: &Core) -> Result<Vec<AccountRecord>> {
    Ok(core.store.account_records(None).await?)
}

/// Finds an account by its email or its number (`presence account list` shows both).
pub async fn find_account(core: &Core, name: &str) -> Result<AccountId> {
    if let Ok(id) = name.trim().parse::<i64>() {
        if core.store.account_records(Some(AccountId(id))).await?.is_empty() {
            return Err(Error::NotFound("no such account"));
        }
        return Ok(AccountId(id));
    }
    accounts::local_account(core, name).await?.ok_or(Error::NotFound("no such account"))
}

/// Disables an account (it cannot sign in, every session ends, its devices are closed and
/// offline) or enables it again.
pub async fn set_account_disabled(core: &Core, account: AccountId, disabled: bool) -> Result<()> {
    let write = core.store.set_account_disabled(account, disabled, unix_now());
    let outcome = core
        .presence
        .write(|_| Touched::account(account), write)
        .await?
        .ok_or(Error::NotFound("no such account"))?;
    for (device, uaid) in outcome.devices {
        core.presence.forget(&device);
        if let Some(uaid) = uaid {
            core.devices.deliver(uaid, DeviceMessage::Close(Eviction::Revoked));
        }
    }
    core.presence.announce(outcome.change);
    tracing::info!(account = account.0, disabled, "account disabled or enabled");
    Ok(())
}

/// Every app, for the operator.
pub async fn list_apps(core: &Core) -> Result<Vec<AppRecord>> {
    Ok(core.store.app_records(None).await?)
}

/// Disables an app (its API and stream answer 403 `app_disabled`, its open streams end, no
/// webhooks are sent) or enables it again.
pub async fn set_app_disabled(core: &Core, app_id: &str, disabled: bool) -> Result<()> {
    if !core.store.set_app_disabled(app_id, disabled, unix_now()).await? {
        return Err(Error::NotFound("no such app"));
    }
    if disabled {
        // Every node ends the app's open stream, as when a newer one opens elsewhere.
        core.bus.publish(Signal::StreamOpened { origin: "operator".into(), app_id: app_id.to_owned() });
    }
    tracing::info!(app_id = %app_id, disabled, "app disabled or enabled");
    Ok(())
}

/// Deletes an app with its grants, logs and notifications; its users keep their accounts.
pub async fn delete_app(core: &Core, app_id: &str) -> Result<()> {
    let write = core.store.delete_app(app_id);
    // The users who had granted it are read back, so nothing in memory points at the app.
    let touched = |grantees: &Option<Vec<AccountId>>| Touched {
        accounts: grantees.clone().unwrap_or_default(),
        apps: Vec::new(),
    };
    core.presence.write(touched, write).await?.ok_or(Error::NotFound("no such app"))?;
    core.bus.publish(Signal::StreamOpened { origin: "operator".into(), app_id: app_id.to_owned() });
    tracing::info!(app_id = %app_id, "app deleted");
    Ok(())
}
