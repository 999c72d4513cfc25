//! `presence bench`: a load generator and the benchmark that reports what one node does.
//!
//! It seeds a database through the library (accounts, devices, grants to one app), then for
//! each run starts the real server binary on a copy of it and measures from outside: the
//! server's RSS and CPU time come from `/proc`, latencies from a device's status ping to a
//! stream consumer's receipt. N devices connect with `xpi`; a scheduler sends status changes at
//! an aggregate rate; one stream consumer and one webhook receiver listen like apps do.
//!
//! Figures are printed as the median of the runs with min and max. With `--database-url
//! postgres://…` the seed goes into a new schema of that database, and every run's server uses
//! it (a lone node on PostgreSQL) instead of a copy of a SQLite file.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::cli::client::DeviceClient;
use crate::config::Config;
use crate::ops::accounts;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Options {
    pub devices: usize,
    pub rate: u32,
    pub duration: Duration,
    /// How often the generator sends what is due.
    pub tick: Duration,
    pub runs: usize,
    pub drop: usize,
    /// Also look for the highest sustained rate (slower).
    pub ramp: bool,
    /// PostgreSQL instead of SQLite.
    pub database_url: Option<String>,
    /// Nodes; more than one form a cluster (devices on the first, the stream on the last).
    pub nodes: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    bytes_per_device: f64,
    cpu_us_per_change: f64,
    p50_ms: f64,
    p99_ms: f64,
    delivered_ratio: f64,
    drop_ms: f64,
    max_rate: f64,
    updates_per_post: f64,
}

/// What seeding made: the app and, per device, its PrID and the app's uid for its user.
struct Seed {
    dir: tempfile::TempDir,
    /// The PostgreSQL database (with its schema), or `None` for SQLite in `dir`.
    database_url: Option<String>,
    secret_key: String,
    app_id: String,
    app_secret: String,
    prids: Vec<String>,
    uids: Vec<String>,
}

fn bench_config(dir: &Path, secret_key: &str, database_url: Option<&str>) -> Result<Config, BoxError> {
    let mut flags = vec![
        ("data_dir", dir.display().to_string()),
        ("secret_key", secret_key.to_owned()),
        // The run's webhook receiver listens on loopback.
        ("webhook_allow", "127.0.0.0/8".to_owned()),
    ];
    flags.extend(database_url.map(|url| ("database_url", url.to_owned())));
    Ok(Config::load(None, std::iter::empty(), flags)?)
}

/// A new schema in the PostgreSQL database, and the URL that selects it.
async fn postgres_schema(url: &str) -> Result<String, BoxError> {
    use sqlx::Connection as _;
    let schema = format!("bench_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await?;
    println!("seeding PostgreSQL schema {schema}");
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}

async fn seed(devices: usize, database_url: Option<&str>) -> Result<Seed, BoxError> {
    use base64::Engine as _;
    let dir = tempfile::tempdir()?;
    let secret_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let database_url = match database_url {
        Some(url) => Some(postgres_schema(url).await?),
        None => None,
    };
    let config = bench_config(dir.path(), &secret_key, database_url.as_deref())?;
    // Seeded through the same operations as the API and the CLI; one password hash serves
    // every account (hashing thousands would take minutes).
    let listen = config.listen;
    let parts = crate::app::open(config, listen).await?;
    let core = &parts.core;
    let hash = accounts::hash_password(core, "bench password".into()).await?;
    let owner = accounts::sign_up(core, "owner@bench.example", &hash).await?;
    let redirect_uris = ["https://bench.example/cb".to_owned()];
    let app =
        crate::ops::apps::register_app(core, owner, "Bench", &redirect_uris, "", Default::default()).await?;
    let (mut prids, mut uids) = (Vec::with_capacity(devices), Vec::with_capacity(devices));
    for i in 0..devices {
        let account = accounts::sign_up(core, &format!("u{i}@bench.example"), &hash).await?;
        let device = crate::ops::devices::register(core, account, "bench", None).await?;
        let uid = crate::ops::grants::allow(core, account, &app.app_id).await?;
        prids.push(device.prid);
        uids.push(uid);
    }
    let (app_id, app_secret) = (app.app_id, app.secret);
    core.store.close().await;
    // SQLite checkpoints and removes the write-ahead log when its last connection closes, on
    // the connection's own thread: wait for that, so that runs copy one settled file.
    let wal = dir.path().join("presence.db-wal");
    for _ in 0..100 {
        if !wal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Seed { dir, database_url, secret_key, app_id, app_secret, prids, uids })
}

struct Server {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    _dir: tempfile::TempDir,
}

/// A NATS server on a free loopback port, for a cluster run; killed when dropped.
struct Nats {
    _child: tokio::process::Child,
    url: String,
}

async fn start_nats() -> Result<Nats, BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = tokio::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start nats-server (Debian package nats-server): {error}"))?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(Nats { _child: child, url: format!("nats://127.0.0.1:{port}") });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("nats-server did not start".into())
}

