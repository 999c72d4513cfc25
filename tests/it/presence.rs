//! The presence engine seen from outside: devices report, `GET /v1/me` and the bus follow.

use std::time::Duration;

use proptest::prelude::*;
use reqwest::Method;

use crate::support::http::{register_device_at, status_at};
use crate::support::process::ServerProcess;
use crate::support::service::new_secret;
use crate::support::{builder, cli, sign_in, spawn_process, DataDir, DeviceClient, Received, User};

#[derive(Debug, Clone, Copy)]
enum Op {
    Connect(usize),
    Close(usize),
    Report(usize, &'static str),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::Connect),
        (0..3usize).prop_map(Op::Close),
        (0..3usize, prop_oneof![Just("O"), Just("A"), Just("U")]).prop_map(|(d, s)| Op::Report(d, s)),
    ]
}

fn name(code: &str) -> &'static str {
    match code {
        "O" => "online",
        "A" => "away",
        _ => "offline",
    }
}

/// The model: a device's status is what it last reported while connected, and offline once its
/// socket closed (grace 0); the user's status is the best of them.
#[test]
fn the_user_status_is_the_best_of_the_devices_statuses() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app =
        runtime.block_on(builder().set("presence_grace", "0s").set("status_min_interval", "0s").spawn());
    let case = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..14))| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(async {
            let user = app.user(&format!("model{case}@example.com")).await;
            let mut devices = Vec::new();
            for i in 0..3 {
                devices.push(app.register_device(&user, &format!("device {i}")).await);
            }
            let mut sockets: Vec<Option<DeviceClient>> = vec![None, None, None];
            let mut model = ["U"; 3];
            for op in &ops {
                match *op {
                    Op::Connect(i) => {
                        if sockets[i].is_none() {
                            sockets[i] = Some(app.connect_device(&devices[i]).await);
                        }
                    }
                    Op::Close(i) => {
                        if let Some(socket) = sockets[i].take() {
                            socket.close().await.unwrap();
                            model[i] = "U";
                        }
                    }
                    Op::Report(i, code) => {
                        if let Some(socket) = sockets[i].as_mut() {
                            assert_eq!(socket.status(code).await.unwrap()["status"], 200);
                            model[i] = code;
                        }
                    }
                }
                let best = model.iter().map(|c| match *c { "O" => 2, "A" => 1, _ => 0 }).max().unwrap();
                let expected = ["offline", "away", "online"][best];
                app.wait_for_status(&user, expected).await;
                // Devices as the owner sees them agree with the model too, once a closed
                // socket's offline (applied after the close, like any report) has landed: the
                // user's status may already be right while one device's is still on its way.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let me = app.get_as(&user.token, "/v1/me").await.json();
                    let seen: Vec<Option<String>> = devices
                        .iter()
                        .map(|device| {
                            me["devices"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|d| d["device_id"] == device.device_id.as_str())
                                .map(|d| d["status"].as_str().unwrap().to_owned())
                        })
                        .collect();
                    let wanted: Vec<Option<String>> = model.iter().map(|c| Some(name(c).to_owned())).collect();
                    if seen == wanted {
                        break;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "devices {seen:?}, expected {wanted:?} after {op:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            // Changes are emitted only when the user's status changes.
            let changes = app.changes_of(user.account).await;
            assert!(changes.windows(2).all(|pair| pair[0] != pair[1]), "repeated change in {changes:?}");
            if let Some(last) = changes.last() {
                assert_eq!(*last, app.status_of(&user).await);
            }
            for socket in sockets.into_iter().flatten() {
                socket.close().await.unwrap();
            }
        });
    });
}

#[tokio::test]
async fn a_flap_inside_the_grace_emits_nothing() {
    let app = builder().set("presence_grace", "800ms").spawn().await;
    let user = app.user("flap@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    assert_eq!(app.changes_of(user.account).await, vec!["online"]);

    socket.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let socket = app.connect_device(&device).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.status_of(&user).await, "online");
    assert_eq!(app.changes_of(user.account).await, Vec::<&str>::new());

    // A close that outlasts the grace does make the user offline.
    socket.close().await.unwrap();
    app.wait_for_status(&user, "offline").await;
    assert_eq!(app.changes_of(user.account).await, vec!["offline"]);
}

