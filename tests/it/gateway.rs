//! The SimplePush gateway as a device and an AppServer see it.

use std::time::Duration;

use serde_json::json;

use crate::support::{builder, channel_id, spawn_app, Received};

#[tokio::test]
async fn hello_assigns_a_uaid_and_a_known_one_is_kept() {
    let app = spawn_app().await;
    let mut device = app.connect().await;
    assert_eq!(device.subprotocol.as_deref(), Some("push-notification"));
    let uaid = device.hello(None, &[]).await.unwrap();
    assert_eq!(uaid.len(), 32);
    assert!(uaid.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    device.close().await.unwrap();

    // The same UAID in another spelling (dashed, upper case) is recognised and canonicalised.
    let dashed =
        format!("{}-{}-{}-{}-{}", &uaid[..8], &uaid[8..12], &uaid[12..16], &uaid[16..20], &uaid[20..])
            .to_uppercase();
    let mut again = app.connect().await;
    assert_eq!(again.hello(Some(&dashed), &[]).await.unwrap(), uaid);
}

#[tokio::test]
async fn unknown_or_malformed_uaids_are_replaced_with_new_ones() {
    let app = spawn_app().await;
    let unknown = "0123456789abcdef0123456789abcdef";
    for (uaid, channels) in [(unknown, vec![]), (unknown, vec![channel_id()]), ("not-a-uaid", vec![])] {
        let mut device = app.connect().await;
        let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
        let assigned = device.hello(Some(uaid), &channels).await.unwrap();
        assert_ne!(assigned, uaid);
        assert_eq!(assigned.len(), 32);
    }
}

#[tokio::test]
async fn register_is_idempotent_and_the_endpoint_hides_the_uaid() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    let chid = channel_id();
    let first = device.register(&chid).await.unwrap();
    let second = device.register(&chid).await.unwrap();
    assert_eq!(first, second);
    assert!(first.starts_with(&format!("http://{}/update/", app.addr)));
    assert!(!first.contains(&uaid));
    assert!(!first.contains(&chid));
    // Upper-case channel ids are the same channel.
    assert_eq!(device.register(&chid.to_uppercase()).await.unwrap(), first);
}

#[tokio::test]
async fn a_live_update_reaches_the_device_with_200() {
    let app = spawn_app().await;
    let (mut device, _) = app.device().await;
    let chid = channel_id();
    let endpoint = device.register(&chid).await.unwrap();
    let reply = app.put(&endpoint, "version=42&data=hi").await;
    assert_eq!(reply.status, 200);
    let message = device.recv_json().await.unwrap();
    assert_eq!(
        message,
        json!({"messageType": "notification", "updates": [{"channelID": chid, "version": 42, "data": "hi"}]})
    );
}

#[tokio::test]
async fn updates_are_stored_while_disconnected_and_flushed_after_hello() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    let (a, b) = (channel_id(), channel_id());
    let endpoint_a = device.register(&a).await.unwrap();
    let endpoint_b = device.register(&b).await.unwrap();
    device.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    assert_eq!(app.put(&endpoint_a, "version=5").await.status, 202);
    assert_eq!(app.put(&endpoint_a, "version=7").await.status, 202);
    // A lower version after a higher one is accepted but never replaces it.
    assert_eq!(app.put(&endpoint_a, "version=6").await.status, 202);
    assert_eq!(app.put(&endpoint_b, "version=1").await.status, 202);

    let mut device = app.connect().await;
    assert_eq!(device.hello(Some(&uaid), &[&a, &b]).await.unwrap(), uaid);
    let mut updates = device.notification().await.unwrap();
    updates.sort();
    let mut expected = vec![(a.clone(), 7), (b.clone(), 1)];
    expected.sort();
    assert_eq!(updates, expected, "one batch, newest version per channel");
}

