//! Apps: how a developer registers one, changes it, rotates its secrets, and how an app proves
//! who it is.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use url::Url;

use super::{Core, Error, Result};
use crate::clock::unix_now;
use crate::domain::{AccountId, App, EventFormat};
use crate::egress::{format_allow_list, parse_allow_list, Cidr};
use crate::secrets::{constant_time_eq, digest, new_secret};
use crate::store::AppChanges;

pub const APP_SECRET_PREFIX: &str = "ps_";
const MAX_REDIRECT_URIS: usize = 10;
const MAX_URL_LENGTH: usize = 2000;
/// How long a replaced webhook secret signs alongside the new one unless the developer says.
pub const DEFAULT_WEBHOOK_OVERLAP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const MAX_WEBHOOK_OVERLAP_SECS: u64 = 7 * 24 * 3600;

/// A redirect URI apps may register: absolute, no fragment, https (or http to loopback only).
pub fn validate_redirect_uri(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let invalid = || {
        Error::invalid(
            "invalid_redirect_uri",
            format!("{raw:?} is not a valid redirect URI: use an absolute https URL (http only for loopback), without a fragment"),
        )
    };
    if raw.len() > MAX_URL_LENGTH {
        return Err(invalid());
    }
    let url = Url::parse(raw).map_err(|_| invalid())?;
    if url.fragment().is_some() || !crate::config::is_secure_or_loopback(raw) || !url.username().is_empty() {
        return Err(invalid());
    }
    Ok(raw.to_owned())
}

/// A webhook URL: absolute http(s). Where it may connect is checked when it is used.
pub fn validate_webhook_url(raw: &str) -> Result<Option<String>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && raw.len() <= MAX_URL_LENGTH =>
        {
            Ok(Some(raw.to_owned()))
        }
        _ => Err(Error::invalid("invalid_webhook_url", format!("{raw:?} is not an absolute http(s) URL"))),
    }
}

/// A webhook URL, refused at once when its host is an address the app's webhooks may not
/// reach (`allow`: the app's own ranges).
fn checked_webhook_url(core: &Core, raw: &str, allow: &[Cidr]) -> Result<Option<String>> {
    let url = validate_webhook_url(raw)?;
    if let Some(url) = &url {
        let parsed = Url::parse(url).expect("validated above");
        core.egress
            .widened(allow)
            .check_url(&parsed)
            .map_err(|why| Error::invalid("invalid_webhook_url", why))?;
    }
    Ok(url)
}

/// One app's own non-public webhook ranges, as stored (none when unreadable: they are written
/// only through `allow_webhook_ranges`).
pub fn webhook_ranges(stored: &str) -> Vec<Cidr> {
    parse_allow_list(stored).unwrap_or_else(|why| {
        tracing::error!(%why, "an app's webhook ranges do not parse; none apply");
        Vec::new()
    })
}

/// How the operator changes one app's webhook ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeChange {
    /// Allow these ranges too.
    Add(Vec<Cidr>),
    /// Allow none of its own any more.
    Clear,
    /// Change nothing.
    Show,
}

/// The operator's verb (never the app's owner's): lets one app's webhooks reach non-public
/// ranges that `webhook_allow` does not open to every app; returns the app's ranges after the
/// change.
pub async fn allow_webhook_ranges(core: &Core, app_id: &str, change: RangeChange) -> Result<Vec<Cidr>> {
    let stored = core.store.webhook_allow(app_id).await?.ok_or(Error::NotFound("no such app"))?;
    let mut ranges = webhook_ranges(&stored);
    match change {
        RangeChange::Show => return Ok(ranges),
        RangeChange::Clear => ranges.clear(),
        RangeChange::Add(added) => {
            for range in added {
                if !ranges.contains(&range) {
                    ranges.push(range);
                }
            }
        }
    }
    if !core.store.set_webhook_allow(app_id, &format_allow_list(&ranges)).await? {
        return Err(Error::NotFound("no such app"));
    }
    tracing::info!(app_id = %app_id, ranges = %format_allow_list(&ranges), "webhook ranges of an app set");
    Ok(ranges)
}

