//! Presence: share whether you can be reached right now, over Mozilla's SimplePush.
//!
//! The layers, each importing only from those below it (see `docs/architecture.md`):
//! - interfaces: `gateway` (devices' WebSockets, `/update`), `fanout` (app streams, webhooks),
//!   `http` (JSON API, web pages, health), `cli` (commands, simulator, bench); `app` wires them, `server` serves
//!   HTTP under them (timeouts, connection cap, lingering close).
//! - `ops`: the operations users, devices and apps perform, and the presence engine.
//! - `store` and `bus`: what is remembered, and signals between parts and nodes.
//! - `domain`: ids, statuses, the presence rules and the plain model types; no I/O.
//! - leaves every layer may use: `config`, `clock`, `error`, `secrets`, `vault`, `egress`,
//!   `ratelimit`, `metrics`.

pub mod app;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod egress;
pub mod error;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod ratelimit;
pub mod secrets;
pub mod server;
pub mod store;
pub mod vault;