#[tokio::test]
async fn graces_running_together_each_end_for_their_own_device() {
    let app = builder().set("presence_grace", "700ms").spawn().await;
    let goes = app.user("goes@example.com").await;
    let stays = app.user("stays@example.com").await;
    let goes_device = app.register_device(&goes, "phone").await;
    let stays_device = app.register_device(&stays, "phone").await;
    let mut goes_socket = app.connect_device(&goes_device).await;
    let mut stays_socket = app.connect_device(&stays_device).await;
    goes_socket.status("O").await.unwrap();
    stays_socket.status("O").await.unwrap();
    app.wait_for_status(&goes, "online").await;
    app.wait_for_status(&stays, "online").await;
    app.changes_of(goes.account).await; // (takes every signal so far, both users')

    // Both close within the same grace; only one comes back before it ends.
    goes_socket.close().await.unwrap();
    stays_socket.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _back = app.connect_device(&stays_device).await;
    app.wait_for_status(&goes, "offline").await;
    assert_eq!(app.status_of(&stays).await, "online", "the reconnect kept it online");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(app.status_of(&stays).await, "online", "and its grace, which ended since, changed nothing");
    assert_eq!(app.changes_of(stays.account).await, Vec::<&str>::new());
}

#[tokio::test]
async fn a_stop_makes_everyone_offline_and_the_restart_keeps_it_so() {
    let app = builder().spawn().await;
    let user = app.user("restart@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("A").await.unwrap();
    app.wait_for_status(&user, "away").await;
    let token = user.token.clone();
    let data = app.stop().await;

    let app = builder().data_dir(&data.path).spawn().await;
    let user = User { token, account: user.account };
    app.wait_for_status(&user, "offline").await;
    // The stop recorded it (its lease ended cleanly); the start finds nothing left to change.
    assert_eq!(app.changes_of(user.account).await, Vec::<&str>::new());
    // And the device comes back when it reconnects.
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
}

/// A node of its own (a process, to be killed), with one user signed in (the token) and the
/// user's phone connected.
async fn a_node_and_a_phone(email: &str) -> (DataDir, ServerProcess, String, DeviceClient) {
    let data = DataDir::new();
    cli(&["account", "add", "--email", email], &data.path, "password123\n").await;
    let server = spawn_process(&data.path, &[]).await;
    let token = sign_in(&server.base(), email).await;
    let device = register_device_at(&server.base(), &token, "phone").await;
    let mut socket = server.connect().await;
    socket.hello_presence(None, &device.prid).await.unwrap();
    (data, server, token, socket)
}

#[tokio::test]
async fn a_sigkilled_node_leaves_no_ghosts_after_restart() {
    let (data, server, token, mut socket) = a_node_and_a_phone("ghost@example.com").await;
    socket.status("O").await.unwrap();
    assert_eq!(status_at(&server.base(), &token).await, "online");
    server.kill9().await;

    let server = spawn_process(&data.path, &[]).await;
    assert_eq!(status_at(&server.base(), &token).await, "offline");
    server.kill9().await;
}

/// A lone node writes devices' rows (status, last report) to the database a few seconds late;
/// until then they live in the journal. A kill -9 in between loses none of them.
#[tokio::test]
async fn a_devices_last_report_survives_a_sigkill_before_the_database_caught_up() {
    let (data, server, token, mut socket) = a_node_and_a_phone("held@example.com").await;
    // Times are in seconds: the report comes in a later second than the hello.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reported = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    server.kill9().await;

    let server = spawn_process(&data.path, &[]).await;
    let listed = reqwest::Client::new().get(format!("{}/v1/devices", server.base())).bearer_auth(&token);
    let listed: serde_json::Value = listed.send().await.unwrap().json().await.unwrap();
    let last_seen = listed["devices"][0]["last_seen"].as_u64().unwrap_or(0);
    assert!(last_seen >= reported, "last seen {last_seen}, reported at {reported}: {listed}");
    server.kill9().await;
}

#[tokio::test]
async fn one_users_device_never_changes_another_users_status() {
    let app = builder().spawn().await;
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let alices = app.register_device(&alice, "alice's phone").await;
    let bobs = app.register_device(&bob, "bob's phone").await;
    let mut socket = app.connect_device(&alices).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&alice, "online").await;
    assert_eq!(app.status_of(&bob).await, "offline");

    // Alice sees only her own devices and cannot remove Bob's.
    let listed = app.get_as(&alice.token, "/v1/devices").await.json();
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1);
    assert_eq!(listed["devices"][0]["device_id"], alices.device_id.as_str());
    let refused =
        app.send_as(Method::DELETE, &alice.token, &format!("/v1/devices/{}", bobs.device_id), None).await;
    assert_eq!(refused.status, 404);
    let mut bob_socket = app.connect_device(&bobs).await;
    bob_socket.status("A").await.unwrap();
    app.wait_for_status(&bob, "away").await;
    assert_eq!(app.status_of(&alice).await, "online");
}

