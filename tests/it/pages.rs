//! The pages' own manners: the landing page at `/` for browsers (devices keep the WebSocket
//! there), and the sign-in button named after the configured identity provider.

use crate::support::oidc::Issuer;
use crate::support::{builder, spawn_app, Browser};

#[tokio::test]
async fn a_browser_at_the_root_gets_a_landing_page_and_a_device_still_gets_its_websocket() {
    let app = spawn_app().await;
    let page = reqwest::Client::new()
        .get(app.url("/"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    let body = page.text().await.unwrap();
    for link in ["href=\"/login\"", "href=\"/developers\""] {
        assert!(body.contains(link), "{link} missing in {body}");
    }

    // Signed in, the page leads to the settings instead.
    app.user("root@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("root@example.com").await;
    let signed_in = browser.get("/").await;
    assert!(signed_in.body.contains("href=\"/settings\" id=\"to-settings\""), "{}", signed_in.body);

    // Devices and plain clients are unchanged.
    let (_device, uaid) = app.device().await;
    assert_eq!(uaid.len(), 32);
    assert_eq!(app.get("/").await.json()["code"], "websocket_required");
}

#[tokio::test]
async fn the_sign_in_button_names_the_configured_provider() {
    let issuer = Issuer::start().await;
    let host = url::Url::parse(&issuer.url).unwrap().host_str().unwrap().to_owned();
    let app =
        builder().set("oidc_issuer", issuer.url.clone()).set("oidc_audience", "presence-test").spawn().await;
    let login = Browser::new(&app).get("/login").await.body;
    assert!(login.contains(&format!("Sign in with {host}")), "{login}");
    assert!(!login.contains("Firefox"));

    let named = builder()
        .set("oidc_issuer", issuer.url.clone())
        .set("oidc_audience", "presence-test")
        .set("oidc_provider_name", "Mozilla accounts")
        .spawn()
        .await;
    let login = Browser::new(&named).get("/login").await.body;
    assert!(login.contains("Sign in with Mozilla accounts"), "{login}");
}
