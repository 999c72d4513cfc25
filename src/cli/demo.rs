//! `presence demo`: Presence and an app using it, in one command. It starts a node on a
//! temporary SQLite directory, registers the seed's example app, appmaker
//! (`examples/appmaker/`, run here in-process but talking to Presence only over HTTP), creates
//! three users whose simulated devices change status every few seconds, and prints the URL to
//! open. appmaker follows its stream (`?format=v1`) and takes its webhooks (`webhook_format =
//! v1`, to its own `/webhook` on loopback, which this node's `webhook_allow` opens). Two of the users connected to appmaker beforehand; the browser connects the third,
//! through the real sign-in and consent pages.
//!
//! Everything it prints on stdout is one line starting with `demo:` or `device <name>`, for
//! people and scripts alike.

#[path = "../../examples/appmaker/presence_client.rs"]
mod presence_client;
#[path = "../../examples/appmaker/site.rs"]
mod site;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString as _};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::client::{ClientError, DeviceClient, Received};
use super::BoxError;
use crate::config::Config;
use crate::domain::{AccountId, EventFormat};
use crate::ops::{accounts, apps, devices, grants, Core};

/// `presence demo`'s flags.
#[derive(Clone, clap::Args)]
pub struct Options {
    /// Where Presence listens (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the example app, appmaker, listens (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub app_listen: SocketAddr,
}

/// A demo user and their one simulated device.
struct DemoUser {
    name: &'static str,
    email: &'static str,
    device: &'static str,
    /// Statuses the device cycles through, each held that long.
    schedule: &'static str,
}

/// The first one is the person at the browser; the others connected to appmaker earlier.
const USERS: [DemoUser; 3] = [
    DemoUser { name: "Bob", email: "bob@example.com", device: "bob-phone", schedule: "O:4s,A:4s" },
    DemoUser { name: "Sarah", email: "sarah@example.com", device: "sarah-laptop", schedule: "A:3s,O:5s" },
    DemoUser { name: "Carol", email: "carol@example.com", device: "carol-phone", schedule: "O:6s,U:3s" },
];

