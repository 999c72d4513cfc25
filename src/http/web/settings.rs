//! `/settings`: the user's status and devices, every app granted (pause, resume, coarse mode,
//! revoke), and the presence policy. In the spirit of a phone's notification settings.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{after, ago, format_time, render_with, Csrf, Flash, NoFields, SignedForm, Viewer};
use crate::clock::unix_now;
use crate::domain::Policy;
use crate::domain::Status;
use crate::http::HttpState;

struct DeviceRow {
    id: String,
    name: String,
    status: Status,
    last_seen: String,
}

struct AppRow {
    initial: String,
    app_id: String,
    name: String,
    since: String,
    last_update: String,
    enabled: bool,
    coarse: bool,
    /// Notifications this app sent in the last seven days.
    notifications: u32,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    email: String,
    status: Status,
    visible: Status,
    devices: Vec<DeviceRow>,
    apps: Vec<AppRow>,
    policy: Policy,
    flash: Flash,
    csrf: String,
    signed_in: bool,
}

pub async fn page(
    State(state): State<HttpState>,
    viewer: Viewer,
    Csrf(csrf): Csrf,
    headers: HeaderMap,
) -> Response {
    let account = match viewer.require("/settings") {
        Ok(account) => account,
        Err(to_login) => return to_login,
    };
    let loaded = tokio::try_join!(
        state.store.account(account),
        state.store.devices(account),
        state.store.grants_of(account)
    );
    let (summary, devices, grants) = match loaded {
        Ok((Some(summary), devices, grants)) => (summary, devices, grants),
        Ok((None, ..)) => return super::message(axum::http::StatusCode::NOT_FOUND, "No such account", ""),
        Err(error) => return crate::http::error::ApiError::from(error).into_response(),
    };
    let now = unix_now();
    let sent = match state.store.notifications_sent(account, now - 7 * 86400).await {
        Ok(sent) => sent,
        Err(error) => return crate::http::error::ApiError::from(error).into_response(),
    };
    let (flash, clear) = Flash::take(&state, &headers);
    let page = SettingsPage {
        email: summary.email.clone().or(summary.issuer.clone()).unwrap_or_default(),
        status: summary.status,
        visible: summary.visible,
        devices: devices
            .into_iter()
            .map(|d| DeviceRow {
                id: d.device_id.to_string(),
                name: d.name,
                status: d.status,
                last_seen: d.last_seen.map_or_else(|| "never connected".to_owned(), |t| ago(t, now)),
            })
            .collect(),
        apps: grants
            .into_iter()
            .map(|g| AppRow {
                notifications: sent.iter().find(|s| s.app_id == g.app_id).map_or(0, |s| s.count),
                initial: super::initial(&g.app_name),
                app_id: g.app_id,
                name: g.app_name,
                since: format_time(g.created_at),
                last_update: g.last_update_at.map_or_else(|| "no update yet".to_owned(), |t| ago(t, now)),
                enabled: g.enabled,
                coarse: g.coarse,
            })
            .collect(),
        policy: summary.policy,
        flash,
        csrf,
        signed_in: true,
    };
    render_with(&page, clear)
}

#[derive(Deserialize)]
pub struct PolicyForm {
    idle_away_minutes: String,
    idle_offline_minutes: String,
    #[serde(default)]
    appear_offline: Option<String>,
}

pub async fn save_policy(
    State(state): State<HttpState>,
    SignedForm { account, form }: SignedForm<PolicyForm>,
) -> Response {
    let minutes = |text: &str| text.trim().parse::<u32>().ok();
    let (Some(away), Some(offline)) = (minutes(&form.idle_away_minutes), minutes(&form.idle_offline_minutes))
    else {
        return Flash::error("Idle times are whole numbers of minutes.").redirect(&state, "/settings");
    };
    let policy = Policy {
        idle_away_minutes: away,
        idle_offline_minutes: offline,
        appear_offline: form.appear_offline.is_some(),
    };
    after(
        &state,
        "/settings",
        crate::ops::accounts::set_policy(&state, account, &policy)
            .await
            .map(|()| Flash::notice("Presence policy saved.")),
    )
}

pub async fn remove_device(
    State(state): State<HttpState>,
    Path(device_id): Path<String>,
    SignedForm { account, .. }: SignedForm<NoFields>,
) -> Response {
    after(
        &state,
        "/settings",
        crate::ops::devices::remove(&state, account, &device_id)
            .await
            .map(|()| Flash::notice("Device removed. It can no longer report your presence.")),
    )
}

#[derive(Deserialize)]
pub struct AppAction {
    action: String,
}

pub async fn change_app(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    SignedForm { account, form }: SignedForm<AppAction>,
) -> Response {
    let (result, notice) = match form.action.as_str() {
        "pause" => (
            crate::ops::grants::set(&state, account, &app_id, Some(false), None).await,
            "Paused: the app gets no updates about you until you resume it.",
        ),
        "resume" => (crate::ops::grants::set(&state, account, &app_id, Some(true), None).await, "Resumed."),
        "coarse" => (
            crate::ops::grants::set(&state, account, &app_id, None, Some(true)).await,
            "This app now sees away as online.",
        ),
        "precise" => (
            crate::ops::grants::set(&state, account, &app_id, None, Some(false)).await,
            "This app now sees away as away.",
        ),
        "revoke" => (
            crate::ops::grants::revoke(&state, account, &app_id).await,
            "Access revoked. The app will not hear about you again unless you allow it anew.",
        ),
        _ => return Flash::error("Unknown action.").redirect(&state, "/settings"),
    };
    after(&state, "/settings", result.map(|()| Flash::notice(notice)))
}