/// A webhook format as a developer names it: `pairs` or `v1`.
pub fn parse_webhook_format(text: &str) -> Result<EventFormat> {
    EventFormat::parse(text.trim()).ok_or_else(|| {
        Error::invalid(
            "invalid_webhook_format",
            format!("{text:?} is not a webhook format: use \"pairs\" (the default) or \"v1\""),
        )
    })
}

pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_name",
            "an app name is 1 to 80 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn validate_redirect_uris(uris: &[String]) -> Result<Vec<String>> {
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(Error::invalid(
            "invalid_redirect_uri",
            format!("register 1 to {MAX_REDIRECT_URIS} redirect URIs"),
        ));
    }
    uris.iter().map(|u| validate_redirect_uri(u)).collect()
}

/// A new app's secrets, shown once.
pub struct AppCredentials {
    pub app_id: String,
    pub secret: String,
    pub webhook_secret: String,
}

/// Registers an app for `owner`.
pub async fn register_app(
    core: &Core,
    owner: AccountId,
    name: &str,
    redirect_uris: &[String],
    webhook_url: &str,
    webhook_format: EventFormat,
) -> Result<AppCredentials> {
    let name = validate_name(name)?;
    let redirect_uris = validate_redirect_uris(redirect_uris)?;
    let webhook_url = checked_webhook_url(core, webhook_url, &[])?;
    let app_id = format!("app_{}", hex::encode(rand::random::<[u8; 8]>()));
    let secret = new_secret(APP_SECRET_PREFIX);
    let webhook_secret = new_webhook_secret();
    let app = App {
        app_id: app_id.clone(),
        owner,
        name,
        redirect_uris,
        webhook_url,
        webhook_format,
        secret_hash: digest(&secret),
        webhook_secret_sealed: core.webhook_vault.seal(&webhook_secret),
        created_at: unix_now(),
    };
    core.store.create_app(&app).await?;
    tracing::info!(app_id = %app_id, "app registered");
    Ok(AppCredentials { app_id, secret, webhook_secret })
}

/// The longest a replaced app secret may keep working.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(7 * 86400);

/// A new app secret (shown once), and until when the one it replaced still works.
pub struct RotatedSecret {
    pub secret: String,
    /// Unix seconds; `None`: the old secret stopped at once.
    pub previous_valid_until: Option<i64>,
}

/// Gives the app a new secret. The old one keeps working for `overlap` (zero: it stops at
/// once); a secret replaced earlier, still in its own overlap, stops now.
pub async fn rotate_app_secret(
    core: &Core,
    owner: AccountId,
    app_id: &str,
    overlap: Duration,
) -> Result<RotatedSecret> {
    if overlap > MAX_SECRET_OVERLAP {
        return Err(Error::invalid(
            "invalid_overlap",
            format!("the old secret may keep working for at most {} seconds", MAX_SECRET_OVERLAP.as_secs()),
        ));
    }
    let secret = new_secret(APP_SECRET_PREFIX);
    let previous_valid_until = (!overlap.is_zero()).then(|| unix_now() + overlap.as_secs() as i64);
    if !core.store.rotate_app_secret(owner, app_id, &digest(&secret), previous_valid_until).await? {
        return Err(Error::NotFound("no such app"));
    }
    tracing::info!(app_id = %app_id, overlap_seconds = overlap.as_secs(), "app secret rotated");
    Ok(RotatedSecret { secret, previous_valid_until })
}

fn new_webhook_secret() -> String {
    format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()))
}

/// A new webhook signing secret, shown once, and until when the one it replaced still signs.
pub struct RotatedWebhookSecret {
    pub webhook_secret: String,
    /// Unix seconds; now when there is no overlap.
    pub previous_valid_until: i64,
}

