//! Presence: share whether you can be reached right now, over Mozilla's SimplePush.
//!
//! `app::build` opens the store, binds the listener and wires the parts; `App::run` serves until
//! shutdown. See `docs/architecture.md` for how the parts fit.

pub mod api;
pub mod app;
pub mod apps;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod client;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod endpoint;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod notifications;
pub mod oidc;
pub mod presence;
pub mod ratelimit;
pub mod registry;
pub mod secrets;
pub mod simulator;
pub mod store;
pub mod stream;
pub mod update;
pub mod vault;
pub mod web;
pub mod webhooks;
pub mod ws;
