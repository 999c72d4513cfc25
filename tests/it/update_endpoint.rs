//! `PUT /update/<token>` as an AppServer uses it.

use crate::support::{channel_id, reply, spawn_app};

#[tokio::test]
async fn versions_arrive_by_form_body_query_or_clock() {
    let app = spawn_app().await;
    let (mut device, _) = app.device().await;
    let chid = channel_id();
    let endpoint = device.register(&chid).await.unwrap();

    // Form body with a proper Content-Type.
    let response = app
        .http
        .put(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("version=3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(device.notification().await.unwrap(), vec![(chid.clone(), 3)]);

    // Query parameter.
    assert_eq!(app.put(&format!("{endpoint}?version=4"), "").await.status, 200);
    assert_eq!(device.notification().await.unwrap(), vec![(chid.clone(), 4)]);

    // No version at all: the current Unix time.
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(app.put(&endpoint, "").await.status, 200);
    let updates = device.notification().await.unwrap();
    assert_eq!(updates.len(), 1);
    assert!(updates[0].1 >= before && updates[0].1 <= before + 5, "{updates:?}");
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let app = spawn_app().await;
    let (mut device, _) = app.device().await;
    let endpoint = device.register(&channel_id()).await.unwrap();

    for body in ["version=-1", "version=abc", "version=1e3"] {
        let reply = app.put(&endpoint, body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["code"], "invalid_version");
    }
    let data = format!("version=1&data={}", "a".repeat(4097));
    let refused = app.put(&endpoint, &data).await;
    assert_eq!(refused.status, 413);
    assert_eq!(refused.json()["code"], "data_too_large");
    let body = "a".repeat(64 * 1024);
    assert_eq!(app.put(&endpoint, &body).await.status, 413);

    let unknown =
        app.put(&app.url("/update/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "version=1").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "not_found");
    // A token cut short, or with a byte changed, is unknown too.
    assert_eq!(app.put(&endpoint[..endpoint.len() - 2], "version=1").await.status, 404);

    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE] {
        let response = reply(app.http.request(method.clone(), &endpoint).send().await.unwrap()).await;
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.json()["code"], "method_not_allowed");
    }
    // Nothing above reached the device.
    assert_eq!(device.recv_within(std::time::Duration::from_millis(300)).await.unwrap(), None);
}
