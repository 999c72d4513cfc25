//! `/` in a browser: a page that says what Presence is and leads to signing in, the settings
//! and the developers' page. The same path is the devices' WebSocket endpoint, so only a plain
//! `GET` that asks for HTML and is no WebSocket upgrade gets the page.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::{cookie, render, Csrf, SESSION_COOKIE};
use crate::http::HttpState;
use crate::secrets::digest;

#[derive(Template)]
#[template(path = "landing.html")]
struct LandingPage {
    csrf: String,
    signed_in: bool,
}

/// Whether a request for `/` comes from a browser rather than a device.
fn is_browser_visit(request: &Request) -> bool {
    let headers = request.headers();
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    request.method() == Method::GET
        && request.uri().path() == "/"
        && !upgrade.to_ascii_lowercase().contains("websocket")
        && accept.contains("text/html")
}

/// Answers a browser's `GET /` with the landing page; everything else goes on (a device's
/// upgrade to the gateway).
pub async fn for_browsers(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    if !is_browser_visit(&request) {
        return next.run(request).await;
    }
    let csrf = request.extensions().get::<Csrf>().map(|c| c.0.clone()).unwrap_or_default();
    let signed_in = match cookie(&state, request.headers(), SESSION_COOKIE) {
        Some(token) => {
            matches!(state.store.token_account(&digest(token), crate::clock::unix_now()).await, Ok(Some(_)))
        }
        None => false,
    };
    render(&LandingPage { csrf, signed_in })
}
