//! CSRF tokens, bound to the browser's session: a token is an HMAC, under a key derived from the
//! server secret, of the session cookie, or before sign-in of a random pre-session id kept in
//! its own cookie (HttpOnly, SameSite=Strict). A form's token is checked in constant time
//! against the one its request's cookies give, so a token seen in one browser, or a cookie
//! planted together with a matching form field, is refused in any other.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{cookie, message, SESSION_COOKIE};
use crate::http::HttpState;
use crate::secrets::{constant_time_eq, new_secret};

/// The cookie holding the pre-session id of a browser not signed in.
pub const PRESESSION_COOKIE: &str = "presence_csrf";

/// The key tokens are made with.
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    /// Derived from the server secret, apart from every other key made from it.
    pub fn new(secret: &[u8; 32]) -> CsrfKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(b"presence csrf");
        CsrfKey(mac.finalize().into_bytes().into())
    }

    fn token(&self, binding: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(binding.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// This browser's CSRF token, to embed in forms and to check them against.
#[derive(Clone)]
pub struct Csrf(pub String);

impl Csrf {
    /// The token for this request's cookies, and a new pre-session id to set when the browser
    /// has neither a session nor one.
    pub fn for_request(state: &HttpState, headers: &HeaderMap) -> (Csrf, Option<String>) {
        if let Some(session) = cookie(state, headers, SESSION_COOKIE) {
            return (Csrf(state.csrf_key.token(&format!("session {session}"))), None);
        }
        let existing = cookie(state, headers, PRESESSION_COOKIE).filter(|id| id.len() >= 32);
        let fresh = existing.is_none().then(|| new_secret(""));
        let id = existing.or(fresh.as_deref()).unwrap_or_default();
        (Csrf(state.csrf_key.token(&format!("presession {id}"))), fresh)
    }

    /// Whether a submitted form's token is this browser's.
    pub fn check(&self, submitted: &str) -> Result<(), Response> {
        if constant_time_eq(&self.0, submitted) {
            Ok(())
        } else {
            Err(message(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "Go back, reload the page and try again.",
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Csrf {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<Csrf>()
            .cloned()
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_binding_and_by_key() {
        let key = CsrfKey::new(&[1; 32]);
        let token = key.token("session pt_a");
        assert_eq!(token, key.token("session pt_a"));
        assert_ne!(token, key.token("session pt_b"));
        assert_ne!(token, key.token("presession pt_a"));
        assert_ne!(token, CsrfKey::new(&[2; 32]).token("session pt_a"));
        assert!(!token.contains("pt_a"));
    }
}
