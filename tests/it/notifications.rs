//! Live notifications from apps to users' devices.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::apps::{as_app_at, notify_at};
use crate::support::{
    builder, close_code, grant, register_app, Browser, Builder, Device, DeviceClient, RegisteredApp, Reply,
    TestApp, User,
};

struct Setup {
    app: TestApp,
    developer: User,
    chat: RegisteredApp,
    user: User,
    uid: String,
    phone: Device,
    laptop: Device,
    browser: Browser,
}

async fn setup(builder: Builder) -> Setup {
    let app = builder.spawn().await;
    let developer = app.user("dev@example.com").await;
    let chat = register_app(&app, &developer, "Chat").await;
    let user = app.user("bob@example.com").await;
    let phone = app.register_device(&user, "phone").await;
    let laptop = app.register_device(&user, "laptop").await;
    let (browser, uid) = grant(&app.url(""), "bob@example.com", &chat).await;
    Setup { app, developer, chat, user, uid, phone, laptop, browser }
}

async fn notify(setup: &Setup, body: Value) -> Reply {
    notify_as(&setup.app, &setup.chat, body).await
}

async fn notify_as(app: &TestApp, registered: &RegisteredApp, body: Value) -> Reply {
    notify_at(&app.url(""), registered, body).await
}

/// `GET /v1/apps/<id>/notifications/<nid>` as the app.
async fn read_as(app: &TestApp, registered: &RegisteredApp, id: &str) -> Reply {
    let path = format!("/v1/apps/{}/notifications/{id}", registered.app_id);
    as_app_at(&app.url(""), registered, Method::GET, &path, None).await
}

async fn state_of(setup: &Setup, id: &str) -> Value {
    read_as(&setup.app, &setup.chat, id).await.json()
}

/// Waits (up to 5 s) until the notification's state passes `done`; returns it.
async fn wait_for_state(setup: &Setup, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = state_of(setup, id).await;
        if done(&state) {
            return state;
        }
        assert!(tokio::time::Instant::now() < deadline, "the notification stayed {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn calling(uid: &str, ttl: u64) -> Value {
    json!({"uid": uid, "title": "Bob is calling you", "body": "Pick up!", "url": "https://chat.example/call/1", "ttl": ttl})
}

/// Connects the device and reports it online, as a device does after its hello.
async fn online(setup: &Setup, device: &Device) -> DeviceClient {
    let mut client = setup.app.connect_device(device).await;
    assert_eq!(client.status("O").await.unwrap()["status"], 200);
    client
}

#[tokio::test]
async fn a_notification_reaches_every_connected_device_at_once() {
    let setup = setup(builder()).await;
    let mut phone = online(&setup, &setup.phone).await;
    let mut laptop = online(&setup, &setup.laptop).await;
    let sent = notify(&setup, calling(&setup.uid, 60)).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.json()["status"], "delivered");
    assert_eq!(sent.json()["delivered_to"], 2);
    let id = sent.json()["id"].as_str().unwrap().to_owned();
    for device in [&mut phone, &mut laptop] {
        let xpn = device.live_notifications().await.unwrap();
        assert_eq!(xpn.len(), 1);
        assert_eq!(xpn[0]["id"], id.as_str());
        assert_eq!(xpn[0]["app"], "Chat");
        assert_eq!(xpn[0]["title"], "Bob is calling you");
        assert_eq!(xpn[0]["body"], "Pick up!");
        assert_eq!(xpn[0]["url"], "https://chat.example/call/1");
        assert!(xpn[0]["sent"].as_i64().unwrap() > 0);
    }
    let state = wait_for_state(&setup, &id, |state| state["delivered_to"] == 2).await;
    assert_eq!(state["status"], "delivered");
}

