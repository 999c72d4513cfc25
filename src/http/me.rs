//! What a user can do about their own account on the JSON API: take their data (export),
//! change their password, see and end their sessions, and delete the account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AuthedAccount, BearerToken};
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::HttpState;
use crate::ops::accounts::Session;
use crate::ops::lifecycle::Export;
use crate::ops::{accounts, lifecycle};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/me", delete(delete_account))
        .route("/v1/me/export", get(export))
        .route("/v1/me/password", put(change_password))
        .route("/v1/me/sessions", get(sessions))
        .route("/v1/me/sessions/{id}", delete(revoke_session))
}

/// Everything held about the user, as a JSON download (no password hash, PrID or token).
#[utoipa::path(get, path = "/v1/me/export", tag = "users", security(("user" = [])),
    responses((status = 200, description = "the user's data (`Content-Disposition: attachment`)", body = Export)))]
async fn export(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    BearerToken(token): BearerToken,
) -> Result<Response, ApiError> {
    let export = lifecycle::export(&state, account, Some(&token)).await?;
    let disposition =
        [(axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"presence-export.json\"")];
    Ok((disposition, Json(export)).into_response())
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current: String,
    /// At least 8 characters.
    pub new: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    /// Always `true`.
    pub changed: bool,
    /// How many other sessions and tokens were signed out.
    pub revoked_sessions: u64,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// Changes the password; every other session and token is signed out.
#[utoipa::path(put, path = "/v1/me/password", tag = "users", security(("user" = [])), request_body = PasswordChange,
    responses(
        (status = 200, description = "changed", body = PasswordChanged),
        (status = 400, description = "`weak_password`: under 8 characters", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: the current password is wrong", body = ErrorBody),
        (status = 409, description = "`no_password`: an identity provider's account", body = ErrorBody),
        (status = 429, description = "`too_many_attempts` for this email, with `Retry-After`", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    BearerToken(token): BearerToken,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let revoked = accounts::change_password(&state, account, body.current, body.new, Some(&token)).await?;
    Ok(Json(PasswordChanged {
        changed: true,
        revoked_sessions: revoked,
        detail: "password changed; every other session and token was signed out".to_owned(),
    })
    .into_response())
}

/// The browsers signed in and the API tokens (never the tokens themselves).
#[utoipa::path(get, path = "/v1/me/sessions", tag = "users", security(("user" = [])),
    responses((status = 200, description = "the sessions", body = SessionList)))]
async fn sessions(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    BearerToken(token): BearerToken,
) -> Result<Response, ApiError> {
    let sessions = accounts::sessions(&state, account, Some(&token)).await?;
    Ok(Json(SessionList { sessions }).into_response())
}

/// Signs a session or token out.
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "users", security(("user" = [])),
    params(("id" = String, Path, description = "a session's `id`")),
    responses(
        (status = 204, description = "signed out"),
        (status = 404, description = "`not_found`: no such session of yours", body = ErrorBody),
    ))]
async fn revoke_session(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    accounts::revoke_session(&state, account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the account, its devices, grants, apps, tokens, sessions and notifications.
#[utoipa::path(delete, path = "/v1/me", tag = "users", security(("user" = [])),
    responses((status = 204, description = "deleted")))]
async fn delete_account(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<StatusCode, ApiError> {
    lifecycle::delete_account(&state, account).await?;
    Ok(StatusCode::NO_CONTENT)
}
