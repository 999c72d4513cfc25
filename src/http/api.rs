//! The device and user API under `/v1`: tokens, devices, the user's status and policy.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::{AuthedAccount, BearerToken, ClientAddr};
use super::error::{ApiError, ApiJson};
use super::HttpState;
use crate::domain::Policy;
use crate::ops::accounts::TOKEN_PREFIX;
use crate::ops::{accounts, devices};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/tokens", post(create_token))
        .route("/v1/tokens/current", delete(revoke_token))
        .route("/v1/devices", post(create_device).get(list_devices))
        .route("/v1/devices/{device_id}", delete(delete_device))
        .route("/v1/me", get(me))
        .route("/v1/me/policy", get(get_policy).put(put_policy))
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

async fn create_token(
    State(state): State<HttpState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    accounts::limit_address(&state, client)?;
    let Some(account) = accounts::check_password(&state, &body.email, body.password).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong email or password",
        ));
    };
    let (token, expires_at) = accounts::issue_token(&state, account).await?;
    let body = json!({"token": token, "token_type": "Bearer", "expires_at": expires_at});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke_token(
    State(state): State<HttpState>,
    _: AuthedAccount,
    BearerToken(token): BearerToken,
) -> Result<StatusCode, ApiError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_revocable",
            "only tokens from POST /v1/tokens can be revoked here; sign out at your identity provider",
        ));
    }
    accounts::revoke_token(&state, &token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDeviceBody {
    name: String,
    #[serde(default)]
    uaid: Option<String>,
}

async fn create_device(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(body): ApiJson<NewDeviceBody>,
) -> Result<Response, ApiError> {
    let device = devices::register(&state, account, &body.name, body.uaid.as_deref()).await?;
    let body = json!({"device_id": device.device_id, "prid": device.prid});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_devices(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let devices = devices::list(&state, account).await?;
    Ok(Json(json!({"devices": devices})).into_response())
}

async fn delete_device(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    devices::remove(&state, account, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let summary =
        state.store.account(account).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    let devices = devices::list(&state, account).await?;
    Ok(Json(json!({
        "email": summary.email,
        "issuer": summary.issuer,
        "status": summary.status,
        "visible_status": summary.visible,
        "policy": summary.policy,
        "devices": devices,
    }))
    .into_response())
}

async fn get_policy(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let summary =
        state.store.account(account).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    Ok(Json(summary.policy).into_response())
}

async fn put_policy(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Response, ApiError> {
    accounts::set_policy(&state, account, &policy).await?;
    Ok(Json(policy).into_response())
}