#[tokio::test]
async fn an_offline_device_gets_it_after_its_next_hello_and_again_until_it_acks() {
    let setup = setup(builder()).await;
    let sent = notify(&setup, calling(&setup.uid, 60)).await;
    assert_eq!(sent.status, 202);
    assert_eq!(sent.json()["status"], "queued");
    let id = sent.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(state_of(&setup, &id).await["status"], "queued");

    let mut phone = setup.app.connect_device(&setup.phone).await;
    assert_eq!(phone.live_notifications().await.unwrap()[0]["id"], id.as_str());
    // The app is told of the delivery once it can see the user: the device reports online.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state_of(&setup, &id).await["status"], "queued");
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);
    phone.close().await.unwrap();
    let state = wait_for_state(&setup, &id, |state| state["status"] == "delivered").await;
    assert_eq!(state["delivered_to"], 1);
    assert!(state["delivered_at"].as_i64().unwrap() >= state["sent_at"].as_i64().unwrap());
    // Not acked: sent again.
    let mut phone = setup.app.connect_device(&setup.phone).await;
    assert_eq!(phone.live_notifications().await.unwrap()[0]["id"], id.as_str());
    phone.ack_live(&[&id]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    phone.close().await.unwrap();
    // Acked: never again.
    let mut phone = setup.app.connect_device(&setup.phone).await;
    assert_eq!(phone.recv_within(Duration::from_millis(500)).await.unwrap(), None);
    // The laptop has not acked, so it still gets it.
    let mut laptop = setup.app.connect_device(&setup.laptop).await;
    assert_eq!(laptop.live_notifications().await.unwrap()[0]["id"], id.as_str());
}

#[tokio::test]
async fn expired_and_ttl_zero_notifications_are_never_delivered_late() {
    let setup = setup(builder()).await;
    let expiring = notify(&setup, calling(&setup.uid, 1)).await.json()["id"].as_str().unwrap().to_owned();
    let now_only = notify(&setup, calling(&setup.uid, 0)).await;
    assert_eq!(now_only.status, 200);
    assert_eq!(now_only.json()["status"], "not_delivered");
    assert_eq!(now_only.json()["delivered_to"], 0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(state_of(&setup, &expiring).await["status"], "expired");
    let mut phone = setup.app.connect_device(&setup.phone).await;
    assert_eq!(phone.recv_within(Duration::from_millis(500)).await.unwrap(), None);
    // TTL past the cap is cut to it.
    let long = notify(&setup, calling(&setup.uid, 10 * 365 * 86400)).await;
    assert!(long.status == 200 || long.status == 202);
}

#[tokio::test]
async fn pausing_or_revoking_drops_queued_notifications_and_refuses_new_ones() {
    let mut setup = setup(builder()).await;
    let queued = notify(&setup, calling(&setup.uid, 60)).await.json()["id"].as_str().unwrap().to_owned();
    setup.browser.post(&format!("/settings/apps/{}", setup.chat.app_id), &[("action", "pause")]).await;
    assert_eq!(state_of(&setup, &queued).await["status"], "cancelled");
    let mut phone = setup.app.connect_device(&setup.phone).await;
    assert_eq!(phone.recv_within(Duration::from_millis(500)).await.unwrap(), None);
    let paused = notify(&setup, calling(&setup.uid, 60)).await;
    assert_eq!(paused.status, 404);
    setup.browser.post(&format!("/settings/apps/{}", setup.chat.app_id), &[("action", "resume")]).await;
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);
    assert_eq!(notify(&setup, calling(&setup.uid, 60)).await.status, 200);
    phone.live_notifications().await.unwrap();
    let revoked = setup
        .app
        .send_as(Method::DELETE, &setup.user.token, &format!("/v1/me/grants/{}", setup.chat.app_id), None)
        .await;
    assert_eq!(revoked.status, 204);
    let after = notify(&setup, calling(&setup.uid, 60)).await;
    assert_eq!(after.status, 404);
    assert_eq!(after.json()["code"], "not_found");
}

#[tokio::test]
async fn another_apps_uid_and_unknown_uids_are_indistinguishable_404s() {
    let setup = setup(builder()).await;
    let other = register_app(&setup.app, &setup.developer, "Other").await;
    let foreign = notify_as(&setup.app, &other, calling(&setup.uid, 60)).await;
    let unknown = notify(&setup, calling("u_nobody", 60)).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(unknown.status, 404);
    assert_eq!(foreign.json(), unknown.json());
    // And one app cannot read another's notification.
    let id = notify(&setup, calling(&setup.uid, 60)).await.json()["id"].as_str().unwrap().to_owned();
    let peek = read_as(&setup.app, &other, &id).await;
    assert_eq!(peek.status, 404);
}

