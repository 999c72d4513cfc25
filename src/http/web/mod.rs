//! The browser pages: sign-in, the consent page (the seed's "doorhanger"), the user's settings
//! and the developers' page. Plain HTML forms (no JavaScript), escaping templates, one
//! stylesheet.
//!
//! Every POST carries a CSRF token bound to the browser's session (`csrf`) and answers 303. The
//! session is a bearer token in an HttpOnly, SameSite=Lax cookie. When `public_url` is https,
//! every cookie is Secure and named with the `__Host-` prefix (Path=/, no Domain), so that no
//! other host, a sibling subdomain included, can plant one. Every response gets a
//! Content-Security-Policy with `frame-ancestors 'none'` and `X-Frame-Options: DENY`.

// A page's refusal is itself a page (a redirect, an error page): `Result<_, Response>` keeps the
// handlers flat, and these paths are cold.
#![allow(clippy::result_large_err)]

mod account;
mod confirm;
mod consent;
mod csrf;
mod developers;
pub mod landing;
mod login;
mod oidc_login;
mod settings;

use crate::http::error::ApiError;
use askama::Template;
use axum::extract::{Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::domain::AccountId;
use crate::http::HttpState;
use crate::secrets::digest;

pub use csrf::{Csrf, CsrfKey};

pub const SESSION_COOKIE: &str = "presence_session";
const FLASH_COOKIE: &str = "presence_flash";
/// The policy for every page; the consent page widens `form-action` to the app's redirect origin.
pub const DEFAULT_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/assets/presence.css", get(stylesheet))
        .route("/login", get(login::page).post(login::submit))
        .route("/signup", get(login::signup_page).post(login::signup))
        .route("/logout", post(login::logout))
        .route("/login/oidc", get(oidc_login::start))
        .route("/login/oidc/callback", get(oidc_login::callback))
        .route("/grant", get(consent::page).post(consent::decide))
        .route("/settings", get(settings::page))
        .route("/settings/policy", post(settings::save_policy))
        .route("/settings/devices/{device_id}/remove", post(settings::remove_device))
        .route("/settings/apps/{app_id}", post(settings::change_app))
        .route("/settings/password", post(account::change_password))
        .route("/settings/sessions/{id}/revoke", post(account::revoke_session))
        .route("/settings/export", get(account::export))
        .route("/settings/delete", post(account::delete_account))
        .route("/developers", get(developers::page))
        .route("/developers/apps", post(developers::create))
        .route("/developers/apps/{app_id}/secret", post(developers::rotate))
        .route("/developers/apps/{app_id}/webhook/enable", post(developers::enable_webhook))
        .route("/developers/apps/{app_id}/deliveries/{attempt}/resend", post(developers::resend))
        .route("/developers/apps/{app_id}/webhook/secret", post(developers::rotate_webhook_secret))
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../../assets/presence.css"),
    )
        .into_response()
}

/// Security headers on every response, and the pre-session cookie for browsers that lack one.
pub async fn security_headers(State(state): State<HttpState>, mut request: Request, next: Next) -> Response {
    let (csrf, presession) = Csrf::for_request(&state, request.headers());
    request.extensions_mut().insert(csrf);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DEFAULT_CSP));
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let is_page = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if let (Some(id), true) = (presession, is_page) {
        let value = set_cookie(&state, csrf::PRESESSION_COOKIE, &id, "Strict", Some(365 * 86400));
        headers.append(header::SET_COOKIE, value);
    }
    response
}

/// The signed-in account of a browser, if any.
pub struct Viewer(pub Option<AccountId>);

impl FromRequestParts<HttpState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Response> {
        let Some(token) = cookie(state, &parts.headers, SESSION_COOKIE) else {
            return Ok(Viewer(None));
        };
        match state.store.token_account(&digest(token), crate::clock::unix_now()).await {
            Ok(account) => Ok(Viewer(account)),
            Err(error) => Err(crate::http::error::ApiError::from(error).into_response()),
        }
    }
}

impl Viewer {
    /// The account, or a redirect to sign in and come back to `back`.
    pub fn require(&self, back: &str) -> Result<AccountId, Response> {
        self.0.ok_or_else(|| Redirect::to(&format!("/login?next={}", urlencode(back))).into_response())
    }
}

/// Whether cookies are Secure and `__Host-` prefixed: the site is served over https.
fn secure_cookies(state: &HttpState) -> bool {
    state.public_url.starts_with("https://")
}

