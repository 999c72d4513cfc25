//! Apps and grants: how a developer registers an app, how an app proves who it is, how a
//! consent code becomes a uid, and how a user pauses or revokes an app. The web pages call the
//! same functions as the JSON API.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::app::AppState;
use crate::auth::AuthedAccount;
use crate::error::{ApiError, ApiJson};
use crate::secrets::{constant_time_eq, digest, new_secret};
use crate::store::{AccountId, App, AppChanges, AuthCode};
use crate::ws::unix_now;

pub const APP_SECRET_PREFIX: &str = "ps_";
const MAX_REDIRECT_URIS: usize = 10;
const MAX_URL_LENGTH: usize = 2000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", post(create_app).get(list_apps))
        .route("/v1/apps/{app_id}", patch(update_app))
        .route("/v1/apps/{app_id}/secret", post(rotate_secret))
        .route("/v1/apps/{app_id}/presence", get(current_presence))
        .route("/v1/apps/{app_id}/deliveries", get(list_deliveries))
        .route("/v1/apps/{app_id}/webhook/enable", post(enable_webhook))
        .route("/v1/grants/token", post(exchange_code))
        .route("/v1/me/grants", get(list_grants))
        .route("/v1/me/grants/{app_id}", patch(change_grant).delete(revoke_grant))
}

fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

/// A redirect URI apps may register: absolute, no fragment, https (or http to loopback only).
pub fn validate_redirect_uri(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    let invalid = || {
        bad_request(
            "invalid_redirect_uri",
            format!("{raw:?} is not a valid redirect URI: use an absolute https URL (http only for loopback), without a fragment"),
        )
    };
    if raw.len() > MAX_URL_LENGTH {
        return Err(invalid());
    }
    let url = Url::parse(raw).map_err(|_| invalid())?;
    if url.fragment().is_some() || !crate::config::is_secure_or_loopback(raw) || !url.username().is_empty() {
        return Err(invalid());
    }
    Ok(raw.to_owned())
}

/// A webhook URL: absolute http(s). Where it may connect is checked when it is used.
pub fn validate_webhook_url(raw: &str) -> Result<Option<String>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && raw.len() <= MAX_URL_LENGTH =>
        {
            Ok(Some(raw.to_owned()))
        }
        _ => Err(bad_request("invalid_webhook_url", format!("{raw:?} is not an absolute http(s) URL"))),
    }
}

/// A webhook URL, refused at once when its host is an address webhooks may not reach.
fn checked_webhook_url(state: &AppState, raw: &str) -> Result<Option<String>, ApiError> {
    let url = validate_webhook_url(raw)?;
    if let Some(url) = &url {
        let parsed = Url::parse(url).expect("validated above");
        state.egress.check_url(&parsed).map_err(|why| bad_request("invalid_webhook_url", why))?;
    }
    Ok(url)
}

fn validate_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(bad_request(
            "invalid_name",
            "an app name is 1 to 80 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

fn validate_redirect_uris(uris: &[String]) -> Result<Vec<String>, ApiError> {
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(bad_request(
            "invalid_redirect_uri",
            format!("register 1 to {MAX_REDIRECT_URIS} redirect URIs"),
        ));
    }
    uris.iter().map(|u| validate_redirect_uri(u)).collect()
}

/// A new app's secrets, shown once.
pub struct AppCredentials {
    pub app_id: String,
    pub secret: String,
    pub webhook_secret: String,
}

/// Registers an app for `owner`.
pub async fn register_app(
    state: &AppState,
    owner: AccountId,
    name: &str,
    redirect_uris: &[String],
    webhook_url: &str,
) -> Result<AppCredentials, ApiError> {
    let name = validate_name(name)?;
    let redirect_uris = validate_redirect_uris(redirect_uris)?;
    let webhook_url = checked_webhook_url(state, webhook_url)?;
    let app_id = format!("app_{}", hex::encode(rand::random::<[u8; 8]>()));
    let secret = new_secret(APP_SECRET_PREFIX);
    let webhook_secret = format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()));
    let app = App {
        app_id: app_id.clone(),
        owner,
        name,
        redirect_uris,
        webhook_url,
        secret_hash: digest(&secret),
        webhook_secret_sealed: state.webhook_vault.seal(&webhook_secret),
        created_at: unix_now(),
    };
    state.store.create_app(&app).await?;
    tracing::info!(app_id = %app_id, "app registered");
    Ok(AppCredentials { app_id, secret, webhook_secret })
}