#[tokio::test]
async fn size_and_rate_limits_answer_413_and_429_with_retry_after() {
    let setup =
        setup(builder().set("notify_user_per_minute", "2").set("notification_max_bytes", "100")).await;
    let big = json!({"uid": setup.uid, "title": "x", "body": "y".repeat(200), "ttl": 60});
    let refused = notify(&setup, big).await;
    assert_eq!(refused.status, 413);
    assert_eq!(refused.json()["code"], "notification_too_large");
    let small = json!({"uid": setup.uid, "title": "hi", "body": "", "ttl": 60});
    assert_eq!(notify(&setup, small.clone()).await.status, 202);
    assert_eq!(notify(&setup, small.clone()).await.status, 202);
    let response = setup
        .app
        .http
        .post(setup.app.url(&format!("/v1/apps/{}/notifications", setup.chat.app_id)))
        .basic_auth(&setup.chat.app_id, Some(&setup.chat.secret))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "rate_limited");
    // The app's own limit.
    let setup = self::setup(builder().set("notify_app_per_minute", "1")).await;
    assert_eq!(notify(&setup, small_for(&setup.uid)).await.status, 202);
    assert_eq!(notify(&setup, small_for(&setup.uid)).await.status, 429);
}

fn small_for(uid: &str) -> Value {
    json!({"uid": uid, "title": "hi", "ttl": 60})
}

#[tokio::test]
async fn past_the_per_device_cap_the_oldest_queued_notifications_are_dropped() {
    let mut setup = setup(builder().set("max_notifications_per_device", "2")).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let sent = notify(&setup, json!({"uid": setup.uid, "title": format!("n{n}"), "ttl": 60})).await;
        ids.push(sent.json()["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    let mut phone = setup.app.connect_device(&setup.phone).await;
    let titles: Vec<String> = phone
        .live_notifications()
        .await
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, vec!["n1", "n2"], "the oldest was dropped");
    let page = setup.browser.get("/settings").await;
    assert!(page.body.contains("3 notifications this week"), "the settings page counts them");
}

/// The answer and the status endpoint for a user the app sees offline, whatever their devices do.
async fn assert_looks_like_no_device(setup: &Setup, phone: &mut DeviceClient) {
    let sent = notify(setup, calling(&setup.uid, 60)).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.json()["status"], "queued");
    assert!(sent.json().get("delivered_to").is_none(), "{}", sent.body);
    let id = sent.json()["id"].as_str().unwrap().to_owned();
    // The device gets it all the same (the user hid presence, not notifications), and acks.
    assert_eq!(phone.live_notifications().await.unwrap()[0]["id"], id.as_str());
    phone.ack_live(&[&id]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = state_of(setup, &id).await;
    assert_eq!(state["status"], "queued", "{state}");
    assert_eq!(state["delivered_at"], Value::Null);
    assert_eq!(state["delivered_to"], 0);
    let now_only = notify(setup, calling(&setup.uid, 0)).await;
    assert_eq!(now_only.status, 200);
    assert_eq!(now_only.json()["status"], "not_delivered");
    assert_eq!(now_only.json()["delivered_to"], 0);
    phone.live_notifications().await.unwrap();
}

#[tokio::test]
async fn a_user_who_appears_offline_looks_to_apps_like_one_with_no_device_connected() {
    let setup = setup(builder()).await;
    let mut phone = online(&setup, &setup.phone).await;
    let policy = json!({"idle_away_minutes": 5, "idle_offline_minutes": 30, "appear_offline": true});
    let put = setup.app.send_as(Method::PUT, &setup.user.token, "/v1/me/policy", Some(policy)).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_looks_like_no_device(&setup, &mut phone).await;
    // Once the app sees the user again, an earlier notification still unexpired shows as
    // delivered then, never at a time the user was hidden.
    let hidden = notify(&setup, calling(&setup.uid, 60)).await.json()["id"].as_str().unwrap().to_owned();
    phone.live_notifications().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let shown_from = crate::support::now();
    let policy = json!({"idle_away_minutes": 5, "idle_offline_minutes": 30, "appear_offline": false});
    setup.app.send_as(Method::PUT, &setup.user.token, "/v1/me/policy", Some(policy)).await;
    let state = wait_for_state(&setup, &hidden, |state| state["status"] == "delivered").await;
    assert!(state["delivered_at"].as_i64().unwrap() >= shown_from, "{state}");
}

#[tokio::test]
async fn a_user_whose_devices_say_unavailable_looks_to_apps_like_one_with_no_device_connected() {
    let setup = setup(builder()).await;
    let mut phone = online(&setup, &setup.phone).await;
    // Past `status_min_interval`, so that the report applies at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(phone.status("U").await.unwrap()["status"], 200);
    assert_looks_like_no_device(&setup, &mut phone).await;
}

/// A device's socket, said hello with its PrID and this UAID (or none), reporting online;
/// returns it with the UAID the server gave.
async fn hello_as(app: &TestApp, device: &Device, uaid: Option<&str>) -> (DeviceClient, String) {
    let mut client = app.connect().await;
    let reply = client.hello_presence(uaid, &device.prid).await.unwrap();
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(client.status("O").await.unwrap()["status"], 200);
    (client, reply["uaid"].as_str().unwrap().to_owned())
}

/// Bob's phone is connected; Mallory, who granted the same app, knows its UAID.
async fn victim_and_attacker() -> (Setup, DeviceClient, String, User, String) {
    let setup = setup(builder().set("presence_grace", "0s")).await;
    let (phone, uaid) = hello_as(&setup.app, &setup.phone, None).await;
    let mallory = setup.app.user("mallory@example.com").await;
    let (_, mallory_uid) = grant(&setup.app.url(""), "mallory@example.com", &setup.chat).await;
    (setup, phone, uaid, mallory, mallory_uid)
}

/// The victim's socket is still open and still gets its own user's notifications, and none of
/// the attacker's.
async fn assert_untouched(setup: &Setup, phone: &mut DeviceClient, mallory_uid: &str) {
    let hers = notify(setup, json!({"uid": mallory_uid, "title": "for Mallory", "ttl": 60})).await;
    assert!(hers.status == 200 || hers.status == 202, "{}", hers.body);
    let sent = notify(setup, json!({"uid": setup.uid, "title": "for Bob", "ttl": 60})).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let live = phone.live_notifications().await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["title"], "for Bob");
    assert_eq!(phone.status("O").await.unwrap()["status"], 200, "the socket is open");
}