/// A cookie's name as set and read: `__Host-<name>` over https, so that only this host, over
/// https, with `Path=/` and no `Domain`, can have set it.
pub fn cookie_name(state: &HttpState, name: &str) -> String {
    if secure_cookies(state) {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// The value of the request's cookie `name` (under its `__Host-` name over https).
pub fn cookie<'a>(state: &HttpState, headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let name = cookie_name(state, name);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name.as_str())
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, Path=/, no Domain; Secure and `__Host-` named when served
/// over https.
pub fn set_cookie(
    state: &HttpState,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let name = cookie_name(state, name);
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure_cookies(state) {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("cookie values are base64url")
}

pub fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Where to go after signing in: a path on this site, never elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    // Browsers drop tabs and newlines from URLs and read `\` as `/`: `/\t/evil.example` would
    // become `//evil.example`, another site. A local path has none of them.
    let local = |path: &str| {
        path.starts_with('/')
            && !path.starts_with("//")
            && !path.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    };
    match next {
        Some(path) if local(path) => path.to_owned(),
        _ => "/settings".to_owned(),
    }
}

/// The account behind a signed-in form submission: its CSRF token checked, a session required
/// (else back to `page` after signing in).
/// Largest web form accepted (forms carry a few short fields).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// A form with no fields of its own (a button).
#[derive(Deserialize)]
pub struct NoFields {}

/// A form a browser posted with this browser's CSRF token (checked before anything else is
/// read). The token travels in the form's `csrf` field; `T` need not declare it.
pub struct CheckedForm<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<HttpState> for CheckedForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &HttpState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let csrf = Csrf::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
        let submitted = form_urlencoded::parse(&bytes).find(|(key, _)| key == "csrf").map(|(_, value)| value);
        csrf.check(submitted.as_deref().unwrap_or(""))?;
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Form(form) =
            Form::<T>::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        Ok(CheckedForm(form))
    }
}

/// A form posted by a signed-in browser: the CSRF token checked, then the session; without
/// one, the browser is sent to sign in and back to the page the form belongs to (the first
/// segment of its path: `/settings`, `/developers`).
pub struct SignedForm<T> {
    pub account: AccountId,
    pub form: T,
}

impl<T: serde::de::DeserializeOwned> FromRequest<HttpState> for SignedForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &HttpState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let page =
            format!("/{}", parts.uri.path().trim_start_matches('/').split('/').next().unwrap_or_default());
        let CheckedForm(form) =
            CheckedForm::<T>::from_request(Request::from_parts(parts, body), state).await?;
        Ok(SignedForm { account: viewer.require(&page)?, form })
    }
}

/// After a form's action: back to `page` with its flash, or with the error's detail when the
/// error is the user's to fix; other errors are internal.
pub fn after<E: Into<ApiError>>(state: &HttpState, page: &str, result: Result<Flash, E>) -> Response {
    match result.map_err(Into::into) {
        Ok(flash) => flash.redirect(state, page),
        Err(error) if error.status.is_client_error() => Flash::error(error.detail).redirect(state, page),
        Err(error) => error.into_response(),
    }
}

/// A message carried to the next page in a sealed cookie: shown once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flash {
    #[serde(default)]
    pub notice: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// Secrets to show once: (label, value).
    #[serde(default)]
    pub secrets: Vec<(String, String)>,
}

impl Flash {
    pub fn notice(text: impl Into<String>) -> Flash {
        Flash { notice: Some(text.into()), ..Flash::default() }
    }

    pub fn error(text: impl Into<String>) -> Flash {
        Flash { error: Some(text.into()), ..Flash::default() }
    }

    /// A 303 to `to` that carries this flash.
    pub fn redirect(self, state: &HttpState, to: &str) -> Response {
        let sealed = state.flash_vault.seal(&serde_json::to_string(&self).expect("flash serializes"));
        let mut response = Redirect::to(to).into_response();
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(state, FLASH_COOKIE, &sealed, "Lax", Some(300)));
        response
    }

    /// The flash sent with this request, if any, and the header that clears it.
    pub fn take(state: &HttpState, headers: &HeaderMap) -> (Flash, Option<HeaderValue>) {
        match cookie(state, headers, FLASH_COOKIE) {
            Some(sealed) => {
                let flash = state
                    .flash_vault
                    .open(sealed)
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default();
                (flash, Some(set_cookie(state, FLASH_COOKIE, "", "Lax", Some(0))))
            }
            None => (Flash::default(), None),
        }
    }
}

/// Renders a page; a rendering failure is an internal error, logged.
pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => crate::http::error::ApiError::internal(&error).into_response(),
    }
}

