//! The integration suite: real servers on 127.0.0.1:0, real WebSocket and HTTP clients.

mod accounts;
mod browser;
mod cluster;
mod consent;
pub mod delivery;
mod gateway;
mod helpers;
mod malformed;
mod notifications;
mod operations;
mod presence;
mod receiver;
mod restart;
mod update_endpoint;
