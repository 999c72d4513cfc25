//! Two `presence serve` processes sharing PostgreSQL and a NATS server of the test's own: every
//! path that crosses nodes, a node killed with SIGKILL, and the bus killed and restarted. These
//! need PostgreSQL, so they run on the PostgreSQL run (`TEST_DATABASE_URL`) and say so otherwise.

use std::time::Duration;

use presence::cli::client::{ClientError, DeviceClient, Received};
use serde_json::json;
use tokio::time::Instant;

use crate::consent::{consent, exchange_at, Browser, RegisteredApp};
use crate::delivery::StreamClient;
use crate::helpers::{spawn_process, DataDir, ServerProcess};
use crate::receiver::{Answer, Receiver};

/// The node lease the tests run with: a dead node's devices must be offline within twice this.
const LEASE: Duration = Duration::from_secs(3);

/// A NATS server on a free loopback port, killed when dropped.
struct Nats {
    child: tokio::process::Child,
    port: u16,
}

impl Nats {
    async fn start_on(port: u16) -> Nats {
        let child = tokio::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is installed (Debian package nats-server)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Nats { child, port };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start on port {port}");
    }

    async fn start() -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Nats::start_on(port).await
    }

    async fn kill(mut self) -> u16 {
        self.child.kill().await.unwrap();
        self.port
    }
}

/// Two nodes, an app with a webhook and a stream, and a user who granted it access.
struct Cluster {
    data: DataDir,
    nats: Option<Nats>,
    nodes: Vec<Option<ServerProcess>>,
    registered: RegisteredApp,
    receiver: Receiver,
    uid: String,
    prid: String,
    device_id: String,
    /// The user's bearer token.
    token: String,
}

impl Cluster {
    /// `None` (and a note) on the SQLite run: a cluster needs PostgreSQL.
    async fn start() -> Option<Cluster> {
        if std::env::var("TEST_DATABASE_URL").map_or(true, |url| url.is_empty()) {
            eprintln!("cluster tests run on the PostgreSQL run only (set TEST_DATABASE_URL)");
            return None;
        }
        let data = DataDir::new();
        let nats = Nats::start().await;
        let receiver = Receiver::start().await;
        let registered = crate::consent::chat_app_by_cli(&data.path, &receiver.url).await;
        let mut cluster = Cluster {
            data,
            nats: Some(nats),
            nodes: Vec::new(),
            registered,
            receiver,
            uid: String::new(),
            prid: String::new(),
            device_id: String::new(),
            token: String::new(),
        };
        for _ in 0..2 {
            let node = cluster.spawn_node().await;
            cluster.nodes.push(Some(node));
        }
        let base = cluster.base(0);
        let mut browser = Browser::at(&base);
        browser.sign_in("kim@example.com").await;
        let code = consent(&mut browser, &cluster.registered.app_id, None).await;
        let exchanged = exchange_at(&base, &cluster.registered, json!({"code": code})).await.json();
        cluster.uid = exchanged["uid"].as_str().unwrap().to_owned();
        let token = crate::helpers::sign_in(&base, "kim@example.com").await;
        let device = crate::helpers::add_device_at(&base, &token, "phone").await;
        cluster.prid = device["prid"].as_str().unwrap().to_owned();
        cluster.device_id = device["device_id"].as_str().unwrap().to_owned();
        cluster.token = token;
        Some(cluster)
    }

    async fn spawn_node(&self) -> ServerProcess {
        let port = self.nats.as_ref().map_or(0, |nats| nats.port);
        let bus = format!("nats://127.0.0.1:{port}");
        let subject = format!("presence.test.{}", self.registered.app_id);
        let lease = format!("{}s", LEASE.as_secs());
        let flags = [
            "--bus-url",
            &bus,
            "--bus-subject",
            &subject,
            "--node-lease",
            &lease,
            "--presence-grace",
            "0s",
            "--status-min-interval",
            "0s",
            "--stream-heartbeat",
            "1s",
            "--webhook-batch-interval",
            "1s",
            "--webhook-allow",
            "127.0.0.0/8",
        ];
        spawn_process(&self.data.path, &flags).await
    }

    fn node(&self, index: usize) -> &ServerProcess {
        self.nodes[index].as_ref().expect("the node runs")
    }

    fn base(&self, index: usize) -> String {
        format!("http://{}", self.node(index).addr)
    }