#[tokio::test]
async fn guessed_and_revoked_presence_ids_are_refused() {
    let app = builder().set("presence_grace", "0s").spawn().await;
    let mut guesser = app.connect().await;
    let reply = guesser.hello_presence(None, &new_secret("prid_")).await.unwrap();
    assert_eq!(reply["status"], 401);
    assert!(matches!(guesser.recv().await.unwrap(), Received::Closed { code: Some(4401), .. }));

    let user = app.user("revoke@example.com").await;
    let device = app.register_device(&user, "lost phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    let removed =
        app.send_as(Method::DELETE, &user.token, &format!("/v1/devices/{}", device.device_id), None).await;
    assert_eq!(removed.status, 204);
    assert!(matches!(socket.recv().await.unwrap(), Received::Closed { code: Some(4401), .. }));
    app.wait_for_status(&user, "offline").await;
    let mut again = app.connect().await;
    assert_eq!(again.hello_presence(None, &device.prid).await.unwrap()["status"], 401);
    assert_eq!(
        app.send_as(Method::DELETE, &user.token, &format!("/v1/devices/{}", device.device_id), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_new_uaid_with_the_same_presence_id_is_the_same_device() {
    let app = builder().spawn().await;
    let user = app.user("replace@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut first = app.connect_device(&device).await;
    first.status("A").await.unwrap();
    first.close().await.unwrap();
    // A fresh UAID (the device was reset) with the same PrID keeps the user's identity.
    let mut second = app.connect().await;
    let reply = second.hello_presence(Some("not-a-uaid"), &device.prid).await.unwrap();
    assert_eq!(reply["status"], 200);
    second.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    let devices = app.get_as(&user.token, "/v1/devices").await.json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_late_report_from_a_replaced_connection_does_not_overwrite_the_newer_one() {
    let app = builder().set("status_min_interval", "0s").spawn().await;
    let user = app.user("late@example.com").await;
    let device = app.register_device(&user, "phone").await;
    // The device reconnects with a fresh UAID while its old socket is still open.
    let mut older = app.connect_device(&device).await;
    let mut newer = app.connect_device(&device).await;
    assert_eq!(newer.status("A").await.unwrap()["status"], 200);
    app.wait_for_status(&user, "away").await;
    // The old socket's word comes late: it is answered, and it changes nothing (a report is
    // answered once durable, so the store would already show it).
    assert_eq!(older.status("O").await.unwrap()["status"], 200);
    assert_eq!(app.status_of(&user).await, "away");
}

#[tokio::test]
async fn bad_status_reports_get_clear_errors_and_change_nothing() {
    let app = builder().spawn().await;
    let user = app.user("bad@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    for bad in ["X", "online", "o", ""] {
        let reply = socket.status(bad).await.unwrap();
        assert_eq!(reply["status"], 400, "{bad}");
        assert!(reply["reason"].as_str().unwrap().contains("O, A or U"));
    }
    assert_eq!(app.status_of(&user).await, "online");

    // A plain SimplePush connection reports no presence.
    let (mut plain, _) = app.device().await;
    assert_eq!(plain.status("O").await.unwrap()["status"], 403);
}

#[tokio::test]
async fn status_pings_are_not_keepalives_and_bursts_coalesce_to_the_latest() {
    let app = builder().set("status_min_interval", "400ms").set("ping_min_interval", "60s").spawn().await;
    let user = app.user("burst@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    for code in ["O", "U", "O", "A", "U", "A"] {
        assert_eq!(socket.status(code).await.unwrap()["status"], 200, "never rejected");
    }
    app.wait_for_status(&user, "away").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.status_of(&user).await, "away");
    let changes = app.changes_of(user.account).await;
    assert_eq!(changes.first(), Some(&"online"));
    assert_eq!(changes.last(), Some(&"away"));
    assert!(changes.len() <= 2, "a burst is applied at most twice: {changes:?}");
}

#[tokio::test]
async fn a_silent_device_goes_offline_after_stale_after() {
    let app = builder().set("stale_after", "1s").spawn().await;
    let user = app.user("silent@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    // The socket stays open, but nothing is said.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.wait_for_status(&user, "offline").await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
}

#[tokio::test]
async fn a_device_that_stops_answering_pings_goes_offline() {
    let app = builder()
        .set("presence_grace", "0s")
        .set("ws_ping_interval", "300ms")
        .set("ws_pong_timeout", "300ms")
        .spawn()
        .await;
    let user = app.user("unresponsive@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    // The client reads nothing now, so it answers no ping.
    app.wait_for_status(&user, "offline").await;
    drop(socket);
}

#[tokio::test]
async fn the_policy_is_validated_and_appear_offline_hides_the_user() {
    let app = builder().spawn().await;
    let user = app.user("policy@example.com").await;
    let policy = app.get_as(&user.token, "/v1/me/policy").await.json();
    assert_eq!(
        policy,
        serde_json::json!({"idle_away_minutes": 5, "idle_offline_minutes": 30, "appear_offline": false})
    );
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    socket.status("O").await.unwrap();
    app.wait_for_status(&user, "online").await;
    app.changes_of(user.account).await;

    for bad in [
        serde_json::json!({"idle_away_minutes": 10, "idle_offline_minutes": 10, "appear_offline": false}),
        serde_json::json!({"idle_away_minutes": 0, "idle_offline_minutes": 10, "appear_offline": false}),
        serde_json::json!({"idle_away_minutes": 1, "idle_offline_minutes": 2000, "appear_offline": false}),
        serde_json::json!({"idle_away_minutes": 1, "idle_offline_minutes": 2, "appear_offline": false, "x": 1}),
        serde_json::json!({"idle_away_minutes": "5", "idle_offline_minutes": 30, "appear_offline": false}),
        serde_json::json!({"idle_away_minutes": 5}),
    ] {
        let reply = app.send_as(Method::PUT, &user.token, "/v1/me/policy", Some(bad.clone())).await;
        assert!(reply.status == 400 || reply.status == 422, "{bad}: {}", reply.status);
        assert!(reply.json()["code"].is_string());
    }
    let hidden =
        serde_json::json!({"idle_away_minutes": 2, "idle_offline_minutes": 20, "appear_offline": true});
    let reply = app.send_as(Method::PUT, &user.token, "/v1/me/policy", Some(hidden.clone())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(app.get_as(&user.token, "/v1/me/policy").await.json(), hidden);
    let me = app.get_as(&user.token, "/v1/me").await.json();
    assert_eq!(me["status"], "online", "the user still sees their own status");
    assert_eq!(me["visible_status"], "offline");
    assert_eq!(app.changes_of(user.account).await, vec!["offline"]);
    let shown =
        serde_json::json!({"idle_away_minutes": 2, "idle_offline_minutes": 20, "appear_offline": false});
    app.send_as(Method::PUT, &user.token, "/v1/me/policy", Some(shown)).await;
    assert_eq!(app.changes_of(user.account).await, vec!["online"]);
}
