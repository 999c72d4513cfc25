//! The composition root: `build` turns a `Config` into a bound, ready `App` by wiring the
//! layers (store and bus, then operations, then the gateway, fan-out and HTTP interfaces);
//! `App::run` serves until the shutdown token fires, then drains within `shutdown_grace`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::routing::any;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, LocalBus, NatsBus};
use crate::config::Config;
use crate::fanout::Fanout;
use crate::gateway::endpoint::EndpointKeys;
use crate::gateway::registry::Registry;
use crate::gateway::relay::Relay;
use crate::gateway::{Gateway, GatewayParts};
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::ops::{Core, Engine};
use crate::ratelimit::RateLimiter;
use crate::store::StoreError;
use crate::vault::Vault;

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

/// The wired parts of a node.
#[derive(Clone)]
pub struct Parts {
    pub core: Core,
    pub gateway: Gateway,
    pub fanout: Fanout,
    pub http: HttpState,
}

pub struct App {
    listener: TcpListener,
    parts: Parts,
    addr: SocketAddr,
    /// The admin listener (`admin_listen`), if configured.
    admin: Option<(TcpListener, SocketAddr)>,
    /// The operator's control socket in the data directory, if it could be bound.
    control: Option<tokio::net::UnixListener>,
}

/// What a test may put in place of a node's own parts; production uses the defaults.
#[derive(Clone, Default)]
pub struct Options {
    /// Resolves webhook hosts instead of the system resolver (a stub, to test DNS rebinding).
    pub lookup: Option<Arc<dyn crate::egress::Lookup>>,
}

/// Opens the store (applying migrations), loads the endpoint key and binds the listener.
pub async fn build(config: Config) -> Result<App, StartError> {
    build_with(config, Options::default()).await
}

/// `build`, with some parts replaced.
pub async fn build_with(config: Config, options: Options) -> Result<App, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let admin = match config.admin_addr() {
        Some(admin_addr) => {
            let bind_error = |source| StartError::Bind { addr: admin_addr, source };
            let admin = TcpListener::bind(admin_addr).await.map_err(bind_error)?;
            let bound = admin.local_addr().map_err(bind_error)?;
            Some((admin, bound))
        }
        None => None,
    };
    let parts = open_with(config, addr, options).await?;
    let control = crate::http::control::bind(&crate::http::control::socket_path(&parts.core.config.data_dir));
    Ok(App { listener, parts, addr, admin, control })
}

/// Everything but the listener: for commands that use the store and the operations without
/// serving. `addr` is where the service is (or will be) reachable, for the default public URL.
pub async fn open(config: Config, addr: SocketAddr) -> Result<Parts, StartError> {
    open_with(config, addr, Options::default()).await
}

