//! Signing in: local accounts and tokens, and OpenID Connect tokens from a provider that the
//! test runs on loopback with keys it generates.

use std::time::Duration;

use reqwest::Method;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use crate::support::http::PASSWORD;
use crate::support::oidc::Issuer;
use crate::support::service::digest;
use crate::support::{builder, now, reply, spawn_app, Browser};

#[tokio::test]
async fn a_token_signs_in_until_it_is_revoked() {
    let app = spawn_app().await;
    let user = app.user("local@example.com").await;
    assert!(user.token.starts_with("pt_"));
    assert_eq!(app.get_as(&user.token, "/v1/me").await.json()["email"], "local@example.com");

    let revoked = app.send_as(Method::DELETE, &user.token, "/v1/tokens/current", None).await;
    assert_eq!(revoked.status, 204);
    let refused = app.get_as(&user.token, "/v1/me").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["code"], "unauthorized");
}

#[tokio::test]
async fn tokens_expire() {
    // Long enough that a loaded machine still uses the token before it expires.
    let app = builder().set("token_ttl", "4s").spawn().await;
    let user = app.user("expiry@example.com").await;
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 200);
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 401);
}

#[tokio::test]
async fn wrong_credentials_and_missing_tokens_are_refused() {
    let app = spawn_app().await;
    app.user("known@example.com").await;
    for (email, password) in
        [("known@example.com", "wrong-password"), ("unknown@example.com", "password123"), ("nope", "x")]
    {
        let response = app
            .http
            .post(app.url("/v1/tokens"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await;
        let refused = reply(response.unwrap()).await;
        assert_eq!(refused.status, 401, "{email}");
        assert_eq!(refused.json()["code"], "invalid_credentials");
    }
    let malformed = reply(
        app.http
            .post(app.url("/v1/tokens"))
            .body("{")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["code"], "invalid_body");
    let anonymous = app.get("/v1/me").await;
    assert_eq!(anonymous.status, 401);
    for token in ["pt_guessed", "garbage", "eyJhbGciOiJub25lIn0.e30."] {
        assert_eq!(app.get_as(token, "/v1/me").await.status, 401, "{token}");
    }
}

#[tokio::test]
async fn secrets_are_stored_only_as_digests() {
    let app = spawn_app().await;
    let user = app.user("digest@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let data = app.stop().await;
    let database = data.database_bytes().await;
    let contains = |needle: &str| database.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(&user.token), "a bearer token is in the database in clear");
    assert!(!contains(&device.prid), "a PrID is in the database in clear");
    assert!(!contains("password123"), "a password is in the database in clear");
    assert!(contains(&digest(&device.prid)));
}

#[tokio::test]
async fn oidc_tokens_sign_in_and_bad_ones_are_refused() {
    let issuer = Issuer::start().await;
    let app =
        builder().set("oidc_issuer", issuer.url.clone()).set("oidc_audience", "presence-test").spawn().await;

    let token = issuer.token("user-1", "presence-test", 300);
    let me = app.get_as(&token, "/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["issuer"], issuer.url.as_str());
    // The account is keyed by (issuer, subject): a second token for the same subject is the same
    // account, with the device registered through the first.
    let device = app.send_as(Method::POST, &token, "/v1/devices", Some(json!({"name": "fxa phone"}))).await;
    assert_eq!(device.status, 201);
    let again = issuer.token("user-1", "presence-test", 300);
    assert_eq!(app.get_as(&again, "/v1/devices").await.json()["devices"].as_array().unwrap().len(), 1);
    let other = issuer.token("user-2", "presence-test", 300);
    assert_eq!(app.get_as(&other, "/v1/devices").await.json()["devices"].as_array().unwrap().len(), 0);

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let stranger = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let now = now();
    let forged = Issuer::sign_with(
        &stranger,
        json!({"iss": issuer.url, "sub": "user-1", "aud": "presence-test", "exp": now + 300}),
    );
    let wrong_issuer = Issuer::sign_with(
        &issuer.key,
        json!({"iss": "https://evil.example", "sub": "user-1", "aud": "presence-test", "exp": now + 300}),
    );
    let no_subject =
        Issuer::sign_with(&issuer.key, json!({"iss": issuer.url, "aud": "presence-test", "exp": now + 300}));
    for (what, bad) in [
        ("bad signature", forged),
        ("wrong audience", issuer.token("user-1", "someone-else", 300)),
        ("expired", issuer.token("user-1", "presence-test", -120)),
        ("wrong issuer", wrong_issuer),
        ("no subject", no_subject),
    ] {
        let refused = app.get_as(&bad, "/v1/me").await;
        assert_eq!(refused.status, 401, "{what}: {}", refused.body);
        assert_eq!(refused.json()["code"], "unauthorized", "{what}");
    }
}

#[tokio::test]
async fn cached_oidc_keys_keep_working_while_the_provider_is_down() {
    let issuer = Issuer::start().await;
    let app = builder()
        .set("oidc_issuer", issuer.url.clone())
        .set("oidc_audience", "presence-test")
        .set("oidc_keys_refresh", "1s")
        .spawn()
        .await;
    let token = issuer.token("user-1", "presence-test", 300);
    assert_eq!(app.get_as(&token, "/v1/me").await.status, 200, "the keys are fetched");

    issuer.down.store(true, std::sync::atomic::Ordering::Relaxed);
    // The keys are now older than oidc_keys_refresh, and the provider answers 503.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        let me = app.get_as(&token, "/v1/me").await;
        assert_eq!(me.status, 200, "a token signed with a cached key still signs in: {}", me.body);
    }
    assert_eq!(app.get_as(&issuer.token("user-2", "presence-test", 300), "/v1/me").await.status, 200);
}

#[tokio::test]
async fn the_browser_signs_in_through_the_identity_provider() {
    let issuer = Issuer::start().await;
    let app =
        builder().set("oidc_issuer", issuer.url.clone()).set("oidc_audience", "presence-test").spawn().await;
    let mut browser = Browser::new(&app);
    let login = browser.get("/login?next=/settings").await;
    assert!(login.body.contains("id=\"oidc\""), "the login page offers the provider");
    let to_provider = browser.get("/login/oidc?next=/settings").await;
    assert_eq!(to_provider.status, 303);
    let authorize = to_provider.location.unwrap();
    assert!(authorize
        .starts_with(&format!("{}/authorize?response_type=code&client_id=presence-test", issuer.url)));
    assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="));
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let back = no_redirects.get(&authorize).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let path = callback.strip_prefix(&app.url("")).expect("back to presence");

    // A forged state is refused.
    let forged = path.replace("state=", "state=x");
    assert_eq!(browser.get(&forged).await.status, 400);
    // A browser without the flow's cookie is refused.
    assert_eq!(Browser::new(&app).get(path).await.status, 400);

    // The forged attempt consumed nothing that matters; sign in properly with a fresh code.
    let again = browser.get("/login/oidc?next=/settings").await.location.unwrap();
    let back = no_redirects.get(&again).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let signed_in = browser.get(callback.strip_prefix(&app.url("")).unwrap()).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location.as_deref(), Some("/settings"));
    let settings = browser.get("/settings").await;
    assert_eq!(settings.status, 200);
    assert!(settings.body.contains(&issuer.url), "signed in as the provider's user");
}

#[tokio::test]
async fn password_guessing_is_slowed_per_email() {
    let app = builder().set("login_attempts_per_minute", "3").spawn().await;
    app.user("target@example.com").await; // one attempt: the successful sign-in
    let attempt = |email: &'static str, password: &'static str| {
        let request =
            app.http.post(app.url("/v1/tokens")).json(&json!({"email": email, "password": password}));
        async move { reply(request.send().await.unwrap()).await }
    };
    assert_eq!(attempt("target@example.com", "guess-one").await.status, 401);
    assert_eq!(attempt("target@example.com", "guess-two").await.status, 401);
    let throttled = attempt("TARGET@example.com", "password123").await;
    assert_eq!(throttled.status, 429, "even the right password waits once the email is throttled");
    assert_eq!(throttled.json()["code"], "too_many_attempts");
    // Other emails are not affected, and the sign-in page says what happened.
    assert_eq!(attempt("someone@example.com", "whatever1").await.status, 401);
    let mut browser = Browser::new(&app);
    browser.get("/login").await;
    let page = browser.post("/login", &[("email", "target@example.com"), ("password", "password123")]).await;
    assert!(page.location.unwrap().starts_with("/login?error=throttled"));
}

/// `POST /v1/tokens` for a new email each time, with this `X-Forwarded-For` if any.
async fn token_attempt(app: &crate::support::TestApp, forwarded_for: Option<&str>) -> crate::support::Reply {
    let email = format!("{}@example.com", uuid::Uuid::new_v4());
    let mut request =
        app.http.post(app.url("/v1/tokens")).json(&json!({"email": email, "password": "guess-one"}));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    reply(request.send().await.unwrap()).await
}

#[tokio::test]
async fn password_attempts_are_limited_per_address_whatever_the_email() {
    let app = builder().set("login_attempts_per_minute_per_address", "3").spawn().await;
    for _ in 0..3 {
        assert_eq!(token_attempt(&app, None).await.status, 401);
    }
    let throttled = token_attempt(&app, None).await;
    assert_eq!(throttled.status, 429, "a fourth email from the same address waits");
    assert_eq!(throttled.json()["code"], "too_many_attempts");
    // No proxy is trusted: a forwarded address from the client is not believed.
    assert_eq!(token_attempt(&app, Some("203.0.113.7")).await.status, 429);
    // The sign-in page counts against the same address.
    let mut browser = Browser::new(&app);
    browser.get("/login").await;
    let page = browser.post("/login", &[("email", "kim@example.com"), ("password", "password123")]).await;
    assert!(page.location.unwrap().starts_with("/login?error=throttled"));
}

#[tokio::test]
async fn sign_ups_are_limited_per_address() {
    let app = builder().set("login_attempts_per_minute_per_address", "2").spawn().await;
    let mut browser = Browser::new(&app);
    browser.get("/signup").await;
    for email in ["one@example.com", "two@example.com"] {
        let page = browser.post("/signup", &[("email", email), ("password", PASSWORD)]).await;
        assert_eq!(page.status, 303, "{email} signs up");
    }
    let page = browser.post("/signup", &[("email", "three@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(page.status, 429);
    assert_eq!(token_attempt(&app, None).await.status, 429, "tokens count against the same address");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let app = builder()
        .set("login_attempts_per_minute_per_address", "2")
        .set("trusted_proxies", "127.0.0.1")
        .spawn()
        .await;
    // The proxy appends the address it saw to what the client sent.
    let client = Some("198.51.100.1, 203.0.113.7");
    assert_eq!(token_attempt(&app, client).await.status, 401);
    assert_eq!(token_attempt(&app, client).await.status, 401);
    assert_eq!(token_attempt(&app, client).await.status, 429);
    // A forged first entry does not make another client of the same address.
    assert_eq!(token_attempt(&app, Some("198.51.100.2, 203.0.113.7")).await.status, 429);
    // Another client behind the proxy is not affected.
    assert_eq!(token_attempt(&app, Some("203.0.113.8")).await.status, 401);
}

#[tokio::test]
async fn signing_in_never_redirects_to_another_site() {
    let app = spawn_app().await;
    app.user("stay@example.com").await;
    // Browsers drop tabs and newlines and read `\` as `/`: each of these would leave the site.
    for next in [
        "//evil.example",
        "/\tevil",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\\evil.example",
        "https://evil.example",
    ] {
        let mut browser = Browser::new(&app);
        browser.get("/login").await;
        let page = browser
            .post("/login", &[("email", "stay@example.com"), ("password", PASSWORD), ("next", next)])
            .await;
        assert_eq!(page.status, 303, "{next:?}");
        assert_eq!(page.location.as_deref(), Some("/settings"), "next={next:?} stays on the site");
    }
}

#[tokio::test]
async fn a_closed_sign_up_page_creates_no_account() {
    let app = builder().set("signup", "closed").spawn().await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.get("/signup").await.status, 403);
    let login = browser.get("/login").await;
    assert!(!login.body.contains("href=\"/signup"), "no link to a closed page");
    let page = browser.post("/signup", &[("email", "mallory@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(page.status, 403);
    let token = app
        .http
        .post(app.url("/v1/tokens"))
        .json(&json!({"email": "mallory@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 401, "no account was made");
    // The operator still adds accounts.
    app.user("ops-made@example.com").await;
}
