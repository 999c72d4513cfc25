//! The apps and grants API: developers register and change apps, apps trade consent codes for
//! uids and read their users' presence and webhook deliveries, users list, pause and revoke
//! their grants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AuthedAccount, AuthedApp};
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::HttpState;
use crate::domain::{App, DeliveryAttempt, DeliveryRecord, GrantInfo, WebhookHealth};
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

#[derive(Serialize, Deserialize, ToSchema)]
pub struct NewApp {
    /// 1 to 80 characters, no control characters.
    pub name: String,
    /// Exact redirect URIs: https, or http to loopback only.
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// `pairs` (the default) or `v1`.
    #[serde(default)]
    pub webhook_format: Option<String>,
}

/// `pairs` unless the request names a format.
fn webhook_format(named: Option<&str>) -> Result<crate::domain::EventFormat, ApiError> {
    Ok(named.map(apps::parse_webhook_format).transpose()?.unwrap_or_default())
}

/// A new app's id and secrets, shown once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedApp {
    pub app_id: String,
    /// `ps_…`: HTTP Basic `app_id:secret`, or `Authorization: Bearer <secret>`.
    pub secret: String,
    /// `whsec_…`: the key webhooks are signed with.
    pub webhook_secret: String,
}

/// An app as its owner sees it (no secrets).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub app_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub webhook_url: Option<String>,
    /// The webhook body: `pairs` or `v1`.
    #[schema(value_type = String)]
    pub webhook_format: crate::domain::EventFormat,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<&App> for AppView {
    fn from(app: &App) -> AppView {
        AppView {
            app_id: app.app_id.clone(),
            name: app.name.clone(),
            redirect_uris: app.redirect_uris.clone(),
            webhook_url: app.webhook_url.clone(),
            webhook_format: app.webhook_format,
            created_at: app.created_at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AppList {
    pub apps: Vec<AppView>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RotatedSecret {
    pub app_id: String,
    /// The new `ps_…`, shown once.
    pub secret: String,
    /// Unix seconds until which the old secret still works; `null` when it stopped at once.
    pub previous_valid_until: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ExchangedCode {
    /// The user's id at this app (`u_…`).
    pub uid: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PresenceList {
    /// `[uid, status]` for each asked uid with an enabled grant.
    #[schema(schema_with = super::openapi::uid_status_pairs)]
    pub presence: Vec<(String, String)>,
}

#[derive(Serialize, ToSchema)]
pub struct Deliveries {
    pub webhook_url: Option<String>,
    /// `null` before the first attempt.
    pub webhook: Option<WebhookHealth>,
    /// The page's attempts as before attempts had ids (kept for existing clients).
    pub deliveries: Vec<DeliveryRecord>,
    /// The page's attempts, newest first, each with its id (for a resend).
    pub attempts: Vec<DeliveryAttempt>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantInfo>,
}

/// Registers an app for the signed-in user.
#[utoipa::path(post, path = "/v1/apps", tag = "apps", security(("user" = [])), request_body = NewApp,
    responses(
        (status = 201, description = "registered", body = CreatedApp),
        (status = 400, description = "`invalid_name`, `invalid_redirect_uri` or `invalid_webhook_url`", body = ErrorBody),
    ))]
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
        CreatedApp { app_id: created.app_id, secret: created.secret, webhook_secret: created.webhook_secret };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The signed-in user's apps.
#[utoipa::path(get, path = "/v1/apps", tag = "apps", security(("user" = [])),
    responses((status = 200, description = "the apps", body = AppList)))]
async fn list_apps(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let apps = state.store.apps_of(account).await?.iter().map(AppView::from).collect();
    Ok(Json(AppList { apps }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    /// `""` or `null` removes the webhook.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    webhook_url: Option<Option<String>>,
    #[serde(default)]
    webhook_format: Option<String>,
}

/// Tells a field that is absent (`None`) from one that is `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(deserializer)?))
}

/// Changes an app's name, redirect URIs or webhook URL (absent fields stay).
#[utoipa::path(patch, path = "/v1/apps/{app_id}", tag = "apps", security(("user" = [])), request_body = AppPatch,
    params(("app_id" = String, Path)),
    responses(
        (status = 200, description = "the app now", body = AppView),
        (status = 400, description = "`invalid_name`, `invalid_redirect_uri` or `invalid_webhook_url`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such app of yours", body = ErrorBody),
    ))]
async fn update_app(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(app_id): ApiPath<String>,
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
    Ok(Json(AppView::from(&app)).into_response())
}

/// The optional body of `POST /v1/apps/{app_id}/secret`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRotation {
    /// How long the old secret keeps working, in seconds (0, the default: it stops at once; at
    /// most 604800).
    #[serde(default)]
    pub overlap_seconds: u64,
}

