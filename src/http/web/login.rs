//! Signing in and out in the browser, and signing up (local accounts).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{render, safe_next, set_cookie, urlencode, CheckedForm, Csrf, NoFields, Viewer, SESSION_COOKIE};
use crate::domain::AccountId;
use crate::http::auth::ClientAddr;
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::secrets::digest;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    signup: bool,
    /// Whether to offer the sign-up page.
    signup_open: bool,
    /// Offer "sign in with the identity provider".
    oidc: bool,
    /// What the button calls the provider.
    provider: String,
    next: String,
    error: Option<&'static str>,
    csrf: String,
    signed_in: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

fn login_error(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "credentials" => "That email and password do not match an account.",
        "taken" => "There is already an account with that email. Sign in instead.",
        "email" => "That does not look like an email address.",
        "weak" => "Choose a password of at least 8 characters.",
        "throttled" => "Too many attempts. Wait a minute and try again.",
        _ => "Something went wrong. Try again.",
    })
}

pub async fn page(
    State(state): State<HttpState>,
    Viewer(viewer): Viewer,
    Csrf(csrf): Csrf,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if viewer.is_some() && query.error.is_none() {
        return Redirect::to(&next).into_response();
    }
    render(&LoginPage {
        signup: false,
        signup_open: state.config.signup == crate::config::Signup::Open,
        oidc: state.oidc.is_some(),
        provider: state.config.oidc_provider(),
        next,
        error: login_error(query.error.as_deref()),
        csrf,
        signed_in: false,
    })
}

pub async fn signup_page(
    State(state): State<HttpState>,
    Csrf(csrf): Csrf,
    Query(query): Query<LoginQuery>,
) -> Response {
    if state.config.signup == crate::config::Signup::Closed {
        return signup_closed();
    }
    let next = safe_next(query.next.as_deref());
    render(&LoginPage {
        signup: true,
        signup_open: true,
        oidc: false,
        provider: String::new(),
        next,
        error: login_error(query.error.as_deref()),
        csrf,
        signed_in: false,
    })
}

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Starts a browser session: a bearer token in the session cookie, then 303 to `next`.
pub(super) async fn start_session(state: &HttpState, account: AccountId, next: &str) -> Response {
    let token = match crate::ops::accounts::start_session(state, account).await {
        Ok((token, _)) => token,
        Err(crate::ops::Error::Forbidden { detail, .. }) => {
            return super::message(axum::http::StatusCode::FORBIDDEN, "Account disabled", &detail)
        }
        Err(error) => return ApiError::from(error).into_response(),
    };
    let ttl = state.config.token_ttl.as_secs();
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(state, SESSION_COOKIE, &token, "Lax", Some(ttl)));
    response
}

fn back_to(page: &str, error: &str, next: &str) -> Response {
    Redirect::to(&format!("/{page}?error={error}&next={}", urlencode(next))).into_response()
}

pub async fn submit(
    State(state): State<HttpState>,
    ClientAddr(client): ClientAddr,
    CheckedForm(form): CheckedForm<Credentials>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if crate::ops::accounts::limit_address(&state, client).is_err() {
        return back_to("login", "throttled", &next);
    }
    match crate::ops::accounts::check_password(&state, &form.email, form.password).await {
        Ok(Some(account)) => start_session(&state, account, &next).await,
        Ok(None) => back_to("login", "credentials", &next),
        Err(crate::ops::Error::RateLimited { .. }) => back_to("login", "throttled", &next),
        Err(error) => ApiError::from(error).into_response(),
    }
}

pub async fn signup(
    State(state): State<HttpState>,
    ClientAddr(client): ClientAddr,
    CheckedForm(form): CheckedForm<Credentials>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if crate::ops::accounts::limit_address(&state, client).is_err() {
        return super::message(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many sign-ups and sign-ins came from your address. Wait a minute and try again.",
        );
    }
    match crate::ops::accounts::register(&state, &form.email, form.password).await {
        Ok(account) => start_session(&state, account, &next).await,
        Err(crate::ops::Error::Invalid { code: "invalid_email", .. }) => back_to("signup", "email", &next),
        Err(crate::ops::Error::Invalid { code: "weak_password", .. }) => back_to("signup", "weak", &next),
        Err(crate::ops::Error::Conflict { .. }) => back_to("signup", "taken", &next),
        Err(crate::ops::Error::Forbidden { .. }) => signup_closed(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// The answer of the sign-up page when the operator closed it.
fn signup_closed() -> Response {
    super::message(
        axum::http::StatusCode::FORBIDDEN,
        "Sign-up is closed",
        "Accounts here are made by the operator. Ask them for one, then sign in.",
    )
}

pub async fn logout(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
    CheckedForm(NoFields {}): CheckedForm<NoFields>,
) -> Response {
    if let Some(token) = super::cookie(&state, &headers, SESSION_COOKIE) {
        if let Err(error) = state.store.revoke_token(&digest(token)).await {
            return crate::http::error::ApiError::from(error).into_response();
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", "Lax", Some(0)));
    response
}
