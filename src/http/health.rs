//! The operator's endpoints: `/livez` (liveness: the process serves), `/healthz` (readiness: 503
//! when the store does not answer) and `/metrics` (Prometheus text). With `admin_listen` set,
//! `/metrics` moves to the admin listener, which serves these three only.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::HttpState;

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
async fn livez() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// 503 when the store does not answer. A bus that is down is reported but not fatal: the node
/// still serves, delivering through the store.
async fn healthz(State(state): State<HttpState>) -> Response {
    let mut body = match state.store.check().await {
        Ok(()) => serde_json::json!({"status": "ok", "store": "ok"}),
        Err(error) => {
            tracing::warn!(error = %crate::error::chain(&error), "health check: store unavailable");
            serde_json::json!({"status": "unavailable", "store": "unavailable"})
        }
    };
    if state.is_clustered() {
        body["bus"] = (if state.bus.is_connected() { "ok" } else { "unavailable" }).into();
        body["node"] = state.node.as_ref().into();
    }
    let status = if body["store"] == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let bus = state.is_clustered().then(|| state.bus.is_connected());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(bus)).into_response()
}
