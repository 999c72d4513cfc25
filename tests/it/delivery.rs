//! Delivery to apps end to end: a real device WebSocket, a real stream client, a real HTTP
//! receiver for webhooks, and the privacy rules applied at send time.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::apps::{chat_app_by_cli, deliveries_at, kim_grants_chat_and_adds_a_phone, Kim};
use crate::support::{
    builder, cli, delivering, grant, register_app_with_webhook, spawn_process, Answer, Browser, Builder,
    Canary, DataDir, Device, DeviceClient, Hit, Receiver, RegisteredApp, Status, StreamClient, StubResolver,
    TestApp, User,
};

/// A server, an app with a webhook, a user who granted it, and that user's device.
struct World {
    app: TestApp,
    receiver: Receiver,
    registered: RegisteredApp,
    developer: User,
    user: User,
    device: Device,
    uid: String,
    browser: Browser,
}

async fn world(builder: Builder) -> World {
    world_with_receiver_on(builder, "127.0.0.1:0").await
}

async fn world_with_receiver_on(builder: Builder, receiver_addr: &str) -> World {
    let app = builder.spawn().await;
    let receiver = Receiver::start_on(receiver_addr).await;
    let developer = app.user("dev@example.com").await;
    let registered = register_app_with_webhook(&app, &developer, "Chat", Some(&receiver.url)).await;
    let user = app.user("ann@example.com").await;
    let device = app.register_device(&user, "phone").await;
    let (browser, uid) = grant(&app.url(""), "ann@example.com", &registered).await;
    World { app, receiver, registered, developer, user, device, uid, browser }
}

impl World {
    /// Waits (up to 10 s) until the app has accepted `status` for the user by webhook.
    async fn wait_for_webhook_status(&self, status: &str) -> Vec<Hit> {
        self.receiver
            .wait_until(Duration::from_secs(10), |hits| {
                Receiver::last_status_of(hits, &self.uid).as_deref() == Some(status)
            })
            .await
    }
}

impl World {
    /// Opens the app's stream with a query (`""` or `"?…"`) and headers.
    async fn open_stream(
        &self,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<StreamClient>, String) {
        StreamClient::open_at(&self.app.url(""), &self.registered, query, headers).await
    }

    /// The app's webhook health and latest delivery attempts.
    async fn deliveries(&self) -> serde_json::Value {
        deliveries_at(&self.app.url(""), &self.registered).await
    }
}

async fn connect_and_report(world: &World, status: &str) -> DeviceClient {
    let mut socket = world.app.connect_device(&world.device).await;
    assert_eq!(socket.status(status).await.unwrap()["status"], 200);
    socket
}

#[tokio::test]
async fn a_status_change_reaches_the_stream_and_a_signed_webhook() {
    let world = world(delivering()).await;
    let (status, stream, _) = world.open_stream("", &[]).await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    let mut socket = connect_and_report(&world, "O").await;
    let entries = stream.entries().await;
    assert_eq!((entries[0].0.as_str(), entries[0].1.as_str()), (world.uid.as_str(), "online"));

    let hits = world.wait_for_webhook_status("online").await;
    let verifier = standardwebhooks::Webhook::new(&world.registered.webhook_secret).unwrap();
    for hit in &hits {
        verifier.verify(&hit.body, &hit.headers).expect("the signature verifies");
        assert!(hit.headers["webhook-id"].to_str().unwrap().starts_with("msg_"));
    }
    let wrong = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(wrong.verify(&hits[0].body, &hits[0].headers).is_err());

    socket.status("A").await.unwrap();
    assert_eq!(stream.entries().await[0].1, "away");
    world.wait_for_webhook_status("away").await;
    // The app can also ask.
    let asked =
        reqwest::Client::new()
            .get(world.app.url(&format!(
                "/v1/apps/{}/presence?uid={}&uid=u_unknown",
                world.registered.app_id, world.uid
            )))
            .bearer_auth(&world.registered.secret)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
    assert_eq!(asked, json!({"presence": [[world.uid, "away"]]}));
}