/// Gives the app a new secret; the old one stops working at once, or after the overlap.
#[utoipa::path(post, path = "/v1/apps/{app_id}/secret", tag = "apps", security(("user" = [])),
    params(("app_id" = String, Path)),
    request_body(content = Option<SecretRotation>, description = "optional"),
    responses(
        (status = 200, description = "the new secret, shown once", body = RotatedSecret),
        (status = 400, description = "`invalid_overlap` or `invalid_body`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such app of yours", body = ErrorBody),
    ))]
async fn rotate_secret(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(app_id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<RotatedSecret>, ApiError> {
    // The body is optional: none (or `{}`) rotates as before, the old secret stopping at once.
    let rotation: SecretRotation = optional_json(&body)?;
    let overlap = std::time::Duration::from_secs(rotation.overlap_seconds);
    let rotated = apps::rotate_app_secret(&state, account, &app_id, overlap).await?;
    Ok(Json(RotatedSecret {
        app_id,
        secret: rotated.secret,
        previous_valid_until: rotated.previous_valid_until,
    }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecretRotation {
    /// How long the replaced secret keeps signing too, in seconds; 86400 when absent, at most
    /// 604800, 0 ends it at once.
    #[serde(default)]
    pub overlap_seconds: Option<u64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RotatedWebhookSecret {
    /// The new `whsec_…`, shown once.
    pub webhook_secret: String,
    /// RFC 3339 UTC: until when deliveries also carry the old secret's signature.
    pub previous_valid_until: String,
}

/// `POST /v1/apps/{app_id}/webhook/secret`: a new webhook signing secret, shown once; the old
/// one signs alongside it for the overlap.
#[utoipa::path(post, path = "/v1/apps/{app_id}/webhook/secret", tag = "apps", security(("user" = [])),
    params(("app_id" = String, Path)),
    request_body(content = Option<WebhookSecretRotation>, description = "optional"),
    responses(
        (status = 200, description = "the new webhook secret, shown once", body = RotatedWebhookSecret),
        (status = 400, description = "`invalid_overlap` or `invalid_body`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such app of yours", body = ErrorBody),
    ))]
async fn rotate_webhook_secret(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(app_id): ApiPath<String>,
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

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CodeExchange {
    /// `pc_…`, from the consent redirect.
    pub code: String,
    /// Required: the one the consent was asked with.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// The PKCE verifier, when the consent was asked with a `code_challenge`.
    #[serde(default)]
    pub code_verifier: Option<String>,
}

/// `POST /v1/grants/token`: the app trades the code from the consent redirect for the user's uid.
#[utoipa::path(post, path = "/v1/grants/token", tag = "grants", security(("app_basic" = []), ("app_bearer" = [])),
    request_body = CodeExchange,
    responses(
        (status = 200, description = "the user's uid at this app", body = ExchangedCode),
        (status = 400, description = "`invalid_grant`, or `invalid_request` without `redirect_uri`", body = ErrorBody),
    ))]
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
    Ok(Json(ExchangedCode { uid }).into_response())
}

/// `GET /v1/apps/{app_id}/presence?uid=…&uid=…` (or `uid=a,b`): the current status of granted
/// users; uids without an enabled grant are left out.
#[utoipa::path(get, path = "/v1/apps/{app_id}/presence", tag = "apps", security(("app_basic" = []), ("app_bearer" = [])),
    params(
        ("app_id" = String, Path),
        ("uid" = Vec<String>, Query, description = "1 to 100 uids, repeated or comma-separated", explode = true),
    ),
    responses(
        (status = 200, description = "the statuses", body = PresenceList),
        (status = 400, description = "`invalid_uid`: no uid or more than 100", body = ErrorBody),
    ))]
