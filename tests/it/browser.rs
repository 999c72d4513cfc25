//! The consent and settings pages in a real headless Chromium, driven through chromedriver.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! chromedriver the test says so and passes, unless `TEST_REQUIRE_BROWSER=1` (CI sets it),
//! where a missing browser fails the run (see `support::browser`). Screenshots land in
//! `target/screenshots/`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fantoccini::Locator;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::support::apps::register_app_redirecting_to;
use crate::support::browser::{chromium, click, screenshot, wait_for, wait_for_url};
use crate::support::{reply, spawn_app};

/// An app's web site: a page with a "Connect Presence" link and a callback that records what
/// Presence sent back.
async fn app_site(
    presence: &str,
    app_id: &str,
    challenge: &str,
) -> (String, Arc<Mutex<Vec<HashMap<String, String>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let callbacks: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let link = format!(
        "{presence}/grant?app_id={app_id}&redirect_uri={}&state=from-the-app&code_challenge={challenge}&code_challenge_method=S256",
        form_urlencoded::byte_serialize(format!("{base}/callback").as_bytes()).collect::<String>()
    );
    let recorded = callbacks.clone();
    let router = axum::Router::new()
        .route(
            "/",
            get(move || async move {
                Html(format!("<h1>Chat</h1><a id=\"connect\" href=\"{link}\">Connect Presence</a>"))
            }),
        )
        .route(
            "/callback",
            get(move |Query(query): Query<HashMap<String, String>>| async move {
                let done = if query.contains_key("code") { "connected" } else { "not connected" };
                recorded.lock().unwrap().push(query);
                Html(format!("<p id=\"result\">{done}</p>"))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, callbacks)
}

#[tokio::test]
async fn a_person_allows_an_app_in_a_browser_then_pauses_resumes_and_revokes_it() {
    let Some((_driver, client)) = chromium().await else { return };
    let app = spawn_app().await;
    let presence = app.url("");
    let developer = app.user("dev@example.com").await;
    let carol = app.user("carol@example.com").await;
    let verifier = "the-app-keeps-this-verifier-secret-0123456789abcdef";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));

    // The site's link needs the app id, and the app's redirect URI the site's address: register
    // with a placeholder, start the site, then point the app at it.
    let chat = register_app_redirecting_to(&app, &developer, "Chat", "http://127.0.0.1:1/callback").await;
    let (app_id, secret) = (chat.app_id, chat.secret);
    let (site, callbacks) = app_site(&presence, &app_id, &challenge).await;
    let patched = app
        .send_as(
            Method::PATCH,
            &developer.token,
            &format!("/v1/apps/{app_id}"),
            Some(json!({"redirect_uris": [format!("{site}/callback")]})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);

    // The app's page sends the user to Presence; the user signs in, sees the consent page.
    client.goto(&site).await.unwrap();
    click(&client, "#connect").await;
    wait_for_url(&client, &format!("{presence}/login")).await;
    wait_for(&client, "#email").await.send_keys("carol@example.com").await.unwrap();
    client.find(Locator::Css("#password")).await.unwrap().send_keys("password123").await.unwrap();
    click(&client, "#submit").await;
    wait_for_url(&client, &format!("{presence}/grant")).await;
    let heading = wait_for(&client, "#app-name").await.text().await.unwrap();
    assert_eq!(heading, "Chat");
    screenshot(&client, "consent-desktop").await;
    client.set_window_size(390, 844).await.unwrap();
    screenshot(&client, "consent-phone").await;
    client.set_window_size(1200, 1000).await.unwrap();

    // Allow: back at the app with a code, which the app exchanges for a uid.
    click(&client, "#allow").await;
    wait_for_url(&client, &format!("{site}/callback")).await;
    assert_eq!(wait_for(&client, "#result").await.text().await.unwrap(), "connected");
    let callback = callbacks.lock().unwrap().last().cloned().unwrap();
    assert_eq!(callback["state"], "from-the-app");
    let exchanged = reply(
        app.http
            .post(app.url("/v1/grants/token"))
            .basic_auth(&app_id, Some(&secret))
            .json(&json!({"code": callback["code"], "code_verifier": verifier, "redirect_uri": format!("{site}/callback")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    assert!(exchanged.json()["uid"].as_str().unwrap().starts_with("u_"));

    // Deny: back at the app with access_denied.
    let other_id =
        register_app_redirecting_to(&app, &developer, "Games", &format!("{site}/callback")).await.app_id;
    client
        .goto(&format!(
            "{presence}/grant?app_id={other_id}&redirect_uri={}&state=second",
            form_urlencoded::byte_serialize(format!("{site}/callback").as_bytes()).collect::<String>()
        ))
        .await
        .unwrap();
    click(&client, "#deny").await;
    wait_for_url(&client, &format!("{site}/callback")).await;
    wait_for(&client, "#result").await;
    let denied = callbacks.lock().unwrap().last().cloned().unwrap();
    assert_eq!(denied["error"], "access_denied");
    assert_eq!(denied["state"], "second");

    // Settings: the app is there; pause, resume, revoke.
    let enabled = |grants: serde_json::Value| grants["grants"][0]["enabled"].as_bool();
    client.goto(&format!("{presence}/settings")).await.unwrap();
    wait_for(&client, &format!("#pause-{app_id}")).await;
    screenshot(&client, "settings-desktop").await;
    click(&client, &format!("#pause-{app_id}")).await;
    wait_for(&client, &format!("#resume-{app_id}")).await;
    assert_eq!(enabled(app.get_as(&carol.token, "/v1/me/grants").await.json()), Some(false));
    screenshot(&client, "settings-paused").await;
    client.set_window_size(390, 844).await.unwrap();
    screenshot(&client, "settings-phone").await;
    client.set_window_size(1200, 1000).await.unwrap();
    click(&client, &format!("#resume-{app_id}")).await;
    wait_for(&client, &format!("#pause-{app_id}")).await;
    assert_eq!(enabled(app.get_as(&carol.token, "/v1/me/grants").await.json()), Some(true));
    // Revoking asks first; Cancel keeps the app, Confirm revokes it.
    click(&client, &format!("#revoke-{app_id}")).await;
    let asked = wait_for(&client, "#confirm-step h1").await.text().await.unwrap();
    assert_eq!(asked, "Revoke Chat?");
    screenshot(&client, "revoke-confirm").await;
    assert_eq!(enabled(app.get_as(&carol.token, "/v1/me/grants").await.json()), Some(true));
    click(&client, "#cancel").await;
    wait_for(&client, &format!("#revoke-{app_id}")).await;
    assert_eq!(enabled(app.get_as(&carol.token, "/v1/me/grants").await.json()), Some(true));
    click(&client, &format!("#revoke-{app_id}")).await;
    wait_for(&client, "#confirm-step").await;
    click(&client, "#confirm").await;
    let mut notice = String::new();
    for _ in 0..100 {
        notice = wait_for(&client, ".alert.notice").await.text().await.unwrap_or_default();
        if notice.starts_with("Access revoked") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(notice.starts_with("Access revoked"), "{notice}");
    assert_eq!(app.get_as(&carol.token, "/v1/me/grants").await.json()["grants"], json!([]));
    assert!(client.find(Locator::Css(&format!("#pause-{app_id}"))).await.is_err());

    client.goto(&format!("{presence}/developers")).await.unwrap();
    screenshot(&client, "developers").await;
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_landing_page_leads_a_browser_to_sign_in_and_to_its_settings() {
    let Some((_driver, client)) = chromium().await else { return };
    let app = spawn_app().await;
    let presence = app.url("");
    app.user("lena@example.com").await;

    client.goto(&format!("{presence}/")).await.unwrap();
    wait_for(&client, "#landing").await;
    assert!(client.find(Locator::Css("#to-developers")).await.is_ok());
    screenshot(&client, "landing").await;
    click(&client, "#to-login").await;
    wait_for_url(&client, &format!("{presence}/login")).await;
    wait_for(&client, "#email").await.send_keys("lena@example.com").await.unwrap();
    client.find(Locator::Css("#password")).await.unwrap().send_keys("password123").await.unwrap();
    click(&client, "#submit").await;
    wait_for_url(&client, &format!("{presence}/settings")).await;

    client.goto(&format!("{presence}/")).await.unwrap();
    click(&client, "#to-settings").await;
    wait_for_url(&client, &format!("{presence}/settings")).await;
    wait_for(&client, "#my-status").await;
    // The device endpoint at the same path still upgrades.
    let (_device, uaid) = app.device().await;
    assert_eq!(uaid.len(), 32);
    client.close().await.unwrap();
}
