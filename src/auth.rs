//! Who is calling: `AuthedAccount` reads `Authorization: Bearer …`, either a local token from
//! `POST /v1/tokens` (`pt_…`, looked up by digest) or, with an issuer configured, an OpenID
//! Connect JWT (the account keyed by issuer and subject, created on first use).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use crate::app::AppState;
use crate::error::ApiError;
use crate::secrets::digest;
use crate::store::AccountId;

pub const TOKEN_PREFIX: &str = "pt_";

/// A request from a signed-in user.
#[derive(Debug, Clone, Copy)]
pub struct AuthedAccount(pub AccountId);

/// The bearer token of the request, as given.
pub struct BearerToken(pub String);

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
    let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthorized("send Authorization: Bearer <token>"));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        bearer(parts).map(|token| BearerToken(token.to_owned()))
    }
}

impl FromRequestParts<AppState> for AuthedAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        authenticate(state, token).await.map(AuthedAccount)
    }
}

/// The account a bearer token speaks for.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AccountId, ApiError> {
    if token.starts_with(TOKEN_PREFIX) {
        return state
            .store
            .token_account(&digest(token), crate::ws::unix_now())
            .await?
            .ok_or_else(|| unauthorized("the token is unknown, expired or revoked"));
    }
    let Some(oidc) = &state.oidc else {
        return Err(unauthorized("the token is unknown, expired or revoked"));
    };
    match oidc.verify(token).await {
        Ok(subject) => {
            Ok(state.store.oidc_account(&subject.iss, &subject.sub, crate::ws::unix_now()).await?)
        }
        Err(crate::oidc::OidcError::Provider(error)) => {
            tracing::warn!(error = %error, "identity provider unavailable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_provider_unavailable",
                "the identity provider cannot be reached; try again",
            ))
        }
        Err(error) => {
            tracing::debug!(error = %error, "oidc token refused");
            Err(unauthorized(&error.to_string()))
        }
    }
}
