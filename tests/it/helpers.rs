//! `spawn_app()` runs the real server in this process on a fresh database; `spawn_process()`
//! runs the real binary, for tests that kill it.
//!
//! The database is SQLite in the data directory, or, when `TEST_DATABASE_URL` names a PostgreSQL
//! database, a schema of its own in it per data directory: the same tests run on both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use presence::cli::client::DeviceClient;
use presence::config::Config;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub state: presence::ops::Core,
    /// Every bus signal since the server started (subscribed before it ran).
    pub signals: tokio::sync::Mutex<tokio::sync::broadcast::Receiver<presence::bus::Signal>>,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

/// Options for a test server: any setting of `presence.sample.toml`.
#[derive(Default)]
pub struct Builder {
    settings: Vec<(&'static str, String)>,
    dir: Option<PathBuf>,
}

impl Builder {
    pub fn set(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.settings.push((key, value.into()));
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
        let config = Config::load(None, std::iter::empty(), settings).expect("test configuration is valid");
        let app = presence::app::build(config).await.expect("the server starts");
        let addr = app.local_addr();
        let state = app.parts().core.clone();
        let signals = tokio::sync::Mutex::new(state.bus.subscribe());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        TestApp {
            addr,
            state,
            signals,
            http: reqwest::Client::new(),
            shutdown,
            server,
            dir,
            _tempdir: tempdir,
        }
    }
}

pub fn builder() -> Builder {
    Builder::default()
}

pub async fn spawn_app() -> TestApp {
    builder().spawn().await
}

/// The HTTP status and body of a response.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not json: {}", self.body))
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    Reply { status, body: response.text().await.unwrap() }
}

/// `PUT <endpoint>` with a form body and no Content-Type, as many AppServers send it.
pub async fn put(http: &reqwest::Client, endpoint: &str, body: &str) -> Reply {
    reply(http.put(endpoint).body(body.to_owned()).send().await.unwrap()).await
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
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

    /// Stops the server as SIGTERM would and waits for it; the data stays for a restart.
    pub async fn stop(self) -> DataDir {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        DataDir { path: self.dir, _keep: self._tempdir }
    }
}

/// A data directory that outlives the server that used it.
pub struct DataDir {
    pub path: PathBuf,
    _keep: Option<tempfile::TempDir>,
}

impl DataDir {
    pub fn new() -> DataDir {
        let tempdir = tempfile::tempdir().unwrap();
        DataDir { path: tempdir.path().to_owned(), _keep: Some(tempdir) }
    }

    /// Everything the database holds (SQLite: the file and its write-ahead log; PostgreSQL:
    /// every row of the schema as text), to search for what must never be stored in clear.
    pub async fn database_bytes(&self) -> Vec<u8> {
        let Some(url) = database_url(&self.path).await else {
            return ["presence.db", "presence.db-wal"]
                .iter()
                .filter_map(|file| std::fs::read(self.path.join(file)).ok())
                .flatten()
                .collect();
        };
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut bytes = Vec::new();
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            bytes.extend(rows.concat().into_bytes());
        }
        bytes
    }
}

/// Connections each test server keeps to PostgreSQL at most: tests run in parallel, and the
/// server's `max_connections` (100 by default) must hold them all.
const POOL: u32 = 4;

/// The PostgreSQL database the tests run on, if this is the PostgreSQL run.
fn postgres() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty())
}

