//! Live notifications from apps to users: delivered at once to every connected device of the
//! user, or kept until their TTL for the devices' next hello. What the app is told of a
//! delivery never shows more than the user's presence does.

use std::sync::Arc;

use super::{Core, Error, Result};
use crate::bus::DeviceMessage;
use crate::clock::unix_now;
use crate::domain::{App, Delivery, LiveNotification, NotificationState, Status};
use crate::store::NewNotification;

/// What an app asks to send.
pub struct Request {
    pub uid: String,
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    /// Seconds to keep it for devices not connected now; 0 means now or never.
    pub ttl: u64,
}

/// What became of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to this many connected devices.
    Delivered { to: usize },
    /// No device connected and no TTL: dropped.
    NotDelivered,
    /// Kept for the user's devices until `expires_at`.
    Queued { expires_at: i64 },
}

/// Sends a notification from `app` to one of its users.
pub async fn send(core: &Core, app: &App, request: Request) -> Result<(String, Outcome)> {
    let config = &core.config;
    let payload = request.title.len() + request.body.len() + request.url.as_ref().map_or(0, String::len);
    if payload > config.notification_max_bytes {
        return Err(Error::TooLarge {
            code: "notification_too_large",
            detail: format!("title, body and url may hold {} bytes together", config.notification_max_bytes),
        });
    }
    if request.title.trim().is_empty() {
        return Err(Error::invalid("invalid_notification", "a notification needs a title"));
    }
    if let Some(url) = &request.url {
        if !matches!(url::Url::parse(url).map(|u| u.scheme().to_owned()).as_deref(), Ok("https" | "http")) {
            return Err(Error::invalid("invalid_notification", "url must be an http(s) URL"));
        }
    }
    let app_id = &app.app_id;
    if let Err(wait) = core.notify_app_limit.take(app_id) {
        return Err(Error::RateLimited {
            code: "rate_limited",
            detail: "this app is sending notifications too fast".into(),
            retry_after: wait,
        });
    }
    // Unknown, paused and revoked uids look the same: not found.
    let Some(grantee) = core.store.grantee(app_id, &request.uid).await? else {
        core.notify_app_limit.refund(app_id);
        return Err(Error::NotFound("no such user"));
    };
    let account = grantee.account;
    if let Err(wait) = core.notify_user_limit.take(&format!("{}", account.0)) {
        return Err(Error::RateLimited {
            code: "rate_limited",
            detail: "this user is receiving notifications too fast".into(),
            retry_after: wait,
        });
    }
    let now = unix_now();
    let ttl = request.ttl.min(config.notification_max_ttl.as_secs());
    let id = format!("n_{}", hex::encode(rand::random::<[u8; 12]>()));
    let notification = NewNotification {
        id: id.clone(),
        app_id: app_id.clone(),
        account,
        title: request.title.clone(),
        body: request.body.clone(),
        url: request.url.clone(),
        sent_at: now,
        expires_at: now + ttl as i64,
    };
    let devices = core.store.create_notification(&notification, config.max_notifications_per_device).await?;
    let live = Arc::new(LiveNotification {
        id: id.clone(),
        app: app.name.clone(),
        title: request.title,
        body: request.body,
        url: request.url,
        sent: now,
    });
    let delivered_to = devices
        .iter()
        .filter_map(|device| device.uaid.as_ref())
        .filter(|uaid| {
            core.devices.deliver(**uaid, DeviceMessage::Notification(live.clone())) == Delivery::Queued
        })
        .count();
    // The answer tells the app no more than presence does: to an app that sees the user
    // offline (appearing offline, every device unavailable), a user whose devices got it looks
    // like one with none connected. The devices get it all the same: the user hid their
    // presence, not their notifications.
    let hidden = grantee.app_view == Status::Offline;
    let outcome = if delivered_to > 0 && !hidden {
        Outcome::Delivered { to: delivered_to }
    } else if ttl == 0 {
        Outcome::NotDelivered
    } else {
        Outcome::Queued { expires_at: now + ttl as i64 }
    };
    Ok((id, outcome))
}

/// Where one of the app's notifications stands.
pub async fn state(core: &Core, app_id: &str, id: &str) -> Result<NotificationState> {
    core.store
        .notification_state(app_id, id, unix_now())
        .await?
        .ok_or(Error::NotFound("no such notification"))
}
