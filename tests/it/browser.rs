//! The consent and settings pages in a real headless Chromium, driven through chromedriver.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! chromedriver the test says so and passes, unless `TEST_REQUIRE_BROWSER=1` (CI sets it),
//! where a missing browser fails the run. Screenshots land in `target/screenshots/`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::helpers::{reply, spawn_app, TestApp};

struct Driver {
    process: tokio::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
    }
}

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    names.iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

/// Starts chromedriver and a headless Chromium session; `None` when they are not installed.
async fn browser() -> Option<(Driver, Client)> {
    let required = std::env::var("TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) =
        (find(&["/usr/bin/chromedriver"]), find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]))
    else {
        assert!(!required, "TEST_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed");
        eprintln!("browser test skipped: install chromium and chromium-driver to run it");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let process = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { process, url, _profile: profile };
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,1000", format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("cannot start a browser session: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

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

async fn register(app: &TestApp, token: &str, name: &str, redirect: &str) -> (String, String) {
    let created = app
        .send_as(Method::POST, token, "/v1/apps", Some(json!({"name": name, "redirect_uris": [redirect]})))
        .await
        .json();
    (created["app_id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

async fn click(client: &Client, selector: &str) {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits (up to 10 s) for an element that only the next page has.
async fn wait_for(client: &Client, selector: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector} never appeared: {e}"))
}

async fn wait_for_url(client: &Client, prefix: &str) -> url::Url {
    for _ in 0..100 {
        let url = client.current_url().await.unwrap();
        if url.as_str().starts_with(prefix) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached {prefix}: at {}", client.current_url().await.unwrap());
}

#[tokio::test]
async fn a_person_allows_an_app_in_a_browser_then_pauses_resumes_and_revokes_it() {
    let Some((_driver, client)) = browser().await else { return };
    let app = spawn_app().await;
    let presence = app.url("");
    let developer = app.user("dev@example.com").await;
    let carol = app.user("carol@example.com").await;
    let verifier = "the-app-keeps-this-verifier-secret-0123456789abcdef";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));

    // The site's link needs the app id, and the app's redirect URI the site's address: register
    // with a placeholder, start the site, then point the app at it.
    let (app_id, secret) = register(&app, &developer.token, "Chat", "http://127.0.0.1:1/callback").await;
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
            .json(&json!({"code": callback["code"], "code_verifier": verifier}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    assert!(exchanged.json()["uid"].as_str().unwrap().starts_with("u_"));

    // Deny: back at the app with access_denied.
    let (other_id, _) = register(&app, &developer.token, "Games", &format!("{site}/callback")).await;
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
    click(&client, &format!("#revoke-{app_id}")).await;
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