/// Stops a node as an operator would (SIGTERM), so that a cluster node ends its lease and the
/// next run does not find its devices online.
async fn stop(server: &mut Server) {
    let _ = tokio::process::Command::new("kill").args(["-TERM", &server.pid.to_string()]).status().await;
    if tokio::time::timeout(Duration::from_secs(15), server.child.wait()).await.is_err() {
        let _ = server.child.kill().await;
    }
}

async fn start_server(seed: &Seed, webhook: &str, bus: Option<&str>) -> Result<Server, BoxError> {
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(seed.dir.path())? {
        let entry = entry?;
        // SQLite removes its -wal and -shm files when the last connection closes, which may
        // happen between listing and copying.
        match std::fs::copy(entry.path(), dir.path().join(entry.file_name())) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            copied => {
                copied?;
            }
        }
    }
    // Point the app's webhook at this run's receiver.
    let config = bench_config(dir.path(), &seed.secret_key, seed.database_url.as_deref())?;
    let listen = config.listen;
    let parts = crate::app::open(config, listen).await?;
    let core = &parts.core;
    let owner = core.store.app(&seed.app_id).await?.ok_or("app")?.owner;
    crate::ops::apps::update(core, owner, &seed.app_id, None, None, Some(Some(webhook)), None).await?;
    core.store.close().await;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--secret-key", &seed.secret_key])
        .args(seed.database_url.iter().flat_map(|url| ["--database-url", url.as_str()]))
        .args(bus.iter().flat_map(|url| ["--bus-url", *url, "--bus-subject", "presence.bench"]))
        .args(["--presence-grace", "0s", "--status-min-interval", "0s", "--hello-timeout", "60s"])
        // Every device, the stream consumer and the bench's own requests fit under the cap.
        .args(["--max-connections", &(seed.prids.len() + 1000).to_string()])
        .args(["--webhook-allow", "127.0.0.0/8", "--webhook-batch-interval", "1s", "--stream-buffer", "4096"])
        // The server logs warnings only, unless `BENCH_SERVER_LOG` asks for more (a
        // `RUST_LOG` filter, e.g. `sqlx::query=debug` to see the statements a run costs).
        .env("RUST_LOG", std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()))
        // The server's runtime workers: tokio's own variable, set for the server alone so
        // the load generator keeps its own (`BENCH_SERVER_WORKERS=1` measures one worker).
        .env_remove("TOKIO_WORKER_THREADS")
        .envs(std::env::var("BENCH_SERVER_WORKERS").ok().map(|n| ("TOKIO_WORKER_THREADS", n)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).lines().next_line())
        .await??
        .ok_or("the server printed nothing")?;
    let base = line.rsplit(' ').next().ok_or("no address")?.to_owned();
    Ok(Server { child, pid, base, _dir: dir })
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kb * 1024)
}

/// User + system CPU time of a process, in microseconds (from clock ticks of 10 ms).
fn cpu_us(pid: u32) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or("bad stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks * 10_000)
}

/// What the stream consumer saw: each entry with the time it arrived.
type Seen = Arc<Mutex<Vec<(usize, String, Instant)>>>;

