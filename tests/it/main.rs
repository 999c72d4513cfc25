//! The integration suite: real servers on 127.0.0.1:0, real WebSocket and HTTP clients.
//! What the tests share is in `support`.

mod support;

mod accounts;
mod browser;
mod cluster;
mod consent;
mod delivery;
mod demo;
mod gateway;
mod malformed;
mod notifications;
mod operations;
mod presence;
mod restart;
mod robustness;
mod update_endpoint;
