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

#[tokio::test]
async fn livez_says_the_process_serves_apart_from_readiness() {
    let app = spawn_app().await;
    let live = app.get("/livez").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "ok");
    assert_eq!(app.get("/healthz").await.json()["store"], "ok");
}

#[tokio::test]
async fn an_admin_listener_serves_metrics_and_health_and_the_main_one_no_longer_serves_metrics() {
    let app = builder().set("admin_listen", "127.0.0.1:0").spawn().await;
    let admin = app.admin.expect("an admin listener");
    assert_ne!(admin, app.addr);
    let get = |path: &str| reqwest::get(format!("http://{admin}{path}"));
    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("presence_ws_connections"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/livez").await.unwrap().status(), 200);
    assert_eq!(get("/v1/me").await.unwrap().status(), 404, "only the operator's endpoints");
    let public = app.get("/metrics").await;
    assert_eq!(public.status, 404);
    assert_eq!(public.json()["code"], "not_found");
    assert_eq!(app.get("/livez").await.status, 200);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_the_access_log_names_it_without_endpoint_tokens() {
    use tokio::io::AsyncReadExt as _;
    let data = crate::support::DataDir::new();
    let mut server = crate::support::process::spawn_process_logging(
        &data.path,
        &["--log-json"],
        std::process::Stdio::piped(),
    )
    .await;
    let base = server.base();
    let http = reqwest::Client::new();
    let answered = http.get(format!("{base}/healthz")).send().await.unwrap();
    let id = answered.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let given = http.get(format!("{base}/livez")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    let token = "dGhpcy1pcy1hbi1lbmRwb2ludC10b2tlbi1zZWNyZXQ";
    http.put(format!("{base}/update/{token}?secret=shh")).body("version=1").send().await.unwrap();

    let mut stderr = server.child.stderr.take().unwrap();
    server.kill9().await;
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).await.unwrap();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "presence::access")
        .collect();
    let healthz = access.iter().find(|line| line["span"]["path"] == "/healthz").expect("healthz logged");
    assert_eq!(healthz["span"]["request_id"], id.as_str());
    assert_eq!(healthz["fields"]["status"], 200);
    assert!(healthz["fields"]["latency_ms"].is_number());
    assert!(access.iter().any(|line| line["span"]["request_id"] == "trace-me-42"));
    assert!(access.iter().any(|line| line["span"]["path"] == "/update/…"), "{logs}");
    assert!(!logs.contains(token) && !logs.contains("shh"), "a token reached the logs:\n{logs}");
}

#[tokio::test]
async fn metrics_show_histograms_of_events_webhooks_requests_and_store_queries_by_route_template() {
    use crate::support::{grant, register_app_with_webhook, Receiver};
    let app = builder()
        .set("webhook_allow", "127.0.0.0/8")
        .set("webhook_batch_interval", "1s")
        .set("presence_grace", "0s")
        .set("status_min_interval", "0s")
        .spawn()
        .await;
    let receiver = Receiver::start().await;
    let developer = app.user("dev@example.com").await;
    let registered = register_app_with_webhook(&app, &developer, "Chat", Some(&receiver.url)).await;
    let user = app.user("ann@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (_browser, uid) = grant(&app.url(""), "ann@example.com", &registered).await;
    let mut socket = app.connect_device(&device).await;
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    receiver
        .wait_until(std::time::Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &uid).as_deref() == Some("online")
        })
        .await;
    assert_eq!(app.get_as(&user.token, "/v1/me").await.status, 200);
    let (mut pushed, _) = app.device().await;
    let endpoint = pushed.register(&channel_id()).await.unwrap();
    app.put(&endpoint, "version=1").await;
    let token = endpoint.rsplit('/').next().unwrap().to_owned();

    // The webhook attempt is recorded just after the receiver answers: wait for its line.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = app.get("/metrics").await.body;
        if text.contains("presence_webhook_attempt_duration_seconds_count{outcome=\"delivered\"}") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "no webhook attempt in\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let value = |name: &str| metric_in(&text, name);
    assert!(value("presence_status_event_latency_seconds_count") >= 1.0);
    assert!(text.contains("presence_status_event_latency_seconds_bucket{le=\"+Inf\"}"));
    assert!(value("presence_webhook_attempt_duration_seconds_count{outcome=\"delivered\"}") >= 1.0);
    assert!(
        text.contains("presence_webhook_attempt_duration_seconds_bucket{le=\"+Inf\",outcome=\"delivered\"}")
            || text.contains(
                "presence_webhook_attempt_duration_seconds_bucket{outcome=\"delivered\",le=\"+Inf\"}"
            )
    );
    let me = "presence_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/me\",status=\"200\"}";
    assert_eq!(value(me), 1.0);
    let me_bucket =
        "presence_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/v1/me\",status=\"200\"}";
    assert!(text.contains(me_bucket), "no {me_bucket} in\n{text}");
    assert!(text.contains("route=\"/update/{token}\""), "no push route template in\n{text}");
    assert!(!text.contains(&token), "an endpoint token became a label");
    assert!(value("presence_store_query_duration_seconds_count{query=\"record_presence\"}") >= 1.0);
    assert!(value("presence_store_query_duration_seconds_count{query=\"events_after\"}") >= 1.0);
}

/// `presence serve` on `dir` with `MALLOC_ARENA_MAX` set to `bound` (unset with `None`), once it
/// listens (after any restart), and the variables it runs with, as `NAME=value` strings.
async fn serving_with_arena_max(
    dir: &std::path::Path,
    bound: Option<&str>,
) -> (crate::support::process::ServerProcess, Vec<String>) {
    let mut command = crate::support::process::presence_command();
    match bound {
        Some(bound) => command.env("MALLOC_ARENA_MAX", bound),
        None => command.env_remove("MALLOC_ARENA_MAX"),
    };
    let server =
        crate::support::process::spawn_process_in(command, dir, &[], std::process::Stdio::null()).await;
    let environ = std::fs::read(format!("/proc/{}/environ", server.child.id().unwrap())).unwrap();
    let environment = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    (server, environment)
}

#[tokio::test]
async fn serve_holds_malloc_to_one_arena_unless_the_operator_chose_a_bound() {
    let data = crate::support::DataDir::new();
    // Started as any operator starts it: restarted in place, it serves on the same process.
    let (server, environment) = serving_with_arena_max(&data.path, None).await;
    assert!(environment.contains(&"MALLOC_ARENA_MAX=1".to_string()));
    assert_eq!(reqwest::get(format!("{}/healthz", server.base())).await.unwrap().status(), 200);
    server.kill9().await;

    // Set by the operator: left as it is. The server prints its address only after any
    // restart, so what is read is what it serves with.
    let (server, environment) = serving_with_arena_max(&data.path, Some("4")).await;
    assert!(environment.contains(&"MALLOC_ARENA_MAX=4".to_string()), "the operator's bound stands");
    assert!(!environment.contains(&"MALLOC_ARENA_MAX=1".to_string()));
    server.kill9().await;
}
