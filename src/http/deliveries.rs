//! Resending a failed webhook attempt: `POST /v1/apps/{app_id}/deliveries/{attempt_id}/resend`,
//! with the app's credentials. The listing is `GET /v1/apps/{app_id}/deliveries` (in `apps`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AuthedApp;
use super::error::{ApiError, ApiPath, ErrorBody};
use super::HttpState;
use crate::ops::deliveries;

pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1/apps/{app_id}/deliveries/{attempt_id}/resend", post(resend))
}

#[derive(Serialize, ToSchema)]
pub struct Scheduled {
    /// Always `"scheduled"`: the pending events go out at the dispatcher's next scan.
    pub status: &'static str,
    /// The webhook had been disabled and is enabled again.
    pub reenabled: bool,
}

/// `202 {status: "scheduled"}`: the app's pending events are sent at once, skipping the
/// backoff; the new attempt appears in the deliveries. `409 not_failed` for an attempt that
/// succeeded, `409 nothing_pending` when a later attempt delivered everything, `404` for an
/// unknown attempt.
#[utoipa::path(post, path = "/v1/apps/{app_id}/deliveries/{attempt_id}/resend", tag = "apps",
    security(("app_basic" = []), ("app_bearer" = [])),
    params(("app_id" = String, Path), ("attempt_id" = String, Path, description = "an attempt's `id`")),
    responses(
        (status = 202, description = "the pending events go out now", body = Scheduled),
        (status = 404, description = "`not_found`: no such attempt", body = ErrorBody),
        (status = 409, description = "`not_failed` or `nothing_pending`", body = ErrorBody),
    ))]
pub async fn resend(
    State(state): State<HttpState>,
    ApiPath((app_id, attempt_id)): ApiPath<(String, String)>,
    authed: AuthedApp,
) -> Result<(StatusCode, Json<Scheduled>), ApiError> {
    authed.require(&app_id)?;
    let attempt: u64 = attempt_id.parse().map_err(|_| ApiError::not_found("no such delivery attempt"))?;
    let reenabled = deliveries::resend(&state, &app_id, attempt).await?;
    Ok((StatusCode::ACCEPTED, Json(Scheduled { status: "scheduled", reenabled })))
}
