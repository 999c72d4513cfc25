//! What the tests share: servers (in this process or the real binary), their data, browsers,
//! apps and grants, a stream consumer, a webhook receiver, an OpenID Connect provider and
//! clusters. Test files hold tests, and helpers only they use.
//!
//! Every path into the crate goes through `service`: a move inside `src/` is fixed there.

pub mod app;
pub mod apps;
pub mod browser;
pub mod cluster;
pub mod data;
pub mod device;
pub mod http;
pub mod oidc;
pub mod process;
pub mod receiver;
pub mod service;
pub mod stream;

pub use app::{builder, delivering, spawn_app, Builder, TestApp};
pub use apps::{
    consent, exchange, grant, register_app, register_app_with_webhook, urlencode, RegisteredApp, REDIRECT,
};
pub use browser::Browser;
pub use data::DataDir;
pub use device::{channel_id, close_code};
pub use http::{put, reply, sign_in, Device, Reply, User};
pub use process::{cli, spawn_process};
pub use receiver::{Answer, Canary, Hit, Receiver, StubResolver};
pub use service::{now, DeviceClient, Received, Status};
pub use stream::StreamClient;