async fn current_presence(
    State(state): State<HttpState>,
    ApiPath(app_id): ApiPath<String>,
    authed: AuthedApp,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    authed.require(&app_id)?;
    let uids: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "uid")
        .flat_map(|(_, value)| {
            // No uid holds a NUL: such a one is left out like any unknown uid.
            let uids = value.split(',').map(str::trim).filter(|v| !v.is_empty() && !v.contains('\0'));
            uids.map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    let found = grants::presence_of(&state, &app_id, &uids).await?;
    let found: Vec<(String, String)> = found.into_iter().map(|entry| (entry.uid, entry.status)).collect();
    Ok(Json(PresenceList { presence: found }).into_response())
}

/// `GET /v1/apps/{app_id}/deliveries?limit=N&cursor=C`: the webhook's health and its attempts,
/// newest first, a page at a time.
#[utoipa::path(get, path = "/v1/apps/{app_id}/deliveries", tag = "apps", security(("app_basic" = []), ("app_bearer" = [])),
    params(
        ("app_id" = String, Path),
        ("limit" = Option<u32>, Query, description = "1 to 500, default 100"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "the webhook's health and a page of attempts", body = Deliveries),
        (status = 400, description = "`invalid_cursor` or `invalid_limit`", body = ErrorBody),
    ))]
async fn list_deliveries(
    State(state): State<HttpState>,
    ApiPath(app_id): ApiPath<String>,
    authed: AuthedApp,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Deliveries>, ApiError> {
    let app = authed.require(&app_id)?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let limit = deliveries::parse_limit(param("limit"))?;
    // Health first: an attempt and the health it changes commit together, so every attempt
    // behind the health read here is on the page read after it (the other order could show a
    // webhook disabled by an attempt the page does not hold yet).
    let health = state.store.webhook_health(&app_id).await?;
    let page = deliveries::page(&state, &app_id, limit, param("cursor")).await?;
    Ok(Json(Deliveries {
        webhook_url: app.webhook_url.clone(),
        webhook: health,
        deliveries: page.attempts.iter().map(|attempt| attempt.record.clone()).collect(),
        attempts: page.attempts,
        next_cursor: page.next_cursor,
    }))
}

/// Re-enables a disabled webhook.
#[utoipa::path(post, path = "/v1/apps/{app_id}/webhook/enable", tag = "apps", security(("user" = [])),
    params(("app_id" = String, Path)),
    responses(
        (status = 204, description = "enabled"),
        (status = 404, description = "`not_found`: no such app of yours", body = ErrorBody),
    ))]
async fn enable_webhook(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(app_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    apps::reenable_webhook(&state, account, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The apps the signed-in user granted.
#[utoipa::path(get, path = "/v1/me/grants", tag = "grants", security(("user" = [])),
    responses((status = 200, description = "the grants", body = GrantList)))]
async fn list_grants(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let grants = grants::list(&state, account).await?;
    Ok(Json(GrantList { grants }).into_response())
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantPatch {
    /// `false` pauses, `true` resumes.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Away is shown to the app as online.
    #[serde(default)]
    pub coarse: Option<bool>,
}

/// Pauses or resumes a grant, or sets its coarse mode.
#[utoipa::path(patch, path = "/v1/me/grants/{app_id}", tag = "grants", security(("user" = [])), request_body = GrantPatch,
    params(("app_id" = String, Path)),
    responses(
        (status = 200, description = "the grant now", body = GrantInfo),
        (status = 404, description = "`not_found`: no grant for that app", body = ErrorBody),
    ))]
async fn change_grant(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(app_id): ApiPath<String>,
    ApiJson(patch): ApiJson<GrantPatch>,
) -> Result<Response, ApiError> {
    grants::set(&state, account, &app_id, patch.enabled, patch.coarse).await?;
    let grant = grants::list(&state, account).await?.into_iter().find(|g| g.app_id == app_id);
    Ok(Json(grant).into_response())
}

/// Revokes a grant: the app is told `revoked` once, then nothing.
#[utoipa::path(delete, path = "/v1/me/grants/{app_id}", tag = "grants", security(("user" = [])),
    params(("app_id" = String, Path)),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "`not_found`: no grant for that app", body = ErrorBody),
    ))]
async fn revoke_grant(
    State(state): State<HttpState>,
    AuthedAccount(account): AuthedAccount,
    ApiPath(app_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    grants::revoke(&state, account, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