#[tokio::test]
async fn webhooks_batch_the_latest_status_per_user_at_most_once_per_interval() {
    let world = world(delivering().set("webhook_batch_interval", "2s")).await;
    let mut socket = connect_and_report(&world, "O").await;
    for status in ["A", "O", "A", "U", "O", "A"] {
        socket.status(status).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let hits = world.wait_for_webhook_status("away").await;
    for hit in &hits {
        let pairs = hit.pairs();
        let mine = pairs.iter().filter(|(uid, _)| uid == &world.uid).count();
        assert!(mine <= 1, "one entry per user per POST: {pairs:?}");
    }
    for pair in hits.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(1900), "two POSTs {gap:?} apart");
    }
    assert!(hits.len() <= 3, "seven changes in about a second make at most a few POSTs: {}", hits.len());
}

#[tokio::test]
async fn failures_are_retried_honouring_retry_after_and_410_disables_the_endpoint() {
    let world = world(delivering()).await;
    world.receiver.answer_next(&[
        Answer { status: 503, retry_after: Some(1), delay: Duration::ZERO },
        Answer::status(500),
    ]);
    let _socket = connect_and_report(&world, "O").await;
    let hits = world
        .receiver
        .wait_until(Duration::from_secs(15), |hits| {
            Receiver::last_status_of(hits, &world.uid).as_deref() == Some("online")
        })
        .await;
    assert!(hits.len() >= 3, "two failures, then a success");
    // The receiver answers before the server records the outcome: wait for the record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut deliveries = world.deliveries().await;
    while !deliveries["webhook"]["failing_since"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "the recovery was never recorded: {deliveries}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        deliveries = world.deliveries().await;
    }
    let codes: Vec<u64> = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["status_code"].as_u64())
        .collect();
    assert!(codes.contains(&503) && codes.contains(&500) && codes.contains(&200), "{codes:?}");
    assert_eq!(deliveries["deliveries"][0]["status_code"], 200, "the latest attempt succeeded");

    // 410: disabled, shown to the developer, re-enabled by them.
    world.receiver.answer_next(&[Answer::status(410)]);
    let mut socket = world.app.connect_device(&world.device).await;
    socket.status("A").await.unwrap();
    world.receiver.wait_until(Duration::from_secs(10), |hits| hits.iter().any(|h| h.answered == 410)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while world.deliveries().await["webhook"]["disabled_at"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "the webhook was not disabled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let disabled = world.deliveries().await["webhook"].clone();
    assert!(disabled["disabled_reason"].as_str().unwrap().contains("410"));
    let mut dev = Browser::new(&world.app);
    dev.sign_in("dev@example.com").await;
    let page = dev.get("/developers").await;
    assert!(page.body.contains("disabled: the endpoint answered 410 Gone"), "the developer sees it");
    let before = world.receiver.hits().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(world.receiver.hits().len(), before, "nothing is sent to a disabled endpoint");
    let enabled =
        dev.post(&format!("/developers/apps/{}/webhook/enable", world.registered.app_id), &[]).await;
    assert_eq!(enabled.status, 303);
    world.wait_for_webhook_status("away").await;
}

#[tokio::test]
async fn a_revoke_with_events_queued_leaks_nothing_and_a_pause_sends_nothing() {
    let world = world(delivering()).await;
    world.receiver.answer_always(Answer::status(500));
    let mut socket = connect_and_report(&world, "O").await;
    for status in ["A", "O"] {
        socket.status(status).await.unwrap();
    }
    world.receiver.wait_until(Duration::from_secs(10), |hits| !hits.is_empty()).await;
    let revoked = world
        .app
        .send_as(
            Method::DELETE,
            &world.user.token,
            &format!("/v1/me/grants/{}", world.registered.app_id),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);
    let revoked_at = tokio::time::Instant::now();
    socket.status("A").await.unwrap();
    world.receiver.answer_always(Answer::status(200));
    let accepted_since = |hits: &[Hit]| -> Vec<(String, String)> {
        hits.iter().filter(|h| h.answered == 200 && h.at > revoked_at).flat_map(|h| h.pairs()).collect()
    };
    world.receiver.wait_until(Duration::from_secs(15), |hits| !accepted_since(hits).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted = accepted_since(&world.receiver.hits());
    assert_eq!(
        accepted,
        vec![(world.uid.clone(), "revoked".to_owned())],
        "only the revoke: nothing queued before it, nothing after"
    );

    // A stream opened now sees nothing about the user either.
    let (_, stream, _) = world.open_stream("?since=0", &[]).await;
    let mut stream = stream.unwrap();
    let entries = stream.entries().await;
    assert_eq!(entries.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), vec!["revoked"]);
}

#[tokio::test]
async fn a_paused_grant_sends_nothing_until_resumed() {
    let mut world = world(delivering()).await;
    let mut socket = connect_and_report(&world, "O").await;
    world.wait_for_webhook_status("online").await;
    let page = world
        .browser
        .post(&format!("/settings/apps/{}", world.registered.app_id), &[("action", "pause")])
        .await;
    assert_eq!(page.status, 303);
    let before = world.receiver.hits().len();
    socket.status("A").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(world.receiver.hits().len(), before, "a paused grant sends nothing");
    world.browser.post(&format!("/settings/apps/{}", world.registered.app_id), &[("action", "resume")]).await;
    world.wait_for_webhook_status("away").await;
}

#[tokio::test]
async fn what_was_in_the_log_before_a_pause_stays_withheld_after_the_resume() {
    let mut world = world(delivering()).await;
    // The grant told the app "offline", the connect "online", then "away": all in the log.
    let mut socket = connect_and_report(&world, "O").await;
    socket.status("A").await.unwrap();
    let settings = format!("/settings/apps/{}", world.registered.app_id);
    assert_eq!(world.browser.post(&settings, &[("action", "pause")]).await.status, 303);
    assert_eq!(world.browser.post(&settings, &[("action", "resume")]).await.status, 303);
    // Read from the start of the log: only what the resume told the app.
    let (_, stream, _) = world.open_stream("?since=0", &[]).await;
    let entries = stream.unwrap().entries().await;
    assert_eq!(entries.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), vec!["away"]);
    assert!(entries[0].2 >= 4, "the resume's event comes after the three withheld: {entries:?}");
}

