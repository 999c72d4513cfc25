//! Live notifications from apps to users: `POST /v1/apps/{app_id}/notifications` delivers at
//! once to every connected device of the user, or keeps the notification until its TTL for the
//! devices' next hello; `GET …/notifications/{id}` tells the app which happened.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use crate::app::AppState;
use crate::apps::AuthedApp;
use crate::bus::DeviceMessage;
use crate::error::{ApiError, ApiJson};
use crate::registry::Delivery;
use crate::store::{LiveNotification, NewNotification};
use crate::ws::unix_now;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app_id}/notifications", post(send))
        .route("/v1/apps/{app_id}/notifications/{id}", get(status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationRequest {
    uid: String,
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    url: Option<String>,
    /// Seconds to keep it for devices not connected now; 0 means now or never.
    ttl: u64,
}

fn too_many(detail: &str, wait: std::time::Duration) -> Response {
    let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail).into_response();
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

async fn send(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    authed: AuthedApp,
    ApiJson(request): ApiJson<NotificationRequest>,
) -> Result<Response, ApiError> {
    let app = authed.require(&app_id)?.clone();
    let config = &state.config;
    let payload = request.title.len() + request.body.len() + request.url.as_ref().map_or(0, String::len);
    if payload > config.notification_max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "notification_too_large",
            format!("title, body and url may hold {} bytes together", config.notification_max_bytes),
        ));
    }
    if request.title.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_notification",
            "a notification needs a title",
        ));
    }
    if let Some(url) = &request.url {
        if !matches!(url::Url::parse(url).map(|u| u.scheme().to_owned()).as_deref(), Ok("https" | "http")) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_notification",
                "url must be an http(s) URL",
            ));
        }
    }
    if let Err(wait) = state.notify_app_limit.take(&app_id) {
        return Ok(too_many("this app is sending notifications too fast", wait));
    }
    // Unknown, paused and revoked uids look the same: 404.
    let Some(account) = state.store.granted_account(&app_id, &request.uid).await? else {
        state.notify_app_limit.refund(&app_id);
        return Err(ApiError::not_found("no such user"));
    };
    if let Err(wait) = state.notify_user_limit.take(&format!("{}", account.0)) {
        return Ok(too_many("this user is receiving notifications too fast", wait));
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
    let devices = state.store.create_notification(&notification, config.max_notifications_per_device).await?;
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
        .filter_map(|(_, uaid)| uaid.as_ref())
        .filter(|uaid| {
            crate::cluster::deliver(&state, **uaid, DeviceMessage::Notification(live.clone()))
                == Delivery::Queued
        })
        .count();
    let body = if delivered_to > 0 {
        (StatusCode::OK, Json(json!({"id": id, "status": "delivered", "delivered_to": delivered_to})))
    } else if ttl == 0 {
        (
            StatusCode::OK,
            Json(json!({"id": id, "status": "not_delivered", "delivered_to": 0, "queued": false})),
        )
    } else {
        (
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "queued", "queued": true, "expires_at": now + ttl as i64})),
        )
    };
    Ok(body.into_response())
}

async fn status(
    State(state): State<AppState>,
    Path((app_id, id)): Path<(String, String)>,
    authed: AuthedApp,
) -> Result<Response, ApiError> {
    authed.require(&app_id)?;
    let found = state.store.notification_state(&app_id, &id, unix_now()).await?;
    let found = found.ok_or_else(|| ApiError::not_found("no such notification"))?;
    Ok(Json(found).into_response())
}
