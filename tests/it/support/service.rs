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

/// A new random secret with this prefix, as the service makes them.
pub fn new_secret(prefix: &str) -> String {
    presence::secrets::new_secret(prefix)
}

/// The digest under which the service stores a secret.
pub fn digest(secret: &str) -> String {
    presence::secrets::digest(secret)
}

/// The bus signals a test server sends, as a subscriber receives them.
pub type Signals = broadcast::Receiver<presence::bus::Signal>;

/// A server of the library, running in this process.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin listener, with `admin_listen` set.
    pub admin: Option<SocketAddr>,
    pub state: Core,
    /// Every bus signal since the server started (subscribed before it ran).
    pub signals: Signals,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a server with these settings (any setting of `presence.sample.toml`); it stops when
/// `shutdown` is cancelled.
pub async fn serve(settings: Vec<(&'static str, String)>, shutdown: CancellationToken) -> Server {
    let config = presence::config::Config::load(None, std::iter::empty(), settings)
        .expect("test configuration is valid");
    let app = presence::app::build(config).await.expect("the server starts");
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let state = app.parts().core.clone();
    let signals = state.bus.subscribe();
    let task = tokio::spawn(app.run(shutdown));
    Server { addr, admin, state, signals, task }
}

/// The account and visible status of a presence change signalled on the bus, if it is one.
pub fn presence_change(signal: presence::bus::Signal) -> Option<(AccountId, &'static str)> {
    #[allow(irrefutable_let_patterns)]
    if let presence::bus::Signal::Presence(change) = signal {
        return Some((change.account, change.status.name()));
    }
    None
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
