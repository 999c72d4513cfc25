//! `/developers`: a signed-in user registers apps, sees their ids and settings, rotates
//! secrets (optionally keeping the old one working for a while; the webhook secret with the
//! default overlap, during which both sign), and sees each webhook's
//! recent deliveries, resending after a failed one. Secrets are shown once, on the page right
//! after they are made.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{after, format_time, render_with, Csrf, Flash, NoFields, SignedForm, Viewer};
use crate::domain::{AttemptOutcome, DeliveryAttempt};
use crate::http::error::ApiError;
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
    /// The webhook's latest attempts, newest first.
    deliveries: Vec<DeliveryRow>,
    created: String,
}

/// How many attempts each app shows.
const RECENT_DELIVERIES: u32 = 10;

struct DeliveryRow {
    id: u64,
    time: String,
    /// "HTTP 200", or why nothing was received.
    answer: String,
    duration: String,
    failed: bool,
}

impl DeliveryRow {
    fn of(attempt: &DeliveryAttempt) -> DeliveryRow {
        let record = &attempt.record;
        let answer = match (record.status_code, &record.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".to_owned(),
        };
        DeliveryRow {
            id: attempt.id,
            time: format_time(record.at),
            answer,
            duration: format!("{} ms", record.duration_ms),
            failed: attempt.outcome == AttemptOutcome::Failed,
        }
    }
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
        let deliveries = if app.webhook_url.is_some() {
            match state.store.delivery_attempts(&app.app_id, None, RECENT_DELIVERIES).await {
                Ok(attempts) => attempts.iter().map(DeliveryRow::of).collect(),
                Err(error) => return ApiError::from(error).into_response(),
            }
        } else {
            Vec::new()
        };
        rows.push(AppRow {
            initial: super::initial(&app.name),
            deliveries,
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

#[derive(Deserialize)]
pub struct RotateForm {
    /// How long the old secret keeps working: the form offers 0, an hour or a day.
    #[serde(default)]
    overlap_seconds: Option<String>,
}

pub async fn rotate(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    SignedForm { account, form }: SignedForm<RotateForm>,
) -> Response {
    let Ok(overlap) = form.overlap_seconds.as_deref().unwrap_or("0").trim().parse::<u64>() else {
        return after(
            &state,
            "/developers",
            Ok::<_, ApiError>(Flash::error("Choose how long the old secret keeps working.")),
        );
    };
    let overlap = Duration::from_secs(overlap);
    let rotated = crate::ops::apps::rotate_app_secret(&state, account, &app_id, overlap).await;
    let flash = rotated.map(|rotated| Flash {
        notice: Some(match rotated.previous_valid_until {
            None => format!("New secret for {app_id}; the old one no longer works."),
            Some(until) => {
                format!("New secret for {app_id}; the old one keeps working until {}.", format_time(until))
            }
        }),
        secrets: vec![("App secret".to_owned(), rotated.secret)],
        ..Flash::default()
    });
    after(&state, "/developers", flash)
}

/// Resends after a failed attempt: the app's pending events go out at the next scan.
pub async fn resend(
    State(state): State<HttpState>,
    Path((app_id, attempt)): Path<(String, String)>,
    SignedForm { account, .. }: SignedForm<NoFields>,
) -> Response {
    let Ok(attempt) = attempt.parse::<u64>() else {
        return after(&state, "/developers", Err(ApiError::not_found("no such delivery attempt")));
    };
    let resent = crate::ops::deliveries::resend_for_owner(&state, account, &app_id, attempt).await;
    let flash = resent.map(|reenabled| {
        Flash::notice(if reenabled {
            "Webhook re-enabled; pending events go out now."
        } else {
            "Resending: pending events go out now."
        })
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