#[tokio::test]
async fn a_device_cannot_be_registered_with_another_devices_uaid() {
    let (setup, mut phone, uaid, mallory, mallory_uid) = victim_and_attacker().await;
    let body = json!({"name": "stolen", "uaid": uaid});
    let refused = setup.app.send_as(Method::POST, &mallory.token, "/v1/devices", Some(body.clone())).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.json()["code"], "uaid_in_use");
    assert_eq!(setup.app.get_as(&mallory.token, "/v1/devices").await.json()["devices"], json!([]));
    // Not even the owner's own account binds a second device to it.
    let again = setup.app.send_as(Method::POST, &setup.user.token, "/v1/devices", Some(body)).await;
    assert_eq!(again.status, 409);
    assert_untouched(&setup, &mut phone, &mallory_uid).await;
}

#[tokio::test]
async fn a_hello_with_ones_own_presence_id_and_another_devices_uaid_gets_a_fresh_uaid() {
    let (setup, mut phone, uaid, mallory, mallory_uid) = victim_and_attacker().await;
    let device = setup.app.register_device(&mallory, "mallory's phone").await;
    let (mut stolen, given) = hello_as(&setup.app, &device, Some(&uaid)).await;
    assert_ne!(given, uaid, "a UAID another device holds is not handed over");
    assert_untouched(&setup, &mut phone, &mallory_uid).await;
    // Mallory's own notifications went to her own socket.
    assert_eq!(stolen.live_notifications().await.unwrap()[0]["title"], "for Mallory");
    assert_eq!(phone.recv_within(Duration::from_millis(300)).await.unwrap(), None);
    // Removing her device closes her socket, not Bob's.
    let path = format!("/v1/devices/{}", device.device_id);
    assert_eq!(setup.app.send_as(Method::DELETE, &mallory.token, &path, None).await.status, 204);
    assert_eq!(close_code(&mut stolen, "the removed device's socket stayed open").await, Some(4401));
    // A plain SimplePush hello with the UAID does not take it either.
    let mut plain = setup.app.connect().await;
    assert_ne!(plain.hello(Some(&uaid), &[]).await.unwrap(), uaid);
    assert_untouched(&setup, &mut phone, &mallory_uid).await;
    // Bob's phone itself keeps its UAID when it reconnects.
    phone.close().await.unwrap();
    let (_, back) = hello_as(&setup.app, &setup.phone, Some(&uaid)).await;
    assert_eq!(back, uaid);
}
