//! A user's own account: deleting it (apps told, nothing left behind), taking its data,
//! changing the password, the list of sessions; and the settings page's part of it.

use reqwest::Method;
use serde_json::json;

use crate::support::data::{rows_where, tables_with_column};
use crate::support::http::PASSWORD;
use crate::support::{builder, close_code, grant, register_app, sign_in, spawn_app, Browser, StreamClient};

#[tokio::test]
async fn deleting_an_account_tells_each_app_offline_then_revoked_and_leaves_no_row_behind() {
    let app = builder().set("presence_grace", "0s").set("status_min_interval", "0s").spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let user = app.user("leaver@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (_browser, uid) = grant(&app.url(""), "leaver@example.com", &chat).await;
    let (_, stream, _) = StreamClient::open_at(&app.url(""), &chat, "", &[]).await;
    let mut stream = stream.unwrap();
    let mut phone = app.connect_device(&device).await;
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);
    stream.wait_for(&uid, "online").await;
    // The user also registered an app of their own.
    register_app(&app, &user, "Mine").await;

    let deleted = app.send_as(Method::DELETE, &user.token, "/v1/me", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);

    assert_eq!(close_code(&mut phone, "the removed device's socket closes").await, Some(4401));
    let mut told = Vec::new();
    while told.last().map(String::as_str) != Some("revoked") {
        told.extend(stream.entries().await.into_iter().filter(|(u, ..)| *u == uid).map(|(_, s, _)| s));
    }
    // The log holds `offline` then `revoked`; a stream that reads after the revoke has committed
    // is told only `revoked` (after a revoke an app learns nothing more of the user).
    assert_eq!(told.last().map(String::as_str), Some("revoked"), "{told:?}");
    assert!(told[..told.len() - 1].iter().all(|status| status == "offline"), "{told:?}");
    assert!(told.len() <= 2, "{told:?}");
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 401);

    let account = user.account.0.to_string();
    for column in ["account_id", "owner_id"] {
        let tables = tables_with_column(app.dir(), column).await;
        assert!(!tables.is_empty(), "no table has {column}");
        for table in tables {
            assert_eq!(rows_where(app.dir(), &table, column, &account).await, 0, "{table}.{column}");
        }
    }
    assert_eq!(rows_where(app.dir(), "accounts", "id", &account).await, 0);
    assert_eq!(rows_where(app.dir(), "devices", "id", &device.device_id).await, 0);
    // The developer's account is untouched.
    assert_eq!(app.get_as(&developer.token, "/v1/me").await.status, 200);
}