#[tokio::test]
async fn appear_offline_and_coarse_mode_shape_what_apps_see() {
    let mut world = world(delivering()).await;
    let (_, stream, _) = world.open_stream("", &[]).await;
    let mut stream = stream.unwrap();
    let mut socket = connect_and_report(&world, "O").await;
    assert_eq!(stream.entries().await[0].1, "online");
    let hidden = json!({"idle_away_minutes": 5, "idle_offline_minutes": 30, "appear_offline": true});
    world.app.send_as(Method::PUT, &world.user.token, "/v1/me/policy", Some(hidden)).await;
    assert_eq!(stream.entries().await[0].1, "offline");
    let shown = json!({"idle_away_minutes": 5, "idle_offline_minutes": 30, "appear_offline": false});
    world.app.send_as(Method::PUT, &world.user.token, "/v1/me/policy", Some(shown)).await;
    assert_eq!(stream.entries().await[0].1, "online");
    world.browser.post(&format!("/settings/apps/{}", world.registered.app_id), &[("action", "coarse")]).await;
    socket.status("A").await.unwrap();
    socket.status("U").await.unwrap();
    // Away shows as online, which the app already knew: the next thing it hears is offline.
    assert_eq!(stream.entries().await[0].1, "offline");
}

#[tokio::test]
async fn resuming_after_forced_disconnects_gives_no_gap_and_no_duplicate() {
    let world = world(delivering()).await;
    // The grant told the app "offline" (seq 1), the connect "online" (seq 2).
    let mut socket = connect_and_report(&world, "O").await;
    let mut expected = 2usize;
    let mut toggle = ["A", "O"].iter().cycle();
    let mut seen: Vec<u64> = Vec::new();
    for round in 0..4 {
        // Two changes while no stream is connected.
        for _ in 0..2 {
            socket.status(toggle.next().unwrap()).await.unwrap();
        }
        expected += 2;
        let last = seen.last().copied().unwrap_or(0);
        let sse = round % 2 == 1;
        let since = last.to_string();
        let headers: Vec<(&str, &str)> =
            if sse { vec![("accept", "text/event-stream"), ("last-event-id", &since)] } else { vec![] };
        let query = if sse { String::new() } else { format!("?since={last}") };
        let (status, stream, body) = world.open_stream(&query, &headers).await;
        assert_eq!(status, 200, "{body}");
        let mut stream = stream.unwrap();
        // And one while it is.
        socket.status(toggle.next().unwrap()).await.unwrap();
        expected += 1;
        while seen.len() < expected {
            if sse {
                let mut id = None;
                loop {
                    let line = stream.line().await.unwrap();
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse::<u64>().unwrap());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        let entries: Vec<(String, String, u64)> = serde_json::from_str(data).unwrap();
                        assert_eq!(id, entries.last().map(|e| e.2), "id is the batch's last seq");
                        seen.extend(entries.iter().map(|e| e.2));
                        break;
                    }
                }
            } else {
                seen.extend(stream.entries().await.iter().map(|e| e.2));
            }
        }
        drop(stream); // a forced disconnect
    }
    assert_eq!(seen, (1..=expected as u64).collect::<Vec<_>>(), "no gap and no duplicate");
}