/// A page with the flash cleared.
pub fn render_with(template: &impl Template, clear_flash: Option<HeaderValue>) -> Response {
    let mut response = render(template);
    if let Some(clear) = clear_flash {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
    csrf: &'a str,
    signed_in: bool,
}

/// A page that only says something (errors, mostly), with its status.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let mut response = render(&MessagePage { title, text, csrf: "", signed_in: false });
    *response.status_mut() = status;
    response
}

/// The first letter of a name, for its badge.
pub fn initial(name: &str) -> String {
    name.chars().find(|c| c.is_alphanumeric()).map_or_else(|| "?".to_owned(), |c| c.to_uppercase().collect())
}

/// "24 Nov 2026, 22:55 UTC".
pub fn format_time(unix: i64) -> String {
    let (year, month, day) = crate::clock::civil_date(unix);
    let seconds = unix.rem_euclid(86400);
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{day} {} {year}, {:02}:{:02} UTC",
        MONTHS[(month - 1) as usize],
        seconds / 3600,
        (seconds % 3600) / 60
    )
}

/// "just now", "5 minutes ago", "3 hours ago", "2 days ago".
pub fn ago(unix: i64, now: i64) -> String {
    let elapsed = (now - unix).max(0);
    let (count, unit) = match elapsed {
        0..60 => return "just now".to_owned(),
        60..3600 => (elapsed / 60, "minute"),
        3600..86400 => (elapsed / 3600, "hour"),
        _ => (elapsed / 86400, "day"),
    };
    format!("{count} {unit}{} ago", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_like_a_calendar() {
        assert_eq!(format_time(0), "1 Jan 1970, 00:00 UTC");
        assert_eq!(format_time(1_795_647_300), "25 Nov 2026, 22:55 UTC");
        assert_eq!(format_time(951_782_400), "29 Feb 2000, 00:00 UTC");
        assert_eq!(ago(100, 130), "just now");
        assert_eq!(ago(0, 60), "1 minute ago");
        assert_eq!(ago(0, 7200), "2 hours ago");
        assert_eq!(ago(0, 86400 * 3), "3 days ago");
    }

    /// The `--name: #rrggbb` colours of the stylesheet's light (`dark = false`) or dark block.
    fn colours(dark: bool) -> std::collections::HashMap<String, String> {
        let css = include_str!("../../../assets/presence.css");
        let (light, rest) = css.split_once("@media (prefers-color-scheme: dark)").expect("a dark block");
        let mut found = std::collections::HashMap::new();
        let blocks = if dark { vec![light, rest.split('}').next().unwrap_or_default()] } else { vec![light] };
        for block in blocks {
            for declaration in block.split(';') {
                if let Some((name, value)) = declaration.trim().rsplit_once(':') {
                    let name = name.rsplit(['{', ' ', '\n', '/']).next().unwrap_or_default();
                    if name.starts_with("--") && value.trim().starts_with('#') {
                        found.insert(name.to_owned(), value.trim().to_owned());
                    }
                }
            }
        }
        found
    }

    fn luminance(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (a, b) = (luminance(a), luminance(b));
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }

    #[test]
    fn status_colours_meet_wcag_aa_contrast_in_light_and_dark() {
        for dark in [false, true] {
            let colours = colours(dark);
            let colour = |name: &str| colours.get(name).unwrap_or_else(|| panic!("{name} missing")).as_str();
            for background in ["--card", "--bg"] {
                for text in [
                    "--online-text",
                    "--away-text",
                    "--offline-text",
                    "--danger",
                    "--muted",
                    "--accent",
                    "--text",
                ] {
                    let ratio = contrast(colour(text), colour(background));
                    assert!(ratio >= 4.5, "{text} on {background} (dark: {dark}) is {ratio:.2}:1");
                }
                for dot in ["--online", "--away", "--offline"] {
                    let ratio = contrast(colour(dot), colour(background));
                    assert!(ratio >= 3.0, "{dot} on {background} (dark: {dark}) is {ratio:.2}:1");
                }
            }
            let ratio = contrast(colour("--accent-text"), colour("--accent"));
            assert!(ratio >= 4.5, "button text (dark: {dark}) is {ratio:.2}:1");
        }
    }

    #[test]
    fn next_never_leaves_the_site() {
        assert_eq!(safe_next(Some("/grant?app_id=x")), "/grant?app_id=x");
        for bad in ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"] {
            assert_eq!(safe_next(Some(bad)), "/settings", "{bad}");
        }
    }
}
