//! The device gateway: one WebSocket per device at `/`, speaking SimplePush.
//!
//! A connection is `Unidentified` until its hello, then a `Session` bound to a UAID. The session
//! turns each device message into replies (`Step`); the socket loop sends them, forwards live
//! notifications from the registry, and keeps the connection alive with WebSocket pings. Every
//! reason to close maps to one close code in `close_frame`.

use std::collections::{HashMap, HashSet};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::protocol::{self, ClientMessage, Hello, ServerMessage, UpdateEntry};
use super::Gateway;
use crate::domain::Eviction;
use crate::domain::Status;
use crate::domain::{ChannelId, Uaid};
use crate::domain::{DeviceBinding, DeviceId, PushUpdate};
use crate::gateway::registry::{Attachment, Outbound};
use crate::http::error::ApiError;
use crate::metrics::MessageKind;
use crate::store::Registration;

/// Close code autopush uses for a device that pings too often.
pub const CLOSE_PING_TOO_OFTEN: u16 = 4774;
/// Close code for a presence id that is unknown or was revoked: do not reconnect with it.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Why the server ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The device closed, or the connection broke: nothing to send.
    Gone,
    /// Invalid JSON, JSON that is not an object, a first message that is not hello, a second
    /// hello, an unknown messageType.
    Protocol(&'static str),
    Binary,
    TooLarge,
    HelloTimeout,
    PingTooOften,
    Replaced,
    Unresponsive,
    ShuttingDown,
    StoreUnavailable,
    /// The hello's `xpi` is not a known presence id.
    UnknownPresenceId,
    /// The device was removed; its presence id no longer works.
    Revoked,
}

/// The one place that maps close reasons to WebSocket close frames.
pub fn close_frame(reason: CloseReason) -> Option<CloseFrame> {
    let (code, text) = match reason {
        CloseReason::Gone => return None,
        CloseReason::Protocol(why) => (1008, why),
        CloseReason::Binary => (1003, "binary frames are not supported"),
        CloseReason::TooLarge => (1009, "message too large"),
        CloseReason::HelloTimeout => (1008, "no hello in time"),
        CloseReason::PingTooOften => (CLOSE_PING_TOO_OFTEN, "pinging too often"),
        CloseReason::Replaced => (1000, "replaced by a newer connection"),
        CloseReason::Unresponsive => (1001, "no response to ping"),
        CloseReason::ShuttingDown => (1001, "server shutting down"),
        CloseReason::StoreUnavailable => (1011, "service unavailable"),
        CloseReason::UnknownPresenceId => (CLOSE_UNAUTHORIZED, "unknown presence id"),
        CloseReason::Revoked => (CLOSE_UNAUTHORIZED, "device removed"),
    };
    Some(CloseFrame { code, reason: text.into() })
}

pub async fn upgrade(
    State(state): State<Gateway>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                "websocket_required",
                "this path speaks SimplePush over WebSocket; connect with a WebSocket client",
            )
            .into_response()
        }
    };
    let config = &state.config;
    ws.protocols(["push-notification"])
        .read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(config.ws_write_buffer_max)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .on_upgrade(move |socket| {
            let tracker = state.tracker.clone();
            tracker.track_future(serve(state, socket))
        })
}