pub async fn run(options: Options) -> Result<(), BoxError> {
    init_logging();
    let dir = tempfile::tempdir()?;
    let app_listener = tokio::net::TcpListener::bind(options.app_listen)
        .await
        .map_err(|error| format!("cannot listen on {} for the app: {error}", options.app_listen))?;
    let app_addr = reachable(app_listener.local_addr()?);
    let app_url = format!("http://{app_addr}");
    // appmaker's webhook is on this machine: the node lets webhooks reach its address, and
    // sends them every second so that they keep up with the stream.
    let settings = [
        ("listen", options.listen.to_string()),
        ("data_dir", dir.path().display().to_string()),
        ("webhook_allow", app_addr.ip().to_string()),
        ("webhook_batch_interval", "1s".to_owned()),
    ];
    let config = Config::load(None, std::iter::empty(), settings)?;
    let presence = crate::app::build(config).await?;
    let presence_addr = reachable(presence.local_addr());
    let presence_url = format!("http://{presence_addr}");
    let core = presence.parts().core.clone();

    // The operator's side, done directly: accounts, the app's registration, the devices.
    let password = format!("demo-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 10));
    let mut people = Vec::new();
    for (index, user) in USERS.iter().enumerate() {
        let secret = if index == 0 {
            password.clone()
        } else {
            Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
        };
        let account = account(&core, user.email, secret).await?;
        let prid = devices::register(&core, account, user.device, None).await?.prid;
        people.push((user, account, prid));
    }
    let developer =
        account(&core, "developer@example.com", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
            .await?;
    let redirect_uris = [format!("{app_url}/callback")];
    let webhook = format!("{app_url}/webhook");
    let registered =
        apps::register_app(&core, developer, "appmaker", &redirect_uris, &webhook, EventFormat::V1).await?;

    let shutdown = CancellationToken::new();
    tokio::spawn(super::signal_shutdown(shutdown.clone()));
    let server = tokio::spawn(presence.run(shutdown.clone()));
    let site_settings = site::Settings {
        presence: presence_client::Presence::new(&presence_url, &registered.app_id, &registered.secret),
        public_url: app_url.clone(),
        welcome: Some(format!(
            "This is a demo: its Presence has an account for you. When Presence asks, sign in as {} \
             with the password {password}. Sarah and Carol connected earlier.",
            USERS[0].email
        )),
        default_name: USERS[0].name.to_owned(),
        webhook_secret: Some(registered.webhook_secret.clone()),
    };
    let site = tokio::spawn(site::serve(app_listener, site_settings, shutdown.clone().cancelled_owned()));

    let ws_url = format!("ws://{presence_addr}/");
    let mut devices = Vec::new();
    for (index, (user, account, prid)) in people.iter().enumerate() {
        let schedule = super::simulator::parse_schedule(user.schedule).unwrap_or_default();
        devices.push(tokio::spawn(device(
            ws_url.clone(),
            user.device,
            prid.clone(),
            schedule,
            shutdown.clone(),
        )));
        if index > 0 {
            connected_earlier(&core, &app_url, *account, user.name, &registered.app_id).await?;
        }
    }

    println!("demo: presence {presence_url}");
    println!("demo: app appmaker {app_url} (app_id {})", registered.app_id);
    println!("demo: sign in to Presence as {} with password {password}", USERS[0].email);
    println!("demo: open {app_url}/");
    println!("demo: stop with Ctrl-C");

    let served = server.await;
    let _ = site.await;
    for device in devices {
        let _ = device.await;
    }
    served??;
    println!("demo: stopped");
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The address browsers and devices use: a wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

async fn account(core: &Core, email: &str, password: String) -> Result<AccountId, BoxError> {
    let hash = accounts::hash_password(core, password).await?;
    Ok(accounts::sign_up(core, email, &hash).await?)
}

/// A user who connected to appmaker before the demo started: appmaker's own `/connect` and
/// `/callback` run as for the browser; only the consent page's Allow is given here, directly.
async fn connected_earlier(
    core: &Core,
    app_url: &str,
    account: AccountId,
    name: &str,
    app_id: &str,
) -> Result<(), BoxError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let to_consent = http.get(format!("{app_url}/connect")).query(&[("name", name)]).send().await?;
    let consent = to_consent
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .and_then(|location| url::Url::parse(location).ok())
        .ok_or("appmaker did not redirect to the consent page")?;
    let asked = |key: &str| consent.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
    let (Some(redirect_uri), Some(state)) = (asked("redirect_uri"), asked("state")) else {
        return Err("appmaker's consent URL lacks redirect_uri or state".into());
    };
    grants::allow(core, account, app_id).await?;
    let code =
        grants::issue_code(core, account, app_id, &redirect_uri, asked("code_challenge").as_deref()).await?;
    let back =
        http.get(&redirect_uri).query(&[("code", code.as_str()), ("state", state.as_str())]).send().await?;
    if !back.status().is_redirection() {
        return Err(format!("appmaker did not take {name}'s consent: {}", back.status()).into());
    }
    Ok(())
}

fn word(status: &str) -> &'static str {
    match status {
        "O" => "online",
        "A" => "away",
        _ => "offline",
    }
}

/// One simulated device: connects, reports its schedule, shows and acks live notifications;
/// reconnects if the connection drops, until shutdown.
async fn device(
    ws_url: String,
    name: &'static str,
    prid: String,
    schedule: Vec<(String, Duration)>,
    shutdown: CancellationToken,
) {
    loop {
        let ended = connected_device(&ws_url, name, &prid, &schedule, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(error) = ended {
            println!("device {name} disconnected ({error}); reconnecting");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn connected_device(
    ws_url: &str,
    name: &str,
    prid: &str,
    schedule: &[(String, Duration)],
    shutdown: &CancellationToken,
) -> Result<(), ClientError> {
    let mut client = DeviceClient::connect(ws_url).await?;
    let reply = client.hello_presence(None, prid).await?;
    if reply["status"] != 200 {
        return Err(ClientError::Unexpected(reply.to_string()));
    }
    println!("device {name} connected");
    let mut step = 0usize;
    let mut next_change = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = client.close().await;
                return Ok(());
            }
            () = tokio::time::sleep_until(next_change), if !schedule.is_empty() => {
                let (status, hold) = &schedule[step % schedule.len()];
                step += 1;
                next_change += *hold;
                client.send_json(&json!({"messageType": "ping", "xps": status})).await?;
                println!("device {name} reports {}", word(status));
            }
            received = client.recv_within(Duration::from_secs(3600)) => match received? {
                Some(Received::Message(message)) => receive(&mut client, name, &message).await?,
                Some(Received::Closed { code, reason }) => return Err(ClientError::Closed { code, reason }),
                None => {}
            },
        }
    }
}

/// Prints and acks live notifications; a status report that was not recorded is said too.
async fn receive(client: &mut DeviceClient, name: &str, message: &Value) -> Result<(), ClientError> {
    if message["messageType"] == "ping" && message["status"] != 200 && !message["status"].is_null() {
        println!("device {name} status refused: {message}");
    }
    if message["messageType"] != "notification" {
        return Ok(());
    }
    let Some(live) = message["xpn"].as_array().filter(|n| !n.is_empty()) else { return Ok(()) };
    for notification in live {
        println!(
            "device {name} received notification {:?} from {}",
            notification["title"].as_str().unwrap_or(""),
            notification["app"].as_str().unwrap_or("?")
        );
    }
    let ids: Vec<&Value> = live.iter().map(|n| &n["id"]).collect();
    client.send_json(&json!({"messageType": "ack", "xpn": ids})).await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::RawQuery;
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;

    use super::presence_client::{verify_webhook, webhook_batch, Batch, Presence, WebhookRejected};

    /// A batch as the consumer handed it over: whether it was the snapshot, and its entries.
    type Seen = (bool, Vec<(String, String, u64)>);

    /// appmaker's stream consumer against a stand-in for Presence's stream: each connection's
    /// query is recorded; the answers are a snapshot, a change and a closing line, then a 410.
    #[tokio::test]
    async fn the_stream_consumer_resumes_after_the_last_seq_and_starts_again_from_a_snapshot_when_told() {
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorded = queries.clone();
        let router = axum::Router::new().route(
            "/app_1/presence.json",
            axum::routing::get(move |RawQuery(query): RawQuery| async move {
                let mut queries = recorded.lock().unwrap();
                queries.push(query.unwrap_or_default());
                match queries.len() {
                    1 => concat!(
                        r#"[{"uid":"u_a","status":"online","seq":5,"time":"2026-12-04T03:00:00Z"},"#,
                        r#"{"uid":"u_b","status":"away","seq":5,"time":"2026-12-04T03:00:00Z"}]"#,
                        "\n"
                    )
                    .into_response(),
                    2 => concat!(
                        "[]\n",
                        r#"[{"uid":"u_a","status":"away","seq":6,"time":"2026-12-04T03:00:01Z"}]"#,
                        "\n",
                        r#"{"error":"shutting_down","resume_since":7}"#,
                        "\n"
                    )
                    .into_response(),
                    3 => (StatusCode::GONE, "{\"code\":\"resync_required\",\"detail\":\"too old\"}")
                        .into_response(),
                    _ => "[]\n".into_response(),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });

        let batches: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen = batches.clone();
        let presence = Presence::new(&url, "app_1", "ps_secret");
        let follower = tokio::spawn(async move {
            presence
                .follow(|batch| {
                    let (snapshot, changes) = match batch {
                        Batch::Snapshot(changes) => (true, changes),
                        Batch::Changes(changes) => (false, changes),
                    };
                    let changes = changes.into_iter().map(|c| (c.uid, c.status, c.seq)).collect();
                    seen.lock().unwrap().push((snapshot, changes));
                })
                .await
        });
        for _ in 0..200 {
            if queries.lock().unwrap().len() >= 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        follower.abort();
        let queries = queries.lock().unwrap().clone();
        assert_eq!(
            queries[..4],
            ["format=v1&snapshot=true", "format=v1&since=5", "format=v1&since=7", "format=v1&snapshot=true"]
        );
        let batches = batches.lock().unwrap().clone();
        let entry = |uid: &str, status: &str, seq| (uid.to_owned(), status.to_owned(), seq);
        assert_eq!(
            batches[..2],
            [
                (true, vec![entry("u_a", "online", 5), entry("u_b", "away", 5)]),
                (false, vec![entry("u_a", "away", 6)])
            ]
        );
    }

    /// appmaker's webhook check against what Presence's dispatcher signs, and the
    /// specification's own example.
    #[test]
    fn appmaker_takes_a_webhook_signed_by_any_listed_signature_and_only_when_fresh() {
        let (secret, other) =
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2VjcmV0IGZvciBhcHBtYWtlciB0ZXN0cw==");
        let body = r#"{"test": 2432232314}"#;
        let (id, sent) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330);
        let signed = |secret: &str| crate::fanout::webhooks::sign(secret, id, sent, body).unwrap();
        let check = |signatures: &str, now: i64| {
            verify_webhook(secret, id, &sent.to_string(), signatures, body.as_bytes(), now)
        };
        assert_eq!(signed(secret), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(check(&signed(secret), sent), Ok(()));
        // During a rotation: both signatures, in either order.
        assert_eq!(check(&format!("{} {}", signed(other), signed(secret)), sent + 299), Ok(()));
        assert_eq!(check(&format!("{} {}", signed(secret), signed(other)), sent - 299), Ok(()));
        assert_eq!(check(&signed(other), sent), Err(WebhookRejected::BadSignature));
        assert_eq!(check(&signed(secret), sent + 301), Err(WebhookRejected::Stale));
        assert_eq!(check("", sent), Err(WebhookRejected::Malformed));
        let tampered = verify_webhook(secret, id, &sent.to_string(), &signed(secret), b"{}", sent);
        assert_eq!(tampered, Err(WebhookRejected::BadSignature));

        let envelope = r#"{"type":"presence.changed","timestamp":"2026-12-04T03:00:00Z",
            "data":{"events":[{"uid":"u_a","status":"away","seq":6,"time":"2026-12-04T03:00:00Z"}]}}"#;
        let Some(Batch::Changes(changes)) = webhook_batch(envelope.as_bytes()) else { panic!("changes") };
        assert_eq!((changes[0].uid.as_str(), changes[0].status.as_str(), changes[0].seq), ("u_a", "away", 6));
        assert!(webhook_batch(br#"[["u_a","away"]]"#).is_none());
    }
}
