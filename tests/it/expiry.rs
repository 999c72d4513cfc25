//! What nobody uses any more is removed by the periodic sweep, so the database does not grow
//! with every anonymous hello.

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::support::{builder, channel_id, TestApp};

/// Waits (polling) until the table holds `expected` rows; returns what it last held.
async fn rows_reach(app: &TestApp, table: &str, expected: i64) -> i64 {
    let mut rows = app.rows(table).await;
    for _ in 0..300 {
        if rows == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows = app.rows(table).await;
    }
    rows
}

#[tokio::test]
async fn anonymous_hellos_leave_no_rows_once_uaid_expiry_has_passed() {
    // The connected client reads nothing during the cycles, so it would answer no ping: none is
    // sent in this test's time.
    let app = builder().set("uaid_expiry", "1s").set("ws_ping_interval", "10m").spawn().await;
    // Kept: a device bound to an account (offline), and an anonymous client still connected.
    let user = app.user("kim@example.com").await;
    let phone = app.register_device(&user, "phone").await;
    app.connect_device(&phone).await.close().await.unwrap();
    let (mut connected, _) = app.device().await;
    let kept_channel = channel_id();
    connected.register(&kept_channel).await.unwrap();
    let (uaids, channels) = (app.rows("uaids").await, app.rows("channels").await);

    let cycles = futures_util::stream::iter(0..10_000)
        .map(|i| {
            let app = &app;
            async move {
                let (mut device, _) = app.device().await;
                if i % 10 == 0 {
                    device.register(&channel_id()).await.unwrap();
                }
                device.close().await.unwrap();
            }
        })
        .buffer_unordered(32);
    cycles.collect::<Vec<()>>().await;
    assert!(app.rows("uaids").await > uaids, "each anonymous hello added a UAID");

    assert_eq!(rows_reach(&app, "uaids", uaids).await, uaids, "the anonymous UAIDs expired");
    assert_eq!(rows_reach(&app, "channels", channels).await, channels, "their channels went with them");

    // The connected client's UAID was kept: its channels still work.
    let endpoint = connected.register(&channel_id()).await.unwrap();
    assert_eq!(app.put(&endpoint, "version=1").await.status, 200);
    // The bound device's UAID was kept: it reconnects as it was.
    app.connect_device(&phone).await;
}

#[tokio::test]
async fn expired_tokens_are_removed() {
    // The sweep runs every tenth of the shortest retention (here uaid_expiry).
    let app = builder().set("token_ttl", "1s").set("uaid_expiry", "1s").spawn().await;
    app.user("kim@example.com").await;
    assert_eq!(app.rows("tokens").await, 1);
    assert_eq!(rows_reach(&app, "tokens", 0).await, 0);
}
