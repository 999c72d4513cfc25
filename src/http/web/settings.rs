//! `/settings`: the user's status and devices, every app granted (pause, resume, coarse mode,
//! revoke), and the presence policy. In the spirit of a phone's notification settings.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::confirm::{ask, Ask, Confirmation};
use super::{after, ago, cookie, format_time, render_with, Csrf, Flash, SignedForm, Viewer, SESSION_COOKIE};
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
    /// The last status the app was told, or that it was told nothing yet.
    last_status: String,
}

struct SessionRow {
    id: String,
    kind: &'static str,
    since: String,
    expires: String,
    current: bool,
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
    sessions: Vec<SessionRow>,
    /// A local account (it has a password to change).
    local: bool,
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
    let sessions =
        match crate::ops::accounts::sessions(&state, account, cookie(&state, &headers, SESSION_COOKIE)).await
        {
            Ok(sessions) => sessions,
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
                last_status: g.last_status.unwrap_or_else(|| "nothing yet".to_owned()),
                enabled: g.enabled,
                coarse: g.coarse,
            })
            .collect(),
        policy: summary.policy,
        local: summary.email.is_some() && summary.issuer.is_none(),
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow {
                id: s.id,
                kind: match s.kind {
                    crate::store::TokenKind::Browser => "Browser session",
                    crate::store::TokenKind::Api => "API token",
                },
                since: ago(s.created_at, now),
                expires: format_time(s.expires_at),
                current: s.current,
            })
            .collect(),
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
    Csrf(csrf): Csrf,
    SignedForm { account, form }: SignedForm<Confirmation>,
) -> Response {
    if !form.confirmed() {
        let name = match state.store.devices(account).await {
            Ok(devices) => devices.into_iter().find(|d| d.device_id.as_str() == device_id).map(|d| d.name),
            Err(error) => return crate::http::error::ApiError::from(error).into_response(),
        };
        let Some(name) = name else {
            return Flash::error("no such device").redirect(&state, "/settings");
        };
        let title = format!("Remove {name}?");
        let action = format!("/settings/devices/{device_id}/remove");
        return ask(
            Ask {
                title: &title,
                text: "It is signed out at once and can no longer report your presence. To use it \
                       again, sign in on it anew.",
                action: &action,
                fields: &[],
                button: "Remove device",
                back: "/settings",
            },
            &csrf,
        );
    }
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
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn change_app(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    Csrf(csrf): Csrf,
    SignedForm { account, form }: SignedForm<AppAction>,
) -> Response {
    if form.action == "revoke" && form.confirm.as_deref() != Some("yes") {
        let name = match state.store.grants_of(account).await {
            Ok(grants) => grants.into_iter().find(|g| g.app_id == app_id).map(|g| g.app_name),
            Err(error) => return crate::http::error::ApiError::from(error).into_response(),
        };
        let Some(name) = name else {
            return Flash::error("no grant for that app").redirect(&state, "/settings");
        };
        let title = format!("Revoke {name}?");
        let action = format!("/settings/apps/{app_id}");
        return ask(
            Ask {
                title: &title,
                text: "The app is told you revoked it and never hears about you again. If you allow \
                       it later, it starts anew.",
                action: &action,
                fields: &[("action", "revoke")],
                button: "Revoke access",
                back: "/settings",
            },
            &csrf,
        );
    }
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
