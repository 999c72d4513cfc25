//! Who is calling. `AuthedApp` reads an app's credentials (Basic `app_id:secret` or a bearer
//! secret). `AuthedAccount` reads `Authorization: Bearer …`, either a local token from
//! `POST /v1/tokens` (`pt_…`, looked up by digest) or, with an issuer configured, an OpenID
//! Connect JWT (the account keyed by issuer and subject, created on first use).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::error::ApiError;
use super::HttpState;
use crate::domain::{AccountId, App};
use crate::ops::accounts::{self, TOKEN_PREFIX};

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

impl FromRequestParts<HttpState> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &HttpState) -> Result<Self, ApiError> {
        bearer(parts).map(|token| BearerToken(token.to_owned()))
    }
}

impl FromRequestParts<HttpState> for AuthedAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        authenticate(state, token).await.map(AuthedAccount)
    }
}

/// The account a bearer token speaks for.
pub async fn authenticate(state: &HttpState, token: &str) -> Result<AccountId, ApiError> {
    if token.starts_with(TOKEN_PREFIX) {
        return accounts::token_account(state, token)
            .await?
            .ok_or_else(|| unauthorized("the token is unknown, expired or revoked"));
    }
    let Some(oidc) = &state.oidc else {
        return Err(unauthorized("the token is unknown, expired or revoked"));
    };
    match oidc.verify(token).await {
        Ok(subject) => Ok(accounts::oidc_account(state, &subject.iss, &subject.sub).await?),
        Err(super::oidc::OidcError::Provider(error)) => {
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

/// A request from an app: HTTP Basic `app_id:secret`, or `Bearer <secret>`.
pub struct AuthedApp(pub App);

fn invalid_client() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client", "authenticate with the app id and secret")
}

impl<S> FromRequestParts<S> for AuthedApp
where
    S: std::ops::Deref<Target = crate::ops::Core> + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
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
            if app_id.contains('\0') {
                return Err(invalid_client());
            }
            crate::ops::apps::authenticate(state, app_id, secret).await?
        } else if scheme.eq_ignore_ascii_case("bearer") {
            crate::ops::apps::authenticate_secret(state, credentials.trim()).await?
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

/// The client's address: the socket's peer, or, when the peer is a trusted proxy
/// (`trusted_proxies`), the nearest address in `X-Forwarded-For` that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

impl FromRequestParts<HttpState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        Ok(ClientAddr(client_addr(peer, &parts.headers, &state.trusted_proxies)))
    }
}

/// Walks `X-Forwarded-For` from the nearest hop while the hop is a trusted proxy; an
/// unparsable entry ends the walk at the last trusted hop's word.
pub fn client_addr(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[crate::egress::Cidr],
) -> std::net::IpAddr {
    let trusted_hop = |ip: std::net::IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !trusted_hop(peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = super::header_tokens(headers, "x-forwarded-for").collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else { break };
        client = ip;
        if !trusted_hop(ip) {
            break;
        }
    }
    client
}
