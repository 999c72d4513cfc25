//! Bad input from one device closes that device's connection, and only that one.

use std::time::Duration;

use serde_json::json;

use crate::support::{builder, channel_id, spawn_app, DeviceClient, Received, TestApp};

async fn expect_close(device: &mut DeviceClient) -> (Option<u16>, String) {
    loop {
        match device.recv().await.unwrap() {
            Received::Closed { code, reason } => return (code, reason),
            Received::Message(message) => {
                assert_eq!(message["status"], 401, "only an error reply may precede the close: {message}")
            }
        }
    }
}

/// A bystander that must keep working whatever the others send.
async fn bystander_still_works(app: &TestApp, bystander: &mut DeviceClient) {
    let chid = channel_id();
    let endpoint = bystander.register(&chid).await.unwrap();
    assert_eq!(app.put(&endpoint, "version=1").await.status, 200);
    assert_eq!(bystander.notification().await.unwrap(), vec![(chid, 1)]);
}

#[tokio::test]
async fn each_malformed_input_closes_only_its_own_connection() {
    let app = spawn_app().await;
    let (mut bystander, _) = app.device().await;
    let after_hello: [(&str, u16); 6] = [
        ("{not json", 1008),
        ("[1,2,3]", 1008),
        ("\"hello\"", 1008),
        (r#"{"messageType":"purge"}"#, 1008),
        (r#"{"uaid":"x"}"#, 1008),
        (r#"{"messageType":"hello","uaid":""}"#, 1008),
    ];
    for (text, expected) in after_hello {
        let (mut device, _) = app.device().await;
        device.send_text(text).await.unwrap();
        let (code, _) = expect_close(&mut device).await;
        assert_eq!(code, Some(expected), "{text}");
        bystander_still_works(&app, &mut bystander).await;
    }

    let (mut device, _) = app.device().await;
    device.send_binary(b"{}".to_vec()).await.unwrap();
    assert_eq!(expect_close(&mut device).await.0, Some(1003));

    for first in ["{}", r#"{"messageType":"register","channelID":"x"}"#, "nope", "[]"] {
        let mut device = app.connect().await;
        device.send_text(first).await.unwrap();
        assert_eq!(expect_close(&mut device).await.0, Some(1008), "{first}");
    }
    bystander_still_works(&app, &mut bystander).await;
}

#[tokio::test]
async fn a_second_hello_gets_401_then_a_close() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    device.send_json(&json!({"messageType": "hello", "uaid": uaid})).await.unwrap();
    let reply = device.recv_json().await.unwrap();
    assert_eq!(reply, json!({"messageType": "hello", "status": 401, "reason": "duplicate hello"}));
    assert!(matches!(device.recv().await.unwrap(), Received::Closed { .. }));
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let app = builder().set("max_message_size", "2048").spawn().await;
    let (mut bystander, _) = app.device().await;
    for size in [4096, 4 << 20] {
        let (mut device, _) = app.device().await;
        let huge = json!({"messageType": "register", "channelID": "x".repeat(size)}).to_string();
        device.send_text(&huge).await.expect("the server reads what it refuses, no reset");
        // The close frame arrives: the server does not reset the socket under it.
        match device.recv().await {
            Ok(Received::Closed { code, .. }) => assert_eq!(code, Some(1009), "{size}"),
            other => panic!("a {size}-byte message: expected a 1009 close frame, got {other:?}"),
        }
    }
    bystander_still_works(&app, &mut bystander).await;
}

#[tokio::test]
async fn no_hello_in_time_closes_the_connection() {
    let app = builder().set("hello_timeout", "300ms").spawn().await;
    let mut device = app.connect().await;
    let started = tokio::time::Instant::now();
    assert_eq!(expect_close(&mut device).await.0, Some(1008));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn plain_http_on_the_websocket_path_gets_a_clear_error() {
    let app = spawn_app().await;
    let reply = app.get("/").await;
    assert!(reply.status >= 400 && reply.status < 500, "{}", reply.status);
    assert_eq!(reply.json()["code"], "websocket_required");
}
