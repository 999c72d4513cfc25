//! The operator's endpoints: `/healthz` (readiness: 503 when the store does not answer) and
//! `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::HttpState;

pub fn routes() -> Router<HttpState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics))
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