#[tokio::test]
async fn snapshots_and_resyncs_past_retention() {
    let world = world(delivering().set("event_retention", "1s")).await;
    let _socket = connect_and_report(&world, "A").await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (status, _, body) = world.open_stream("?since=0", &[]).await;
    assert_eq!(status, 410);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "resync_required");
    let (status, stream, _) = world.open_stream("?snapshot=true", &[]).await;
    assert_eq!(status, 200);
    let entries = stream.unwrap().entries().await;
    assert_eq!((entries[0].0.as_str(), entries[0].1.as_str()), (world.uid.as_str(), "away"));
    let (status, _, _) = world.open_stream("?since=999", &[]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_webhook_back_after_retention_gets_every_granted_users_latest_status() {
    let world = world(delivering().set("event_retention", "1s")).await;
    let bob = world.app.user("bob@example.com").await;
    let bobs_phone = world.app.register_device(&bob, "phone").await;
    let (_, bob_uid) = grant(&world.app.url(""), "bob@example.com", &world.registered).await;
    // The webhook is disabled at its first POST, and the changes meanwhile outlive retention.
    world.receiver.answer_next(&[Answer::status(410)]);
    let _ann = connect_and_report(&world, "O").await;
    world.receiver.wait_until(Duration::from_secs(10), |hits| hits.iter().any(|h| h.answered == 410)).await;
    let mut bobs_socket = world.app.connect_device(&bobs_phone).await;
    assert_eq!(bobs_socket.status("A").await.unwrap()["status"], 200);
    tokio::time::sleep(Duration::from_millis(2600)).await;

    world.app.enable_webhook(&world.developer, &world.registered.app_id).await;
    let hits = world
        .receiver
        .wait_until(Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &world.uid).as_deref() == Some("online")
                && Receiver::last_status_of(hits, &bob_uid).as_deref() == Some("away")
        })
        .await;
    let resync = hits.last().unwrap();
    assert!(resync.headers["webhook-id"].to_str().unwrap().starts_with("msg_resync_"));
    assert_eq!(resync.headers["presence-resync"], "true");
}