/// Gives the app a new secret; the old one stops working at once.
pub async fn rotate_app_secret(state: &AppState, owner: AccountId, app_id: &str) -> Result<String, ApiError> {
    let secret = new_secret(APP_SECRET_PREFIX);
    if !state.store.rotate_app_secret(owner, app_id, &digest(&secret)).await? {
        return Err(ApiError::not_found("no such app"));
    }
    tracing::info!(app_id = %app_id, "app secret rotated");
    Ok(secret)
}

/// A request from an app: HTTP Basic `app_id:secret`, or `Bearer <secret>`.
pub struct AuthedApp(pub App);

fn invalid_client() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client", "authenticate with the app id and secret")
}

impl FromRequestParts<AppState> for AuthedApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(invalid_client)?;
        let (scheme, credentials) = value.split_once(' ').ok_or_else(invalid_client)?;
        let app = if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD.decode(credentials.trim()).map_err(|_| invalid_client())?;
            let decoded = String::from_utf8(decoded).map_err(|_| invalid_client())?;
            let (app_id, secret) = decoded.split_once(':').ok_or_else(invalid_client)?;
            state.store.app(app_id).await?.filter(|app| constant_time_eq(&digest(secret), &app.secret_hash))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            state.store.app_by_secret(&digest(credentials.trim())).await?
        } else {
            None
        };
        app.map(AuthedApp).ok_or_else(invalid_client)
    }
}

impl AuthedApp {
    /// Refuses a request about another app than the one authenticated.
    pub fn require(&self, app_id: &str) -> Result<&App, ApiError> {
        if self.0.app_id == app_id {
            Ok(&self.0)
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "these credentials are for another app"))
        }
    }
}

/// PKCE S256: the challenge is base64url(SHA-256(verifier)).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    valid_verifier
        && constant_time_eq(&URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())), challenge)
}

/// Issues a consent code for an allowed grant; returns the code to hand to the app.
pub async fn issue_code(
    state: &AppState,
    account: AccountId,
    app_id: &str,
    redirect_uri: &str,
    code_challenge: Option<&str>,
) -> Result<String, ApiError> {
    let code = new_secret("pc_");
    let record = AuthCode {
        app_id: app_id.to_owned(),
        account,
        redirect_uri: redirect_uri.to_owned(),
        code_challenge: code_challenge.map(str::to_owned),
        expires_at: unix_now() + state.config.grant_code_ttl.as_secs() as i64,
    };
    state.store.create_code(&digest(&code), &record).await?;
    Ok(code)
}

/// Grants the app access for the user; a grant that exists keeps its uid.
pub async fn allow(state: &AppState, account: AccountId, app_id: &str) -> Result<String, ApiError> {
    let uid = format!("u_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()));
    let (uid, events) = state.store.grant(account, app_id, &uid, unix_now()).await?;
    state.presence.announce(&events);
    Ok(uid)
}

#[derive(Deserialize)]
struct NewApp {
    name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    webhook_url: Option<String>,
}

async fn create_app(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    ApiJson(body): ApiJson<NewApp>,
) -> Result<Response, ApiError> {
    let created = register_app(
        &state,
        account,
        &body.name,
        &body.redirect_uris,
        body.webhook_url.as_deref().unwrap_or(""),
    )
    .await?;
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
        "created_at": app.created_at,
    })
}

async fn list_apps(
    State(state): State<AppState>,
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
}

/// Tells a field that is absent (`None`) from one that is `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(deserializer)?))
}

async fn update_app(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
    ApiJson(patch): ApiJson<AppPatch>,
) -> Result<Response, ApiError> {
    let changes = AppChanges {
        name: patch.name.as_deref().map(validate_name).transpose()?,
        redirect_uris: patch.redirect_uris.as_deref().map(validate_redirect_uris).transpose()?,
        webhook_url: match patch.webhook_url {
            Some(url) => Some(checked_webhook_url(&state, url.as_deref().unwrap_or(""))?),
            None => None,
        },
    };
    if !state.store.update_app(account, &app_id, &changes).await? {
        return Err(ApiError::not_found("no such app"));
    }
    let app = state.store.app(&app_id).await?.ok_or_else(|| ApiError::not_found("no such app"))?;
    Ok(Json(app_json(&app)).into_response())
}

