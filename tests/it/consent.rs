//! The consent flow over plain HTTP: every refusal the issue lists, uids, and page security.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::support::apps::query_of;
use crate::support::{
    builder, consent, exchange, register_app, reply, spawn_app, urlencode, Browser, REDIRECT,
};

#[tokio::test]
async fn allow_gives_a_code_that_becomes_a_uid_once() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);

    // Not signed in: the consent link goes to the login page and comes back.
    let first = browser
        .get(&format!("/grant?app_id={}&redirect_uri={}&state=s", chat.app_id, urlencode(REDIRECT)))
        .await;
    assert_eq!(first.status, 303);
    assert!(first.location.unwrap().starts_with("/login?next=%2Fgrant%3Fapp_id%3D"));

    browser.sign_in("carol@example.com").await;
    let code = consent(&mut browser, &chat.app_id, None).await;
    let exchanged = exchange(&app, &chat, json!({"code": code, "redirect_uri": REDIRECT})).await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let uid = exchanged.json()["uid"].as_str().unwrap().to_owned();
    assert!(uid.starts_with("u_"));

    let reused = exchange(&app, &chat, json!({"code": code})).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.json()["code"], "invalid_grant");

    // Granting again while granted keeps the uid.
    let again = consent(&mut browser, &chat.app_id, None).await;
    assert_eq!(exchange(&app, &chat, json!({"code": again})).await.json()["uid"], uid.as_str());
    // Bearer with the app secret works too.
    let third = consent(&mut browser, &chat.app_id, None).await;
    let bearer = reply(
        app.http
            .post(app.url("/v1/grants/token"))
            .bearer_auth(&chat.secret)
            .json(&json!({"code": third, "redirect_uri": REDIRECT}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bearer.json()["uid"], uid.as_str());
}

#[tokio::test]
async fn deny_sends_access_denied_and_grants_nothing() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let carol = app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("carol@example.com").await;
    browser
        .get(&format!("/grant?app_id={}&redirect_uri={}&state=xyz", chat.app_id, urlencode(REDIRECT)))
        .await;
    let denied = browser
        .post(
            "/grant",
            &[("app_id", &chat.app_id), ("redirect_uri", REDIRECT), ("state", "xyz"), ("decision", "deny")],
        )
        .await;
    assert_eq!(denied.status, 303);
    let query = query_of(&denied.location.unwrap());
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "xyz");
    assert!(!query.contains_key("code"));
    assert_eq!(app.get_as(&carol.token, "/v1/me/grants").await.json()["grants"], json!([]));
}

#[tokio::test]
async fn unregistered_redirect_uris_get_an_error_page_never_a_redirect() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("carol@example.com").await;
    for uri in [
        "https://evil.example/callback",
        "http://127.0.0.1:1/callback/",
        "http://127.0.0.1:1/callback?x=1",
        "",
    ] {
        let page = browser
            .get(&format!("/grant?app_id={}&redirect_uri={}&state=s", chat.app_id, urlencode(uri)))
            .await;
        assert_eq!(page.status, 400, "{uri}");
        assert!(page.location.is_none());
        assert!(page.body.contains("not registered"), "{uri}");
        let posted = browser
            .post(
                "/grant",
                &[("app_id", &chat.app_id), ("redirect_uri", uri), ("state", "s"), ("decision", "allow")],
            )
            .await;
        assert_eq!(posted.status, 400, "{uri}");
        assert!(posted.location.is_none());
    }
    let unknown = browser.get(&format!("/grant?app_id=app_nope&redirect_uri={}", urlencode(REDIRECT))).await;
    assert_eq!(unknown.status, 400);
    let plain = browser
        .get(&format!(
            "/grant?app_id={}&redirect_uri={}&code_challenge=abc&code_challenge_method=plain",
            chat.app_id,
            urlencode(REDIRECT)
        ))
        .await;
    assert_eq!(plain.status, 400, "only S256 challenges");
}

