//! `spawn_app()` runs the real server in this process on a fresh database; `builder()` sets it up
//! first. `TestApp` speaks to it as devices, users and the bus see it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::data::{count_rows, database_url, DataDir, POOL};
use super::http::{
    metric_in, put, register_device_at, reply, sign_in, status_at, Device, Reply, User, PASSWORD,
};
use super::service::{self, AccountId, Core, DeviceClient, Lookup, Signals, Status};

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The admin listener, with `admin_listen` set.
    pub admin: Option<std::net::SocketAddr>,
    state: Core,
    /// Every bus signal since the server started (subscribed before it ran).
    signals: tokio::sync::Mutex<Signals>,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

/// Options for a test server: any setting of `presence.sample.toml`.
#[derive(Default)]
pub struct Builder {
    settings: Vec<(&'static str, String)>,
    dir: Option<PathBuf>,
    lookup: Option<Arc<dyn Lookup>>,
}

impl Builder {
    pub fn set(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.settings.push((key, value.into()));
        self
    }

    /// Resolve webhook hosts with this instead of the system resolver.
    pub fn resolver(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// Use this data directory (to restart on the same data).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let (dir, tempdir) = match self.dir {
            Some(dir) => (dir, None),
            None => {
                let tempdir = tempfile::tempdir().unwrap();
                (tempdir.path().to_owned(), Some(tempdir))
            }
        };
        let mut settings = vec![
            ("listen", "127.0.0.1:0".to_owned()),
            ("data_dir", dir.display().to_string()),
            ("hello_timeout", "2s".to_owned()),
            ("ping_min_interval", "1s".to_owned()),
            ("shutdown_grace", "3s".to_owned()),
        ];
        if let Some(url) = database_url(&dir).await {
            settings.push(("database_url", url));
            settings.push(("postgres_max_connections", POOL.to_string()));
        }
        settings.extend(self.settings);
        let shutdown = CancellationToken::new();
        let server = service::serve(settings, self.lookup, shutdown.clone()).await;
        TestApp {
            addr: server.addr,
            admin: server.admin,
            state: server.state,
            signals: tokio::sync::Mutex::new(server.signals),
            http: reqwest::Client::new(),
            shutdown,
            server: server.task,
            dir,
            _tempdir: tempdir,
        }
    }
}

pub fn builder() -> Builder {
    Builder::default()
}

/// A node that delivers at once: webhooks to loopback every second, no grace, no coalescing.
pub fn delivering() -> Builder {
    builder()
        .set("webhook_allow", "127.0.0.0/8")
        .set("webhook_batch_interval", "1s")
        .set("presence_grace", "0s")
        .set("status_min_interval", "0s")
}

pub async fn spawn_app() -> TestApp {
    builder().spawn().await
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The server's data directory (its database, on the SQLite run).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> DeviceClient {
        DeviceClient::connect(&self.ws_url()).await.expect("websocket connects")
    }

    /// A device that said hello: returns it with its UAID.
    pub async fn device(&self) -> (DeviceClient, String) {
        let mut device = self.connect().await;
        let uaid = device.hello(None, &[]).await.unwrap();
        (device, uaid)
    }

    pub async fn put(&self, endpoint: &str, body: &str) -> Reply {
        put(&self.http, endpoint, body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        reply(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// A figure from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_in(&self.get("/metrics").await.body, name)
    }

    /// How many rows a table of the server's database holds.
    pub async fn rows(&self, table: &str) -> i64 {
        count_rows(&self.dir, table).await
    }

    /// Stops the server as SIGTERM would and waits for it; the data stays for a restart.
    pub async fn stop(self) -> DataDir {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        DataDir::kept(self.dir, self._tempdir)
    }

    /// Creates a local account as `presence account add` does, and signs in.
    pub async fn user(&self, email: &str) -> User {
        let account = service::create_local_account(&self.state, email, PASSWORD).await;
        User { token: sign_in(&self.url(""), email).await, account }
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        reply(self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()).await
    }

    pub async fn send_as(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.unwrap()).await
    }

    pub async fn register_device(&self, user: &User, name: &str) -> Device {
        register_device_at(&self.url(""), &user.token, name).await
    }

    /// Connects and says hello with the device's PrID.
    pub async fn connect_device(&self, device: &Device) -> DeviceClient {
        let mut client = self.connect().await;
        let reply = client.hello_presence(None, &device.prid).await.unwrap();
        assert_eq!(reply["status"], 200, "{reply}");
        client
    }

    /// The user's status as `GET /v1/me` tells it.
    pub async fn status_of(&self, user: &User) -> String {
        status_at(&self.url(""), &user.token).await
    }

    /// Waits (up to 5 s) until the user's status is `expected`.
    pub async fn wait_for_status(&self, user: &User, expected: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.status_of(user).await;
            if status == expected {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "status stayed {status}, expected {expected}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The presence changes signalled for one account since the last call, oldest first
    /// (signals of other accounts are dropped).
    pub async fn changes_of(&self, account: AccountId) -> Vec<&'static str> {
        let mut signals = self.signals.lock().await;
        let mut changes = Vec::new();
        while let Ok(change) = signals.try_recv() {
            if change.account == account {
                changes.push(change.status.name());
            }
        }
        changes
    }

    /// Reports a device's status straight to the presence engine, bypassing its socket.
    pub async fn report(&self, device: &Device, status: Status) {
        service::report(&self.state, &device.device_id, status).await;
    }

    /// Re-enables an app's webhook as its owner does.
    pub async fn enable_webhook(&self, owner: &User, app_id: &str) {
        service::enable_webhook(&self.state, owner.account, app_id).await;
    }
}
