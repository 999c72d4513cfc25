//! The consent page (the seed's "doorhanger"): `GET /grant` shows what an app asks for,
//! `POST /grant` records the user's answer and sends them back to the app.
//!
//! A redirect URI that is not registered exactly gets an error page, never a redirect: sending
//! a browser (and a code) to an unregistered address is how consent pages leak.

use crate::http::error::ApiError;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use url::Url;

use super::{message, render, urlencode, CheckedForm, Csrf, Viewer};
use crate::domain::App;
use crate::http::HttpState;

#[derive(Debug, Deserialize)]
pub struct GrantRequest {
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    app_name: &'a str,
    app_initial: String,
    app_host: String,
    request: &'a GrantRequest,
    email: String,
    already: bool,
    csrf: String,
    signed_in: bool,
}

impl GrantRequest {
    /// The app, if the request names it and one of its exact redirect URIs; otherwise the
    /// error page to show instead.
    async fn validate(&self, state: &HttpState) -> Result<App, Response> {
        let bad = |text: &str| message(StatusCode::BAD_REQUEST, "This link does not work", text);
        let app = match state.store.app(&self.app_id).await {
            Ok(Some(app)) => app,
            Ok(None) => return Err(bad("The app that sent you here is not registered with Presence.")),
            Err(error) => return Err(crate::http::error::ApiError::from(error).into_response()),
        };
        if !app.redirect_uris.iter().any(|uri| uri == &self.redirect_uri) {
            return Err(bad("The app asked to send you to an address it has not registered, so Presence will not send you there."));
        }
        match (self.code_challenge.as_deref(), self.code_challenge_method.as_deref()) {
            (None, None) => {}
            (Some(challenge), Some("S256") | None)
                if challenge.len() == 43
                    && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {}
            _ => {
                return Err(bad("The app's request is malformed: code_challenge must be an S256 challenge."))
            }
        }
        if self.state.len() > 512 {
            return Err(bad("The app's request is malformed: state is too long."));
        }
        Ok(app)
    }

    fn back_url(&self) -> String {
        let mut query = format!(
            "app_id={}&redirect_uri={}&state={}",
            urlencode(&self.app_id),
            urlencode(&self.redirect_uri),
            urlencode(&self.state)
        );
        if let Some(challenge) = &self.code_challenge {
            query.push_str(&format!("&code_challenge={}&code_challenge_method=S256", urlencode(challenge)));
        }
        format!("/grant?{query}")
    }

    /// The redirect URI with `pairs` added to its query.
    fn redirect_with(&self, pairs: &[(&str, &str)]) -> Response {
        let mut url = Url::parse(&self.redirect_uri).expect("registered redirect URIs parse");
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in pairs {
                query.append_pair(key, value);
            }
        }
        Redirect::to(url.as_str()).into_response()
    }
}

pub async fn page(
    State(state): State<HttpState>,
    viewer: Viewer,
    Csrf(csrf): Csrf,
    Query(request): Query<GrantRequest>,
) -> Response {
    let app = match request.validate(&state).await {
        Ok(app) => app,
        Err(page) => return page,
    };
    let account = match viewer.require(&request.back_url()) {
        Ok(account) => account,
        Err(to_login) => return to_login,
    };
    let (summary, already) =
        match tokio::try_join!(state.store.account(account), state.store.grant_uid(account, &app.app_id)) {
            Ok(found) => found,
            Err(error) => return crate::http::error::ApiError::from(error).into_response(),
        };
    let email = summary.and_then(|s| s.email.or(s.issuer)).unwrap_or_default();
    let redirect = Url::parse(&request.redirect_uri).expect("registered redirect URIs parse");
    let page = ConsentPage {
        app_name: &app.name,
        app_initial: super::initial(&app.name),
        app_host: redirect.host_str().unwrap_or_default().to_owned(),
        request: &request,
        email,
        already: already.is_some(),
        csrf,
        signed_in: true,
    };
    let mut response = render(&page);
    // The answer redirects to the app: let this page's form go there.
    let origin = redirect.origin().ascii_serialization();
    let csp = super::DEFAULT_CSP.replace("form-action 'self'", &format!("form-action 'self' {origin}"));
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

#[derive(Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    request: GrantRequest,
    decision: String,
}

pub async fn decide(
    State(state): State<HttpState>,
    viewer: Viewer,
    CheckedForm(form): CheckedForm<Decision>,
) -> Response {
    let request = form.request;
    if let Err(page) = request.validate(&state).await {
        return page;
    }
    let account = match viewer.require(&request.back_url()) {
        Ok(account) => account,
        Err(to_login) => return to_login,
    };
    match form.decision.as_str() {
        "allow" => {
            let issued = async {
                crate::ops::grants::allow(&state, account, &request.app_id).await?;
                crate::ops::grants::issue_code(
                    &state,
                    account,
                    &request.app_id,
                    &request.redirect_uri,
                    request.code_challenge.as_deref(),
                )
                .await
            }
            .await;
            match issued {
                Ok(code) => {
                    tracing::info!(app_id = %request.app_id, "grant allowed");
                    request.redirect_with(&[("code", &code), ("state", &request.state)])
                }
                Err(error) => ApiError::from(error).into_response(),
            }
        }
        _ => request.redirect_with(&[("error", "access_denied"), ("state", &request.state)]),
    }
}