    /// The user's phone, connected to node `index`, reporting `status`.
    async fn phone_on(&self, index: usize, uaid: Option<&str>, status: &str) -> (DeviceClient, String) {
        let mut phone = DeviceClient::connect(&self.node(index).ws_url()).await.unwrap();
        let hello = phone.hello_presence(uaid, &self.prid).await.unwrap();
        assert_eq!(hello["status"], 200);
        assert_eq!(phone.status(status).await.unwrap()["status"], 200);
        (phone, hello["uaid"].as_str().unwrap().to_owned())
    }

    async fn stream_on(&self, index: usize) -> StreamClient {
        let (status, stream, body) =
            StreamClient::open_at(&self.base(index), &self.registered, "", &[]).await;
        assert_eq!(status, 200, "{body}");
        stream.unwrap()
    }

    async fn notify_at(&self, index: usize, title: &str) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/v1/apps/{}/notifications", self.base(index), self.registered.app_id))
            .basic_auth(&self.registered.app_id, Some(&self.registered.secret))
            .json(&json!({"uid": self.uid, "title": title, "ttl": 600}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (up to 10 s) for node `index`'s `/healthz` to report the bus as `bus`; the node
    /// answers 200 either way, since it serves without the bus.
    async fn health_says(&self, index: usize, bus: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = reqwest::get(format!("{}/healthz", self.base(index))).await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let health: serde_json::Value = response.json().await.unwrap();
            if health["bus"] == bus {
                return;
            }
            assert!(Instant::now() < deadline, "the bus never became {bus}: {health}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A figure from node `index`'s `/metrics`.
    async fn metric(&self, index: usize, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base(index))).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// Waits for the webhook to say that the user's latest status is `status`.
    async fn webhook_says(&self, status: &str, within: Duration) {
        let uid = self.uid.clone();
        let status = status.to_owned();
        self.receiver
            .wait_until(within, move |hits| {
                let delivered: Vec<_> = hits.iter().filter(|h| h.answered == 200).cloned().collect();
                Receiver::last_status_of(&delivered, &uid).as_deref() == Some(status.as_str())
            })
            .await;
    }
}

/// Reads the stream until the user's status is `status` (fails after 20 s).
async fn stream_says(stream: &mut StreamClient, uid: &str, status: &str) {
    let read = async {
        loop {
            let entries = stream.entries().await;
            if entries.iter().rev().find(|(u, _, _)| u == uid).is_some_and(|(_, s, _)| s == status) {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), read).await.is_err() {
        panic!("the stream never said {uid} is {status}");
    }
}

/// Waits for the server to close the connection; returns the close code (`expect` says what
/// failed when it does not close).
async fn close_code(client: &mut DeviceClient, expect: &str) -> Option<u16> {
    loop {
        match client.recv().await {
            Ok(Received::Closed { code, .. }) | Err(ClientError::Closed { code, .. }) => return code,
            Ok(Received::Message(_)) => continue,
            Err(error) => panic!("{expect}: {error}"),
        }
    }
}

/// The same endpoint, as the other node serves it.
fn endpoint_on(endpoint: &str, base: &str) -> String {
    let path = &endpoint[endpoint.find("/update/").expect("an update endpoint")..];
    format!("{base}{path}")
}

#[tokio::test]
async fn statuses_pushes_and_notifications_cross_nodes() {
    let Some(cluster) = Cluster::start().await else { return };
    cluster.receiver.answer_always(Answer::status(200));
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    // A status reported on node 0 reaches the stream on node 1, and the webhook.
    stream_says(&mut stream, &cluster.uid, "online").await;
    cluster.webhook_says("online", Duration::from_secs(10)).await;
    assert_eq!(phone.status("A").await.unwrap()["status"], 200);
    stream_says(&mut stream, &cluster.uid, "away").await;

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
async fn the_same_uaid_on_another_node_closes_the_older_socket() {
    let Some(cluster) = Cluster::start().await else { return };
    let (mut first, uaid) = cluster.phone_on(0, None, "O").await;
    let (mut second, again) = cluster.phone_on(1, Some(&uaid), "O").await;
    assert_eq!(again, uaid, "the UAID is known to every node");
    let closed = close_code(&mut first, "the older socket stayed open").await;
    assert_eq!(closed, Some(1000), "replaced by a newer connection");
    // The old node's goodbye does not make the user offline: the device lives on node 1.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut stream = cluster.stream_on(0).await;
    assert_eq!(second.status("A").await.unwrap()["status"], 200);
    stream_says(&mut stream, &cluster.uid, "away").await;
}

#[tokio::test]
async fn a_killed_node_leaves_no_ghost_and_its_webhooks_move_on() {
    let Some(mut cluster) = Cluster::start().await else { return };
    cluster.receiver.answer_always(Answer::status(200));
    let mut stream = cluster.stream_on(1).await;
    let (_phone, _) = cluster.phone_on(0, None, "O").await;
    stream_says(&mut stream, &cluster.uid, "online").await;
    cluster.webhook_says("online", Duration::from_secs(10)).await;

    let killed_at = Instant::now();
    cluster.nodes[0].take().unwrap().kill9().await;
    stream_says(&mut stream, &cluster.uid, "offline").await;
    let seen_after = killed_at.elapsed();
    assert!(seen_after <= 2 * LEASE, "offline seen {seen_after:?} after the kill; the lease is {LEASE:?}");
    // Whichever node sent the app's webhooks, the survivor sends them now.
    cluster.webhook_says("offline", Duration::from_secs(15)).await;
}

#[tokio::test]
async fn with_the_bus_down_delivery_goes_through_the_store_and_nothing_is_lost() {
    let Some(mut cluster) = Cluster::start().await else { return };
    cluster.receiver.answer_always(Answer::status(200));
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    stream_says(&mut stream, &cluster.uid, "online").await;
    let channel = "0d9bd0f6-7a1f-4e6f-8c39-1d2a3b4c5d6e";
    let endpoint = endpoint_on(&phone.register(channel).await.unwrap(), &cluster.base(1));

    let port = cluster.nats.take().unwrap().kill().await;
    cluster.health_says(1, "unavailable").await;
    assert_eq!(cluster.metric(1, "presence_bus_connected").await, 0.0);
    // Status: the stream on node 1 reads it from the log at its next heartbeat.
    assert_eq!(phone.status("A").await.unwrap()["status"], 200);
    stream_says(&mut stream, &cluster.uid, "away").await;
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
    stream_says(&mut stream, &cluster.uid, "online").await;
    cluster.webhook_says("online", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn one_node_at_a_time_sends_an_apps_webhooks() {
    let Some(cluster) = Cluster::start().await else { return };
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
async fn a_node_that_lost_its_lease_closes_its_devices_so_they_come_back() {
    let Some(cluster) = Cluster::start().await else { return };
    let mut stream = cluster.stream_on(1).await;
    let (mut phone, uaid) = cluster.phone_on(0, None, "O").await;
    stream_says(&mut stream, &cluster.uid, "online").await;
    // What the other nodes do to a node whose lease ran out (say, it could not reach the
    // database for longer than the lease): its lease ends and its devices go offline.
    {
        use sqlx::Connection as _;
        let url = crate::helpers::database_url(&cluster.data.path).await.unwrap();
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        let node: String = sqlx::query_scalar("SELECT node_id FROM uaids WHERE uaid = $1")
            .bind(uaid.replace('-', ""))
            .fetch_one(&mut db)
            .await
            .unwrap();
        sqlx::query("DELETE FROM nodes WHERE id = $1").bind(&node).execute(&mut db).await.unwrap();
    }
    // At its next renewal the node finds out and closes the connection with "going away".
    let closed = close_code(&mut phone, "the device was not told to reconnect").await;
    assert_eq!(closed, Some(1001));
    assert_eq!(cluster.metric(0, "presence_leases_lost_total").await, 1.0);
    stream_says(&mut stream, &cluster.uid, "offline").await;
    // Reconnecting (to any node) makes the user seen again.
    let (_phone, _) = cluster.phone_on(0, Some(&uaid), "O").await;
    stream_says(&mut stream, &cluster.uid, "online").await;
}

#[tokio::test]
async fn a_newer_stream_on_another_node_replaces_the_older() {
    let Some(cluster) = Cluster::start().await else { return };
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
async fn concurrent_changes_on_two_nodes_leave_the_app_with_the_true_status() {
    let Some(cluster) = Cluster::start().await else { return };
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    let token = crate::helpers::sign_in(&cluster.base(1), "kim@example.com").await;
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

#[tokio::test]
async fn removing_a_device_on_one_node_closes_its_socket_on_another() {
    let Some(cluster) = Cluster::start().await else { return };
    let (mut phone, _) = cluster.phone_on(0, None, "O").await;
    let removed = reqwest::Client::new()
        .delete(format!("{}/v1/devices/{}", cluster.base(1), cluster.device_id))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    let closed = close_code(&mut phone, "the removed device's socket stayed open").await;
    assert_eq!(closed, Some(4401));
}
