//! Rotating an app's secret: at once, or with an overlap during which the old secret still
//! works (at most two secrets at a time), ending at the time the rotation answered.

use reqwest::Method;
use serde_json::json;

use crate::support::{builder, now, register_app, spawn_app, RegisteredApp, TestApp, User};

/// The status of an app request made with this secret, by HTTP Basic and by bearer.
async fn answers_with(app: &TestApp, chat: &RegisteredApp, secret: &str) -> (u16, u16) {
    let url = app.url(&format!("/v1/apps/{}/deliveries", chat.app_id));
    let http = reqwest::Client::new();
    let basic = http.get(&url).basic_auth(&chat.app_id, Some(secret)).send().await.unwrap();
    let bearer = http.get(&url).bearer_auth(secret).send().await.unwrap();
    (basic.status().as_u16(), bearer.status().as_u16())
}

async fn rotate(
    app: &TestApp,
    developer: &User,
    chat: &RegisteredApp,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let path = format!("/v1/apps/{}/secret", chat.app_id);
    let rotated = app.send_as(Method::POST, &developer.token, &path, body).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    rotated.json()
}

#[tokio::test]
async fn during_an_overlap_both_secrets_work_and_afterwards_only_the_new_one() {
    // A short retention makes the sweep run every 200 ms.
    let app = builder().set("notification_retention", "1s").spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let before = now();
    let rotated = rotate(&app, &developer, &chat, Some(json!({"overlap_seconds": 2}))).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let until = rotated["previous_valid_until"].as_i64().unwrap();
    assert!((before + 2..=now() + 2).contains(&until), "{rotated}");
    assert_eq!(answers_with(&app, &chat, &new_secret).await, (200, 200));
    let kept = "apps WHERE previous_secret_hash IS NOT NULL";
    if now() < until {
        assert_eq!(app.rows(kept).await, 1, "the old secret is kept as a digest meanwhile");
        assert_eq!(answers_with(&app, &chat, &chat.secret).await, (200, 200), "the old one works meanwhile");
    }

    while now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answers_with(&app, &chat, &chat.secret).await, (401, 401), "the overlap is over");
    assert_eq!(answers_with(&app, &chat, &new_secret).await, (200, 200));

    // The sweep then removes the old secret's digest.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.rows(kept).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the old secret's digest is never removed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_an_overlap_the_old_secret_stops_at_once() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let rotated = rotate(&app, &developer, &chat, Some(json!({"overlap_seconds": 0}))).await;
    assert!(rotated["previous_valid_until"].is_null(), "{rotated}");
    assert_eq!(answers_with(&app, &chat, &chat.secret).await, (401, 401));
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(answers_with(&app, &chat, &new_secret).await, (200, 200));

    // No body at all rotates the same way.
    let again = rotate(&app, &developer, &chat, None).await;
    assert!(again["previous_valid_until"].is_null());
    assert_eq!(answers_with(&app, &chat, &new_secret).await, (401, 401));
}

#[tokio::test]
async fn a_second_rotation_during_an_overlap_ends_the_oldest_secret() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let hour = Some(json!({"overlap_seconds": 3600}));
    let second = rotate(&app, &developer, &chat, hour.clone()).await["secret"].as_str().unwrap().to_owned();
    let third = rotate(&app, &developer, &chat, hour).await["secret"].as_str().unwrap().to_owned();
    assert_eq!(answers_with(&app, &chat, &chat.secret).await, (401, 401), "at most two secrets work");
    assert_eq!(answers_with(&app, &chat, &second).await, (200, 200));
    assert_eq!(answers_with(&app, &chat, &third).await, (200, 200));
}

#[tokio::test]
async fn an_overlap_is_at_most_seven_days_and_only_the_owner_rotates() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let path = format!("/v1/apps/{}/secret", chat.app_id);
    let long =
        app.send_as(Method::POST, &developer.token, &path, Some(json!({"overlap_seconds": 604801}))).await;
    assert_eq!((long.status, long.json()["code"].as_str()), (400, Some("invalid_overlap")), "{}", long.body);
    let week = rotate(&app, &developer, &chat, Some(json!({"overlap_seconds": 604800}))).await;
    assert!(week["previous_valid_until"].as_i64().unwrap() >= now() + 604800 - 5);
    let typo = app.send_as(Method::POST, &developer.token, &path, Some(json!({"overlap": 60}))).await;
    assert_eq!((typo.status, typo.json()["code"].as_str()), (400, Some("invalid_body")));

    let stranger = app.user("eve@example.com").await;
    let theirs =
        app.send_as(Method::POST, &stranger.token, &path, Some(json!({"overlap_seconds": 60}))).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(answers_with(&app, &chat, &chat.secret).await, (200, 200), "still in the week's overlap");
}
