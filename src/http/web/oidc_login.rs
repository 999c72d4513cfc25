//! Signing in through the configured OpenID Connect provider (Firefox Accounts in production):
//! the authorization-code flow with PKCE, a nonce, and `state` kept in a sealed, short-lived
//! cookie. The ID token is verified like any bearer JWT (keys, issuer, audience = our client id,
//! expiry) and must carry our nonce.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{cookie, message, safe_next, set_cookie};
use crate::http::HttpState;
use crate::secrets::{constant_time_eq, new_secret};

const COOKIE: &str = "presence_oidc";

#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

#[derive(Deserialize)]
pub struct Start {
    next: Option<String>,
}

fn callback_url(state: &HttpState) -> String {
    format!("{}/login/oidc/callback", state.public_url)
}

fn unavailable() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in is unavailable",
        "The identity provider cannot be reached. Try again in a moment.",
    )
}

pub async fn start(State(state): State<HttpState>, Query(query): Query<Start>) -> Response {
    let Some(oidc) = &state.oidc else {
        return message(
            StatusCode::NOT_FOUND,
            "No identity provider",
            "This server signs in with local accounts only.",
        );
    };
    let Ok(discovery) = oidc.discovery().await else { return unavailable() };
    let Some(endpoint) = discovery.authorization_endpoint else { return unavailable() };
    let pending = Pending {
        state: new_secret(""),
        nonce: new_secret(""),
        verifier: new_secret(""),
        next: safe_next(query.next.as_deref()),
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
    let Ok(mut url) = url::Url::parse(&endpoint) else { return unavailable() };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &state.config.oidc_audience)
        .append_pair("redirect_uri", &callback_url(&state))
        .append_pair("scope", "openid email")
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let sealed = state.flash_vault.seal(&serde_json::to_string(&pending).expect("serializes"));
    let mut response = Redirect::to(url.as_str()).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&state, COOKIE, &sealed, "Lax", Some(600)));
    response
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: String,
}

pub async fn callback(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    let refused =
        || message(StatusCode::BAD_REQUEST, "Sign-in did not complete", "Start again from the sign-in page.");
    let Some(oidc) = state.oidc.clone() else { return refused() };
    let pending: Option<Pending> = cookie(&state, &headers, COOKIE)
        .and_then(|sealed| state.flash_vault.open(sealed))
        .and_then(|json| serde_json::from_str(&json).ok());
    let (Some(pending), Some(code), Some(returned)) = (pending, query.code, query.state) else {
        if query.error.is_some() {
            return message(
                StatusCode::FORBIDDEN,
                "Sign-in was cancelled",
                "The identity provider did not sign you in.",
            );
        }
        return refused();
    };
    if !constant_time_eq(&pending.state, &returned) {
        return refused();
    }
    let Ok(discovery) = oidc.discovery().await else { return unavailable() };
    let Some(token_endpoint) = discovery.token_endpoint else { return unavailable() };
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", callback_url(&state)),
        ("client_id", state.config.oidc_audience.clone()),
        ("code_verifier", pending.verifier.clone()),
    ];
    let secret = secrecy::ExposeSecret::expose_secret(&state.config.oidc_client_secret).to_owned();
    if !secret.is_empty() {
        form.push(("client_secret", secret));
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("static settings");
    let tokens = match client.post(&token_endpoint).form(&form).send().await {
        Ok(response) if response.status().is_success() => response.json::<TokenResponse>().await.ok(),
        Ok(response) => {
            tracing::warn!(status = %response.status(), "the identity provider refused the code");
            None
        }
        Err(error) => {
            tracing::warn!(error = %crate::error::chain(&error), "cannot reach the token endpoint");
            return unavailable();
        }
    };
    let Some(tokens) = tokens else { return refused() };
    let subject = match oidc.verify_id_token(&tokens.id_token, &pending.nonce).await {
        Ok(subject) => subject,
        Err(error) => {
            tracing::warn!(error = %error, "id token refused");
            return refused();
        }
    };
    let account = match crate::ops::accounts::oidc_account(&state, &subject.iss, &subject.sub).await {
        Ok(account) => account,
        Err(crate::ops::Error::Forbidden { detail, .. }) => {
            return super::message(axum::http::StatusCode::FORBIDDEN, "Account disabled", &detail)
        }
        Err(error) => return crate::http::error::ApiError::from(error).into_response(),
    };
    let mut response = super::login::start_session(&state, account, &pending.next).await;
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&state, COOKIE, "", "Lax", Some(0)));
    response
}
