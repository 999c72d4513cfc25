//! Request ids and access logs. Every request gets an `x-request-id` (the caller's, or a new
//! UUID), echoed on the response, and one structured `tracing` event when it is answered
//! (target `presence::access`: method, path, status, latency, request id). Paths are logged
//! without their query, and an endpoint token (`/update/<token>`) is never logged.

use std::time::Duration;

use axum::http::{Request, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// A path as it may be logged: the token of a push endpoint is left out.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/update/") {
        "/update/…"
    } else {
        path
    }
}

/// Wraps a router with request ids and the access log.
pub fn layer(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("")
                .to_owned();
            tracing::info_span!(
                "request",
                request_id = %id,
                method = %request.method(),
                path = %loggable_path(request.uri().path()),
            )
        })
        .on_request(())
        .on_response(|response: &Response<_>, latency: Duration, _: &Span| {
            tracing::info!(
                target: "presence::access",
                status = response.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                "answered"
            );
        })
        .on_failure(());
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Times every request into `presence_http_request_duration_seconds`, labelled by the route
/// template axum matched (`/update/{token}`, never the token itself); `unmatched` otherwise.
pub fn timed(router: Router, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(metrics, time_request))
}

async fn time_request(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<crate::metrics::Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |matched| matched.as_str())
        .to_owned();
    let response = next.run(request).await;
    let labels = crate::metrics::HttpLabels { method, route, status: response.status().as_u16() };
    metrics.timings.http_request.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_tokens_are_not_logged() {
        assert_eq!(super::loggable_path("/update/abcDEF123"), "/update/…");
        assert_eq!(super::loggable_path("/v1/me"), "/v1/me");
    }
}
