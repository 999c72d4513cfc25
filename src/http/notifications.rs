//! `POST /v1/apps/{app_id}/notifications` sends a live notification to a user's devices;
//! `GET …/notifications/{id}` tells the app what became of it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AuthedApp;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::HttpState;
use crate::domain::NotificationState;
use crate::ops::notifications::{self, Outcome};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/apps/{app_id}/notifications", post(send))
        .route("/v1/apps/{app_id}/notifications/{id}", get(status))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// The user's uid at this app.
    pub uid: String,
    pub title: String,
    #[serde(default)]
    pub body: String,
    /// An http(s) URL the device may open.
    #[serde(default)]
    pub url: Option<String>,
    /// Seconds to keep it for devices not connected now; 0 means now or never.
    pub ttl: u64,
}

/// What became of a notification when it was sent.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Sent {
    /// Handed at once to `delivered_to` connected devices.
    Delivered { id: String, delivered_to: usize },
    /// No device connected and `ttl` 0: dropped.
    NotDelivered { id: String, delivered_to: usize, queued: bool },
    /// Kept for the user's devices until `expires_at` (Unix seconds).
    Queued { id: String, queued: bool, expires_at: i64 },
}

/// Sends a live notification to a user's devices.
#[utoipa::path(post, path = "/v1/apps/{app_id}/notifications", tag = "notifications",
    security(("app_basic" = []), ("app_bearer" = [])), request_body = NotificationRequest,
    params(("app_id" = String, Path)),
    responses(
        (status = 200, description = "`delivered`, or `not_delivered` (`ttl` 0 and no device connected)", body = Sent),
        (status = 202, description = "`queued` for the user's devices", body = Sent),
        (status = 400, description = "`invalid_notification`: no title, or a url that is not http(s)", body = ErrorBody),
        (status = 404, description = "`not_found`: the uid has no enabled grant for this app", body = ErrorBody),
        (status = 413, description = "`notification_too_large`: over `notification_max_bytes`, or `invalid_body`", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `Retry-After`", body = ErrorBody),
    ))]
async fn send(
    State(state): State<HttpState>,
    ApiPath(app_id): ApiPath<String>,
    authed: AuthedApp,
    ApiJson(request): ApiJson<NotificationRequest>,
) -> Result<Response, ApiError> {
    let app = authed.require(&app_id)?;
    let NotificationRequest { uid, title, body, url, ttl } = request;
    let request = notifications::Request { uid, title, body, url, ttl };
    let (id, outcome) = notifications::send(&state, app, request).await?;
    let answer = match outcome {
        Outcome::Delivered { to } => (StatusCode::OK, Sent::Delivered { id, delivered_to: to }),
        Outcome::NotDelivered => (StatusCode::OK, Sent::NotDelivered { id, delivered_to: 0, queued: false }),
        Outcome::Queued { expires_at } => {
            (StatusCode::ACCEPTED, Sent::Queued { id, queued: true, expires_at })
        }
    };
    Ok((answer.0, Json(answer.1)).into_response())
}

/// Where a notification stands.
#[utoipa::path(get, path = "/v1/apps/{app_id}/notifications/{id}", tag = "notifications",
    security(("app_basic" = []), ("app_bearer" = [])),
    params(("app_id" = String, Path), ("id" = String, Path, description = "the id `POST` answered")),
    responses(
        (status = 200, description = "its state", body = NotificationState),
        (status = 404, description = "`not_found`: no such notification of this app", body = ErrorBody),
    ))]
async fn status(
    State(state): State<HttpState>,
    ApiPath((app_id, id)): ApiPath<(String, String)>,
    authed: AuthedApp,
) -> Result<Response, ApiError> {
    authed.require(&app_id)?;
    let found = notifications::state(&state, &app_id, &id).await?;
    Ok(Json(found).into_response())
}
