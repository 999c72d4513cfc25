//! The operator's endpoints: `/livez` (liveness: the process serves), `/healthz` (readiness: 503
//! when the store does not answer) and `/metrics` (Prometheus text). With `admin_listen` set,
//! `/metrics` moves to the admin listener, which serves these three only.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::HttpState;

/// `ok` or `unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Unavailable,
}

impl Health {
    fn of(up: bool) -> Health {
        if up {
            Health::Ok
        } else {
            Health::Unavailable
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    pub status: Health,
}

/// Readiness: the store, and on a node of a cluster the bus and the node's id.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub status: Health,
    pub store: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The health endpoints, and `/metrics` unless an admin listener serves it.
pub fn routes(with_metrics: bool) -> Router<HttpState> {
    let routes = Router::new().route("/livez", get(livez)).route("/healthz", get(healthz));
    if with_metrics {
        routes.route("/metrics", get(metrics))
    } else {
        routes
    }
}

/// What the admin listener serves.
pub fn admin(state: HttpState) -> Router {
    routes(true).with_state(state)
}

/// 200 while the process answers at all: restart it when this fails, not when the store is
/// down (that is `/healthz`, readiness).
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "the process serves", body = Liveness)))]
async fn livez() -> Response {
    Json(Liveness { status: Health::Ok }).into_response()
}

/// 503 when the store does not answer. A bus that is down is reported but not fatal: the node
/// still serves, delivering through the store.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "the store does not answer", body = Readiness),
    ))]
async fn healthz(State(state): State<HttpState>) -> Response {
    let store = match state.store.check().await {
        Ok(()) => Health::Ok,
        Err(error) => {
            tracing::warn!(error = %crate::error::chain(&error), "health check: store unavailable");
            Health::Unavailable
        }
    };
    let clustered = state.is_clustered();
    let body = Readiness {
        status: store,
        store,
        bus: clustered.then(|| Health::of(state.bus.is_connected())),
        node: clustered.then(|| state.node.to_string()),
    };
    let status = if store == Health::Ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus text; on the admin listener instead when `admin_listen` is set.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<HttpState>) -> Response {
    let bus = state.is_clustered().then(|| state.bus.is_connected());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(bus)).into_response()
}
