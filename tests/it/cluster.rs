//! Two `presence serve` processes sharing PostgreSQL and a NATS server of the test's own: every
//! path that crosses nodes, a node killed with SIGKILL, and the bus killed and restarted.
//!
//! These need PostgreSQL, so they are ignored on the SQLite run (`cargo test` lists them as
//! ignored) and run on the PostgreSQL run:
//! `TEST_DATABASE_URL=postgres://… cargo test --test it -- --include-ignored`. Run without
//! `TEST_DATABASE_URL`, they fail and say why.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::support::cluster::{Cluster, Nats, LEASE};
use crate::support::data::postgres;
use crate::support::http::register_device_at;
use crate::support::{builder, close_code, sign_in, Answer, TestApp};

/// The same endpoint, as the other node serves it.
fn endpoint_on(endpoint: &str, base: &str) -> String {
    let path = &endpoint[endpoint.find("/update/").expect("an update endpoint")..];
    format!("{base}{path}")
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn statuses_pushes_and_notifications_cross_nodes() {
    let cluster = Cluster::start().await;
    cluster.receiver.answer_always(Answer::status(200));
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    // A status reported on node 0 reaches the stream on node 1, and the webhook.
    stream.wait_for(&cluster.uid, "online").await;
    cluster.webhook_says("online", Duration::from_secs(10)).await;
    assert_eq!(phone.status("A").await.unwrap()["status"], 200);
    stream.wait_for(&cluster.uid, "away").await;

    // A push sent to node 1 for the phone on node 0.
    let channel = "5bc0a6a1-54f2-4c3a-9a52-1cf4e1f6b301";
    let endpoint = phone.register(channel).await.unwrap();
    let put =
        reqwest::Client::new().put(endpoint_on(&endpoint, &cluster.base(1))).body("version=7").send().await;
    assert_eq!(put.unwrap().status().as_u16(), 202, "stored, and signalled to the node holding the device");
    assert_eq!(phone.notification().await.unwrap(), vec![(channel.to_owned(), 7)]);

    // A live notification sent to node 1.
    let sent = cluster.notify_at(1, "from node 1").await;
    let live = phone.live_notifications().await.unwrap();
    assert_eq!(live[0]["title"], "from node 1");
    assert_eq!(live[0]["id"], sent["id"]);
    assert!(cluster.metric(0, "presence_node_signals_total").await >= 2.0, "the push and the notification");
    assert_eq!(cluster.metric(0, "presence_bus_connected").await, 1.0);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn the_same_uaid_on_another_node_closes_the_older_socket() {
    let cluster = Cluster::start().await;
    let (mut first, uaid) = cluster.phone_on(0, None, "O").await;
    let (mut second, again) = cluster.phone_on(1, Some(&uaid), "O").await;
    assert_eq!(again, uaid, "the UAID is known to every node");
    let closed = close_code(&mut first, "the older socket stayed open").await;
    assert_eq!(closed, Some(1000), "replaced by a newer connection");
    // The old node's goodbye does not make the user offline: the device lives on node 1.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut stream = cluster.stream_on(0).await;
    assert_eq!(second.status("A").await.unwrap()["status"], 200);
    stream.wait_for(&cluster.uid, "away").await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_killed_node_leaves_no_ghost_and_its_webhooks_move_on() {
    let mut cluster = Cluster::start().await;
    cluster.receiver.answer_always(Answer::status(200));
    let mut stream = cluster.stream_on(1).await;
    let (_phone, _) = cluster.phone_on(0, None, "O").await;
    stream.wait_for(&cluster.uid, "online").await;
    cluster.webhook_says("online", Duration::from_secs(10)).await;

    let killed_at = Instant::now();
    cluster.nodes[0].take().unwrap().kill9().await;
    stream.wait_for(&cluster.uid, "offline").await;
    let seen_after = killed_at.elapsed();
    assert!(seen_after <= 2 * LEASE, "offline seen {seen_after:?} after the kill; the lease is {LEASE:?}");
    // Whichever node sent the app's webhooks, the survivor sends them now.
    cluster.webhook_says("offline", Duration::from_secs(15)).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn with_the_bus_down_delivery_goes_through_the_store_and_nothing_is_lost() {
    let mut cluster = Cluster::start().await;
    cluster.receiver.answer_always(Answer::status(200));
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    stream.wait_for(&cluster.uid, "online").await;
    let channel = "0d9bd0f6-7a1f-4e6f-8c39-1d2a3b4c5d6e";
    let endpoint = endpoint_on(&phone.register(channel).await.unwrap(), &cluster.base(1));

    let port = cluster.nats.take().unwrap().kill().await;
    cluster.health_says(1, "unavailable").await;
    assert_eq!(cluster.metric(1, "presence_bus_connected").await, 0.0);
    // Status: the stream on node 1 reads it from the log at its next heartbeat.
    assert_eq!(phone.status("A").await.unwrap()["status"], 200);
    stream.wait_for(&cluster.uid, "away").await;
    cluster.webhook_says("away", Duration::from_secs(10)).await;
    // A push to node 1: node 0 reads it from the store while the bus is down.
    let put = reqwest::Client::new().put(&endpoint).body("version=1").send().await.unwrap();
    assert_eq!(put.status().as_u16(), 202);
    assert_eq!(phone.notification().await.unwrap(), vec![(channel.to_owned(), 1)]);
    let sent = cluster.notify_at(1, "while the bus is down").await;
    let live = phone.live_notifications().await.unwrap();
    assert_eq!(live[0]["id"], sent["id"]);

    // The bus comes back on the same address; signals flow again.
    cluster.nats = Some(Nats::start_on(port).await);
    cluster.health_says(1, "ok").await;
    let put = reqwest::Client::new().put(&endpoint).body("version=2").send().await.unwrap();
    assert_eq!(put.status().as_u16(), 202);
    assert_eq!(phone.notification().await.unwrap(), vec![(channel.to_owned(), 2)]);
    assert_eq!(phone.status("O").await.unwrap()["status"], 200);
    stream.wait_for(&cluster.uid, "online").await;
    cluster.webhook_says("online", Duration::from_secs(10)).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn one_node_at_a_time_sends_an_apps_webhooks() {
    let cluster = Cluster::start().await;
    cluster.receiver.answer_always(Answer::status(200));
    // Changes made through both nodes, for three seconds, with a one-second batch interval.
    let (mut phone, uaid) = cluster.phone_on(0, None, "O").await;
    for status in ["A", "O", "A", "O", "A", "O", "A"] {
        assert_eq!(phone.status(status).await.unwrap()["status"], 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut phone, _) = cluster.phone_on(1, Some(&uaid), "O").await;
    for status in ["A", "O", "A", "O", "A", "O", "U"] {
        assert_eq!(phone.status(status).await.unwrap()["status"], 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.webhook_says("offline", Duration::from_secs(10)).await;
    let hits = cluster.receiver.hits();
    let mut ids: Vec<_> = hits.iter().map(|h| h.headers["webhook-id"].to_str().unwrap().to_owned()).collect();
    for pair in hits.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "two POSTs {gap:?} apart: two nodes sent them");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), hits.len(), "no batch was sent twice");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_node_that_lost_its_lease_closes_its_devices_so_they_come_back() {
    let cluster = Cluster::start().await;
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, uaid) = cluster.phone_on(0, None, "O").await;
    stream.wait_for(&cluster.uid, "online").await;
    // What the other nodes do to a node whose lease ran out (say, it could not reach the
    // database for longer than the lease): its lease ends and its devices go offline.
    let node = cluster.node_of(&uaid).await;
    cluster.end_lease(&node).await;
    // At its next renewal the node finds out and closes the connection with "going away".
    let closed = close_code(&mut phone, "the device was not told to reconnect").await;
    assert_eq!(closed, Some(1001));
    assert_eq!(cluster.metric(0, "presence_leases_lost_total").await, 1.0);
    stream.wait_for(&cluster.uid, "offline").await;
    // Reconnecting (to any node) makes the user seen again.
    let (_phone, _) = cluster.phone_on(0, Some(&uaid), "O").await;
    stream.wait_for(&cluster.uid, "online").await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_newer_stream_on_another_node_replaces_the_older() {
    let cluster = Cluster::start().await;
    let mut older = cluster.stream_on(0).await;
    let _newer = cluster.stream_on(1).await;
    let closing = loop {
        let line = older.line().await.expect("the older stream ends with a reason");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value.is_object() {
            break value;
        }
    };
    assert_eq!(closing["error"], "replaced");
    assert_eq!(older.line().await, None, "and then ends");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn concurrent_changes_on_two_nodes_leave_the_app_with_the_true_status() {
    let cluster = Cluster::start().await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    let token = sign_in(&cluster.base(1), "kim@example.com").await;
    let grant = format!("{}/v1/me/grants/{}", cluster.base(1), cluster.registered.app_id);
    let presence =
        format!("{}/v1/apps/{}/presence?uid={}", cluster.base(1), cluster.registered.app_id, cluster.uid);
    let http = reqwest::Client::new();
    let set_grant = |enabled: bool| {
        let request = http.patch(&grant).bearer_auth(&token).json(&json!({ "enabled": enabled }));
        async move { assert_eq!(request.send().await.unwrap().status().as_u16(), 200) }
    };
    // Each round, the user changes status on node 0 at the same moment as resuming the app on
    // node 1: whichever commits first, the app must end up told the status that is true.
    for round in 0..100 {
        let (status, name) = if round % 2 == 0 { ("A", "away") } else { ("O", "online") };
        set_grant(false).await;
        let (reply, ()) = tokio::join!(phone.status(status), set_grant(true));
        assert_eq!(reply.unwrap()["status"], 200);
        let seen: serde_json::Value = http
            .get(&presence)
            .basic_auth(&cluster.registered.app_id, Some(&cluster.registered.secret))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["presence"], json!([[cluster.uid, name]]), "round {round}");
    }
}

/// Five of one user's devices close at once: node 0's writer takes their offline reports in
/// one batch or a few. The app hears each change of the user's visible status once, in seqs
/// with no gap and no repeat, and the user ends offline.
#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_users_devices_closing_together_tell_the_app_each_change_once_with_no_gap() {
    let cluster = Cluster::start().await;
    let mut stream = cluster.stream_on(1).await;
    let (phone, _) = cluster.phone_on(0, None, "O").await;
    let mut devices = vec![phone];
    for n in 0..4 {
        let tablet = register_device_at(&cluster.base(0), &cluster.token, &format!("tablet {n}")).await;
        let mut socket = cluster.node(0).connect().await;
        assert_eq!(socket.hello_presence(None, &tablet.prid).await.unwrap()["status"], 200);
        assert_eq!(socket.status("A").await.unwrap()["status"], 200);
        devices.push(socket);
    }
    drop(devices);
    let mut seen: Vec<(String, u64)> = Vec::new();
    let read = async {
        while seen.last().is_none_or(|(status, _)| status != "offline") {
            for (uid, status, seq) in stream.entries().await {
                assert_eq!(uid, cluster.uid);
                seen.push((status, seq));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("the app never heard offline");
    assert_eq!(seen[0].0, "online", "{seen:?}");
    for pair in seen.windows(2) {
        assert_eq!(pair[1].1, pair[0].1 + 1, "a gap or a repeat in seqs: {seen:?}");
        assert_ne!(pair[1].0, pair[0].0, "one change told twice: {seen:?}");
    }
    // Nothing more was appended: the next change takes the next seq.
    let (_phone, _) = cluster.phone_on(0, None, "O").await;
    let entries = stream.entries().await;
    assert_eq!(entries, vec![(cluster.uid.clone(), "online".to_owned(), seen.last().unwrap().1 + 1)]);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn removing_a_device_on_one_node_closes_its_socket_on_another() {
    let cluster = Cluster::start().await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    let removed = reqwest::Client::new()
        .delete(format!("{}/v1/devices/{}", cluster.base(1), cluster.device.device_id))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    let closed = close_code(&mut phone, "the removed device's socket stayed open").await;
    assert_eq!(closed, Some(4401));
}

/// Waits (up to 10 s) until the node's `/healthz` says the bus is `bus`.
async fn bus_of(node: &TestApp, bus: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = node.get("/healthz").await.json();
        if health["bus"] == bus {
            return;
        }
        assert!(Instant::now() < deadline, "the bus never became {bus}: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node on PostgreSQL (of its own) with these settings; panics on the SQLite run.
async fn node_with(settings: &[(&'static str, String)]) -> TestApp {
    assert!(postgres().is_some(), "a node with a bus needs PostgreSQL: TEST_DATABASE_URL=postgres://…");
    settings.iter().fold(builder(), |builder, (key, value)| builder.set(key, value.clone())).spawn().await
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_nats_server_with_a_token_refuses_a_node_without_it_and_accepts_one_with_it() {
    let nats = Nats::start_with_options(&["--auth", "s3cret-t0ken"]).await;
    let url = format!("nats://127.0.0.1:{}", nats.port());
    let with = node_with(&[("bus_url", url.clone()), ("bus_token", "s3cret-t0ken".into())]).await;
    let without = node_with(&[("bus_url", url.clone())]).await;
    let wrong = node_with(&[("bus_url", url), ("bus_token", "guessed".into())]).await;
    bus_of(&with, "ok").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    bus_of(&without, "unavailable").await;
    bus_of(&wrong, "unavailable").await;
    assert_eq!(with.metric("presence_bus_connected").await, 1.0);
    assert_eq!(without.metric("presence_bus_connected").await, 0.0);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_user_and_password_in_the_bus_url_sign_the_node_in() {
    let nats = Nats::start_with_options(&["--user", "presence", "--pass", "pa55word"]).await;
    let at = |login: &str| format!("nats://{login}@127.0.0.1:{}", nats.port());
    let with = node_with(&[("bus_url", at("presence:pa55word"))]).await;
    let wrong = node_with(&[("bus_url", at("presence:guessed"))]).await;
    bus_of(&with, "ok").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    bus_of(&wrong, "unavailable").await;
}

/// A certificate authority and a server certificate it signed for 127.0.0.1 and localhost, made
/// with Debian's `openssl` in `dir`: returns the paths of the CA, the certificate and its key.
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca, ca_key, cert, key, csr, ext) = (
        path("ca.pem"),
        path("ca.key"),
        path("server.pem"),
        path("server.key"),
        path("server.csr"),
        path("ext"),
    );
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", &ca_key, "-out", &ca, "-days", "1", "-subj", "/CN=test-ca"],
        ]
        .concat(),
        [&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]].concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    ];
    for args in steps {
        let status = std::process::Command::new("openssl")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed (Debian's openssl, a dependency of ca-certificates)");
        assert!(status.success(), "openssl {args:?}");
    }
    (ca, cert, key)
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn a_tls_bus_url_connects_over_tls_to_a_server_the_configured_authority_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let nats = Nats::start_with_options(&["--tls", "--tlscert", &cert, "--tlskey", &key]).await;
    let port = nats.port();
    let trusted =
        node_with(&[("bus_url", format!("tls://localhost:{port}")), ("bus_tls_ca_file", ca.clone())]).await;
    let also =
        node_with(&[("bus_url", format!("nats+tls://127.0.0.1:{port}")), ("bus_tls_ca_file", ca)]).await;
    // Without the authority, the server's certificate is not trusted.
    let untrusting = node_with(&[("bus_url", format!("tls://localhost:{port}"))]).await;
    bus_of(&trusted, "ok").await;
    bus_of(&also, "ok").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    bus_of(&untrusting, "unavailable").await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: TEST_DATABASE_URL=… cargo test --test it -- --include-ignored"]
async fn an_operator_on_another_machine_disables_an_account_and_the_nodes_close_its_devices() {
    let cluster = Cluster::start().await;
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    stream.wait_for(&cluster.uid, "online").await;

    // Another machine: its own data directory on the same database, no node beside it, the
    // cluster's bus.
    let elsewhere = crate::support::DataDir::new();
    std::fs::copy(cluster.data.path.join("schema"), elsewhere.path.join("schema")).unwrap();
    let bus = crate::support::cluster::bus_flags(cluster.nats.as_ref().unwrap(), &cluster.registered);
    let mut args = vec!["account", "disable", "kim@example.com"];
    args.extend(bus.iter().map(String::as_str));
    let ran = crate::support::process::cli_run(&args, &elsewhere.path).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    assert_eq!(close_code(&mut phone, "the disabled account's device stayed open").await, Some(4401));
    stream.wait_for(&cluster.uid, "offline").await;
    let me = reqwest::Client::new()
        .get(format!("{}/v1/me", cluster.base(1)))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 401);
}
