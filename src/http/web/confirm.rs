//! The second step of a destructive form (revoke an app, remove a device, delete the account):
//! the first POST, without `confirm=yes`, answers a page that says what will happen and posts
//! the same form again with it. No JavaScript needed.

use askama::Template;
use axum::response::Response;
use serde::Deserialize;

use super::render;

/// A form field `confirm`: `yes` once the user confirmed.
#[derive(Deserialize, Default)]
pub struct Confirmation {
    #[serde(default)]
    confirm: Option<String>,
}

impl Confirmation {
    pub fn confirmed(&self) -> bool {
        self.confirm.as_deref() == Some("yes")
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage<'a> {
    title: &'a str,
    text: &'a str,
    action: &'a str,
    fields: &'a [(&'a str, &'a str)],
    button: &'a str,
    back: &'a str,
    csrf: &'a str,
    signed_in: bool,
}

/// What the confirmation page says and where its form goes.
pub struct Ask<'a> {
    pub title: &'a str,
    pub text: &'a str,
    /// The form's action: the same path as the first step.
    pub action: &'a str,
    /// The first step's fields, posted again.
    pub fields: &'a [(&'a str, &'a str)],
    pub button: &'a str,
    /// Where Cancel goes.
    pub back: &'a str,
}

pub fn ask(ask: Ask<'_>, csrf: &str) -> Response {
    render(&ConfirmPage {
        title: ask.title,
        text: ask.text,
        action: ask.action,
        fields: ask.fields,
        button: ask.button,
        back: ask.back,
        csrf,
        signed_in: true,
    })
}
