//! The device and user API under `/v1`: tokens, devices, the user's status and policy.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::{AuthedAccount, BearerToken, TOKEN_PREFIX};
use crate::bus::DeviceMessage;
use crate::error::{ApiError, ApiJson};
use crate::ids::Uaid;
use crate::registry::Eviction;
use crate::secrets::{digest, new_secret};
use crate::store::{AccountId, DeviceId, NewDevice, Policy};
use crate::ws::unix_now;

/// Prefix of presence ids (PrIDs) handed to devices.
pub const PRID_PREFIX: &str = "prid_";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(create_token))
        .route("/v1/tokens/current", delete(revoke_token))
        .route("/v1/devices", post(create_device).get(list_devices))
        .route("/v1/devices/{device_id}", delete(delete_device))
        .route("/v1/me", get(me))
        .route("/v1/me/policy", get(get_policy).put(put_policy))
}

fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// Normalises an email for lookup and storage.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(email)
}

/// Checks an email and password against local accounts (argon2 on a blocking thread; unknown
/// emails cost the same as wrong passwords).
pub async fn check_password(
    state: &AppState,
    email: &str,
    password: String,
) -> Result<Option<crate::store::AccountId>, ApiError> {
    // Guessing is slowed per email, whether or not the account exists.
    if let Err(wait) = state.login_limit.take(&email.trim().to_lowercase()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many password attempts for this email; try again in {} s", wait.as_secs().max(1)),
        ));
    }
    let found = match normalize_email(email) {
        Some(email) => state.store.local_credentials(&email).await?,
        None => None,
    };
    let (account, hash) = match found {
        Some((account, hash)) => (Some(account), hash),
        None => (None, crate::secrets::decoy_hash().to_owned()),
    };
    let matches = tokio::task::spawn_blocking(move || crate::secrets::verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(account.filter(|_| matches))
}

async fn create_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let Some(account) = check_password(&state, &body.email, body.password).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong email or password",
        ));
    };
    let token = new_secret(TOKEN_PREFIX);
    let now = unix_now();
    let expires_at = now.saturating_add(state.config.token_ttl.as_secs() as i64);
    state.store.create_token(&digest(&token), account, now, expires_at).await?;
    let body = json!({"token": token, "token_type": "Bearer", "expires_at": expires_at});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    _: AuthedAccount,
    BearerToken(token): BearerToken,
) -> Result<StatusCode, ApiError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(bad_request(
            "not_revocable",
            "only tokens from POST /v1/tokens can be revoked here; sign out at your identity provider",
        ));
    }
    state.store.revoke_token(&digest(&token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDeviceBody {
    name: String,
    #[serde(default)]
    uaid: Option<String>,
}

/// A device name: 1 to 64 characters, no control characters.
fn device_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(bad_request(
            "invalid_name",
            "name must be 1 to 64 characters, without control characters",
        ));
    }
    Ok(name)
}

async fn create_device(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(body): ApiJson<NewDeviceBody>,
) -> Result<Response, ApiError> {
    let name = device_name(&body.name)?;
    let uaid = match body.uaid.as_deref().filter(|u| !u.is_empty()) {
        Some(raw) => Some(
            Uaid::parse(raw).ok_or_else(|| bad_request("invalid_uaid", "uaid must be 32 hex characters"))?,
        ),
        None => None,
    };
    let existing = state.store.devices(account).await?;
    if existing.len() >= state.config.max_devices_per_account as usize {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_devices",
            format!("an account may have at most {} devices", state.config.max_devices_per_account),
        ));
    }
    let id = DeviceId::random();
    let prid = new_secret(PRID_PREFIX);
    let prid_hash = digest(&prid);
    let device = NewDevice { id: &id, account, name, prid_hash: &prid_hash, uaid };
    state.store.create_device(&device, unix_now()).await?;
    tracing::info!(device_id = %id, "device registered");
    Ok((StatusCode::CREATED, Json(json!({"device_id": id, "prid": prid}))).into_response())
}

async fn list_devices(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let devices = state.store.devices(account).await?;
    Ok(Json(json!({"devices": devices})).into_response())
}

async fn delete_device(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove_device(&state, account, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes one of the account's devices: its PrID stops working, its socket closes (4401), and
/// the user's status is recomputed without it.
pub async fn remove_device(state: &AppState, account: AccountId, device_id: &str) -> Result<(), ApiError> {
    let not_found = || ApiError::not_found("no such device");
    let device = DeviceId::parse(device_id).ok_or_else(not_found)?;
    let (uaid, change) =
        state.store.delete_device(account, &device, unix_now()).await?.ok_or_else(not_found)?;
    state.presence.forget(&device);
    if let Some(uaid) = uaid {
        crate::cluster::deliver(state, uaid, DeviceMessage::Close(Eviction::Revoked));
    }
    state.presence.publish(change);
    tracing::info!(device_id = %device, "device removed");
    Ok(())
}

async fn me(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let summary =
        state.store.account(account).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    let devices = state.store.devices(account).await?;
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
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let summary =
        state.store.account(account).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    Ok(Json(summary.policy).into_response())
}

/// Checks a policy: 1 ≤ away < unavailable ≤ 1440 minutes.
pub fn validate_policy(policy: &Policy) -> Result<(), ApiError> {
    let Policy { idle_away_minutes: away, idle_offline_minutes: offline, .. } = *policy;
    if !(1..=1440).contains(&away) || !(1..=1440).contains(&offline) || away >= offline {
        return Err(bad_request(
            "invalid_policy",
            "idle minutes must be from 1 to 1440, and fewer before away than before unavailable",
        ));
    }
    Ok(())
}

async fn put_policy(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Response, ApiError> {
    set_policy(&state, account, &policy).await?;
    Ok(Json(policy).into_response())
}

/// Validates and saves a policy, announcing the change of visible status it causes.
pub async fn set_policy(state: &AppState, account: AccountId, policy: &Policy) -> Result<(), ApiError> {
    validate_policy(policy)?;
    let change = state.store.set_policy(account, policy, unix_now()).await?;
    state.presence.publish(change);
    Ok(())
}
