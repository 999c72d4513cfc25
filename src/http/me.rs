//! What a user can do about their own account on the JSON API: take their data (export),
//! change their password, see and end their sessions, and delete the account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::{AuthedAccount, BearerToken};
use super::error::{ApiError, ApiJson};
use super::HttpState;
use crate::ops::{accounts, lifecycle};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/me", delete(delete_account))
        .route("/v1/me/export", get(export))
        .route("/v1/me/password", put(change_password))
        .route("/v1/me/sessions", get(sessions))
        .route("/v1/me/sessions/{id}", delete(revoke_session))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current: String,
    new: String,
}

async fn change_password(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    BearerToken(token): BearerToken,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let revoked = accounts::change_password(&state, account, body.current, body.new, Some(&token)).await?;
    Ok(Json(json!({
        "changed": true,
        "revoked_sessions": revoked,
        "detail": "password changed; every other session and token was signed out",
    }))
    .into_response())
}

async fn sessions(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    BearerToken(token): BearerToken,
) -> Result<Response, ApiError> {
    let sessions = accounts::sessions(&state, account, Some(&token)).await?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

async fn revoke_session(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    accounts::revoke_session(&state, account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_account(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<StatusCode, ApiError> {
    lifecycle::delete_account(&state, account).await?;
    Ok(StatusCode::NO_CONTENT)
}
