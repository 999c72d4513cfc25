//! A crash of the process (SIGKILL) loses no UAID, registration or stored notification.

use crate::support::{channel_id, put, spawn_process, DataDir};

#[tokio::test]
async fn sigkill_keeps_uaids_registrations_and_stored_notifications() {
    let data = DataDir::new();
    let http = reqwest::Client::new();
    let server = spawn_process(&data.path, &[]).await;
    let mut device = server.connect().await;
    let uaid = device.hello(None, &[]).await.unwrap();
    let (stored, later) = (channel_id(), channel_id());
    let stored_endpoint = device.register(&stored).await.unwrap();
    let later_endpoint = device.register(&later).await.unwrap();
    device.close().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(put(&http, &stored_endpoint, "version=12&data=kept").await.status, 202);
    server.kill9().await;

    let server = spawn_process(&data.path, &[]).await;
    let rebase =
        |endpoint: &str| format!("http://{}/update/{}", server.addr, endpoint.rsplit('/').next().unwrap());
    let mut device = server.connect().await;
    assert_eq!(device.hello(Some(&uaid), &[&stored, &later]).await.unwrap(), uaid);
    let message = device.recv_json().await.unwrap();
    assert_eq!(message["updates"][0]["channelID"], stored.as_str());
    assert_eq!(message["updates"][0]["version"], 12);
    assert_eq!(message["updates"][0]["data"], "kept");
    assert_eq!(put(&http, &rebase(&later_endpoint), "version=1").await.status, 200);
    assert_eq!(device.notification().await.unwrap(), vec![(later, 1)]);
    server.kill9().await;
}
