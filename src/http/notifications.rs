//! `POST /v1/apps/{app_id}/notifications` sends a live notification to a user's devices;
//! `GET …/notifications/{id}` tells the app what became of it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::AuthedApp;
use super::error::{ApiError, ApiJson};
use super::HttpState;
use crate::ops::notifications::{self, Outcome};

pub fn routes() -> Router<HttpState> {
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

async fn send(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    authed: AuthedApp,
    ApiJson(request): ApiJson<NotificationRequest>,
) -> Result<Response, ApiError> {
    let app = authed.require(&app_id)?;
    let NotificationRequest { uid, title, body, url, ttl } = request;
    let request = notifications::Request { uid, title, body, url, ttl };
    let (id, outcome) = notifications::send(&state, app, request).await?;
    let answer = match outcome {
        Outcome::Delivered { to } => {
            (StatusCode::OK, Json(json!({"id": id, "status": "delivered", "delivered_to": to})))
        }
        Outcome::NotDelivered => (
            StatusCode::OK,
            Json(json!({"id": id, "status": "not_delivered", "delivered_to": 0, "queued": false})),
        ),
        Outcome::Queued { expires_at } => (
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "queued", "queued": true, "expires_at": expires_at})),
        ),
    };
    Ok(answer.into_response())
}

async fn status(
    State(state): State<HttpState>,
    Path((app_id, id)): Path<(String, String)>,
    authed: AuthedApp,
) -> Result<Response, ApiError> {
    authed.require(&app_id)?;
    let found = notifications::state(&state, &app_id, &id).await?;
    Ok(Json(found).into_response())
}