async fn open_with(config: Config, addr: SocketAddr, options: Options) -> Result<Parts, StartError> {
    let node: Arc<str> = crate::ops::cluster::new_node_id().into();
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
    let bus: Arc<dyn Bus> = if config.bus_url.is_empty() {
        Arc::new(LocalBus::new(4096))
    } else {
        Arc::new(NatsBus::connect(&config).await?)
    };
    let metrics = Arc::new(Metrics::default());
    let presence = Arc::new(Engine::new(
        store.clone(),
        bus.clone(),
        crate::ops::presence::Timing {
            grace: config.presence_grace,
            stale_after: config.stale_after,
            commit_window: config.presence_commit_window,
            store_interval: config.presence_store_interval,
        },
        config.bus_url.is_empty(),
        config.data_dir.join("journal"),
        metrics.clone(),
    ));
    let oidc = (!config.oidc_issuer.is_empty()).then(|| {
        Arc::new(crate::http::oidc::OidcVerifier::new(
            &config.oidc_issuer,
            &config.oidc_audience,
            config.oidc_keys_refresh,
        ))
    });
    let mut egress = crate::egress::Egress::new(
        crate::egress::parse_allow_list(&config.webhook_allow).expect("validated with the configuration"),
    );
    if let Some(lookup) = options.lookup {
        egress = egress.resolving_with(lookup);
    }
    let trusted_proxies =
        crate::egress::parse_allow_list(&config.trusted_proxies).expect("validated with the configuration");
    let registry = Arc::new(Registry::default());
    let relay = Arc::new(Relay::new(registry.clone(), bus.clone(), node.clone(), !config.bus_url.is_empty()));
    let core = Core {
        node,
        store,
        bus,
        presence,
        devices: relay.clone(),
        egress: Arc::new(egress),
        notify_app_limit: Arc::new(RateLimiter::new(config.notify_app_per_minute)),
        notify_user_limit: Arc::new(RateLimiter::new(config.notify_user_per_minute)),
        login_limit: Arc::new(RateLimiter::new(config.login_attempts_per_minute)),
        address_limit: Arc::new(RateLimiter::new(config.login_attempts_per_minute_per_address)),
        hashing: Arc::new(tokio::sync::Semaphore::new(config.password_hashes_at_once as usize)),
        metrics,
        webhook_vault: Arc::new(Vault::new(&secret, "webhook secrets")),
        public_url: public_url.into(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        config: Arc::new(config),
    };
    Ok(Parts {
        gateway: Gateway::new(GatewayParts {
            core: core.clone(),
            registry,
            relay,
            keys: Arc::new(EndpointKeys::new(&secret)),
            limits: Arc::new(crate::gateway::session::Limits::from_config(&core.config)),
        }),
        fanout: Fanout {
            core: core.clone(),
            streams: Arc::new(crate::fanout::stream::Streams::new(core.bus.clone())),
        },
        http: HttpState {
            core: core.clone(),
            oidc,
            flash_vault: Arc::new(Vault::new(&secret, "flash")),
            csrf_key: Arc::new(crate::http::web::CsrfKey::new(&secret)),
            trusted_proxies: Arc::new(trusted_proxies),
        },
        core,
    })
}

impl App {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin listener is bound, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Serves until `shutdown` fires; then stops accepting, closes device sockets with 1001
    /// ("going away"), waits up to `shutdown_grace` for them and for in-flight requests, and
    /// closes the store so every write has finished.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let App { listener, parts, admin, control, .. } = self;
        if let Some((admin, _)) = admin {
            let admin_routes = crate::http::health::admin(parts.http.clone());
            let timed = crate::http::access::timed(admin_routes, parts.core.metrics.clone());
            let router = crate::http::access::layer(timed);
            let stop = state_shutdown(&shutdown);
            tokio::spawn(async move {
                if let Err(error) = axum::serve(admin, router).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %error, "the admin listener failed");
                }
            });
        }
        let state = parts.core.clone();
        // Devices of a previous run (or of dead nodes) are offline until they reconnect.
        if let Err(error) = crate::ops::cluster::join(&state).await {
            tracing::error!(error = %crate::error::chain(&error), "cannot take the node lease at start");
        }
        let clustered = state.is_clustered();
        tracing::info!(node = %state.node, clustered, "node started");
        tokio::spawn(crate::ops::cluster::keep_lease(state.clone()));
        if clustered {
            let relay = parts.gateway.relay.clone();
            tokio::spawn(relay.route_signals(state.metrics.clone(), state.shutdown.clone()));
        }
        let streams = parts.fanout.streams.clone();
        tokio::spawn(streams.follow(state.node.clone(), state.shutdown.clone()));
        tokio::spawn(state.presence.clone().sweep_stale(state.shutdown.clone()));
        tokio::spawn(state.presence.clone().end_graces());
        tokio::spawn(crate::gateway::sweep_liveness(parts.gateway.clone()));
        tokio::spawn(
            crate::fanout::webhooks::Dispatcher::new(parts.fanout.clone()).run(state.shutdown.clone()),
        );
        tokio::spawn(crate::ops::expiry::sweep(state.clone()));
        let devices_closed = CancellationToken::new();
        let closes =
            tokio::spawn(crate::gateway::record_closes(parts.gateway.clone(), devices_closed.clone()));
        if let Some(control) = control {
            let path = crate::http::control::socket_path(&state.config.data_dir);
            tokio::spawn(crate::http::control::serve(state.clone(), control, path, state.shutdown.clone()));
        }
        let limits = crate::server::Limits::from_config(&state.config);
        let server = tokio::spawn(crate::server::serve(listener, router(&parts), limits, shutdown.clone()));
        shutdown.cancelled().await;
        // Device sockets are upgraded connections, which the HTTP server no longer tracks.
        state.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + state.config.shutdown_grace;
        let served = match tokio::time::timeout_at(deadline, server).await {
            Ok(Ok(())) => Ok(()),
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
        devices_closed.cancel();
        let _ = closes.await;
        state.presence.stop().await;
        crate::ops::cluster::leave(&state).await;
        state.store.close().await;
        served
    }
}

/// Resolves when the node is told to shut down.
fn state_shutdown(shutdown: &CancellationToken) -> impl std::future::Future<Output = ()> + Send + 'static {
    let shutdown = shutdown.clone();
    async move { shutdown.cancelled().await }
}

/// Every route of the node: the gateway's, the streams', the API's and the pages', with request
/// ids and the access log.
pub fn router(parts: &Parts) -> Router {
    crate::http::access::layer(routes(parts))
}

fn routes(parts: &Parts) -> Router {
    // What people and apps read reflects every status change answered before the request.
    let settled = Router::new()
        .merge(crate::fanout::routes(parts.fanout.clone()))
        .merge(crate::http::routes(parts.http.clone()))
        .layer(axum::middleware::from_fn_with_state(parts.core.clone(), crate::http::settled));
    let routes = Router::new()
        .merge(crate::gateway::routes(parts.gateway.clone()))
        .merge(settled)
        .fallback(any(not_found))
        .layer(axum::middleware::from_fn_with_state(
            parts.http.clone(),
            crate::http::web::landing::for_browsers,
        ))
        .layer(axum::middleware::from_fn_with_state(parts.http.clone(), crate::http::web::security_headers));
    crate::http::access::timed(routes, parts.core.metrics.clone())
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
