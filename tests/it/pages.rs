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

/// The developers' page: each webhook's recent attempts with their answer and outcome, a
/// Resend button on a failed one that sends the pending events now, and a rotation that keeps
/// the old secret working for the chosen time.
#[tokio::test]
async fn the_developers_page_lists_deliveries_resends_a_failed_one_and_rotates_with_an_overlap() {
    use std::time::Duration;

    use crate::support::{grant, register_app_with_webhook, Answer, Receiver};

    let receiver = Receiver::start().await;
    receiver.answer_next(&[Answer { status: 503, retry_after: Some(3600), delay: Duration::ZERO }]);
    let app = builder().set("webhook_allow", "127.0.0.0/8").set("webhook_batch_interval", "1s").spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app_with_webhook(&app, &developer, "Chat", Some(&receiver.url)).await;
    app.user("ann@example.com").await;
    let (_, uid) = grant(&app.url(""), "ann@example.com", &chat).await;
    receiver.wait_until(Duration::from_secs(10), |hits| !hits.is_empty()).await;

    let mut dev = Browser::new(&app);
    dev.sign_in("dev@example.com").await;
    let resend_form = format!("action=\"/developers/apps/{}/deliveries/", chat.app_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut page = dev.get("/developers").await.body;
    while !page.contains(&resend_form) {
        assert!(tokio::time::Instant::now() < deadline, "the failed attempt is never listed: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = dev.get("/developers").await.body;
    }
    let table =
        &page[page.find(&format!("id=\"deliveries-{}\"", chat.app_id)).expect("a deliveries table")..];
    assert!(table.contains("HTTP 503") && table.contains(">failed<"), "{table}");
    assert!(table.contains(" ms</td>"), "the duration is shown: {table}");
    let action = &table[table.find(&resend_form).unwrap() + "action=\"".len()..];
    let action = &action[..action.find('"').unwrap()];
    assert!(action.ends_with("/resend"), "{action}");

    let resent = dev.post(action, &[]).await;
    assert_eq!((resent.status, resent.location.as_deref()), (303, Some("/developers")));
    assert!(dev.get("/developers").await.body.contains("Resending"), "the developer is told");
    receiver
        .wait_until(Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &uid).as_deref() == Some("offline")
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !dev.get("/developers").await.body.contains("HTTP 200") {
        assert!(tokio::time::Instant::now() < deadline, "the new attempt is never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = dev.get("/developers").await.body;
    assert!(page.contains(">delivered<"), "{page}");
    assert_eq!(page.matches(&resend_form).count(), 1, "only the failed attempt has a button");

    // A resend of that attempt again finds nothing pending: the page says so.
    let again = dev.post(action, &[]).await;
    assert_eq!(again.status, 303);
    assert!(dev.get("/developers").await.body.contains("no event is pending"));

    // Rotating with an hour's overlap: the old secret still works, the page says until when.
    let secret_path = format!("/developers/apps/{}/secret", chat.app_id);
    let rotated = dev.post(&secret_path, &[("overlap_seconds", "3600")]).await;
    assert_eq!(rotated.status, 303);
    let page = dev.get("/developers").await.body;
    assert!(page.contains("the old one keeps working until"), "{page}");
    let deliveries = app.url(&format!("/v1/apps/{}/deliveries", chat.app_id));
    let with_old = reqwest::Client::new().get(&deliveries).bearer_auth(&chat.secret).send().await.unwrap();
    assert_eq!(with_old.status(), 200);
    // Without one, the old secret stops at once, the one still in its overlap too.
    dev.post(&secret_path, &[("overlap_seconds", "0")]).await;
    let with_old = reqwest::Client::new().get(&deliveries).bearer_auth(&chat.secret).send().await.unwrap();
    assert_eq!(with_old.status(), 401);
}
