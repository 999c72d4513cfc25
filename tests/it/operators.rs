//! The operator's verbs on accounts and apps, run with the real binary against a running node
//! (through its control socket) and against a stopped one (on the store).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::apps::{as_app_at, chat_app_by_cli};
use crate::support::http::PASSWORD;
use crate::support::process::cli_run;
use crate::support::{
    builder, close_code, grant, register_app, register_app_with_webhook, DataDir, Receiver, StreamClient,
    TestApp,
};

#[tokio::test]
async fn a_disabled_account_is_signed_out_its_devices_closed_and_it_cannot_sign_in_until_enabled() {
    let app = builder().set("presence_grace", "0s").set("status_min_interval", "0s").spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let user = app.user("kim@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (_browser, uid) = grant(&app.url(""), "kim@example.com", &chat).await;
    let (_, stream, _) = StreamClient::open_at(&app.url(""), &chat, "", &[]).await;
    let mut stream = stream.unwrap();
    let mut phone = app.connect_device(&device).await;
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);
    stream.wait_for(&uid, "online").await;

    let listed = cli_run(&["account", "list", "--json"], app.dir()).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let accounts: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let kim =
        accounts["accounts"].as_array().unwrap().iter().find(|a| a["email"] == "kim@example.com").unwrap();
    assert_eq!(kim["devices"], 1);
    assert!(kim["disabled_at"].is_null());
    let table = cli_run(&["account", "list"], app.dir()).await.stdout;
    assert!(table.starts_with("ID  EMAIL OR SUBJECT"), "{table}");
    assert!(table.contains("kim@example.com"), "{table}");

    let disabled = cli_run(&["account", "disable", "kim@example.com"], app.dir()).await;
    assert_eq!(disabled.code, Some(0), "{}", disabled.stderr);
    assert_eq!(disabled.stdout.trim(), "account kim@example.com disabled");
    assert_eq!(close_code(&mut phone, "the disabled account's device is closed").await, Some(4401));
    stream.wait_for(&uid, "offline").await;
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 401, "its tokens ended");
    let refused = kim_signs_in(&app).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["code"], "account_disabled");
    let mut again = app.connect().await;
    assert_eq!(again.hello_presence(None, &device.prid).await.unwrap()["status"], 401);

    let enabled = cli_run(&["account", "enable", "kim@example.com", "--json"], app.dir()).await;
    assert_eq!(enabled.code, Some(0), "{}", enabled.stderr);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&enabled.stdout).unwrap()["done"], "enabled");
    crate::support::sign_in(&app.url(""), "kim@example.com").await;
}

#[tokio::test]
async fn operator_verbs_say_not_found_with_1_and_usage_errors_with_2() {
    let app = builder().spawn().await;
    for args in [
        &["account", "disable", "nobody@example.com"][..],
        &["account", "delete", "999"],
        &["app", "disable", "app_0000000000000000"],
        &["app", "delete", "app_0000000000000000"],
    ] {
        let ran = cli_run(args, app.dir()).await;
        assert_eq!(ran.code, Some(1), "{args:?}: {}", ran.stdout);
        assert!(ran.stderr.contains("no account") || ran.stderr.contains("no app"), "{}", ran.stderr);
    }
    for args in [&["account", "disable"][..], &["app", "frobnicate", "x"], &["account", "list", "--bogus"]] {
        assert_eq!(cli_run(args, app.dir()).await.code, Some(2), "{args:?}");
    }
}

