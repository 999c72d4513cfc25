//! Wiring: `build` turns a `Config` into a bound, ready `App`; `App::run` serves until the
//! shutdown token fires, then drains within `shutdown_grace`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use std::future::IntoFuture as _;

use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use axum::extract::DefaultBodyLimit;

use crate::bus::{Bus, LocalBus, NatsBus};
use crate::config::Config;
use crate::endpoint::EndpointKeys;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::oidc::OidcVerifier;
use crate::presence::Engine;
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use crate::vault::Vault;

/// Everything a handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// This node's id (new at every start), for its lease and the signals it sends.
    pub node: Arc<str>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<Engine>,
    pub oidc: Option<Arc<OidcVerifier>>,
    pub registry: Arc<Registry>,
    /// Where webhooks may connect.
    pub egress: Arc<crate::egress::Egress>,
    /// The live app streams of this node.
    pub streams: Arc<crate::stream::Streams>,
    /// Notification rates, per app and per user.
    pub notify_app_limit: Arc<crate::ratelimit::RateLimiter>,
    pub notify_user_limit: Arc<crate::ratelimit::RateLimiter>,
    /// Password attempts, per email.
    pub login_limit: Arc<crate::ratelimit::RateLimiter>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<EndpointKeys>,
    /// Seals webhook signing secrets at rest.
    pub webhook_vault: Arc<Vault>,
    /// Seals secrets carried to the next page (shown once).
    pub flash_vault: Arc<Vault>,
    /// Base of push endpoint URLs, without a trailing slash.
    pub public_url: Arc<str>,
    /// Fires when the server starts shutting down; connections close with "going away".
    pub shutdown: CancellationToken,
    /// Device connections, awaited on shutdown.
    pub tracker: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot use the bus")]
    Bus(#[from] crate::bus::BusError),
    #[error("cannot use the endpoint key file {path}")]
    KeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the endpoint key file {0} does not hold 32 bytes in base64")]
    KeyFileContent(std::path::PathBuf),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct App {
    listener: TcpListener,
    state: AppState,
    addr: SocketAddr,
}

/// Opens the store (applying migrations), loads the endpoint key and binds the listener.
pub async fn build(config: Config) -> Result<App, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let state = open_state(config, addr).await?;
    Ok(App { listener, state, addr })
}