/// The app's stream consumer: records every entry with its arrival time.
async fn consume(
    url: String,
    app_id: String,
    secret: String,
    index: HashMap<String, usize>,
    seen: Seen,
) -> Result<(), BoxError> {
    let response = reqwest::Client::new().get(url).basic_auth(&app_id, Some(&secret)).send().await?;
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let now = Instant::now();
            match serde_json::from_slice::<Vec<(String, String, u64)>>(&line) {
                Ok(entries) => {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for (uid, status, _) in entries {
                        if let Some(i) = index.get(&uid) {
                            seen.push((*i, status, now));
                        }
                    }
                }
                // The server's closing line says why the stream ended.
                Err(_) => eprintln!("the stream ended: {}", String::from_utf8_lossy(&line).trim_end()),
            }
        }
    }
    Ok(())
}

/// A webhook receiver counting pairs per POST.
async fn receiver() -> Result<(String, Arc<Mutex<Vec<usize>>>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let posts: Arc<Mutex<Vec<usize>>> = Arc::default();
    let counted = posts.clone();
    let router = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let counted = counted.clone();
        async move {
            let pairs = serde_json::from_slice::<Vec<(String, String)>>(&body).map_or(0, |p| p.len());
            counted.lock().unwrap_or_else(|e| e.into_inner()).push(pairs);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, posts))
}

/// A connected device: statuses to send go in, the task sends them and drains replies.
struct Devices {
    senders: Vec<mpsc::Sender<&'static str>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn connect_all(base: &str, seed: &Seed) -> Result<Devices, BoxError> {
    let ws = format!("{}/", base.replacen("http://", "ws://", 1));
    let gate = Arc::new(Semaphore::new(200));
    let ready = Arc::new(AtomicUsize::new(0));
    let (mut senders, mut tasks) = (Vec::new(), Vec::new());
    for prid in &seed.prids {
        let (tx, mut rx) = mpsc::channel::<&'static str>(4);
        let (ws, prid, gate, ready) = (ws.clone(), prid.clone(), gate.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let Ok(mut device) = DeviceClient::connect(&ws).await else { return };
            if device.hello_presence(None, &prid).await.is_err() {
                return;
            }
            drop(permit);
            ready.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    status = rx.recv() => match status {
                        Some(status) => {
                            if device.send_json(&json!({"messageType": "ping", "xps": status})).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    received = device.recv_within(Duration::from_secs(3600)) => if received.is_err() { return },
                }
            }
        }));
        senders.push(tx);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Relaxed) < seed.prids.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} devices connected",
                ready.load(Ordering::Relaxed),
                seed.prids.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Devices { senders, tasks })
}

/// Each device's sends not yet matched by the stream, oldest first.
type Sends = Vec<VecDeque<(Instant, &'static str)>>;

/// Sends `rate` status changes per second for `duration`, what is due at each tick (`every`)
/// at once, round-robin over the devices, each alternating online and away. Returns how many
/// were sent; each send is queued in `sends`.
async fn drive(
    devices: &Devices,
    rate: u32,
    duration: Duration,
    every: Duration,
    last: &mut [Option<bool>],
    sends: &mut Sends,
    cursor: &mut usize,
) -> usize {
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as usize;
        while sent < due {
            let i = *cursor % devices.senders.len();
            *cursor += 1;
            let online = last[i] != Some(true);
            let status = if online { "O" } else { "A" };
            // A device whose queue is full skips this turn: what it last sent stays in `last`.
            if devices.senders[i].try_send(status).is_ok() {
                last[i] = Some(online);
                sends[i].push_back((Instant::now(), if status == "O" { "online" } else { "away" }));
                sent += 1;
            }
        }
    }
    sent
}