#[tokio::test]
async fn a_disabled_app_gets_403_sends_no_webhooks_and_a_deleted_one_is_gone() {
    let app = builder()
        .set("webhook_allow", "127.0.0.0/8")
        .set("webhook_batch_interval", "1s")
        .set("status_min_interval", "0s")
        .spawn()
        .await;
    let receiver = Receiver::start_on("127.0.0.1:0").await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app_with_webhook(&app, &developer, "Chat", Some(&receiver.url)).await;
    let user = app.user("ann@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (_browser, uid) = grant(&app.url(""), "ann@example.com", &chat).await;
    let mut phone = app.connect_device(&device).await;
    let (_, stream, _) = StreamClient::open_at(&app.url(""), &chat, "", &[]).await;
    let mut stream = stream.unwrap();

    let disabled = cli_run(&["app", "disable", &chat.app_id], app.dir()).await;
    assert_eq!(disabled.code, Some(0), "{}", disabled.stderr);
    // The open stream ends; the API and a new stream answer 403.
    loop {
        match stream.line().await {
            Some(line) if line.contains("\"error\"") => break,
            Some(_) => continue,
            None => break,
        }
    }
    let path = format!("/v1/apps/{}/presence?uid={uid}", chat.app_id);
    let refused = as_app_at(&app.url(""), &chat, Method::GET, &path, None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["code"], "app_disabled");
    let (status, _, body) = StreamClient::open_at(&app.url(""), &chat, "", &[]).await;
    assert_eq!(status, 403, "{body}");

    // Changes while disabled are kept, not sent: after two batch intervals nothing said online.
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_ne!(Receiver::last_status_of(&receiver.hits(), &uid).as_deref(), Some("online"));
    let listed = cli_run(&["app", "list", "--json"], app.dir()).await;
    let apps: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert!(apps["apps"][0]["disabled_at"].is_i64(), "{apps}");
    assert_eq!(apps["apps"][0]["grants"], 1);

    assert_eq!(cli_run(&["app", "enable", &chat.app_id], app.dir()).await.code, Some(0));
    receiver
        .wait_until(Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &uid).as_deref() == Some("online")
        })
        .await;

    let deleted = cli_run(&["app", "delete", &chat.app_id], app.dir()).await;
    assert_eq!(deleted.code, Some(0), "{}", deleted.stderr);
    assert_eq!(app.get_as(&user.token, "/v1/me/grants").await.json()["grants"], json!([]));
    let table = cli_run(&["app", "list"], app.dir()).await.stdout;
    assert!(!table.contains(&chat.app_id), "{table}");
    // The user's presence keeps working without the app.
    assert_eq!(phone.status("A").await.unwrap()["status"], 200);
    app.wait_for_status(&user, "away").await;
}

#[tokio::test]
async fn without_a_running_node_the_verbs_work_on_the_store() {
    let data = DataDir::new();
    let chat = chat_app_by_cli(&data.path, "http://127.0.0.1:9/hook").await;
    let disabled = cli_run(&["account", "disable", "kim@example.com"], &data.path).await;
    assert_eq!(disabled.code, Some(0), "{}", disabled.stderr);
    let deleted = cli_run(&["app", "delete", &chat.app_id], &data.path).await;
    assert_eq!(deleted.code, Some(0), "{}", deleted.stderr);

    let app = builder().data_dir(&data.path).spawn().await;
    let refused = kim_signs_in(&app).await;
    assert_eq!(refused.status(), 403);
    let listed = cli_run(&["app", "list", "--json"], app.dir()).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed.stdout).unwrap()["apps"], json!([]));
}

#[tokio::test]
async fn a_lone_node_whose_control_socket_does_not_answer_is_not_changed_behind_its_back() {
    let data = DataDir::new();
    chat_app_by_cli(&data.path, "http://127.0.0.1:9/hook").await;
    let _server = crate::support::spawn_process(&data.path, &[]).await;
    // The socket file is gone (say, removed by hand): the verb must not write beside the node.
    std::fs::remove_file(data.path.join("presence.sock")).unwrap();
    let refused = cli_run(&["account", "disable", "kim@example.com"], &data.path).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(refused.stderr.contains("control socket"), "{}", refused.stderr);
    let listed = cli_run(&["account", "list", "--json"], &data.path).await;
    let accounts: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert!(accounts["accounts"].as_array().unwrap().iter().all(|a| a["disabled_at"].is_null()));
}

/// Kim asks for a token with her (right) password.
async fn kim_signs_in(app: &TestApp) -> reqwest::Response {
    app.http
        .post(app.url("/v1/tokens"))
        .json(&json!({"email": "kim@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}
