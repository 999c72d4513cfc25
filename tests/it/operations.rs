//! What an operator sees: health, metrics, graceful shutdown.

use crate::support::http::metric_in;
use crate::support::{builder, channel_id, spawn_app, Received};

#[tokio::test]
async fn healthz_checks_the_store() {
    let app = spawn_app().await;
    let reply = app.get("/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["store"], "ok");
}

#[tokio::test]
async fn metrics_count_connections_messages_and_notifications() {
    let app = spawn_app().await;
    let (mut device, _) = app.device().await;
    let (mut offline, _) = app.device().await;
    let endpoint = device.register(&channel_id()).await.unwrap();
    let offline_endpoint = offline.register(&channel_id()).await.unwrap();
    offline.close().await.unwrap();
    app.put(&endpoint, "version=1").await;
    device.notification().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(app.put(&offline_endpoint, "version=1").await.status, 202);

    let text = app.get("/metrics").await.body;
    let value = |name: &str| metric_in(&text, name);
    assert_eq!(value("presence_ws_connections"), 1.0);
    assert_eq!(value("presence_ws_connections_total"), 2.0);
    assert_eq!(value("presence_ws_messages_total{type=\"hello\"}"), 2.0);
    assert_eq!(value("presence_ws_messages_total{type=\"register\"}"), 2.0);
    assert_eq!(value("presence_notifications_delivered_total"), 1.0);
    assert_eq!(value("presence_notifications_stored_total"), 1.0);
}

#[tokio::test]
async fn shutdown_closes_devices_with_going_away_and_keeps_their_data() {
    let app = spawn_app().await;
    let (mut device, uaid) = app.device().await;
    let chid = channel_id();
    let endpoint = device.register(&chid).await.unwrap();
    let http = app.http.clone();
    let data = app.stop().await;
    match device.recv().await.unwrap() {
        Received::Closed { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(http.put(&endpoint).body("version=1").send().await.is_err(), "no longer accepting");

    let app = builder().data_dir(&data.path).spawn().await;
    let mut device = app.connect().await;
    assert_eq!(device.hello(Some(&uaid), &[]).await.unwrap(), uaid);
    // The old endpoint's port is gone, but its token is still valid on the new address.
    let token = endpoint.rsplit('/').next().unwrap();
    assert_eq!(app.put(&app.url(&format!("/update/{token}")), "version=9").await.status, 200);
    assert_eq!(device.notification().await.unwrap(), vec![(chid, 9)]);
}
