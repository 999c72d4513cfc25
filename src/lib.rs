//! Presence: share whether you can be reached right now, over Mozilla's SimplePush.
//!
//! `app::build` opens the store, binds the listener and wires the parts; `App::run` serves until
//! shutdown. See `docs/architecture.md` for how the parts fit.

pub mod app;
pub mod client;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod registry;
pub mod store;
pub mod update;
pub mod ws;
