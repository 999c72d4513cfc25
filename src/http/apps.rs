//! The apps and grants API: developers register and change apps, apps trade consent codes for
//! uids and read their users' presence and webhook deliveries, users list, pause and revoke
//! their grants.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{AuthedAccount, AuthedApp};
use super::error::{ApiError, ApiJson};
use super::HttpState;
use crate::domain::{App, DeliveryAttempt, DeliveryRecord, WebhookHealth};
use crate::ops::{apps, deliveries, grants};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/apps", post(create_app).get(list_apps))
        .route("/v1/apps/{app_id}", patch(update_app))
        .route("/v1/apps/{app_id}/secret", post(rotate_secret))
        .route("/v1/apps/{app_id}/webhook/secret", post(rotate_webhook_secret))
        .route("/v1/apps/{app_id}/presence", get(current_presence))
        .route("/v1/apps/{app_id}/deliveries", get(list_deliveries))
        .route("/v1/apps/{app_id}/webhook/enable", post(enable_webhook))
        .route("/v1/grants/token", post(exchange_code))
        .route("/v1/me/grants", get(list_grants))
        .route("/v1/me/grants/{app_id}", patch(change_grant).delete(revoke_grant))
}

#[derive(Deserialize)]
struct NewApp {
    name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    webhook_url: Option<String>,
    /// `pairs` (the default) or `v1`.
    #[serde(default)]
    webhook_format: Option<String>,
}

/// `pairs` unless the request names a format.
fn webhook_format(named: Option<&str>) -> Result<crate::domain::EventFormat, ApiError> {
    Ok(named.map(apps::parse_webhook_format).transpose()?.unwrap_or_default())
}

