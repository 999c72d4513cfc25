//! The service crate as the tests see it. Every `presence::…` path the tests use is named here
//! and nowhere else, so that a move inside `src/` is fixed in this one file.

use std::net::SocketAddr;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use presence::cli::client::{ClientError, DeviceClient, Received};
pub use presence::domain::AccountId;
pub use presence::domain::Status;
pub use presence::ops::Core;

/// The current Unix time in seconds, by the service's clock.
pub fn now() -> i64 {
    presence::clock::unix_now()
}

/// Unix seconds as the RFC 3339 UTC time the service writes (`2026-12-04T03:52:10Z`).
pub fn rfc3339(unix: i64) -> String {
    presence::clock::rfc3339(unix)
}

/// A new random secret with this prefix, as the service makes them.
pub fn new_secret(prefix: &str) -> String {
    presence::secrets::new_secret(prefix)
}

/// The digest under which the service stores a secret.
pub fn digest(secret: &str) -> String {
    presence::secrets::digest(secret)
}

/// The presence changes a test server signals, as a subscriber receives them.
pub type Signals = broadcast::Receiver<presence::domain::PresenceChange>;

/// A server of the library, running in this process.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin listener, with `admin_listen` set.
    pub admin: Option<SocketAddr>,
    pub state: Core,
    /// Every presence change since the server started (subscribed before it ran).
    pub signals: Signals,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// What webhook hosts resolve to, as the service asks it.
pub use presence::egress::Lookup;

/// Starts a server with these settings (any setting of `presence.sample.toml`), resolving
/// webhook hosts with `lookup` if given; it stops when `shutdown` is cancelled.
pub async fn serve(
    settings: Vec<(&'static str, String)>,
    lookup: Option<std::sync::Arc<dyn Lookup>>,
    shutdown: CancellationToken,
) -> Server {
    let config = presence::config::Config::load(None, std::iter::empty(), settings)
        .expect("test configuration is valid");
    let options = presence::app::Options { lookup };
    let app = presence::app::build_with(config, options).await.expect("the server starts");
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let state = app.parts().core.clone();
    let signals = state.bus.presence_changes();
    let task = tokio::spawn(app.run(shutdown));
    Server { addr, admin, state, signals, task }
}

/// Creates a local account as `presence account add` does; returns its id.
pub async fn create_local_account(state: &Core, email: &str, password: &str) -> AccountId {
    let hash = presence::ops::accounts::hash_password(state, password.to_owned()).await.unwrap();
    presence::ops::accounts::sign_up(state, email, &hash).await.expect("a new email")
}

/// Re-enables an app's webhook as its owner does.
pub async fn enable_webhook(state: &Core, owner: AccountId, app_id: &str) {
    presence::ops::apps::reenable_webhook(state, owner, app_id).await.unwrap();
}

/// Reports a device's status straight to the presence engine, as its socket would.
pub async fn report(state: &Core, device_id: &str, status: Status) {
    let device = presence::domain::DeviceId::parse(device_id).unwrap();
    state.presence.report(&device, status).await.unwrap();
}

/// An app and, per seeded user, the one device's PrID and the app's uid for that user.
pub struct Seeded {
    pub app_id: String,
    pub secret: String,
    pub devices: Vec<(String, String)>,
}

/// Seeds `users` accounts on the data directory's database through the service's operations,
/// each with one device and a grant to one app (one password hash serves every account).
pub async fn seed_granted_devices(dir: &std::path::Path, users: usize) -> Seeded {
    use presence::ops::{accounts, apps, devices, grants};
    let mut settings = vec![("data_dir", dir.display().to_string())];
    if let Some(url) = super::data::database_url(dir).await {
        settings.push(("database_url", url));
    }
    let config = presence::config::Config::load(None, std::iter::empty(), settings).unwrap();
    let listen = config.listen;
    let parts = presence::app::open(config, listen).await.expect("the store opens");
    let core = &parts.core;
    let hash = accounts::hash_password(core, "seeded password".into()).await.unwrap();
    let owner = accounts::sign_up(core, "owner@seed.example", &hash).await.unwrap();
    let redirect = ["http://127.0.0.1:1/callback".to_owned()];
    let app = apps::register_app(core, owner, "Seeded", &redirect, "", Default::default()).await.unwrap();
    // A few users at a time: each write waits for the store, and the waits overlap.
    let tasks: Vec<_> = (0..8)
        .map(|part| {
            let (core, hash, app_id) = (core.clone(), hash.clone(), app.app_id.clone());
            tokio::spawn(async move {
                let mut devices_of_part = Vec::new();
                for i in (part..users).step_by(8) {
                    let account =
                        accounts::sign_up(&core, &format!("u{i}@seed.example"), &hash).await.unwrap();
                    let device = devices::register(&core, account, "seeded", None).await.unwrap();
                    let uid = grants::allow(&core, account, &app_id).await.unwrap();
                    devices_of_part.push((i, (device.prid, uid)));
                }
                devices_of_part
            })
        })
        .collect();
    let mut devices = Vec::with_capacity(users);
    for task in tasks {
        devices.extend(task.await.unwrap());
    }
    devices.sort_by_key(|(i, _)| *i);
    core.store.close().await;
    Seeded { app_id: app.app_id, secret: app.secret, devices: devices.into_iter().map(|(_, d)| d).collect() }
}