#[tokio::test]
async fn a_newer_stream_replaces_the_older_and_shutdown_closes_with_a_reason() {
    let world = world(delivering()).await;
    let (_, first, _) = world.open_stream("", &[]).await;
    let mut first = first.unwrap();
    let (_, second, _) = world.open_stream("", &[]).await;
    let mut second = second.unwrap();
    let closing: serde_json::Value = serde_json::from_str(&first.line().await.unwrap()).unwrap();
    assert_eq!(closing["error"], "replaced");
    assert_eq!(first.line().await, None);
    // Other apps' credentials get nothing.
    let other = reqwest::Client::new()
        .get(world.app.url(&format!("/{}/presence.json", world.registered.app_id)))
        .basic_auth("app_other", Some("ps_nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    world.app.shutdown.cancel();
    let closing: serde_json::Value = serde_json::from_str(&second.line().await.unwrap()).unwrap();
    assert_eq!(closing["error"], "shutting_down");
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_closed_and_its_buffer_freed() {
    let world = world(delivering().set("stream_buffer", "4").set("socket_send_buffer", "4096")).await;
    // A consumer with a tiny receive window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stream = socket.connect(world.app.addr).await.unwrap();
    let credentials = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", world.registered.app_id, world.registered.secret),
    );
    let request = format!(
        "GET /{}/presence.json HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\r\n",
        world.registered.app_id
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metric = |name: &'static str| world.app.metric(name);
    assert_eq!(metric("presence_streams").await, 1.0);
    let statuses = [Status::Online, Status::Away];
    let mut flips = 0;
    while metric("presence_streams_lagging_total").await == 0.0 {
        for _ in 0..200 {
            world.app.report(&world.device, statuses[flips % 2]).await;
            flips += 1;
        }
        assert!(flips < 6_000, "the stream was never closed for lagging");
    }
    assert_eq!(metric("presence_streams").await, 0.0, "the lagging stream's task and buffer are gone");
    // What the consumer finally reads ends with the reason.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received),
    )
    .await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("consumer_lagging"), "the last line says why");
}

#[tokio::test]
async fn sigkill_at_any_point_loses_no_webhook_update() {
    let data = DataDir::new();
    let receiver = Receiver::start().await;
    let registered = chat_app_by_cli(&data.path, &receiver.url).await;
    let flags = [
        "--webhook-allow",
        "127.0.0.0/8",
        "--webhook-batch-interval",
        "1s",
        "--presence-grace",
        "0s",
        "--status-min-interval",
        "0s",
    ];
    let server = spawn_process(&data.path, &flags).await;
    let Kim { uid, phone, .. } = kim_grants_chat_and_adds_a_phone(&server.base(), &registered).await;
    let prid = phone.prid;

    let mut server = Some(server);
    for kill_point in ["after failed attempts", "while a request is in flight", "right after the change"] {
        let running = server.take().unwrap();
        match kill_point {
            "after failed attempts" => receiver.answer_always(Answer::status(500)),
            "while a request is in flight" => receiver.answer_always(Answer {
                status: 200,
                retry_after: None,
                delay: Duration::from_secs(30),
            }),
            _ => receiver.answer_always(Answer::status(500)),
        }
        let mut socket = running.connect().await;
        assert_eq!(socket.hello_presence(None, &prid).await.unwrap()["status"], 200);
        assert_eq!(socket.status("O").await.unwrap()["status"], 200);
        assert_eq!(socket.status("U").await.unwrap()["status"], 200);
        let before = receiver.hits().len();
        if kill_point != "right after the change" {
            receiver.wait_until(Duration::from_secs(10), |hits| hits.len() > before).await;
        }
        running.kill9().await;
        drop(socket);

        receiver.answer_always(Answer::status(200));
        let restarted_at = tokio::time::Instant::now();
        server = Some(spawn_process(&data.path, &flags).await);
        let hits = receiver
            .wait_until(Duration::from_secs(20), |hits| {
                hits.iter().any(|h| {
                    h.answered == 200 && h.at > restarted_at && h.pairs().iter().any(|(u, _)| u == &uid)
                })
            })
            .await;
        let after: Vec<_> =
            hits.iter().filter(|h| h.answered == 200 && h.at > restarted_at).cloned().collect();
        assert_eq!(
            Receiver::last_status_of(&after, &uid).as_deref(),
            Some("offline"),
            "{kill_point}: the latest status arrives after the restart"
        );
    }
    server.unwrap().kill9().await;
}

#[tokio::test]
async fn hostile_webhook_addresses_are_refused_and_nothing_reaches_loopback() {
    // The canary: any connection to it is a failure.
    let canary = Canary::start().await;
    let port = canary.port;
    // A redirector on an allow-listed address that sends webhooks on to the canary.
    let redirector = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let redirect_url = format!("http://{}/hook", redirector.local_addr().unwrap());
    let target = format!("http://127.0.0.1:{port}/stolen");
    let router = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, target)]) }
    });
    tokio::spawn(async move { axum::serve(redirector, router).await });

    let world =
        world_with_receiver_on(delivering().set("webhook_allow", "127.0.0.2/32"), "127.0.0.2:0").await;
    let dev_token = world.developer.token.clone();
    let set_webhook = |url: String| {
        let app = &world.app;
        let path = format!("/v1/apps/{}", world.registered.app_id);
        let token = dev_token.clone();
        async move { app.send_as(Method::PATCH, &token, &path, Some(json!({"webhook_url": url}))).await }
    };
    for hostile in [
        format!("http://127.1:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fc00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://224.0.0.1/".to_owned(),
    ] {
        let refused = set_webhook(hostile.clone()).await;
        assert_eq!(refused.status, 400, "{hostile} was accepted");
        assert_eq!(refused.json()["code"], "invalid_webhook_url");
    }
    // Names and redirects can only be caught when the request is made.
    let mut socket = connect_and_report(&world, "O").await;
    for (url, expect) in [(format!("http://localhost:{port}/hook"), "refused"), (redirect_url, "302")] {
        assert_eq!(set_webhook(url.clone()).await.status, 200);
        socket.status("A").await.unwrap();
        socket.status("O").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let deliveries = world.deliveries().await;
            let latest = &deliveries["deliveries"][0];
            let seen = latest["error"].as_str().unwrap_or_default().starts_with(expect)
                || latest["status_code"].as_u64().map(|c| c.to_string()).as_deref() == Some(expect);
            if seen {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{url}: no {expect} attempt in {deliveries}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the failure be retried once more.
        world.app.enable_webhook(&world.developer, &world.registered.app_id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(canary.reached(), 0, "a connection reached the loopback canary");
}

/// Sets an app's webhook URL as its owner; returns the answer's status.
async fn point_webhook(app: &TestApp, owner: &User, registered: &RegisteredApp, url: &str) -> u16 {
    let path = format!("/v1/apps/{}", registered.app_id);
    app.send_as(Method::PATCH, &owner.token, &path, Some(json!({"webhook_url": url}))).await.status
}

/// Waits (up to 15 s) until the app's latest webhook attempt failed with an error starting
/// with `expect`.
async fn wait_for_refusal(app: &TestApp, registered: &RegisteredApp, expect: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let deliveries = deliveries_at(&app.url(""), registered).await;
        if deliveries["deliveries"][0]["error"].as_str().is_some_and(|e| e.starts_with(expect)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {expect:?} attempt in {deliveries}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The runs of the webhook tests below: no range allowed to every app.
fn delivering_to_public_only() -> Builder {
    builder().set("webhook_batch_interval", "1s").set("presence_grace", "0s").set("status_min_interval", "0s")
}

#[tokio::test]
async fn an_app_the_operator_allowed_a_loopback_range_reaches_it_and_another_app_does_not() {
    let app = delivering_to_public_only().spawn().await;
    let receiver = Receiver::start().await;
    let developer = app.user("dev@example.com").await;
    let allowed = register_app_with_webhook(&app, &developer, "Allowed", None).await;
    let other = register_app_with_webhook(&app, &developer, "Other", None).await;
    // The owner alone cannot point a webhook at loopback; only the operator opens a range.
    assert_eq!(point_webhook(&app, &developer, &allowed, &receiver.url).await, 400);
    let args = ["app", "allow-webhook-range", "--app", &allowed.app_id, "--range", "127.0.0.0/8"];
    let said = cli(&args, app.dir(), "").await;
    assert!(said.contains("127.0.0.0/8"), "{said}");
    assert_eq!(point_webhook(&app, &developer, &allowed, &receiver.url).await, 200);
    assert_eq!(point_webhook(&app, &developer, &other, &receiver.url).await, 400, "the range is one app's");
    // A name is checked when the request is made: for the other app, refused then.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    assert_eq!(point_webhook(&app, &developer, &other, &by_name).await, 200);

    let user = app.user("ann@example.com").await;
    let (_, allowed_uid) = grant(&app.url(""), "ann@example.com", &allowed).await;
    let (_, other_uid) = grant(&app.url(""), "ann@example.com", &other).await;
    let phone = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&phone).await;
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    receiver
        .wait_until(Duration::from_secs(10), |hits| {
            Receiver::last_status_of(hits, &allowed_uid).as_deref() == Some("online")
        })
        .await;
    wait_for_refusal(&app, &other, "refused").await;
    assert!(receiver.hits().iter().all(|hit| hit.pairs().iter().all(|(uid, _)| *uid != other_uid)));

    // Cleared: the allowed app's next batch is refused when it is sent.
    let cleared =
        cli(&["app", "allow-webhook-range", "--app", &allowed.app_id, "--clear"], app.dir(), "").await;
    assert!(cleared.contains("(none)"), "{cleared}");
    let before = receiver.hits().len();
    assert_eq!(socket.status("A").await.unwrap()["status"], 200);
    wait_for_refusal(&app, &allowed, "refused").await;
    assert_eq!(receiver.hits().len(), before, "nothing reached loopback after the clear");
}

#[tokio::test]
async fn a_webhook_name_rebound_to_loopback_never_reaches_it() {
    // The canary: any connection to it is a failure.
    let canary = Canary::start().await;
    let port = canary.port;
    let names = std::sync::Arc::new(StubResolver::default());
    let app = delivering_to_public_only().resolver(names.clone()).spawn().await;
    let developer = app.user("dev@example.com").await;
    // Registered while the name points at a public address (nothing connects there: no event
    // is due before the name moves)...
    names.set("hooks.rebind.test", &["93.184.216.34"]);
    let url = format!("http://hooks.rebind.test:{port}/hook");
    let chat = register_app_with_webhook(&app, &developer, "Chat", Some(&url)).await;
    // ...then rebound to loopback before the first webhook is sent.
    names.set("hooks.rebind.test", &["127.0.0.1"]);
    let user = app.user("ann@example.com").await;
    grant(&app.url(""), "ann@example.com", &chat).await;
    let phone = app.register_device(&user, "phone").await;
    let mut socket = app.connect_device(&phone).await;
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    // Refused by the egress rules (an unknown name would fail otherwise: "cannot connect").
    wait_for_refusal(&app, &chat, "refused").await;
    assert!(!names.asked().is_empty(), "the stub was asked");
    assert!(names.asked().iter().all(|name| name == "hooks.rebind.test"), "{:?}", names.asked());
    // Nor in its IPv6 and IPv4-mapped spellings, looked up again at every attempt.
    names.set("hooks.rebind.test", &["127.0.0.1", "::1", "::ffff:127.0.0.1"]);
    app.enable_webhook(&developer, &chat.app_id).await;
    assert_eq!(socket.status("A").await.unwrap()["status"], 200);
    let asked = names.asked().len();
    wait_for_refusal(&app, &chat, "refused").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while names.asked().len() == asked {
        assert!(tokio::time::Instant::now() < deadline, "the name was not looked up again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(canary.reached(), 0, "a webhook reached the loopback canary");
    // The stub is what the webhook client connects by: with loopback allowed for the app, the
    // same name reaches a receiver there.
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "hooks.rebind.test");
    assert_eq!(point_webhook(&app, &developer, &chat, &by_name).await, 200);
    cli(&["app", "allow-webhook-range", "--app", &chat.app_id, "--range", "127.0.0.1"], app.dir(), "").await;
    app.enable_webhook(&developer, &chat.app_id).await;
    assert_eq!(socket.status("O").await.unwrap()["status"], 200);
    receiver.wait_until(Duration::from_secs(10), |hits| !hits.is_empty()).await;
    assert_eq!(canary.reached(), 0);
}