#[tokio::test]
async fn unacked_updates_are_redelivered_and_acked_ones_are_not() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    let (acked, unacked) = (channel_id(), channel_id());
    let endpoint_acked = device.register(&acked).await.unwrap();
    let endpoint_unacked = device.register(&unacked).await.unwrap();
    assert_eq!(app.put(&endpoint_acked, "version=3").await.status, 200);
    assert_eq!(device.notification().await.unwrap(), vec![(acked.clone(), 3)]);
    assert_eq!(app.put(&endpoint_unacked, "version=4").await.status, 200);
    assert_eq!(device.notification().await.unwrap(), vec![(unacked.clone(), 4)]);
    device.ack(&[(&acked, 3)]).await.unwrap();
    // An ack gets no reply.
    assert_eq!(device.recv_within(Duration::from_millis(300)).await.unwrap(), None);
    device.close().await.unwrap();

    let mut device = app.connect().await;
    device.hello(Some(&uaid), &[]).await.unwrap();
    assert_eq!(device.notification().await.unwrap(), vec![(unacked.clone(), 4)]);
    device.ack(&[(&unacked, 4)]).await.unwrap();
    device.close().await.unwrap();

    let mut device = app.connect().await;
    device.hello(Some(&uaid), &[]).await.unwrap();
    assert_eq!(device.recv_within(Duration::from_millis(500)).await.unwrap(), None, "nothing after acks");
}