async fn serve(state: Gateway, mut socket: WebSocket) {
    use std::sync::atomic::Ordering::Relaxed;
    state.metrics.connections.fetch_add(1, Relaxed);
    state.metrics.connections_total.fetch_add(1, Relaxed);
    let reason = match handshake(&state, &mut socket).await {
        Ok(mut session) => {
            let reason = session.run(&mut socket).await;
            state.registry.detach(&session.uaid, session.attachment.id);
            session.finish(reason).await;
            reason
        }
        Err(reason) => reason,
    };
    if let Some(frame) = close_frame(reason) {
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    state.metrics.connections.fetch_sub(1, Relaxed);
    tracing::debug!(?reason, "device connection closed");
}

/// What a frame from the device turned out to be.
enum Frame {
    Text(axum::extract::ws::Utf8Bytes),
    /// Pings and pongs: proof of life, nothing to handle.
    Control,
}

async fn read_frame(socket: &mut WebSocket) -> Result<Frame, CloseReason> {
    match socket.recv().await {
        Some(Ok(Message::Text(text))) => Ok(Frame::Text(text)),
        Some(Ok(Message::Binary(_))) => Err(CloseReason::Binary),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Frame::Control),
        Some(Ok(Message::Close(_))) | None => Err(CloseReason::Gone),
        Some(Err(error)) => {
            let capacity = std::error::Error::source(&error)
                .and_then(|e| e.downcast_ref::<tokio_tungstenite::tungstenite::Error>())
                .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)));
            Err(if capacity { CloseReason::TooLarge } else { CloseReason::Gone })
        }
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), CloseReason> {
    socket.send(Message::Text(message.to_json().into())).await.map_err(|_| CloseReason::Gone)
}

/// Waits for the hello, assigns the UAID, replies and flushes stored notifications.
async fn handshake(state: &Gateway, socket: &mut WebSocket) -> Result<Session, CloseReason> {
    let deadline = Instant::now() + state.config.hello_timeout;
    let text = loop {
        let frame = tokio::select! {
            frame = read_frame(socket) => frame?,
            _ = tokio::time::sleep_until(deadline) => return Err(CloseReason::HelloTimeout),
            _ = state.shutdown.cancelled() => return Err(CloseReason::ShuttingDown),
        };
        if let Frame::Text(text) = frame {
            break text;
        }
    };
    let hello = match protocol::parse(&text) {
        Ok(ClientMessage::Hello(hello)) => hello,
        Ok(_) => {
            state.metrics.message(MessageKind::Invalid);
            return Err(CloseReason::Protocol("the first message must be hello"));
        }
        Err(error) => {
            state.metrics.message(MessageKind::Invalid);
            return Err(CloseReason::Protocol(parse_error_reason(error)));
        }
    };
    state.metrics.message(MessageKind::Hello);
    let device = match &hello.xpi {
        None => None,
        Some(xpi) => match state.store.device_by_prid(&crate::secrets::digest(xpi)).await {
            Ok(Some(binding)) => Some(binding),
            Ok(None) => {
                let _ =
                    send(socket, &ServerMessage::HelloRefused { status: 401, reason: "unknown presence id" })
                        .await;
                return Err(CloseReason::UnknownPresenceId);
            }
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), "hello failed: store unavailable");
                let _ =
                    send(socket, &ServerMessage::HelloRefused { status: 503, reason: "service unavailable" })
                        .await;
                return Err(CloseReason::StoreUnavailable);
            }
        },
    };
    let uaid = match assign_uaid(state, &hello, device.as_ref()).await {
        Ok(uaid) => uaid,
        Err(error) => {
            tracing::error!(error = %crate::error::chain(&error), "hello failed: store unavailable");
            let _ = send(socket, &ServerMessage::HelloRefused { status: 503, reason: "service unavailable" })
                .await;
            return Err(CloseReason::StoreUnavailable);
        }
    };
    // Attach before reading stored notifications: an update that lands in between is either
    // read from the store or queued on this connection, never missed.
    let attachment = state.registry.attach(uaid, state.config.outbound_queue);
    // An older connection of this UAID on another node closes too.
    state.relay.tell_other_nodes(uaid, crate::bus::DeviceMessage::Close(Eviction::Replaced));
    let device = device.map(|binding| BoundDevice {
        connection: state.presence.connected(&binding.device),
        id: binding.device,
    });
    let mut session = Session {
        state: state.clone(),
        uaid,
        attachment,
        sent: HashMap::new(),
        sent_live: HashSet::new(),
        last_keepalive: None,
        device,
        last_status: None,
        pending_status: None,
        last_touch: Instant::now(),
    };
    let result = async {
        send(socket, &ServerMessage::Hello { uaid: uaid.to_string(), status: 200 }).await?;
        session.catch_up(socket).await
    }
    .await;
    match result {
        Ok(()) => Ok(session),
        Err(reason) => {
            state.registry.detach(&uaid, session.attachment.id);
            Err(reason)
        }
    }
}

