//! Resending a failed webhook attempt: `POST /v1/apps/{app_id}/deliveries/{attempt_id}/resend`,
//! with the app's credentials. The listing is `GET /v1/apps/{app_id}/deliveries` (in `apps`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use super::auth::AuthedApp;
use super::error::ApiError;
use super::HttpState;
use crate::ops::deliveries;

pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1/apps/{app_id}/deliveries/{attempt_id}/resend", post(resend))
}

#[derive(Serialize)]
struct Scheduled {
    /// Always `"scheduled"`: the pending events go out at the dispatcher's next scan.
    status: &'static str,
    /// The webhook had been disabled and is enabled again.
    reenabled: bool,
}

/// `202 {status: "scheduled"}`: the app's pending events are sent at once, skipping the
/// backoff; the new attempt appears in the deliveries. `409 not_failed` for an attempt that
/// succeeded, `409 nothing_pending` when a later attempt delivered everything, `404` for an
/// unknown attempt.
async fn resend(
    State(state): State<HttpState>,
    Path((app_id, attempt_id)): Path<(String, String)>,
    authed: AuthedApp,
) -> Result<(StatusCode, Json<Scheduled>), ApiError> {
    authed.require(&app_id)?;
    let attempt: u64 = attempt_id.parse().map_err(|_| ApiError::not_found("no such delivery attempt"))?;
    let reenabled = deliveries::resend(&state, &app_id, attempt).await?;
    Ok((StatusCode::ACCEPTED, Json(Scheduled { status: "scheduled", reenabled })))
}