async fn create_app(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(body): ApiJson<NewApp>,
) -> Result<Response, ApiError> {
    let webhook_url = body.webhook_url.as_deref().unwrap_or("");
    let format = webhook_format(body.webhook_format.as_deref())?;
    let created =
        apps::register_app(&state, account, &body.name, &body.redirect_uris, webhook_url, format).await?;
    let body =
        json!({"app_id": created.app_id, "secret": created.secret, "webhook_secret": created.webhook_secret});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn app_json(app: &App) -> serde_json::Value {
    json!({
        "app_id": app.app_id,
        "name": app.name,
        "redirect_uris": app.redirect_uris,
        "webhook_url": app.webhook_url,
        "webhook_format": app.webhook_format,
        "created_at": app.created_at,
    })
}

async fn list_apps(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let apps: Vec<_> = state.store.apps_of(account).await?.iter().map(app_json).collect();
    Ok(Json(json!({"apps": apps})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    /// `""` or `null` removes the webhook.
    #[serde(default, deserialize_with = "present")]
    webhook_url: Option<Option<String>>,
    #[serde(default)]
    webhook_format: Option<String>,
}

/// Tells a field that is absent (`None`) from one that is `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(deserializer)?))
}

async fn update_app(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
    ApiJson(patch): ApiJson<AppPatch>,
) -> Result<Response, ApiError> {
    let webhook_url = patch.webhook_url.as_ref().map(Option::as_deref);
    let format = patch.webhook_format.as_deref().map(apps::parse_webhook_format).transpose()?;
    let app = apps::update(
        &state,
        account,
        &app_id,
        patch.name.as_deref(),
        patch.redirect_uris.as_deref(),
        webhook_url,
        format,
    )
    .await?;
    Ok(Json(app_json(&app)).into_response())
}

/// The optional body of `POST /v1/apps/{app_id}/secret`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SecretRotation {
    /// How long the old secret keeps working (0: it stops at once).
    #[serde(default)]
    overlap_seconds: u64,
}

#[derive(Serialize)]
struct RotatedSecret {
    app_id: String,
    secret: String,
    /// Unix seconds; `null` when the old secret stopped at once.
    previous_valid_until: Option<i64>,
}

async fn rotate_secret(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RotatedSecret>, ApiError> {
    // The body is optional: none (or `{}`) rotates as before, the old secret stopping at once.
    let rotation: SecretRotation = if body.iter().all(u8::is_ascii_whitespace) {
        SecretRotation::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", error.to_string()))?
    };
    let overlap = std::time::Duration::from_secs(rotation.overlap_seconds);
    let rotated = apps::rotate_app_secret(&state, account, &app_id, overlap).await?;
    Ok(Json(RotatedSecret {
        app_id,
        secret: rotated.secret,
        previous_valid_until: rotated.previous_valid_until,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebhookSecretRotation {
    /// How long the replaced secret keeps signing too; 24 hours when absent.
    #[serde(default)]
    overlap_seconds: Option<u64>,
}

#[derive(Serialize)]
struct RotatedWebhookSecret {
    webhook_secret: String,
    /// RFC 3339 UTC: until when deliveries also carry the old secret's signature.
    previous_valid_until: String,
}

/// `POST /v1/apps/{app_id}/webhook/secret`: a new webhook signing secret, shown once; the old
/// one signs alongside it for the overlap.
async fn rotate_webhook_secret(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RotatedWebhookSecret>, ApiError> {
    let body: WebhookSecretRotation = optional_json(&body)?;
    let overlap = body.overlap_seconds.map_or(apps::DEFAULT_WEBHOOK_OVERLAP, std::time::Duration::from_secs);
    let rotated = apps::rotate_webhook_secret(&state, account, &app_id, overlap).await?;
    Ok(Json(RotatedWebhookSecret {
        webhook_secret: rotated.webhook_secret,
        previous_valid_until: crate::clock::rfc3339(rotated.previous_valid_until),
    }))
}

/// A JSON body that may be left out entirely (every field then takes its default).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", error.to_string()))
}

#[derive(Deserialize)]
struct CodeExchange {
    code: String,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
}

/// `POST /v1/grants/token`: the app trades the code from the consent redirect for the user's uid.
async fn exchange_code(
    State(state): State<HttpState>,
    AuthedApp(app): AuthedApp,
    ApiJson(body): ApiJson<CodeExchange>,
) -> Result<Response, ApiError> {
    let uid = grants::exchange_code(
        &state,
        &app,
        &body.code,
        body.redirect_uri.as_deref(),
        body.code_verifier.as_deref(),
    )
    .await?;
    Ok(Json(json!({"uid": uid})).into_response())
}

/// `GET /v1/apps/{app_id}/presence?uid=…&uid=…` (or `uid=a,b`): the current status of granted
/// users; uids without an enabled grant are left out.
async fn current_presence(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    authed: AuthedApp,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    authed.require(&app_id)?;
    let uids: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "uid")
        .flat_map(|(_, value)| {
            value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    let found = grants::presence_of(&state, &app_id, &uids).await?;
    let found: Vec<(String, String)> = found.into_iter().map(|entry| (entry.uid, entry.status)).collect();
    Ok(Json(json!({"presence": found})).into_response())
}

#[derive(Serialize)]
struct DeliveriesPage {
    webhook_url: Option<String>,
    webhook: Option<WebhookHealth>,
    /// The page's attempts as before attempts had ids (kept for existing clients).
    deliveries: Vec<DeliveryRecord>,
    attempts: Vec<DeliveryAttempt>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/apps/{app_id}/deliveries?limit=N&cursor=C`: the webhook's health and its attempts,
/// newest first, a page at a time.
async fn list_deliveries(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    authed: AuthedApp,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<DeliveriesPage>, ApiError> {
    let app = authed.require(&app_id)?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let limit = deliveries::parse_limit(param("limit"))?;
    let page = deliveries::page(&state, &app_id, limit, param("cursor")).await?;
    let health = state.store.webhook_health(&app_id).await?;
    Ok(Json(DeliveriesPage {
        webhook_url: app.webhook_url.clone(),
        webhook: health,
        deliveries: page.attempts.iter().map(|attempt| attempt.record.clone()).collect(),
        attempts: page.attempts,
        next_cursor: page.next_cursor,
    }))
}

async fn enable_webhook(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    apps::reenable_webhook(&state, account, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let grants = grants::list(&state, account).await?;
    Ok(Json(json!({"grants": grants})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantPatch {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    coarse: Option<bool>,
}

async fn change_grant(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
    ApiJson(patch): ApiJson<GrantPatch>,
) -> Result<Response, ApiError> {
    grants::set(&state, account, &app_id, patch.enabled, patch.coarse).await?;
    let grant = grants::list(&state, account).await?.into_iter().find(|g| g.app_id == app_id);
    Ok(Json(grant).into_response())
}

async fn revoke_grant(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    grants::revoke(&state, account, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
