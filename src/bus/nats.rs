//! The NATS bus: every node publishes its signals on one subject and hears the others'. Within a
//! node, signals travel through a `LocalBus` as on a lone node, so nothing local waits on NATS.
//!
//! NATS is at most once: a signal published while the link is down is dropped. That is allowed
//! by design (see the module above); when the link returns, the node hears `Signal::Reconnected`
//! and everything that waits on signals reads the store again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use secrecy::ExposeSecret;

use super::{Bus, DeviceMessage, LocalBus, Signal};
use crate::config::Config;
use crate::domain::Eviction;
use crate::domain::{ChannelId, Uaid};
use crate::domain::{LiveNotification, PushUpdate};

/// Signals waiting to go out; past this, new ones are dropped (and counted in the log).
const OUTBOX: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid bus url {0:?}")]
    Url(String),
    #[error("cannot read the NATS credentials file {path}")]
    Credentials {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the bus client")]
    Connect(#[source] async_nats::ConnectError),
    #[error("cannot subscribe to the bus")]
    Subscribe(#[source] async_nats::SubscribeError),
}

pub struct NatsBus {
    local: LocalBus,
    outbox: mpsc::Sender<Outgoing>,
    connected: Arc<AtomicBool>,
    /// Set while the outbox overflows, so that an overflow is logged once, not per signal.
    overflowing: AtomicBool,
}

/// What the publishing task takes: a signal to send, or a request to say when everything
/// before it has reached the server.
enum Outgoing {
    Signal(Wire),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A signal as it crosses between nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    AppEvents {
        app_id: String,
        seq: u64,
    },
    Update {
        origin: String,
        uaid: String,
        channel: String,
        version: u64,
        data: Option<String>,
    },
    Notification {
        origin: String,
        uaid: String,
        notification: LiveNotification,
    },
    Close {
        origin: String,
        uaid: String,
        revoked: bool,
    },
    StreamOpened {
        origin: String,
        app_id: String,
    },
    /// A node's link came back: what it published meanwhile was dropped, so every node catches up.
    Reconnected,
}

impl Wire {
    /// The part of a signal other nodes need; `None` for what stays in the node.
    fn from_signal(signal: &Signal) -> Option<Wire> {
        Some(match signal {
            Signal::AppEvents { app_id, seq } => Wire::AppEvents { app_id: app_id.clone(), seq: *seq },
            Signal::Device { origin, uaid, message } => {
                let (origin, uaid) = (origin.to_string(), uaid.to_string());
                match message {
                    DeviceMessage::Update(update) => Wire::Update {
                        origin,
                        uaid,
                        channel: update.channel.to_string(),
                        version: update.version,
                        data: update.data.clone(),
                    },
                    DeviceMessage::Notification(notification) => {
                        Wire::Notification { origin, uaid, notification: (**notification).clone() }
                    }
                    DeviceMessage::Close(reason) => {
                        Wire::Close { origin, uaid, revoked: *reason == Eviction::Revoked }
                    }
                }
            }
            Signal::StreamOpened { origin, app_id } => {
                Wire::StreamOpened { origin: origin.to_string(), app_id: app_id.clone() }
            }
            Signal::Reconnected => Wire::Reconnected,
            Signal::Presence(_) => return None,
        })
    }

    fn into_signal(self) -> Option<Signal> {
        let device = |origin: String, uaid: &str, message| {
            Some(Signal::Device { origin: origin.into(), uaid: Uaid::parse(uaid)?, message })
        };
        match self {
            Wire::AppEvents { app_id, seq } => Some(Signal::AppEvents { app_id, seq }),
            Wire::Update { origin, uaid, channel, version, data } => {
                let update = PushUpdate { channel: ChannelId::parse(&channel)?, version, data };
                device(origin, &uaid, DeviceMessage::Update(update))
            }
            Wire::Notification { origin, uaid, notification } => {
                device(origin, &uaid, DeviceMessage::Notification(Arc::new(notification)))
            }
            Wire::Close { origin, uaid, revoked } => {
                let reason = if revoked { Eviction::Revoked } else { Eviction::Replaced };
                device(origin, &uaid, DeviceMessage::Close(reason))
            }
            Wire::StreamOpened { origin, app_id } => {
                Some(Signal::StreamOpened { origin: origin.into(), app_id })
            }
            Wire::Reconnected => Some(Signal::Reconnected),
        }
    }
}

/// How a node signs in to NATS and checks the servers, from the configuration: a user and
/// password from `bus_url`, `bus_token` or `bus_credentials_file`; TLS for `tls://` URLs or
/// with `bus_tls_ca_file`. None of it is ever logged.
async fn connect_options(config: &Config, tls_urls: bool) -> Result<async_nats::ConnectOptions, BusError> {
    let servers = crate::config::parse_bus_urls(&config.bus_url).map_err(BusError::Url)?;
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = servers.login {
        options = options.user_and_password(user, password.expose_secret().to_owned());
    }
    if !config.bus_token.expose_secret().is_empty() {
        options = options.token(config.bus_token.expose_secret().to_owned());
    }
    let creds = &config.bus_credentials_file;
    if !creds.as_os_str().is_empty() {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|source| BusError::Credentials { path: creds.clone(), source })?;
    }
    if !config.bus_tls_ca_file.as_os_str().is_empty() {
        options = options.add_root_certificates(config.bus_tls_ca_file.clone()).require_tls(true);
    }
    Ok(if tls_urls { options.require_tls(true) } else { options })
}

impl NatsBus {
    /// Starts connecting to the servers of `bus_url` and returns at once: a node starts while
    /// NATS is down (or refuses it), and keeps reconnecting for as long as it runs.
    pub async fn connect(config: &Config) -> Result<NatsBus, BusError> {
        let servers = crate::config::parse_bus_urls(&config.bus_url).map_err(BusError::Url)?;
        let tls_urls = servers.urls.iter().any(|url| url.scheme() == "tls");
        let addrs = servers
            .urls
            .into_iter()
            .map(|url| {
                let shown = url.to_string();
                async_nats::ServerAddr::from_url(url).map_err(|_| BusError::Url(shown))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subject = config.bus_subject.as_str();
        let local = LocalBus::new(4096);
        let connected = Arc::new(AtomicBool::new(false));
        let (outbox, mut queue) = mpsc::channel::<Outgoing>(OUTBOX);
        let events = (local.clone(), connected.clone(), outbox.clone());
        let client = connect_options(config, tls_urls)
            .await?
            // A node hears its own signals through `local`, not back from NATS.
            .no_echo()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| Duration::from_millis(250 * attempts.min(8) as u64))
            .event_callback(move |event| {
                let (local, connected, outbox) = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("bus connected");
                            if !connected.swap(true, Ordering::SeqCst) {
                                // Signals were dropped while the link was down, here and (for
                                // what this node published) everywhere else.
                                local.publish(Signal::Reconnected);
                                let _ = outbox.try_send(Outgoing::Signal(Wire::Reconnected));
                            }
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, Ordering::SeqCst);
                            tracing::warn!(
                                "bus disconnected; delivery goes through the store until it returns"
                            );
                        }
                        async_nats::Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                            tracing::warn!(
                                "the bus refused this node's credentials (bus_url, bus_token, bus_credentials_file)"
                            );
                        }
                        other => tracing::debug!(event = %other, "bus event"),
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(BusError::Connect)?;
        let mut incoming = client.subscribe(subject.to_owned()).await.map_err(BusError::Subscribe)?;
        let inbound = local.clone();
        tokio::spawn(async move {
            while let Some(message) = incoming.next().await {
                match serde_json::from_slice::<Wire>(&message.payload).ok().and_then(Wire::into_signal) {
                    Some(signal) => inbound.publish(signal),
                    None => tracing::warn!(bytes = message.payload.len(), "unreadable signal on the bus"),
                }
            }
        });
        let subject = subject.to_owned();
        tokio::spawn(async move {
            while let Some(outgoing) = queue.recv().await {
                let wire = match outgoing {
                    Outgoing::Signal(wire) => wire,
                    Outgoing::Flush(done) => {
                        if let Err(error) = client.flush().await {
                            tracing::warn!(%error, "signals not flushed");
                        }
                        let _ = done.send(());
                        continue;
                    }
                };
                let payload = serde_json::to_vec(&wire).expect("signals serialize");
                if let Err(error) = client.publish(subject.clone(), payload.into()).await {
                    tracing::warn!(%error, "signal not published");
                }
            }
        });
        Ok(NatsBus { local, outbox, connected, overflowing: AtomicBool::new(false) })
    }
}

impl Bus for NatsBus {
    fn publish(&self, signal: Signal) {
        // While the link is down the client holds what it can and the outbox the rest; past
        // that, signals are dropped and the other nodes catch up from the store when the link
        // returns (`Wire::Reconnected`).
        if let Some(wire) = Wire::from_signal(&signal) {
            match self.outbox.try_send(Outgoing::Signal(wire)) {
                Ok(()) => self.overflowing.store(false, Ordering::Relaxed),
                Err(_) => {
                    if !self.overflowing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "bus outbox full; signals are dropped until it drains (the store has them)"
                        );
                    }
                }
            }
        }
        self.local.publish(signal);
    }

    fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.local.subscribe()
    }

    fn bells(&self) -> &super::Doorbells {
        self.local.bells()
    }

    fn presence_changes(&self) -> broadcast::Receiver<crate::domain::PresenceChange> {
        self.local.presence_changes()
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn flush(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let (done, flushed) = tokio::sync::oneshot::channel();
            if self.outbox.send(Outgoing::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_for_other_nodes_cross_the_wire_unchanged() {
        let uaid = Uaid::random();
        let signals = [
            Signal::AppEvents { app_id: "app_x".into(), seq: 7 },
            Signal::Device {
                origin: "n1".into(),
                uaid,
                message: DeviceMessage::Update(PushUpdate {
                    channel: ChannelId::from_bytes([3; 16]),
                    version: 9,
                    data: Some("hi".into()),
                }),
            },
            Signal::Device { origin: "n1".into(), uaid, message: DeviceMessage::Close(Eviction::Revoked) },
            Signal::StreamOpened { origin: "n2".into(), app_id: "app_y".into() },
            Signal::Reconnected,
        ];
        for signal in signals {
            let bytes = serde_json::to_vec(&Wire::from_signal(&signal).unwrap()).unwrap();
            let back = serde_json::from_slice::<Wire>(&bytes).unwrap().into_signal();
            assert_eq!(back, Some(signal));
        }
        let presence = crate::domain::PresenceChange {
            account: crate::domain::AccountId(1),
            status: crate::domain::Status::Online,
            at: 0,
            events: Vec::new(),
        };
        assert!(Wire::from_signal(&Signal::Presence(presence)).is_none(), "presence stays in the node");
    }
}