#[tokio::test]
async fn a_stale_ack_never_clears_a_newer_pending_version() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    let chid = channel_id();
    let endpoint = device.register(&chid).await.unwrap();
    app.put(&endpoint, "version=1").await;
    assert_eq!(device.notification().await.unwrap(), vec![(chid.clone(), 1)]);
    app.put(&endpoint, "version=2").await;
    assert_eq!(device.notification().await.unwrap(), vec![(chid.clone(), 2)]);
    device.ack(&[(&chid, 1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    device.close().await.unwrap();

    let mut device = app.connect().await;
    device.hello(Some(&uaid), &[]).await.unwrap();
    assert_eq!(device.notification().await.unwrap(), vec![(chid, 2)]);
}

#[tokio::test]
async fn a_lower_version_is_never_sent_after_a_higher_one() {
    let app = spawn_app().await;
    let (mut device, _) = app.device().await;
    let chid = channel_id();
    let endpoint = device.register(&chid).await.unwrap();
    app.put(&endpoint, "version=10").await;
    assert_eq!(device.notification().await.unwrap(), vec![(chid.clone(), 10)]);
    device.ack(&[(&chid, 10)]).await.unwrap();
    // Lower or equal versions, even after the ack, are not news.
    for version in [9, 10, 3] {
        let status = app.put(&endpoint, &format!("version={version}")).await.status;
        assert_eq!(status, 200, "accepted, the device is connected");
    }
    app.put(&endpoint, "version=11").await;
    assert_eq!(device.notification().await.unwrap(), vec![(chid, 11)]);
}

#[tokio::test]
async fn unregister_drops_the_pending_update_and_the_endpoint_is_gone() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    let chid = channel_id();
    let endpoint = device.register(&chid).await.unwrap();
    app.put(&endpoint, "version=1").await;
    assert_eq!(device.notification().await.unwrap(), vec![(chid.clone(), 1)]);
    assert_eq!(device.unregister(&chid).await.unwrap(), 200);
    // Unknown channels and repeats are fine too.
    assert_eq!(device.unregister(&chid).await.unwrap(), 200);
    assert_eq!(device.unregister(&channel_id()).await.unwrap(), 200);
    let reply = app.put(&endpoint, "version=2").await;
    assert_eq!(reply.status, 410);
    assert_eq!(reply.json()["code"], "endpoint_gone");
    device.close().await.unwrap();

    let mut device = app.connect().await;
    device.hello(Some(&uaid), &[]).await.unwrap();
    assert_eq!(device.recv_within(Duration::from_millis(500)).await.unwrap(), None);
}

#[tokio::test]
async fn a_newer_connection_for_a_uaid_closes_the_older() {
    let app = spawn_app().await;
    let (mut first, uaid) = app.device().await;
    let chid = channel_id();
    let endpoint = first.register(&chid).await.unwrap();

    let mut second = app.connect().await;
    assert_eq!(second.hello(Some(&uaid), &[]).await.unwrap(), uaid);
    match first.recv().await.unwrap() {
        Received::Closed { code, reason } => {
            assert_eq!(code, Some(1000));
            assert!(reason.contains("replaced"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(app.put(&endpoint, "version=1").await.status, 200);
    assert_eq!(second.notification().await.unwrap(), vec![(chid, 1)]);
}

#[tokio::test]
async fn keepalive_pings_are_answered_and_a_ping_flood_closes_with_4774() {
    let app = builder().set("ping_min_interval", "500ms").spawn().await;
    let (mut device, _) = app.device().await;
    device.send_text("{}").await.unwrap();
    assert_eq!(device.recv_json().await.unwrap(), json!({}));
    tokio::time::sleep(Duration::from_millis(600)).await;
    device.send_json(&json!({"messageType": "ping"})).await.unwrap();
    assert_eq!(device.recv_json().await.unwrap(), json!({"messageType": "ping", "status": 200}));
    device.send_text("{}").await.unwrap();
    match device.recv().await.unwrap() {
        Received::Closed { code, .. } => assert_eq!(code, Some(4774)),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn registers_past_the_channel_limit_are_refused_and_the_socket_stays() {
    let app = builder().set("max_channels_per_uaid", "2").spawn().await;
    let (mut device, _) = app.device().await;
    let (a, b, c) = (channel_id(), channel_id(), channel_id());
    device.register(&a).await.unwrap();
    device.register(&b).await.unwrap();
    let refused = device.register_reply(&c).await.unwrap();
    assert_eq!(refused["status"], 429);
    assert!(refused.get("pushEndpoint").is_none());
    // Re-registering a held channel still works, and so does freeing a slot.
    device.register(&a).await.unwrap();
    device.unregister(&b).await.unwrap();
    device.register(&c).await.unwrap();
}

#[tokio::test]
async fn stored_updates_past_the_limit_are_refused_with_429() {
    let app = builder().set("max_stored_per_uaid", "1").spawn().await;
    let (mut device, _) = app.device().await;
    let a = device.register(&channel_id()).await.unwrap();
    let b = device.register(&channel_id()).await.unwrap();
    device.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.put(&a, "version=1").await.status, 202);
    // The same channel's pending version may still rise.
    assert_eq!(app.put(&a, "version=2").await.status, 202);
    let refused = app.put(&b, "version=1").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["code"], "too_many_stored");
}

#[tokio::test]
async fn a_malformed_register_gets_401_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let (mut device, _) = app.device().await;
    device.send_json(&json!({"messageType": "register", "channelID": "nope"})).await.unwrap();
    let reply = device.recv_json().await.unwrap();
    assert_eq!(reply["status"], 401);
    assert_eq!(reply["messageType"], "register");
    device.send_json(&json!({"messageType": "register"})).await.unwrap();
    assert_eq!(device.recv_json().await.unwrap()["status"], 401);
    device.register(&channel_id()).await.unwrap();
}

#[tokio::test]
async fn a_device_that_stops_answering_pings_is_closed() {
    let app = builder().set("ws_ping_interval", "300ms").set("ws_pong_timeout", "300ms").spawn().await;
    let (mut quiet, _) = app.device().await;
    let (mut lively, _) = app.device().await;
    // `lively` keeps reading (so its client answers pings); `quiet` reads nothing for a while.
    assert_eq!(lively.recv_within(Duration::from_millis(1500)).await.unwrap(), None);
    match quiet.recv().await.unwrap() {
        Received::Closed { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected a close, got {other:?}"),
    }
    lively.register(&channel_id()).await.unwrap();
}

#[tokio::test]
async fn a_device_that_stops_reading_is_closed_after_the_write_timeout() {
    let app = builder()
        .set("ws_write_timeout", "1s")
        .set("presence_grace", "0s")
        .set("socket_send_buffer", "4096")
        .spawn()
        .await;
    let user = app.user("stuck@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&device).await;
    let endpoint = socket.register(&channel_id()).await.unwrap();
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    app.wait_for_status(&user, "online").await;
    // From here on the device reads nothing. Updates of 4 KiB each fill its receive buffer and
    // then the server's send buffer; the server's write then waits, and gives up after 1 s.
    let data = "x".repeat(4000);
    let mut offline = false;
    for version in 1..=4000u64 {
        crate::support::put(&app.http, &endpoint, &format!("version={version}&data={data}")).await;
        if version % 250 == 0 && app.status_of(&user).await == "offline" {
            offline = true;
            break;
        }
    }
    if !offline {
        app.wait_for_status(&user, "offline").await;
    }
    drop(socket);
}

#[tokio::test]
async fn a_device_writing_faster_than_allowed_is_closed_with_4429() {
    let app = builder().set("device_writes_per_second", "5").spawn().await;
    let mut device = app.connect().await;
    device.hello(None, &[]).await.unwrap();
    // Five seconds' worth (25) pass at once; 60 in a row do not.
    for _ in 0..60 {
        if device.send_text(r#"{"messageType":"ack","updates":[]}"#).await.is_err() {
            break;
        }
    }
    assert_eq!(crate::support::close_code(&mut device, "the socket stayed open").await, Some(4429));
    // Another connection is unaffected.
    let mut other = app.connect().await;
    other.hello(None, &[]).await.unwrap();
}
