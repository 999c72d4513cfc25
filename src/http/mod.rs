//! The HTTP interface for people and apps: the JSON API under `/v1`, the web pages (sign-in,
//! consent, settings, developers) and the operator's `/healthz` and `/metrics`. Handlers parse
//! the request, call an operation (`ops`) and shape the answer; errors become `ApiError`.

pub mod access;
pub mod api;
pub mod apps;
pub mod auth;
pub mod control;
pub mod deliveries;
pub mod error;
pub mod health;
pub mod me;
pub mod notifications;
pub mod oidc;
pub mod openapi;
pub mod web;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;

use crate::ops::Core;
use crate::vault::Vault;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub core: Core,
    pub oidc: Option<Arc<oidc::OidcVerifier>>,
    /// Seals secrets carried to the next page (shown once).
    pub flash_vault: Arc<Vault>,
    /// Makes the pages' CSRF tokens.
    pub csrf_key: Arc<web::CsrfKey>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`trusted_proxies`).
    pub trusted_proxies: Arc<Vec<crate::egress::Cidr>>,
}

impl std::ops::Deref for HttpState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// Runs before every request of people and apps: on a lone node the store first catches up
/// with the presence journal (`Engine::settle`), so a read sees every status change answered
/// before it.
pub async fn settled(
    axum::extract::State(core): axum::extract::State<Core>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    core.presence.settle().await;
    next.run(request).await
}

/// Every HTTP route but the device gateway's and the app streams'.
pub fn routes(state: HttpState) -> Router {
    let json_limit = DefaultBodyLimit::max(state.config.max_json_body);
    Router::new()
        .merge(
            api::routes()
                .merge(me::routes())
                .merge(apps::routes())
                .merge(deliveries::routes())
                .merge(notifications::routes())
                .layer(json_limit),
        )
        .merge(openapi::routes())
        .merge(web::routes())
        .merge(health::routes(state.config.admin_addr().is_none()))
        .with_state(state)
}

/// The comma-separated tokens of every `name` header, trimmed, in order (RFC 9110, section 5.3).
pub fn header_tokens(
    headers: &axum::http::HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}