/// Everything but the listener: for commands that use the store and keys without serving.
/// `addr` is where the service is (or will be) reachable, for the default public URL.
pub async fn open_state(config: Config, addr: SocketAddr) -> Result<AppState, StartError> {
    let node = crate::cluster::new_node_id();
    let store = crate::store::open(&config.database_url(), &config, &node).await?;
    let secret = match config.secret_key_bytes() {
        Some(secret) => secret,
        None => load_or_create_key(&config.data_dir.join("secret.key"))?,
    };
    let public_url = if config.public_url.is_empty() {
        format!("http://{addr}")
    } else {
        config.public_url.trim_end_matches('/').to_owned()
    };
    let config_allow = config.webhook_allow.clone();
    let (app_rate, user_rate) = (config.notify_app_per_minute, config.notify_user_per_minute);
    let login_rate = config.login_attempts_per_minute;
    let bus: Arc<dyn Bus> = if config.bus_url.is_empty() {
        Arc::new(LocalBus::new(4096))
    } else {
        Arc::new(NatsBus::connect(&config.bus_url, &config.bus_subject).await?)
    };
    let presence =
        Arc::new(Engine::new(store.clone(), bus.clone(), config.presence_grace, config.stale_after));
    let oidc = (!config.oidc_issuer.is_empty())
        .then(|| Arc::new(OidcVerifier::new(&config.oidc_issuer, &config.oidc_audience)));
    Ok(AppState {
        config: Arc::new(config),
        node: node.into(),
        store,
        bus,
        presence,
        oidc,
        registry: Arc::new(Registry::default()),
        egress: Arc::new(crate::egress::Egress::new(
            crate::egress::parse_allow_list(&config_allow).expect("validated with the configuration"),
        )),
        streams: Arc::default(),
        notify_app_limit: Arc::new(crate::ratelimit::RateLimiter::new(app_rate)),
        notify_user_limit: Arc::new(crate::ratelimit::RateLimiter::new(user_rate)),
        login_limit: Arc::new(crate::ratelimit::RateLimiter::new(login_rate)),
        metrics: Arc::new(Metrics::default()),
        keys: Arc::new(EndpointKeys::new(&secret)),
        webhook_vault: Arc::new(Vault::new(&secret, "webhook secrets")),
        flash_vault: Arc::new(Vault::new(&secret, "flash")),
        public_url: public_url.into(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
    })
}

impl App {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` fires; then stops accepting, closes device sockets with 1001
    /// ("going away"), waits up to `shutdown_grace` for them and for in-flight requests, and
    /// closes the store so every write has finished.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let App { listener, state, .. } = self;
        // Devices of a previous run (or of dead nodes) are offline until they reconnect.
        if let Err(error) = crate::cluster::join(&state).await {
            tracing::error!(error = %crate::error::chain(&error), "cannot take the node lease at start");
        }
        let clustered = crate::cluster::is_clustered(&state);
        tracing::info!(node = %state.node, clustered, "node started");
        tokio::spawn(crate::cluster::keep_lease(state.clone()));
        if clustered {
            tokio::spawn(crate::cluster::route_signals(state.clone()));
        }
        tokio::spawn(state.presence.clone().sweep_stale(state.shutdown.clone()));
        tokio::spawn(crate::webhooks::Dispatcher::new(state.clone()).run(state.shutdown.clone()));
        tokio::spawn(purge_old_events(state.clone()));
        let stop = shutdown.clone();
        let send_buffer = state.config.socket_send_buffer;
        let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp: &mut tokio::net::TcpStream| {
            // Presence messages are small and latency matters: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            if send_buffer > 0 {
                let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer);
            }
        });
        let server = tokio::spawn(
            axum::serve(listener, router(state.clone()))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .into_future(),
        );
        shutdown.cancelled().await;
        // Device sockets are upgraded connections, which the HTTP server no longer tracks.
        state.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + state.config.shutdown_grace;
        let served = match tokio::time::timeout_at(deadline, server).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("http requests did not finish within the shutdown grace");
                Ok(())
            }
        };
        state.tracker.close();
        if tokio::time::timeout_at(deadline, state.tracker.wait()).await.is_err() {
            tracing::warn!("device connections did not close within the shutdown grace");
        }
        crate::cluster::leave(&state).await;
        state.store.close().await;
        served
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::ws::upgrade))
        .route("/update/{token}", put(crate::update::put).fallback(crate::update::method_not_allowed))
        .merge(
            crate::api::routes()
                .merge(crate::apps::routes())
                .merge(crate::notifications::routes())
                .layer(DefaultBodyLimit::max(state.config.max_json_body)),
        )
        .merge(crate::web::routes())
        .route("/{app_id}/presence.json", get(crate::stream::stream))
        .route("/v1/apps/{app_id}/presence.json", get(crate::stream::stream))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(any(not_found))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::web::security_headers))
        .with_state(state)
}

/// Removes events older than `event_retention`, every tenth of it (at most every 10 minutes).
async fn purge_old_events(state: AppState) {
    let retention = state.config.event_retention;
    let period =
        (retention / 10).clamp(std::time::Duration::from_millis(200), std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let cutoff = crate::ws::unix_now() - retention.as_secs() as i64;
        match state.store.purge_events(cutoff).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "old events removed"),
            Err(error) => tracing::error!(error = %crate::error::chain(&error), "cannot remove old events"),
        }
    }
}

/// 503 when the store does not answer. A bus that is down is reported but not fatal: the node
/// still serves, delivering through the store.
async fn healthz(State(state): State<AppState>) -> Response {
    let mut body = match state.store.check().await {
        Ok(()) => serde_json::json!({"status": "ok", "store": "ok"}),
        Err(error) => {
            tracing::warn!(error = %crate::error::chain(&error), "health check: store unavailable");
            serde_json::json!({"status": "unavailable", "store": "unavailable"})
        }
    };
    if crate::cluster::is_clustered(&state) {
        body["bus"] = (if state.bus.is_connected() { "ok" } else { "unavailable" }).into();
        body["node"] = state.node.as_ref().into();
    }
    let status = if body["store"] == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let bus = crate::cluster::is_clustered(&state).then(|| state.bus.is_connected());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(bus)).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

/// The endpoint key lives beside the database unless configured: created once, readable by the
/// owner only. Losing it invalidates every push endpoint handed out.
fn load_or_create_key(path: &Path) -> Result<[u8; 32], StartError> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let key_error = |source| StartError::KeyFile { path: path.to_owned(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| StartError::KeyFileContent(path.to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(key_error)?;
            }
            let key: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    use std::io::Write as _;
                    file.write_all(STANDARD.encode(key).as_bytes()).map_err(key_error)?;
                    file.sync_all().map_err(key_error)?;
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(error) => Err(key_error(error)),
            }
        }
        Err(error) => Err(key_error(error)),
    }
}
