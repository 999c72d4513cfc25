//! Apps as developers register them and users grant them: registration (by the API or the
//! CLI), the consent page walked in a `Browser`, the code exchanged for a uid, and what an app
//! sends with its credentials.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::json;

use super::app::TestApp;
use super::browser::Browser;
use super::http::{register_device_at, reply, sign_in, Device, Reply, User, PASSWORD};
use super::process::cli;

pub struct RegisteredApp {
    pub app_id: String,
    pub secret: String,
    pub webhook_secret: String,
}

/// The redirect URI the test apps register (nothing listens there).
pub const REDIRECT: &str = "http://127.0.0.1:1/callback";

pub async fn register_app(app: &TestApp, developer: &User, name: &str) -> RegisteredApp {
    register_app_with_webhook(app, developer, name, None).await
}

/// Registers an app redirecting to `REDIRECT`, with a webhook URL if given.
pub async fn register_app_with_webhook(
    app: &TestApp,
    developer: &User,
    name: &str,
    webhook: Option<&str>,
) -> RegisteredApp {
    create_app(app, developer, json!({"name": name, "redirect_uris": [REDIRECT], "webhook_url": webhook}))
        .await
}

/// Registers an app redirecting to `redirect`, without a webhook.
pub async fn register_app_redirecting_to(
    app: &TestApp,
    developer: &User,
    name: &str,
    redirect: &str,
) -> RegisteredApp {
    create_app(app, developer, json!({"name": name, "redirect_uris": [redirect]})).await
}

async fn create_app(app: &TestApp, developer: &User, body: serde_json::Value) -> RegisteredApp {
    let created = app.send_as(Method::POST, &developer.token, "/v1/apps", Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let body = created.json();
    RegisteredApp {
        app_id: body["app_id"].as_str().unwrap().to_owned(),
        secret: body["secret"].as_str().unwrap().to_owned(),
        webhook_secret: body["webhook_secret"].as_str().unwrap().to_owned(),
    }
}

/// On a data directory, with the CLI: the accounts dev@example.com (a developer) and
/// kim@example.com (a user), and dev's app "Chat" with a webhook to `webhook_url`.
pub async fn chat_app_by_cli(dir: &std::path::Path, webhook_url: &str) -> RegisteredApp {
    chat_app_by_cli_in_format(dir, webhook_url, "pairs").await
}

/// `chat_app_by_cli` with `--webhook-format` (`pairs` or `v1`).
pub async fn chat_app_by_cli_in_format(
    dir: &std::path::Path,
    webhook_url: &str,
    format: &str,
) -> RegisteredApp {
    let password = format!("{PASSWORD}\n");
    cli(&["account", "add", "--email", "dev@example.com"], dir, &password).await;
    cli(&["account", "add", "--email", "kim@example.com"], dir, &password).await;
    let args = [
        "app",
        "create",
        "--owner",
        "dev@example.com",
        "--name",
        "Chat",
        "--redirect-uri",
        REDIRECT,
        "--webhook-url",
        webhook_url,
        "--webhook-format",
        format,
        "--webhook-allow",
        "127.0.0.0/8",
    ];
    let created = cli(&args, dir, "").await;
    let field =
        |name: &str| created.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap();
    RegisteredApp {
        app_id: field("app_id"),
        secret: field("secret"),
        webhook_secret: field("webhook_secret"),
    }
}

/// kim@example.com of `chat_app_by_cli`, once she granted Chat and added a phone.
pub struct Kim {
    /// Her uid for Chat.
    pub uid: String,
    /// Her bearer token.
    pub token: String,
    pub phone: Device,
}

/// On the server at `base`, over a data directory set up by `chat_app_by_cli`: kim grants the
/// app access in a browser, then signs in and registers her phone.
pub async fn kim_grants_chat_and_adds_a_phone(base: &str, chat: &RegisteredApp) -> Kim {
    let (_, uid) = grant(base, "kim@example.com", chat).await;
    let token = sign_in(base, "kim@example.com").await;
    let phone = register_device_at(base, &token, "phone").await;
    Kim { uid, token, phone }
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

pub fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Walks the consent page and allows; returns the code from the redirect.
pub async fn consent(browser: &mut Browser, app_id: &str, challenge: Option<&str>) -> String {
    let mut fields =
        vec![("app_id", app_id), ("redirect_uri", REDIRECT), ("state", "st4te"), ("decision", "allow")];
    let mut path = format!("/grant?app_id={app_id}&redirect_uri={}&state=st4te", urlencode(REDIRECT));
    if let Some(challenge) = challenge {
        path.push_str(&format!("&code_challenge={challenge}&code_challenge_method=S256"));
        fields.push(("code_challenge", challenge));
        fields.push(("code_challenge_method", "S256"));
    }
    let page = browser.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let answer = browser.post("/grant", &fields).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let location = answer.location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = query_of(&location);
    assert_eq!(query["state"], "st4te");
    query["code"].clone()
}

pub async fn exchange(app: &TestApp, registered: &RegisteredApp, body: serde_json::Value) -> Reply {
    exchange_at(&app.url(""), registered, body).await
}

/// As an app does it: with the redirect URI the consent was asked with (`REDIRECT`) unless the
/// body names one (`null` sends none).
pub async fn exchange_at(base: &str, registered: &RegisteredApp, mut body: serde_json::Value) -> Reply {
    if body.get("redirect_uri").is_none() {
        body["redirect_uri"] = REDIRECT.into();
    }
    as_app_at(base, registered, Method::POST, "/v1/grants/token", Some(body)).await
}

/// The user `email` signs in to the server at `base` in a browser, grants the app access and
/// the app exchanges the code: returns the browser, still signed in, and the user's uid.
pub async fn grant(base: &str, email: &str, registered: &RegisteredApp) -> (Browser, String) {
    let mut browser = Browser::at(base);
    browser.sign_in(email).await;
    let code = consent(&mut browser, &registered.app_id, None).await;
    let exchanged = exchange_at(base, registered, json!({"code": code})).await;
    let uid = exchanged.json()["uid"].as_str().unwrap().to_owned();
    (browser, uid)
}

/// A request to the server at `base` with the app's credentials (HTTP Basic).
pub async fn as_app_at(
    base: &str,
    registered: &RegisteredApp,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .basic_auth(&registered.app_id, Some(&registered.secret));
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request.send().await.unwrap()).await
}

/// `POST /v1/apps/<id>/notifications` as the app, on the server at `base`.
pub async fn notify_at(base: &str, registered: &RegisteredApp, body: serde_json::Value) -> Reply {
    let path = format!("/v1/apps/{}/notifications", registered.app_id);
    as_app_at(base, registered, Method::POST, &path, Some(body)).await
}

/// `GET /v1/apps/<id>/deliveries` as the app: the webhook's health and its latest attempts.
pub async fn deliveries_at(base: &str, registered: &RegisteredApp) -> serde_json::Value {
    let path = format!("/v1/apps/{}/deliveries", registered.app_id);
    as_app_at(base, registered, Method::GET, &path, None).await.json()
}
