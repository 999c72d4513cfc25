//! `/developers`: a signed-in user registers apps, sees their ids and settings, and rotates
//! secrets (the webhook secret with the default overlap, during which both sign). Secrets are
//! shown once, on the page right after they are made.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{after, format_time, render_with, Csrf, Flash, NoFields, SignedForm, Viewer};
use crate::http::HttpState;

struct AppRow {
    initial: String,
    app_id: String,
    name: String,
    redirect_uris: Vec<String>,
    webhook_url: Option<String>,
    webhook_format: &'static str,
    /// "delivering", "failing since …", or why it was disabled.
    webhook_state: Option<String>,
    webhook_disabled: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "developers.html")]
struct DevelopersPage {
    apps: Vec<AppRow>,
    flash: Flash,
    csrf: String,
    public_url: String,
    signed_in: bool,
}

pub async fn page(
    State(state): State<HttpState>,
    viewer: Viewer,
    Csrf(csrf): Csrf,
    headers: HeaderMap,
) -> Response {
    let account = match viewer.require("/developers") {
        Ok(account) => account,
        Err(to_login) => return to_login,
    };
    let apps = match state.store.apps_of(account).await {
        Ok(apps) => apps,
        Err(error) => return crate::http::error::ApiError::from(error).into_response(),
    };
    let (flash, clear) = Flash::take(&state, &headers);
    let mut rows = Vec::with_capacity(apps.len());
    for app in apps {
        let health = match state.store.webhook_health(&app.app_id).await {
            Ok(health) => health,
            Err(error) => return crate::http::error::ApiError::from(error).into_response(),
        };
        let webhook_state = health.as_ref().map(|h| match (&h.disabled_reason, h.failing_since) {
            (Some(reason), _) => format!("disabled: {reason}"),
            (None, Some(since)) => format!("failing since {} ({} attempts)", format_time(since), h.attempts),
            (None, None) => format!("delivering ({} events pending)", h.pending),
        });
        rows.push(AppRow {
            initial: super::initial(&app.name),
            webhook_disabled: health.as_ref().is_some_and(|h| h.disabled_at.is_some()),
            webhook_state,
            app_id: app.app_id,
            name: app.name,
            redirect_uris: app.redirect_uris,
            webhook_url: app.webhook_url,
            webhook_format: app.webhook_format.as_str(),
            created: format_time(app.created_at),
        });
    }
    let page =
        DevelopersPage { apps: rows, flash, csrf, public_url: state.public_url.to_string(), signed_in: true };
    render_with(&page, clear)
}

#[derive(Deserialize)]
pub struct NewAppForm {
    name: String,
    redirect_uris: String,
    #[serde(default)]
    webhook_url: String,
    /// `pairs` (also when left out) or `v1`.
    #[serde(default)]
    webhook_format: String,
}

pub async fn create(
    State(state): State<HttpState>,
    SignedForm { account, form }: SignedForm<NewAppForm>,
) -> Response {
    let uris: Vec<String> =
        form.redirect_uris.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let created = match form.webhook_format.as_str() {
        "" => Ok(crate::domain::EventFormat::default()),
        named => crate::ops::apps::parse_webhook_format(named),
    };
    let created = match created {
        Ok(format) => {
            crate::ops::apps::register_app(&state, account, &form.name, &uris, &form.webhook_url, format)
                .await
        }
        Err(error) => Err(error),
    };
    let flash = created.map(|created| Flash {
        notice: Some(format!(
            "App registered: {}. Copy its secrets now; they are not shown again.",
            created.app_id
        )),
        secrets: vec![
            ("App secret".to_owned(), created.secret),
            ("Webhook signing secret".to_owned(), created.webhook_secret),
        ],
        ..Flash::default()
    });
    after(&state, "/developers", flash)
}

pub async fn enable_webhook(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    SignedForm { account, .. }: SignedForm<NoFields>,
) -> Response {
    let enabled = crate::ops::apps::reenable_webhook(&state, account, &app_id).await;
    after(
        &state,
        "/developers",
        enabled.map(|()| Flash::notice("Webhook re-enabled; pending events go out now.")),
    )
}

pub async fn rotate(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    SignedForm { account, .. }: SignedForm<NoFields>,
) -> Response {
    let rotated = crate::ops::apps::rotate_app_secret(&state, account, &app_id).await;
    let flash = rotated.map(|secret| Flash {
        notice: Some(format!("New secret for {app_id}; the old one no longer works.")),
        secrets: vec![("App secret".to_owned(), secret)],
        ..Flash::default()
    });
    after(&state, "/developers", flash)
}

pub async fn rotate_webhook_secret(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    SignedForm { account, .. }: SignedForm<NoFields>,
) -> Response {
    let overlap = crate::ops::apps::DEFAULT_WEBHOOK_OVERLAP;
    let rotated = crate::ops::apps::rotate_webhook_secret(&state, account, &app_id, overlap).await;
    let flash = rotated.map(|rotated| Flash {
        notice: Some(format!(
            "New webhook signing secret for {app_id}. Until {} each delivery is signed with the old one too; \
             switch your receiver to the new one before then.",
            format_time(rotated.previous_valid_until)
        )),
        secrets: vec![("Webhook signing secret".to_owned(), rotated.webhook_secret)],
        ..Flash::default()
    });
    after(&state, "/developers", flash)
}
