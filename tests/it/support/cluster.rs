//! Clusters: a NATS server of the test's own, and two `presence serve` nodes sharing PostgreSQL
//! and that bus, with an app (webhook and stream) and a user who granted it access.
//!
//! A cluster needs PostgreSQL: `Cluster::start` panics on the SQLite run, so the tests that use
//! it are `#[ignore]`d there and run with `--include-ignored` on the PostgreSQL run.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::apps::{chat_app_by_cli, kim_grants_chat_and_adds_a_phone, notify_at, Kim, RegisteredApp};
use super::data::{postgres, DataDir};
use super::http::{metric_at, Device};
use super::process::{spawn_process, ServerProcess};
use super::receiver::Receiver;
use super::service::DeviceClient;
use super::stream::StreamClient;

/// The node lease the tests run with: a dead node's devices must be offline within twice this.
pub const LEASE: Duration = Duration::from_secs(3);

/// A NATS server on a free loopback port, killed when dropped.
pub struct Nats {
    child: tokio::process::Child,
    port: u16,
}

impl Nats {
    pub async fn start_on(port: u16) -> Nats {
        Nats::start_with(port, &[]).await
    }

    /// A server on `port` with these options too (`--auth TOKEN`, `--user U --pass P`, `--tls …`).
    pub async fn start_with(port: u16, options: &[&str]) -> Nats {
        let child = tokio::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(options)
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

    pub async fn start() -> Nats {
        Nats::start_on(free_port()).await
    }

    /// A server on a free port with these options too.
    pub async fn start_with_options(options: &[&str]) -> Nats {
        Nats::start_with(free_port(), options).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server; returns its port, to start another on the same address.
    pub async fn kill(mut self) -> u16 {
        self.child.kill().await.unwrap();
        self.port
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two nodes, an app with a webhook and a stream, and a user who granted it access.
pub struct Cluster {
    pub data: DataDir,
    pub nats: Option<Nats>,
    pub nodes: Vec<Option<ServerProcess>>,
    pub registered: RegisteredApp,
    pub receiver: Receiver,
    pub uid: String,
    /// The user's bearer token.
    pub token: String,
    /// The user's phone.
    pub device: Device,
}

impl Cluster {
    /// Panics on the SQLite run: a cluster needs PostgreSQL.
    pub async fn start() -> Cluster {
        assert!(
            postgres().is_some(),
            "the cluster tests need PostgreSQL and NATS: run them with \
             TEST_DATABASE_URL=postgres://… cargo test --test it -- --include-ignored"
        );
        let data = DataDir::new();
        let nats = Nats::start().await;
        let receiver = Receiver::start().await;
        let registered = chat_app_by_cli(&data.path, &receiver.url).await;
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(Some(spawn_node(&data, &nats, &registered).await));
        }
        let base = format!("http://{}", nodes[0].as_ref().unwrap().addr);
        let Kim { uid, token, phone } = kim_grants_chat_and_adds_a_phone(&base, &registered).await;
        Cluster { data, nats: Some(nats), nodes, registered, receiver, uid, token, device: phone }
    }

    pub fn node(&self, index: usize) -> &ServerProcess {
        self.nodes[index].as_ref().expect("the node runs")
    }

    pub fn base(&self, index: usize) -> String {
        self.node(index).base()
    }

    /// The user's phone, connected to node `index`, reporting `status`.
    pub async fn phone_on(&self, index: usize, uaid: Option<&str>, status: &str) -> (DeviceClient, String) {
        let mut phone = self.node(index).connect().await;
        let hello = phone.hello_presence(uaid, &self.device.prid).await.unwrap();
        assert_eq!(hello["status"], 200);
        assert_eq!(phone.status(status).await.unwrap()["status"], 200);
        (phone, hello["uaid"].as_str().unwrap().to_owned())
    }

    pub async fn stream_on(&self, index: usize) -> StreamClient {
        let (status, stream, body) =
            StreamClient::open_at(&self.base(index), &self.registered, "", &[]).await;
        assert_eq!(status, 200, "{body}");
        stream.unwrap()
    }

    pub async fn notify_at(&self, index: usize, title: &str) -> serde_json::Value {
        notify_at(&self.base(index), &self.registered, json!({"uid": self.uid, "title": title, "ttl": 600}))
            .await
            .json()
    }

    /// Waits (up to 10 s) for node `index`'s `/healthz` to report the bus as `bus`; the node
    /// answers 200 either way, since it serves without the bus.
    pub async fn health_says(&self, index: usize, bus: &str) {
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
    pub async fn metric(&self, index: usize, name: &str) -> f64 {
        metric_at(&self.base(index), name).await
    }

    /// Waits for the webhook to say that the user's latest status is `status`.
    pub async fn webhook_says(&self, status: &str, within: Duration) {
        let uid = self.uid.clone();
        let status = status.to_owned();
        self.receiver
            .wait_until(within, move |hits| {
                let delivered: Vec<_> = hits.iter().filter(|h| h.answered == 200).cloned().collect();
                Receiver::last_status_of(&delivered, &uid).as_deref() == Some(status.as_str())
            })
            .await;
    }

    /// The node that holds this UAID's connection, as the store names it.
    pub async fn node_of(&self, uaid: &str) -> String {
        let mut db = self.data.postgres().await;
        sqlx::query_scalar("SELECT node_id FROM uaids WHERE uaid = $1")
            .bind(uaid.replace('-', ""))
            .fetch_one(&mut db)
            .await
            .unwrap()
    }

    /// Ends a node's lease as the other nodes do to a node whose lease ran out.
    pub async fn end_lease(&self, node: &str) {
        let mut db = self.data.postgres().await;
        sqlx::query("DELETE FROM nodes WHERE id = $1").bind(node).execute(&mut db).await.unwrap();
    }
}

/// The bus flags of the cluster's nodes: its NATS server and the app's subject.
pub fn bus_flags(nats: &Nats, registered: &RegisteredApp) -> [String; 4] {
    [
        "--bus-url".to_owned(),
        format!("nats://127.0.0.1:{}", nats.port),
        "--bus-subject".to_owned(),
        format!("presence.test.{}", registered.app_id),
    ]
}

/// A node of the cluster on its data, its bus and the app's subject.
async fn spawn_node(data: &DataDir, nats: &Nats, registered: &RegisteredApp) -> ServerProcess {
    let bus = format!("nats://127.0.0.1:{}", nats.port);
    let subject = format!("presence.test.{}", registered.app_id);
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
    spawn_process(&data.path, &flags).await
}