/// Keeps a known UAID; anything else (missing, malformed, unknown) gets a fresh one, so a
/// device can never choose its own id.
/// A device hello (with `xpi`) also binds the UAID to the device, replacing any earlier one.
async fn assign_uaid(
    state: &Gateway,
    hello: &Hello,
    device: Option<&DeviceBinding>,
) -> Result<Uaid, crate::store::StoreError> {
    let requested = hello.uaid.as_deref().and_then(Uaid::parse);
    let uaid = match requested {
        Some(uaid) if state.store.uaid_exists(&uaid).await? => uaid,
        _ => Uaid::random(),
    };
    let now = unix_now();
    state.store.connect_uaid(&uaid, now).await?;
    if let Some(binding) = device {
        state.store.bind_device(&binding.device, &uaid, now).await?;
    }
    Ok(uaid)
}

fn parse_error_reason(error: protocol::ParseError) -> &'static str {
    match error {
        protocol::ParseError::InvalidJson => "invalid json",
        protocol::ParseError::NotAnObject => "json is not an object",
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An identified connection.
struct Session {
    state: Gateway,
    uaid: Uaid,
    attachment: Attachment,
    /// The highest version sent per channel on this connection: never send a lower one.
    sent: HashMap<ChannelId, u64>,
    /// Live notifications sent on this connection and not acked yet: never sent twice.
    sent_live: HashSet<String>,
    last_keepalive: Option<Instant>,
    /// The device this connection reports presence for (hello with `xpi`).
    device: Option<BoundDevice>,
    /// When a status was last applied, and the latest one waiting for `status_min_interval`.
    last_status: Option<Instant>,
    pending_status: Option<Status>,
    /// When the device's silence clock was last restarted in the store.
    last_touch: Instant,
}

struct BoundDevice {
    id: DeviceId,
    /// This connection's number in the presence engine, to tell a reconnect within the grace.
    connection: u64,
}

/// What handling one device message asks the socket loop to do.
enum Step {
    Reply(ServerMessage),
    Nothing,
    Close(CloseReason),
    /// Send this, then close.
    ReplyAndClose(ServerMessage, CloseReason),
}

impl Session {
    async fn run(&mut self, socket: &mut WebSocket) -> CloseReason {
        let ping_interval = self.state.config.ws_ping_interval;
        let pong_timeout = self.state.config.ws_pong_timeout;
        let mut last_heard = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let timer = tokio::time::sleep(ping_interval);
        tokio::pin!(timer);
        let shutdown = self.state.shutdown.clone();
        let evicted = self.attachment.evicted.clone();
        let status_interval = self.state.config.status_min_interval;
        loop {
            let status_due = self.last_status.map_or_else(Instant::now, |at| at + status_interval);
            tokio::select! {
                _ = shutdown.cancelled() => return CloseReason::ShuttingDown,
                _ = evicted.cancelled() => return match self.attachment.eviction() {
                    Eviction::Replaced => CloseReason::Replaced,
                    Eviction::Revoked => CloseReason::Revoked,
                    Eviction::LeaseLost => CloseReason::ShuttingDown,
                },
                () = tokio::time::sleep_until(status_due), if self.pending_status.is_some() => {
                    if let Some(status) = self.pending_status.take() {
                        self.apply_status(status).await;
                    }
                }
                Some(outbound) = self.attachment.rx.recv() => {
                    let (mut updates, mut live, mut catch_up) = (Vec::new(), Vec::new(), false);
                    let mut next = Some(outbound);
                    while let Some(outbound) = next {
                        match outbound {
                            Outbound::Update(update) => updates.push(*update),
                            Outbound::Notification(notification) => live.push(notification),
                            Outbound::CatchUp => catch_up = true,
                        }
                        next = self.attachment.rx.try_recv().ok();
                    }
                    if catch_up {
                        if let Err(reason) = self.still_here().await {
                            return reason;
                        }
                        if let Err(reason) = self.catch_up(socket).await {
                            return reason;
                        }
                    }
                    if let Err(reason) = self.deliver(socket, updates).await {
                        return reason;
                    }
                    if let Err(reason) = self.deliver_live(socket, live).await {
                        return reason;
                    }
                }
                frame = read_frame(socket) => {
                    last_heard = Instant::now();
                    ping_sent = None;
                    let text = match frame {
                        Ok(Frame::Text(text)) => text,
                        Ok(Frame::Control) => continue,
                        Err(reason) => return reason,
                    };
                    self.touch().await;
                    let step = match protocol::parse(&text) {
                        Ok(message) => self.handle(message).await,
                        Err(error) => {
                            self.state.metrics.message(MessageKind::Invalid);
                            Step::Close(CloseReason::Protocol(parse_error_reason(error)))
                        }
                    };
                    match step {
                        Step::Nothing => {}
                        Step::Reply(reply) => {
                            if let Err(reason) = send(socket, &reply).await {
                                return reason;
                            }
                        }
                        Step::Close(reason) => return reason,
                        Step::ReplyAndClose(reply, reason) => {
                            let _ = send(socket, &reply).await;
                            return reason;
                        }
                    }
                }
                () = &mut timer => {
                    // Liveness: ping after `ping_interval` of silence, give up `pong_timeout` later.
                    let now = Instant::now();
                    match ping_sent {
                        Some(_) => return CloseReason::Unresponsive,
                        None if now >= last_heard + ping_interval => {
                            if socket.send(Message::Ping(Default::default())).await.is_err() {
                                return CloseReason::Gone;
                            }
                            ping_sent = Some(now);
                            timer.as_mut().reset(now + pong_timeout);
                        }
                        None => timer.as_mut().reset(last_heard + ping_interval),
                    }
                }
            }
        }
    }

    async fn handle(&mut self, message: ClientMessage) -> Step {
        let metrics = &self.state.metrics;
        match message {
            ClientMessage::Hello(_) => {
                metrics.message(MessageKind::Hello);
                Step::ReplyAndClose(
                    ServerMessage::HelloRefused { status: 401, reason: "duplicate hello" },
                    CloseReason::Protocol("duplicate hello"),
                )
            }
            ClientMessage::Register { channel_id } => {
                metrics.message(MessageKind::Register);
                self.register(channel_id).await
            }
            ClientMessage::Unregister { channel_id } => {
                metrics.message(MessageKind::Unregister);
                self.unregister(channel_id).await
            }
            ClientMessage::Ack { updates, xpn } => {
                metrics.message(MessageKind::Ack);
                for (channel, version) in updates {
                    let Some(channel) = ChannelId::parse(&channel) else {
                        continue;
                    };
                    if let Err(error) = self.state.store.ack(&self.uaid, &channel, version).await {
                        tracing::error!(error = %crate::error::chain(&error), "ack not recorded");
                    }
                }
                for id in &xpn {
                    self.sent_live.remove(id);
                }
                if let (Some(device), false) = (&self.device, xpn.is_empty()) {
                    if let Err(error) = self.state.store.ack_notifications(&device.id, &xpn).await {
                        tracing::error!(error = %crate::error::chain(&error), "notification ack not recorded");
                    }
                }
                Step::Nothing
            }
            ClientMessage::KeepAlive | ClientMessage::Ping => {
                metrics.message(MessageKind::Ping);
                let now = Instant::now();
                if self
                    .last_keepalive
                    .is_some_and(|last| now.duration_since(last) < self.state.config.ping_min_interval)
                {
                    return Step::Close(CloseReason::PingTooOften);
                }
                self.last_keepalive = Some(now);
                if matches!(message, ClientMessage::KeepAlive) {
                    Step::Reply(ServerMessage::KeepAlive)
                } else {
                    Step::Reply(ServerMessage::Ping { status: 200, reason: None })
                }
            }
            ClientMessage::Status(status) => {
                metrics.message(MessageKind::Status);
                self.report(status).await
            }
            ClientMessage::Unknown(_) => {
                metrics.message(MessageKind::Invalid);
                Step::Close(CloseReason::Protocol("unknown messageType"))
            }
        }
    }

    /// A status report: answered at once, applied at most every `status_min_interval` (the
    /// latest report of a burst wins).
    async fn report(&mut self, status: Option<Status>) -> Step {
        let refuse = |status, reason| Step::Reply(ServerMessage::Ping { status, reason: Some(reason) });
        if self.device.is_none() {
            return refuse(403, "this connection has no presence id: say hello with xpi");
        }
        let Some(status) = status else {
            return refuse(400, "xps must be O, A or U");
        };
        let interval = self.state.config.status_min_interval;
        if self.pending_status.is_some() || self.last_status.is_some_and(|at| at.elapsed() < interval) {
            self.pending_status = Some(status);
        } else {
            self.apply_status(status).await;
        }
        Step::Reply(ServerMessage::Ping { status: 200, reason: None })
    }

    async fn apply_status(&mut self, status: Status) {
        let Some(device) = &self.device else { return };
        self.last_status = Some(Instant::now());
        self.last_touch = Instant::now();
        if let Err(error) = self.state.presence.report(&device.id, status).await {
            tracing::error!(error = %crate::error::chain(&error), "status not recorded");
        }
    }

    /// Any message proves the device is not silent; tell the store at most every half
    /// `stale_after`, so an idle but present device is never swept offline.
    async fn touch(&mut self) {
        let Some(device) = &self.device else { return };
        if self.last_touch.elapsed() < self.state.config.stale_after / 2 {
            return;
        }
        self.last_touch = Instant::now();
        if let Err(error) = self.state.store.touch_device(&device.id, unix_now()).await {
            tracing::error!(error = %crate::error::chain(&error), "cannot record device activity");
        }
    }

    /// After the socket closed: apply a status still waiting, then start the grace after which
    /// the device is offline (not for a removed device, nor when the whole node stops: the next
    /// start marks everyone offline).
    async fn finish(&mut self, reason: CloseReason) {
        if let Some(status) = self.pending_status.take() {
            self.apply_status(status).await;
        }
        let Some(device) = self.device.take() else { return };
        match reason {
            CloseReason::Revoked | CloseReason::ShuttingDown => {}
            _ => self.state.presence.disconnected(device.id, device.connection),
        }
    }

    async fn register(&mut self, raw: Option<String>) -> Step {
        let (raw, channel) = match raw {
            Some(raw) => {
                let channel = ChannelId::parse(&raw);
                (raw, channel)
            }
            None => (String::new(), None),
        };
        let Some(channel) = channel else {
            return Step::Reply(ServerMessage::Register {
                channel_id: raw,
                status: 401,
                push_endpoint: None,
                reason: Some("channelID must be a UUID"),
            });
        };
        let config = &self.state.config;
        let outcome = self
            .state
            .store
            .register_channel(&self.uaid, &channel, config.max_channels_per_uaid, unix_now())
            .await;
        let (status, push_endpoint, reason) = match outcome {
            Ok(Registration::Registered) => {
                let token = self.state.keys.seal(&self.uaid, &channel);
                (200, Some(format!("{}/update/{token}", self.state.public_url)), None)
            }
            Ok(Registration::TooManyChannels) => (429, None, Some("too many channels")),
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), "register failed");
                (500, None, Some("storage error"))
            }
        };
        // The reply's channelID must equal the request's, whatever its spelling.
        Step::Reply(ServerMessage::Register { channel_id: raw, status, push_endpoint, reason })
    }

    async fn unregister(&mut self, raw: Option<String>) -> Step {
        let raw = raw.unwrap_or_default();
        let Some(channel) = ChannelId::parse(&raw) else {
            return Step::Reply(ServerMessage::Unregister {
                channel_id: raw,
                status: 401,
                reason: Some("channelID must be a UUID"),
            });
        };
        let (status, reason) = match self.state.store.unregister_channel(&self.uaid, &channel).await {
            Ok(()) => {
                self.sent.remove(&channel);
                (200, None)
            }
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), "unregister failed");
                (500, Some("storage error"))
            }
        };
        Step::Reply(ServerMessage::Unregister { channel_id: raw, status, reason })
    }

    /// Sends live notifications (only to a device connection) and notes their delivery.
    /// Sends whatever the store holds for this connection that it has not sent yet: after
    /// hello, and when signals for it may have been missed.
    /// Whether this is still the UAID's connection: if the UAID said hello on another node
    /// since and the signal that should have closed this connection was lost, it closes now.
    /// (Right after hello the store names this node; the check is for later catch-ups.)
    async fn still_here(&self) -> Result<(), CloseReason> {
        if !self.state.is_clustered() {
            return Ok(());
        }
        match self.state.store.uaid_node(&self.uaid).await {
            Ok(Some(node)) if *node != *self.state.node => Err(CloseReason::Replaced),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::error!(error = %crate::error::chain(&error), "cannot read the UAID's node");
                Err(CloseReason::StoreUnavailable)
            }
        }
    }

    async fn catch_up(&mut self, socket: &mut WebSocket) -> Result<(), CloseReason> {
        let stored = self.state.store.pending_updates(&self.uaid).await.map_err(|error| {
            tracing::error!(error = %crate::error::chain(&error), "cannot read stored notifications");
            CloseReason::StoreUnavailable
        })?;
        self.deliver(socket, stored).await?;
        let queued = match &self.device {
            Some(device) => {
                self.state.store.pending_notifications(&device.id, unix_now()).await.map_err(|error| {
                    tracing::error!(error = %crate::error::chain(&error), "cannot read queued notifications");
                    CloseReason::StoreUnavailable
                })?
            }
            None => Vec::new(),
        };
        self.deliver_live(socket, queued.into_iter().map(std::sync::Arc::new).collect()).await
    }

    async fn deliver_live(
        &mut self,
        socket: &mut WebSocket,
        mut live: Vec<std::sync::Arc<crate::domain::LiveNotification>>,
    ) -> Result<(), CloseReason> {
        let Some(device) = &self.device else { return Ok(()) };
        live.retain(|notification| self.sent_live.insert(notification.id.clone()));
        if live.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = live.iter().map(|n| n.id.clone()).collect();
        send(socket, &ServerMessage::Live { xpn: live }).await?;
        if let Err(error) = self.state.store.mark_delivered(&device.id, &ids, unix_now()).await {
            tracing::error!(error = %crate::error::chain(&error), "notification delivery not recorded");
        }
        Ok(())
    }

    /// Sends the updates not already sent at the same or a higher version, as one message.
    async fn deliver(&mut self, socket: &mut WebSocket, updates: Vec<PushUpdate>) -> Result<(), CloseReason> {
        let mut entries: Vec<UpdateEntry> = Vec::with_capacity(updates.len());
        for update in &updates {
            if self.sent.get(&update.channel).is_some_and(|&sent| sent >= update.version) {
                continue;
            }
            self.sent.insert(update.channel, update.version);
            // A later update of the same channel in this batch is higher (or was skipped above).
            entries.retain(|entry| entry.channel != update.channel);
            entries.push(UpdateEntry::from(update));
        }
        if entries.is_empty() {
            return Ok(());
        }
        let count = entries.len() as u64;
        send(socket, &ServerMessage::Notification { updates: entries }).await?;
        self.state.metrics.notifications_delivered.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
