//! The integration suite: real servers on 127.0.0.1:0, real WebSocket and HTTP clients.
//! What the tests share is in `support`.

mod support;

mod a11y;
mod accounts;
mod app_secrets;
mod browser;
mod cluster;
mod connections;
mod consent;
mod deliveries;
mod delivery;
mod demo;
mod expiry;
mod formats;
mod gateway;
mod lifecycle;
mod malformed;
mod notifications;
mod openapi;
mod operations;
mod operators;
mod pages;
mod presence;
mod restart;
mod robustness;
mod update_endpoint;
mod wire;