/// Waits until the stream has received nothing new for a second (the backlog is drained), at
/// most a minute.
async fn quiet(seen: &Seen) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = usize::MAX;
    while Instant::now() < deadline {
        let now = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        if now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the servers are at rest (under a tenth of a core for half a second, at most 30
/// seconds): after the rate search the store is still catching up with what the fastest steps
/// wrote, and a drop measured meanwhile would time that instead of the drop.
async fn at_rest(cpu: impl Fn() -> Result<u64, BoxError>) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let before = cpu()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu()? - before < 50_000 {
            break;
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latencies (ms) of the entries seen since `from`: each entry is matched with its device's
/// oldest unmatched send of the same status (changes arrive in order per device).
fn latencies(seen: &[(usize, String, Instant)], from: usize, sends: &mut Sends) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, status, at) in &seen[from..] {
        while let Some((sent, expected)) = sends[*i].pop_front() {
            if status == expected {
                if *at >= sent {
                    out.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                }
                break;
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

async fn one_run(seed: &Seed, options: &Options) -> Result<Figures, BoxError> {
    let (webhook, posts) = receiver().await?;
    let nats = if options.nodes > 1 { Some(start_nats().await?) } else { None };
    let mut servers = Vec::with_capacity(options.nodes);
    for _ in 0..options.nodes {
        servers.push(start_server(seed, &webhook, nats.as_ref().map(|n| n.url.as_str())).await?);
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let cpu = || -> Result<u64, BoxError> { pids.iter().map(|pid| cpu_us(*pid)).sum() };
    let server = &servers[0];
    let seen: Seen = Arc::default();
    let index: HashMap<String, usize> = seed.uids.iter().enumerate().map(|(i, u)| (u.clone(), i)).collect();
    let url = format!("{}/{}/presence.json", servers[servers.len() - 1].base, seed.app_id);
    let consumer =
        tokio::spawn(consume(url, seed.app_id.clone(), seed.app_secret.clone(), index, seen.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut figures = Figures::default();
    let n = seed.prids.len();

    // Memory per idle, authenticated device.
    let before = rss(server.pid)?;
    let devices = connect_all(&server.base, seed).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(server.pid)?;
    figures.bytes_per_device = after.saturating_sub(before) as f64 / n as f64;

    // CPU per change and latency at the set rate. `last[i]`: whether device i last sent online
    // (`Some(true)`), away, or nothing yet (it is offline).
    let (mut last, mut sends, mut cursor): (Vec<Option<bool>>, Sends, usize) =
        (vec![None; n], vec![VecDeque::new(); n], 0);
    let from = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    let cpu_before = cpu()?;
    let sent =
        drive(&devices, options.rate, options.duration, options.tick, &mut last, &mut sends, &mut cursor)
            .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_after = cpu()?;
    let (received, lat) = {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        (seen.len() - from, latencies(&seen, from, &mut sends))
    };
    figures.cpu_us_per_change = (cpu_after - cpu_before) as f64 / received.max(1) as f64;
    figures.p50_ms = percentile(&lat, 0.50);
    figures.p99_ms = percentile(&lat, 0.99);
    figures.delivered_ratio = received as f64 / sent.max(1) as f64;

    // The highest rate the node sustains (≥ 95 % delivered, p99 under 1 s), and webhook batching.
    if options.ramp {
        // From well below the set rate, doubling while the node keeps up.
        let mut rate = 250;
        let posts_before = posts.lock().unwrap_or_else(|e| e.into_inner()).len();
        loop {
            quiet(&seen).await;
            sends.iter_mut().for_each(VecDeque::clear);
            let from = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
            let sent = drive(
                &devices,
                rate,
                Duration::from_secs(3),
                options.tick,
                &mut last,
                &mut sends,
                &mut cursor,
            )
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (received, lat) = {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                (seen.len() - from, latencies(&seen, from, &mut sends))
            };
            let p99 = percentile(&lat, 0.99);
            let sustained = received as f64 >= 0.95 * sent as f64 && p99 < 1000.0;
            eprintln!(
                "rate search: {rate}/s for 3 s: {received} of {sent} delivered, p99 {p99:.1} ms{}",
                if sustained { "" } else { ": not sustained" }
            );
            if !sustained || rate >= 256_000 {
                if sustained {
                    figures.max_rate = f64::from(rate);
                }
                break;
            }
            figures.max_rate = f64::from(rate);
            rate *= 2;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let posts = posts.lock().unwrap_or_else(|e| e.into_inner());
        let during = &posts[posts_before..];
        figures.updates_per_post = during.iter().sum::<usize>() as f64 / during.len().max(1) as f64;
    }

    // Drop many devices at once: how long until the stream shows them all offline.
    let dropping = options.drop.min(n);
    for (i, sender) in devices.senders.iter().enumerate().take(dropping) {
        if last[i].is_none() {
            // Never reported, so offline already: its drop would change nothing. Online first.
            if sender.send("O").await.is_ok() {
                last[i] = Some(true);
            }
        }
    }
    quiet(&seen).await;
    at_rest(&cpu).await?;
    let from = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    let started = Instant::now();
    for task in devices.tasks.iter().take(dropping) {
        task.abort();
    }
    let deadline = started + Duration::from_secs(120);
    loop {
        let offline = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            let mut gone = vec![false; dropping];
            for (i, status, _) in &seen[from..] {
                if *i < dropping && status == "offline" {
                    gone[*i] = true;
                }
            }
            gone.iter().filter(|g| **g).count()
        };
        if offline == dropping {
            figures.drop_ms = started.elapsed().as_secs_f64() * 1000.0;
            break;
        }
        if Instant::now() > deadline {
            eprintln!("drop: {offline} of {dropping} devices seen offline after {:?}", started.elapsed());
            figures.drop_ms = f64::NAN;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for task in &devices.tasks {
        task.abort();
    }
    consumer.abort();
    for server in &mut servers {
        stop(server).await;
    }
    Ok(figures)
}

fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (sorted[sorted.len() / 2], sorted[0], sorted[sorted.len() - 1])
}

pub async fn run(options: Options) -> Result<(), BoxError> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; figures are only meaningful from `cargo run --release -- bench`"
        );
    }
    println!(
        "seeding {} users with one device and one grant each (rate {}/s for {:?}, {} runs)…",
        options.devices, options.rate, options.duration, options.runs
    );
    let seed = seed(options.devices, options.database_url.as_deref()).await?;
    let mut runs = Vec::new();
    for run in 0..options.runs {
        let figures = one_run(&seed, &options).await?;
        println!("run {}: {figures:?}", run + 1);
        runs.push(figures);
    }
    let mut rows: Vec<(&str, Vec<f64>, &str)> = vec![
        ("memory per idle device (bytes)", runs.iter().map(|f| f.bytes_per_device).collect(), "≤ 8192"),
        ("server CPU per change (µs)", runs.iter().map(|f| f.cpu_us_per_change).collect(), "≤ 15"),
        ("ping → stream p50 (ms)", runs.iter().map(|f| f.p50_ms).collect(), ""),
        ("ping → stream p99 (ms)", runs.iter().map(|f| f.p99_ms).collect(), "≤ 5"),
        ("changes delivered to the stream (ratio)", runs.iter().map(|f| f.delivered_ratio).collect(), "1.0"),
        ("drop → all offline (ms)", runs.iter().map(|f| f.drop_ms).collect(), "≤ 1000"),
    ];
    if options.ramp {
        rows.push(("highest sustained rate (changes/s)", runs.iter().map(|f| f.max_rate).collect(), ""));
        rows.push(("webhook updates per POST", runs.iter().map(|f| f.updates_per_post).collect(), ""));
    }
    println!();
    println!(
        "devices {}, rate {}/s for {:?} (sent every {:?}), drop {}, runs {}",
        options.devices,
        options.rate,
        options.duration,
        options.tick,
        options.drop.min(options.devices),
        options.runs
    );
    println!("{:<42} {:>12} {:>12} {:>12}  bar", "figure", "median", "min", "max");
    for (name, values, bar) in rows {
        let (median, min, max) = summary(&values);
        println!("{name:<42} {median:>12.2} {min:>12.2} {max:>12.2}  {bar}");
    }
    Ok(())
}