async fn rotate_secret(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    let secret = rotate_app_secret(&state, account, &app_id).await?;
    Ok(Json(json!({"app_id": app_id, "secret": secret})).into_response())
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
    State(state): State<AppState>,
    AuthedApp(app): AuthedApp,
    ApiJson(body): ApiJson<CodeExchange>,
) -> Result<Response, ApiError> {
    let invalid = |detail: &str| bad_request("invalid_grant", detail);
    // Taking the code spends it, whatever happens next: a code is tried once.
    let code = state
        .store
        .take_code(&digest(&body.code))
        .await?
        .ok_or_else(|| invalid("the code is unknown, was already used, or expired"))?;
    if code.expires_at <= unix_now() {
        return Err(invalid("the code is unknown, was already used, or expired"));
    }
    if code.app_id != app.app_id {
        return Err(invalid("the code was issued to another app"));
    }
    if body.redirect_uri.as_deref().is_some_and(|uri| uri != code.redirect_uri) {
        return Err(invalid("redirect_uri differs from the one the code was issued for"));
    }
    if let Some(challenge) = &code.code_challenge {
        let verified =
            body.code_verifier.as_deref().is_some_and(|verifier| pkce_matches(verifier, challenge));
        if !verified {
            return Err(invalid("code_verifier does not match the code_challenge"));
        }
    }
    let uid = state
        .store
        .grant_uid(code.account, &app.app_id)
        .await?
        .ok_or_else(|| invalid("the user revoked this app meanwhile"))?;
    Ok(Json(json!({"uid": uid})).into_response())
}

/// `GET /v1/apps/{app_id}/presence?uid=…&uid=…` (or `uid=a,b`): the current status of granted
/// users; uids without an enabled grant are left out.
async fn current_presence(
    State(state): State<AppState>,
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
    if uids.is_empty() || uids.len() > 100 {
        return Err(bad_request("invalid_uid", "ask for 1 to 100 uids: ?uid=…&uid=…"));
    }
    let found = state.store.presence_of(&app_id, &uids).await?;
    Ok(Json(json!({"presence": found})).into_response())
}

/// `GET /v1/apps/{app_id}/deliveries`: the webhook's health and its latest attempts.
async fn list_deliveries(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    authed: AuthedApp,
) -> Result<Response, ApiError> {
    let app = authed.require(&app_id)?;
    let health = state.store.webhook_health(&app_id).await?;
    let deliveries = state.store.deliveries(&app_id, 100).await?;
    Ok(Json(json!({"webhook_url": app.webhook_url, "webhook": health, "deliveries": deliveries}))
        .into_response())
}

/// Re-enables a disabled webhook (its owner, signed in).
pub async fn reenable_webhook(state: &AppState, owner: AccountId, app_id: &str) -> Result<(), ApiError> {
    if state.store.enable_webhook(owner, app_id).await? {
        tracing::info!(app_id = %app_id, "webhook re-enabled");
        Ok(())
    } else {
        Err(ApiError::not_found("no such app"))
    }
}

async fn enable_webhook(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    reenable_webhook(&state, account, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
) -> Result<Response, ApiError> {
    let grants = state.store.grants_of(account).await?;
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
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
    ApiJson(patch): ApiJson<GrantPatch>,
) -> Result<Response, ApiError> {
    set_grant(&state, account, &app_id, patch.enabled, patch.coarse).await?;
    let grant = state.store.grants_of(account).await?.into_iter().find(|g| g.app_id == app_id);
    Ok(Json(grant).into_response())
}

/// Pauses, resumes or sets the coarse mode of a grant.
pub async fn set_grant(
    state: &AppState,
    account: AccountId,
    app_id: &str,
    enabled: Option<bool>,
    coarse: Option<bool>,
) -> Result<(), ApiError> {
    match state.store.set_grant(account, app_id, enabled, coarse, unix_now()).await? {
        Some(events) => {
            state.presence.announce(&events);
            Ok(())
        }
        None => Err(ApiError::not_found("no grant for that app")),
    }
}

/// Revokes a grant: the app loses the uid for good.
pub async fn revoke(state: &AppState, account: AccountId, app_id: &str) -> Result<(), ApiError> {
    match state.store.revoke_grant(account, app_id, unix_now()).await? {
        Some((_, events)) => {
            state.presence.announce(&events);
            Ok(())
        }
        None => Err(ApiError::not_found("no grant for that app")),
    }
}

async fn revoke_grant(
    State(state): State<AppState>,
    AuthedAccount(account): AuthedAccount,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke(&state, account, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_or_loopback_http() {
        for good in
            ["https://app.example/cb", "http://127.0.0.1:9000/cb", "http://localhost/cb", "http://[::1]:80/x"]
        {
            assert!(validate_redirect_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "/relative",
            "ftp://x/",
            "https://user@app.example/",
            "http://127.0.0.1.evil.example/",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pkce_s256_matches_only_its_verifier() {
        // The example of RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", challenge));
        assert!(!pkce_matches("short", challenge));
    }
}