#[tokio::test]
async fn expired_codes_wrong_verifiers_and_other_apps_codes_are_refused() {
    // Expiry counts whole seconds: a code lives between 2 and 3 s here, long enough for each
    // exchange below to come right after its consent even on a loaded machine.
    let app = builder().set("grant_code_ttl", "3s").spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let other = register_app(&app, &developer, "Other").await;
    app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("carol@example.com").await;

    let verifier = "a-verifier-that-is-long-enough-to-be-valid-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let code = consent(&mut browser, &chat.app_id, Some(&challenge)).await;
    let wrong = exchange(&app, &chat, json!({"code": code, "code_verifier": "x".repeat(50)})).await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.json()["detail"].as_str().unwrap().contains("code_verifier"));
    let code = consent(&mut browser, &chat.app_id, Some(&challenge)).await;
    let missing = exchange(&app, &chat, json!({"code": code})).await;
    assert_eq!(missing.status, 400);
    let code = consent(&mut browser, &chat.app_id, Some(&challenge)).await;
    assert_eq!(exchange(&app, &chat, json!({"code": code, "code_verifier": verifier})).await.status, 200);

    let code = consent(&mut browser, &chat.app_id, None).await;
    let stolen = exchange(&app, &other, json!({"code": code})).await;
    assert_eq!(stolen.status, 400);
    assert!(stolen.json()["detail"].as_str().unwrap().contains("another app"));

    // No downgrade: a verifier for a code asked without a challenge means someone else asked.
    let code = consent(&mut browser, &chat.app_id, None).await;
    let downgraded = exchange(&app, &chat, json!({"code": code, "code_verifier": verifier})).await;
    assert_eq!((downgraded.status, downgraded.json()["code"].as_str()), (400, Some("invalid_grant")));
    // The redirect URI is required at the exchange.
    let code = consent(&mut browser, &chat.app_id, None).await;
    let without = exchange(&app, &chat, json!({"code": code, "redirect_uri": null})).await;
    assert_eq!((without.status, without.json()["code"].as_str()), (400, Some("invalid_request")));
    assert_eq!(exchange(&app, &chat, json!({"code": code})).await.status, 200, "the code was not spent");

    let code = consent(&mut browser, &chat.app_id, None).await;
    let mismatched =
        exchange(&app, &chat, json!({"code": code, "redirect_uri": "https://elsewhere.example/cb"})).await;
    assert_eq!(mismatched.status, 400);

    let code = consent(&mut browser, &chat.app_id, None).await;
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let expired = exchange(&app, &chat, json!({"code": code})).await;
    assert_eq!(expired.status, 400);
    assert_eq!(expired.json()["code"], "invalid_grant");

    let wrong_secret = reply(
        app.http
            .post(app.url("/v1/grants/token"))
            .basic_auth(&chat.app_id, Some("ps_wrong"))
            .json(&json!({"code": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_secret.status, 401);
    assert_eq!(wrong_secret.json()["code"], "invalid_client");
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let carol = app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    browser.get("/login").await;
    let login = browser
        .post_without_csrf("/login", &[("email", "carol@example.com"), ("password", "password123")])
        .await;
    assert_eq!(login.status, 403);
    browser.sign_in("carol@example.com").await;
    let grant = browser
        .post_without_csrf(
            "/grant",
            &[("app_id", &chat.app_id), ("redirect_uri", REDIRECT), ("state", "s"), ("decision", "allow")],
        )
        .await;
    assert_eq!(grant.status, 403);
    assert!(grant.location.is_none());
    let forged = browser
        .post_without_csrf(
            "/settings/policy",
            &[
                ("idle_away_minutes", "1"),
                ("idle_offline_minutes", "2"),
                ("appear_offline", "on"),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(app.get_as(&carol.token, "/v1/me/policy").await.json()["appear_offline"], false);
    assert_eq!(app.get_as(&carol.token, "/v1/me/grants").await.json()["grants"], json!([]));
}

#[tokio::test]
async fn two_apps_get_different_uids_and_a_regrant_after_revoke_gets_a_new_one() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let games = register_app(&app, &developer, "Games").await;
    let carol = app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("carol@example.com").await;
    let code = consent(&mut browser, &chat.app_id, None).await;
    let chat_uid = exchange(&app, &chat, json!({"code": code})).await.json()["uid"].clone();
    let code = consent(&mut browser, &games.app_id, None).await;
    let games_uid = exchange(&app, &games, json!({"code": code})).await.json()["uid"].clone();
    assert_ne!(chat_uid, games_uid);

    let revoked =
        app.send_as(Method::DELETE, &carol.token, &format!("/v1/me/grants/{}", chat.app_id), None).await;
    assert_eq!(revoked.status, 204);
    let code = consent(&mut browser, &chat.app_id, None).await;
    let new_uid = exchange(&app, &chat, json!({"code": code})).await.json()["uid"].clone();
    assert_ne!(new_uid, chat_uid);

    // Pause and resume through the API.
    let paused = app
        .send_as(
            Method::PATCH,
            &carol.token,
            &format!("/v1/me/grants/{}", games.app_id),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(paused.json()["enabled"], false);
    let grants = app.get_as(&carol.token, "/v1/me/grants").await.json();
    assert_eq!(grants["grants"].as_array().unwrap().len(), 2);
    assert!(grants.to_string().find(&chat_uid.as_str().unwrap()[2..]).is_none(), "users do not see uids");
}

#[tokio::test]
async fn app_secrets_never_reach_the_database_in_clear() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let rotated =
        app.send_as(Method::POST, &developer.token, &format!("/v1/apps/{}/secret", chat.app_id), None).await;
    let new_secret = rotated.json()["secret"].as_str().unwrap().to_owned();
    // The old secret stops working, the new one works.
    let with = |secret: &str| {
        let request = app
            .http
            .post(app.url("/v1/grants/token"))
            .basic_auth(&chat.app_id, Some(secret))
            .json(&json!({"code": "x"}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(with(&chat.secret).await, 401);
    assert_eq!(with(&new_secret).await, 400);
    // A rotated webhook secret, and the one it replaced (kept for the overlap), are sealed too.
    let path = format!("/v1/apps/{}/webhook/secret", chat.app_id);
    let rotated = app.send_as(Method::POST, &developer.token, &path, None).await;
    let new_webhook_secret = rotated.json()["webhook_secret"].as_str().unwrap().to_owned();
    let data = app.stop().await;
    let database = data.database_bytes().await;
    let contains = |needle: &str| database.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("Chat"), "the database was read");
    for secret in [&chat.secret, &new_secret, &chat.webhook_secret, &new_webhook_secret] {
        assert!(!contains(secret), "{secret} is in the database in clear");
    }
    assert!(!contains(&chat.webhook_secret["whsec_".len()..]));
    assert!(!contains(&new_webhook_secret["whsec_".len()..]));
}

#[tokio::test]
async fn pages_carry_security_headers_and_safe_cookies() {
    let app = spawn_app().await;
    app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    let login = browser.get("/login").await;
    assert_eq!(login.status, 200);
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(login.headers["x-frame-options"], "DENY");
    let csrf_cookie = login.headers["set-cookie"].to_str().unwrap();
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"), "{csrf_cookie}");
    assert!(!csrf_cookie.contains("Secure"), "plain http on loopback");
    browser.get("/login").await;
    let signed_in =
        browser.post("/login", &[("email", "carol@example.com"), ("password", "password123")]).await;
    let session = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("presence_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
    let settings = browser.get("/settings").await;
    assert_eq!(settings.status, 200);
    assert!(settings.body.contains("Your presence"));
    // No state change on GET.
    assert_eq!(browser.get("/settings/policy").await.status, 405);
    assert_eq!(browser.get("/logout").await.status, 405);
    // Wrong password: back to the login page with a message, after a 303.
    let mut stranger = Browser::new(&app);
    stranger.get("/login").await;
    let wrong = stranger.post("/login", &[("email", "carol@example.com"), ("password", "nope")]).await;
    assert_eq!(wrong.status, 303);
    assert!(wrong.location.unwrap().starts_with("/login?error=credentials"));
}

#[tokio::test]
async fn a_secure_public_url_makes_cookies_secure_and_host_only() {
    let app = builder().set("public_url", "https://presence.example").spawn().await;
    let carol = app.user("carol@example.com").await;
    let mut browser = Browser::new(&app);
    let login = browser.get("/login").await;
    let csrf_cookie = login.headers["set-cookie"].to_str().unwrap();
    assert!(csrf_cookie.starts_with("__Host-presence_csrf="), "{csrf_cookie}");
    browser.get("/login").await;
    let signed_in =
        browser.post("/login", &[("email", "carol@example.com"), ("password", "password123")]).await;
    assert_eq!(signed_in.status, 303);
    let session = signed_in.headers["set-cookie"].to_str().unwrap();
    assert!(session.starts_with("__Host-presence_session="), "{session}");
    for cookie in [csrf_cookie, session] {
        assert!(cookie.contains("; Secure") && cookie.contains("; Path=/"), "{cookie}");
        assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    }
    assert_eq!(browser.get("/settings").await.status, 200, "signed in with the __Host- cookie");
    // A cookie without the prefix (as a sibling host could plant it) is not read.
    let mut planted = Browser::new(&app);
    planted.plant_cookie("presence_session", &carol.token);
    assert_eq!(planted.get("/settings").await.status, 303, "sent to sign in");
}

/// Posts a policy form (appear offline) with this CSRF token; returns the status.
async fn post(browser: &mut Browser, token: String) -> u16 {
    let fields = [
        ("idle_away_minutes", "1"),
        ("idle_offline_minutes", "2"),
        ("appear_offline", "on"),
        ("csrf", token.as_str()),
    ];
    browser.post_without_csrf("/settings/policy", &fields).await.status
}

#[tokio::test]
async fn a_csrf_token_works_only_in_the_session_it_was_made_for() {
    let app = spawn_app().await;
    app.user("carol@example.com").await;
    let dave = app.user("dave@example.com").await;
    let mut carol_browser = Browser::new(&app);
    carol_browser.sign_in("carol@example.com").await;
    let carols_token = carol_browser.csrf().await;
    let mut dave_browser = Browser::new(&app);
    dave_browser.sign_in("dave@example.com").await;
    assert_eq!(post(&mut dave_browser, carols_token.clone()).await, 403, "another session's token");
    // A pre-session id planted with a matching form field, as double-submit allowed.
    let planted = "x".repeat(43);
    dave_browser.plant_cookie("presence_csrf", &planted);
    assert_eq!(post(&mut dave_browser, planted.clone()).await, 403, "a planted cookie and field");
    assert_eq!(app.get_as(&dave.token, "/v1/me/policy").await.json()["appear_offline"], false);
    // Signed out, the token from before the sign-in works no more.
    let mut stranger = Browser::new(&app);
    stranger.get("/login").await;
    let before = stranger.csrf().await;
    stranger.sign_in("carol@example.com").await;
    assert_eq!(post(&mut stranger, before).await, 403, "a token of the pre-session");
    // The same planted pair on the sign-in page.
    let mut victim = Browser::new(&app);
    victim.plant_cookie("presence_csrf", &planted);
    let login = victim
        .post_without_csrf(
            "/login",
            &[("email", "dave@example.com"), ("password", "password123"), ("csrf", &planted)],
        )
        .await;
    assert_eq!(login.status, 403);
    // Each browser's own token still works.
    let own = dave_browser.csrf().await;
    assert_eq!(post(&mut dave_browser, own).await, 303);
    assert_eq!(app.get_as(&dave.token, "/v1/me/policy").await.json()["appear_offline"], true);
}
