//! The account part of `/settings`: changing the password, ending sessions, downloading one's
//! data and deleting the account (after a confirmation step).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::confirm::{ask, Ask, Confirmation};
use super::{after, cookie, set_cookie, Csrf, Flash, NoFields, SignedForm, Viewer, SESSION_COOKIE};
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::ops::{accounts, lifecycle};

#[derive(Deserialize)]
pub struct PasswordForm {
    current: String,
    new: String,
}

pub async fn change_password(
    State(state): State<HttpState>,
    headers: HeaderMap,
    SignedForm { account, form }: SignedForm<PasswordForm>,
) -> Response {
    let keep = cookie(&state, &headers, SESSION_COOKIE);
    let changed = accounts::change_password(&state, account, form.current, form.new, keep).await;
    let changed = changed.map(|revoked| {
        Flash::notice(match revoked {
            0 => "Password changed. You had no other sessions.".to_owned(),
            1 => "Password changed. Your one other session was signed out.".to_owned(),
            n => format!("Password changed. Your {n} other sessions and tokens were signed out."),
        })
    });
    after(&state, "/settings", changed)
}

pub async fn revoke_session(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    SignedForm { account, .. }: SignedForm<NoFields>,
) -> Response {
    after(
        &state,
        "/settings",
        accounts::revoke_session(&state, account, &id)
            .await
            .map(|()| Flash::notice("That session is signed out.")),
    )
}

/// `GET /settings/export`: the same JSON as `GET /v1/me/export`, as a download.
pub async fn export(State(state): State<HttpState>, viewer: Viewer, headers: HeaderMap) -> Response {
    let account = match viewer.require("/settings") {
        Ok(account) => account,
        Err(to_login) => return to_login,
    };
    match lifecycle::export(&state, account, cookie(&state, &headers, SESSION_COOKIE)).await {
        Ok(export) => (
            [(header::CONTENT_DISPOSITION, "attachment; filename=\"presence-export.json\"")],
            axum::Json(export),
        )
            .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

pub async fn delete_account(
    State(state): State<HttpState>,
    Csrf(csrf): Csrf,
    SignedForm { account, form }: SignedForm<Confirmation>,
) -> Response {
    if !form.confirmed() {
        return ask(
            Ask {
                title: "Delete your account?",
                text: "Your devices, your apps' access (each app is told you are gone), the apps you \
                       registered, your notifications and your sessions are deleted for good. This \
                       cannot be undone.",
                action: "/settings/delete",
                fields: &[],
                button: "Delete my account",
                back: "/settings",
            },
            &csrf,
        );
    }
    if let Err(error) = lifecycle::delete_account(&state, account).await {
        return ApiError::from(error).into_response();
    }
    let mut response = super::message(
        StatusCode::OK,
        "Account deleted",
        "Everything Presence held about you is gone. Apps you had allowed were told.",
    );
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", "Lax", Some(0)));
    response
}