#[tokio::test]
async fn the_export_holds_the_users_data_and_none_of_their_secrets() {
    let app = spawn_app().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let user = app.user("exporter@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (_browser, uid) = grant(&app.url(""), "exporter@example.com", &chat).await;

    let export = app.get_as(&user.token, "/v1/me/export").await;
    assert_eq!(export.status, 200, "{}", export.body);
    let body = export.json();
    assert_eq!(body["account"]["email"], "exporter@example.com");
    assert_eq!(body["devices"][0]["device_id"], device.device_id.as_str());
    assert_eq!(body["devices"][0]["name"], "phone");
    assert_eq!(body["grants"][0]["app_id"], chat.app_id.as_str());
    assert_eq!(body["grants"][0]["uid"], uid.as_str());
    assert!(body["grants"][0]["created_at"].is_i64());
    assert!(body["notifications"].is_array());
    let sessions = body["sessions"].as_array().unwrap();
    assert!(sessions.iter().any(|s| s["current"] == true && s["kind"] == "api"), "{sessions:?}");
    for secret in [device.prid.as_str(), user.token.as_str(), "$argon2", "prid_"] {
        assert!(!export.body.contains(secret), "the export shows {secret}");
    }
    assert_eq!(app.get("/v1/me/export").await.status, 401);
}

#[tokio::test]
async fn changing_the_password_signs_out_every_other_session_and_token() {
    let app = spawn_app().await;
    let user = app.user("changer@example.com").await;
    let other = sign_in(&app.url(""), "changer@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("changer@example.com").await;

    let path = "/v1/me/password";
    let wrong = app
        .send_as(
            Method::PUT,
            &user.token,
            path,
            Some(json!({"current": "not it at all", "new": "a new secret"})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["code"], "invalid_credentials");
    let weak =
        app.send_as(Method::PUT, &user.token, path, Some(json!({"current": PASSWORD, "new": "short"}))).await;
    assert_eq!(weak.status, 400);
    assert_eq!(weak.json()["code"], "weak_password");
    assert_eq!(app.get_as(&other, "/v1/me").await.status, 200, "failed attempts change nothing");

    let changed = app
        .send_as(Method::PUT, &user.token, path, Some(json!({"current": PASSWORD, "new": "a new secret"})))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.json()["revoked_sessions"], 2);
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 200, "the caller stays signed in");
    assert_eq!(app.get_as(&other, "/v1/me").await.status, 401);
    let page = browser.get("/settings").await;
    assert_eq!(page.status, 303, "the browser session ended");

    let old = reqwest::Client::new()
        .post(app.url("/v1/tokens"))
        .json(&json!({"email": "changer@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let new = reqwest::Client::new()
        .post(app.url("/v1/tokens"))
        .json(&json!({"email": "changer@example.com", "password": "a new secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 201);
}

#[tokio::test]
async fn sessions_are_listed_and_one_can_be_signed_out() {
    let app = spawn_app().await;
    let user = app.user("sessions@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("sessions@example.com").await;

    let listed = app.get_as(&user.token, "/v1/me/sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let sessions = listed.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert!(!listed.body.contains(&user.token));
    let current = sessions.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(current["kind"], "api");
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(other["kind"], "browser");

    let path = format!("/v1/me/sessions/{}", other["id"].as_str().unwrap());
    assert_eq!(app.send_as(Method::DELETE, &user.token, &path, None).await.status, 204);
    assert_eq!(browser.get("/settings").await.status, 303, "the browser is signed out");
    let again = app.send_as(Method::DELETE, &user.token, &path, None).await;
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["code"], "not_found");
    assert_eq!(
        app.get_as(&user.token, "/v1/me/sessions").await.json()["sessions"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn the_settings_page_audits_consent_and_asks_before_revoking_or_deleting() {
    let app = builder().set("status_min_interval", "0s").spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let user = app.user("audit@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (mut browser, _uid) = grant(&app.url(""), "audit@example.com", &chat).await;
    let mut phone = app.connect_device(&device).await;
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);

    let page = browser.get("/settings").await;
    assert!(page.body.contains("Access granted"), "{}", page.body);
    assert!(page.body.contains("last told: <strong>online</strong>"), "{}", page.body);
    assert!(page.body.contains("aria-label=\"Revoke Chat\""));
    assert!(page.body.contains("aria-label=\"Remove phone\""));

    // The first step only asks; nothing changes until the second.
    let path = format!("/settings/apps/{}", chat.app_id);
    let asked = browser.post(&path, &[("action", "revoke")]).await;
    assert_eq!(asked.status, 200);
    assert!(asked.body.contains("Revoke Chat?"), "{}", asked.body);
    assert!(asked.body.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(app.get_as(&user.token, "/v1/me/grants").await.json()["grants"].as_array().unwrap().len(), 1);
    let revoked = browser.post(&path, &[("action", "revoke"), ("confirm", "yes")]).await;
    assert_eq!(revoked.status, 303);
    assert_eq!(app.get_as(&user.token, "/v1/me/grants").await.json()["grants"].as_array().unwrap().len(), 0);

    let remove = format!("/settings/devices/{}/remove", device.device_id);
    assert!(browser.post(&remove, &[]).await.body.contains("Remove phone?"));
    assert_eq!(app.get_as(&user.token, "/v1/devices").await.json()["devices"].as_array().unwrap().len(), 1);
    assert_eq!(browser.post(&remove, &[("confirm", "yes")]).await.status, 303);
    assert_eq!(app.get_as(&user.token, "/v1/devices").await.json()["devices"].as_array().unwrap().len(), 0);

    assert!(browser.post("/settings/delete", &[]).await.body.contains("Delete your account?"));
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 200);
    let deleted = browser.post("/settings/delete", &[("confirm", "yes")]).await;
    assert_eq!(deleted.status, 200);
    assert!(deleted.body.contains("Account deleted"));
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 401);
}

#[tokio::test]
async fn the_settings_page_changes_the_password_and_signs_out_a_session() {
    let app = spawn_app().await;
    let user = app.user("forms@example.com").await;
    let mut browser = Browser::new(&app);
    browser.sign_in("forms@example.com").await;
    let page = browser.get("/settings").await;
    assert!(page.body.contains("id=\"password-form\""));
    assert!(page.body.contains("This browser"));
    assert!(page.body.contains("API token"));

    let wrong =
        browser.post("/settings/password", &[("current", "not it at all"), ("new", "a new secret")]).await;
    assert_eq!(wrong.status, 303);
    assert!(browser.get("/settings").await.body.contains("the current password is wrong"));
    let changed = browser.post("/settings/password", &[("current", PASSWORD), ("new", "a new secret")]).await;
    assert_eq!(changed.status, 303);
    let after = browser.get("/settings").await;
    assert_eq!(after.status, 200, "this browser stays signed in");
    assert!(after.body.contains("Your one other session was signed out."), "{}", after.body);
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 401, "the API token ended");

    // A second browser appears in the list and is signed out from the first.
    let second_token = reqwest::Client::new()
        .post(app.url("/v1/tokens"))
        .json(&json!({"email": "forms@example.com", "password": "a new secret"}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sessions = app.get_as(&second_token, "/v1/me/sessions").await.json();
    let id = sessions["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let signed_out = browser.post(&format!("/settings/sessions/{id}/revoke"), &[]).await;
    assert_eq!(signed_out.status, 303);
    assert_eq!(app.get_as(&second_token, "/v1/me").await.status, 401);
    assert!(browser.get("/settings").await.body.contains("That session is signed out."));
}
