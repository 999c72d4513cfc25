//! The device and user API under `/v1`: tokens, devices, the user's status and policy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AuthedAccount, BearerToken, ClientAddr};
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::HttpState;
use crate::domain::{DeviceId, DeviceInfo, Policy, Status};
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

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// A local API token, shown once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    /// `pt_…`: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Signs in with an email and password for a local API token.
#[utoipa::path(post, path = "/v1/tokens", tag = "users", request_body = Credentials,
    responses(
        (status = 201, description = "signed in", body = IssuedToken),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 403, description = "`account_disabled`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`, with `Retry-After`", body = ErrorBody),
    ))]
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
    let body = IssuedToken { token, token_type: "Bearer".to_owned(), expires_at };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Revokes the local token the request carries.
#[utoipa::path(delete, path = "/v1/tokens/current", tag = "users", security(("user" = [])),
    responses(
        (status = 204, description = "the token no longer works"),
        (status = 400, description = "`not_revocable`: not a token from `POST /v1/tokens`", body = ErrorBody),
    ))]
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

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceBody {
    /// 1 to 64 characters, no control characters.
    pub name: String,
    /// A UAID the device already has, to bind it to this device.
    #[serde(default)]
    pub uaid: Option<String>,
}

/// A registered device; the PrID is shown once.
#[derive(Serialize, ToSchema)]
pub struct RegisteredDevice {
    pub device_id: DeviceId,
    /// `prid_…`: the device says hello with it (`xpi`).
    pub prid: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// The signed-in user: their status, what apps see, their policy and devices.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub email: Option<String>,
    /// The identity provider, for an account signed in with one.
    pub issuer: Option<String>,
    pub status: Status,
    pub visible_status: Status,
    pub policy: Policy,
    pub devices: Vec<DeviceInfo>,
}

/// Registers a device for the user.
#[utoipa::path(post, path = "/v1/devices", tag = "devices", security(("user" = [])), request_body = NewDeviceBody,
    responses(
        (status = 201, description = "registered", body = RegisteredDevice),
        (status = 400, description = "`invalid_name` or `invalid_uaid`", body = ErrorBody),
        (status = 409, description = "`uaid_in_use`: another device holds that UAID; `too_many_devices`", body = ErrorBody),
    ))]
async fn create_device(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(body): ApiJson<NewDeviceBody>,
) -> Result<Response, ApiError> {
    let device = devices::register(&state, account, &body.name, body.uaid.as_deref()).await?;
    let body = RegisteredDevice { device_id: device.device_id, prid: device.prid };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The user's devices.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("user" = [])),
    responses(
        (status = 200, description = "the devices", body = DeviceList),
    ))]
async fn list_devices(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let devices = devices::list(&state, account).await?;
    Ok(Json(DeviceList { devices }).into_response())
}

/// Removes a device: its PrID is revoked and its socket closed (4401).
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices", security(("user" = [])),
    params(("device_id" = String, Path, description = "the device's id")),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = "`not_found`: no such device of yours", body = ErrorBody),
    ))]
async fn delete_device(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(device_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    devices::remove(&state, account, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", tag = "users", security(("user" = [])),
    responses(
        (status = 200, description = "the user", body = Me),
    ))]
async fn me(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let summary =
        state.store.account(account).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    let devices = devices::list(&state, account).await?;
    Ok(Json(Me {
        email: summary.email,
        issuer: summary.issuer,
        status: summary.status,
        visible_status: summary.visible,
        policy: summary.policy,
        devices,
    })
    .into_response())
}

/// The user's presence policy.
#[utoipa::path(get, path = "/v1/me/policy", tag = "users", security(("user" = [])),
    responses(
        (status = 200, description = "the policy", body = Policy),
    ))]
async fn get_policy(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let summary =
        state.store.account(account).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    Ok(Json(summary.policy).into_response())
}

/// Replaces the user's presence policy.
#[utoipa::path(put, path = "/v1/me/policy", tag = "users", security(("user" = [])), request_body = Policy,
    responses(
        (status = 200, description = "the policy now", body = Policy),
        (status = 400, description = "`invalid_policy` unless 1 ≤ away < unavailable ≤ 1440", body = ErrorBody),
    ))]
async fn put_policy(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Response, ApiError> {
    accounts::set_policy(&state, account, &policy).await?;
    Ok(Json(policy).into_response())
}