/// The database URL for a data directory, or `None` for the default (SQLite inside it). On the
/// PostgreSQL run, the directory's schema is made on first use and named in `<dir>/schema`.
/// Schemas of runs older than a few hours are dropped then, so repeated runs do not pile up.
pub async fn database_url(dir: &Path) -> Option<String> {
    let base = postgres()?;
    let marker = dir.join("schema");
    let schema = match std::fs::read_to_string(&marker) {
        Ok(schema) => schema,
        Err(_) => {
            use sqlx::Connection as _;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let schema = format!("t{now}_{}", hex::encode(rand::random::<[u8; 6]>()));
            let mut conn = sqlx::PgConnection::connect(&base).await.expect("TEST_DATABASE_URL is reachable");
            let old: Vec<String> =
                sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t[0-9]+_'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for name in old {
                let born = name[1..].split('_').next().and_then(|t| t.parse::<u64>().ok()).unwrap_or(now);
                if born + 3 * 3600 < now {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            }
            sqlx::query(&format!("CREATE SCHEMA \"{schema}\"")).execute(&mut conn).await.unwrap();
            std::fs::write(&marker, &schema).unwrap();
            schema
        }
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options=-c%20search_path%3D{schema}"))
}

/// `--data-dir <dir>`, and the database URL that goes with it on the PostgreSQL run.
pub async fn store_flags(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut flags = vec!["--data-dir".into(), dir.as_os_str().to_owned()];
    if let Some(url) = database_url(dir).await {
        flags.extend([
            "--database-url".into(),
            url.into(),
            "--postgres-max-connections".into(),
            POOL.to_string().into(),
        ]);
    }
    flags
}

/// Runs a `presence` command on a data directory with `stdin` as its input; returns its output.
pub async fn cli(args: &[&str], dir: &Path, stdin: &str) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut child = presence_command()
        .args(args)
        .args(store_flags(dir).await)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "presence {args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// A signed-in user of a test server.
pub struct User {
    pub token: String,
    pub account: presence::domain::AccountId,
}

/// A registered presence device.
pub struct Device {
    pub device_id: String,
    pub prid: String,
}

/// The password of every test account.
pub const PASSWORD: &str = "password123";

/// Signs in to the server at `base` (`http://host:port`) and returns the bearer token.
pub async fn sign_in(base: &str, email: &str) -> String {
    let reply = reply(
        reqwest::Client::new()
            .post(format!("{base}/v1/tokens"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()["token"].as_str().unwrap().to_owned()
}

impl TestApp {
    /// Creates a local account as `presence account add` does, and signs in.
    pub async fn user(&self, email: &str) -> User {
        let hash = presence::secrets::hash_password(PASSWORD);
        let account =
            self.state.store.create_local_account(email, &hash, 0).await.unwrap().expect("a new email");
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
        let reply = self
            .send_as(
                reqwest::Method::POST,
                &user.token,
                "/v1/devices",
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let body = reply.json();
        Device {
            device_id: body["device_id"].as_str().unwrap().to_owned(),
            prid: body["prid"].as_str().unwrap().to_owned(),
        }
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
        let me = self.get_as(&user.token, "/v1/me").await;
        assert_eq!(me.status, 200, "{}", me.body);
        me.json()["status"].as_str().unwrap().to_owned()
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
    pub async fn changes_of(&self, account: presence::domain::AccountId) -> Vec<&'static str> {
        let mut signals = self.signals.lock().await;
        let mut changes = Vec::new();
        while let Ok(signal) = signals.try_recv() {
            #[allow(irrefutable_let_patterns)]
            if let presence::bus::Signal::Presence(change) = signal {
                if change.account == account {
                    changes.push(change.status.name());
                }
            }
        }
        changes
    }
}

pub fn channel_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The real binary, running on a data dir; killed with SIGKILL when dropped.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: std::net::SocketAddr,
}

/// The real binary, with no `PRESENCE_*` variable inherited from the test's environment.
pub fn presence_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PRESENCE_")) {
        command.env_remove(name);
    }
    command
}

pub async fn spawn_process(dir: &Path, extra: &[&str]) -> ServerProcess {
    let mut child = presence_command()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(store_flags(dir).await)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the server prints its address")
        .unwrap()
        .expect("a line on stdout");
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    ServerProcess { child, addr }
}

impl ServerProcess {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub async fn kill9(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Registers a device for the token's account on the server at `base`: `{device_id, prid}`.
pub async fn add_device_at(base: &str, token: &str, name: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/devices"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}