/// Gives the app a new webhook secret. For `overlap` (at most 7 days; zero ends the old one at
/// once) every delivery is signed with both, so the app can switch without missing one. A
/// rotation during an overlap replaces the older secret: only the last two ever sign.
pub async fn rotate_webhook_secret(
    core: &Core,
    owner: AccountId,
    app_id: &str,
    overlap: std::time::Duration,
) -> Result<RotatedWebhookSecret> {
    if overlap.as_secs() > MAX_WEBHOOK_OVERLAP_SECS {
        return Err(Error::invalid(
            "invalid_overlap",
            format!("overlap_seconds is at most {MAX_WEBHOOK_OVERLAP_SECS} (7 days)"),
        ));
    }
    let webhook_secret = new_webhook_secret();
    let now = unix_now();
    let until = now + overlap.as_secs() as i64;
    let previous_until = (overlap.as_secs() > 0).then_some(until);
    let sealed = core.webhook_vault.seal(&webhook_secret);
    if !core.store.rotate_webhook_secret(owner, app_id, &sealed, previous_until).await? {
        return Err(Error::NotFound("no such app"));
    }
    tracing::info!(app_id = %app_id, overlap_seconds = overlap.as_secs(), "webhook secret rotated");
    Ok(RotatedWebhookSecret { webhook_secret, previous_valid_until: until })
}

/// Applies a developer's changes to one of their apps; returns the app as it now is.
pub async fn update(
    core: &Core,
    owner: AccountId,
    app_id: &str,
    name: Option<&str>,
    redirect_uris: Option<&[String]>,
    webhook_url: Option<Option<&str>>,
    webhook_format: Option<EventFormat>,
) -> Result<App> {
    let allow = match webhook_url {
        Some(Some(_)) => match core.store.app(app_id).await?.filter(|app| app.owner == owner) {
            Some(_) => webhook_ranges(&core.store.webhook_allow(app_id).await?.unwrap_or_default()),
            None => return Err(Error::NotFound("no such app")),
        },
        _ => Vec::new(),
    };
    let changes = AppChanges {
        name: name.map(validate_name).transpose()?,
        redirect_uris: redirect_uris.map(validate_redirect_uris).transpose()?,
        webhook_url: match webhook_url {
            Some(url) => Some(checked_webhook_url(core, url.unwrap_or(""), &allow)?),
            None => None,
        },
        webhook_format,
    };
    if !core.store.update_app(owner, app_id, &changes).await? {
        return Err(Error::NotFound("no such app"));
    }
    core.store.app(app_id).await?.ok_or(Error::NotFound("no such app"))
}

/// Re-enables a disabled webhook (its owner, signed in).
pub async fn reenable_webhook(core: &Core, owner: AccountId, app_id: &str) -> Result<()> {
    if core.store.enable_webhook(owner, app_id).await? {
        tracing::info!(app_id = %app_id, "webhook re-enabled");
        Ok(())
    } else {
        Err(Error::NotFound("no such app"))
    }
}

/// The app whose id and secret these are (HTTP Basic): its current secret, or the previous one
/// during a rotation's overlap.
pub async fn authenticate(core: &Core, app_id: &str, secret: &str) -> Result<Option<App>> {
    let app = core.store.app_by_secret(&digest(secret), unix_now()).await?;
    let app = app.filter(|app| constant_time_eq(app_id, &app.app_id));
    refuse_disabled(core, app).await
}

/// The app whose secret this is (a bearer secret), current or still in its overlap.
pub async fn authenticate_secret(core: &Core, secret: &str) -> Result<Option<App>> {
    let app = core.store.app_by_secret(&digest(secret), unix_now()).await?;
    refuse_disabled(core, app).await
}

/// An app the operator disabled is known but refused (403 `app_disabled`).
async fn refuse_disabled(core: &Core, app: Option<App>) -> Result<Option<App>> {
    match app {
        Some(app) if core.store.app_disabled(&app.app_id).await? => {
            Err(Error::Forbidden { code: "app_disabled", detail: "the operator disabled this app".into() })
        }
        app => Ok(app),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_or_loopback_http() {
        for good in
            ["https://app.example/cb", "http://127.0.0.1:9000/cb", "http://localhost/cb", "http://[::1]:80/x"]
        {
            assert!(validate_redirect_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "/relative",
            "ftp://x/",
            "https://user@app.example/",
            "http://127.0.0.1.evil.example/",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
