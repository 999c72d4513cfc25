//! The push gateway: devices' WebSockets at `/` speaking SimplePush (with the presence
//! extension), AppServers' `PUT /update/{token}`, the endpoint tokens that name a channel, and
//! the registry of connections on this node. `session` decides what a connection does (frames
//! in, actions out, no I/O); `hello` opens a connection and `socket` runs the session on it.

pub mod endpoint;
mod hello;
pub mod protocol;
pub mod registry;
pub mod relay;
pub mod session;
pub mod socket;
pub mod update;
mod wire;

use std::sync::Arc;

use axum::routing::{get, put};
use axum::Router;

use crate::ops::Core;

/// What the gateway's handlers share: one handle, so each connection keeps a pointer to it
/// rather than a copy of every part.
#[derive(Clone)]
pub struct Gateway(Arc<GatewayParts>);

pub struct GatewayParts {
    pub core: Core,
    pub registry: Arc<registry::Registry>,
    pub relay: Arc<relay::Relay>,
    pub keys: Arc<endpoint::EndpointKeys>,
    /// What every session is held to, shared by all of them.
    pub limits: Arc<session::Limits>,
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Gateway {
        Gateway(Arc::new(parts))
    }
}

impl std::ops::Deref for Gateway {
    type Target = GatewayParts;

    fn deref(&self) -> &GatewayParts {
        &self.0
    }
}

impl std::ops::Deref for GatewayParts {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

pub fn routes(state: Gateway) -> Router {
    Router::new()
        .route("/", get(hello::upgrade))
        .route("/update/{token}", put(update::put).fallback(update::method_not_allowed))
        .with_state(state)
}

/// How often the node's liveness sweep runs: a quarter of the shorter of the ping interval and
/// the pong timeout, between 10 ms and 1 s. A ping goes out, and an unresponsive device is
/// closed, at most one period late.
pub fn liveness_period(config: &crate::config::Config) -> std::time::Duration {
    let quarter = config.ws_ping_interval.min(config.ws_pong_timeout) / 4;
    quarter.clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1))
}

/// The node's one liveness sweep: every period, the connections whose time has come get a
/// tick (they ping a silent device, or close one that never answered). When the node stops,
/// it tells every connection to close: a connection waits on its mailbox only, not also on
/// the node's stop.
pub async fn sweep_liveness(state: Gateway) {
    let mut every = tokio::time::interval(liveness_period(&state.config));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                state.registry.evict_all(crate::domain::Eviction::ShuttingDown);
                return;
            }
            _ = every.tick() => {
                state.registry.sweep(tokio::time::Instant::now());
            }
        }
    }
}

/// How often the store hears which UAIDs closed (their last-seen time is this coarse).
const CLOSES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Tells the store which UAIDs closed, once a second in one write for all of them (a drop of
/// thousands of devices is one statement, not one each), and once more when the node stops.
pub async fn record_closes(state: Gateway, stopped: tokio_util::sync::CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = stopped.cancelled() => true,
            _ = tokio::time::sleep(CLOSES_EVERY) => false,
        };
        let closed = state.registry.take_closed();
        if !closed.is_empty() {
            if let Err(error) = state.store.uaids_closed(&closed, crate::clock::unix_now()).await {
                tracing::error!(error = %crate::error::chain(&error), uaids = closed.len(), "cannot record the UAIDs' close");
            }
        }
        if stopping {
            return;
        }
    }
}
