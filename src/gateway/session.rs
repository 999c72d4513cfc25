//! What one device connection does, as a state machine with no I/O: inputs (a device's frame,
//! work from the registry, a tick of the clock, the outcome of an effect it asked for) go in,
//! `Action`s come out. The socket loop (`socket`) performs the actions and feeds outcomes back.
//!
//! The session owns the per-connection rules: a second hello is refused, keep-alives are rate
//! limited, status reports are answered at once and applied at most every
//! `status_min_interval`, an update is never sent at the same or a lower version twice, a live
//! notification is not sent again until acked, a silent device is pinged and then given up on,
//! and every reason to close maps to one close code (`close_frame`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::protocol::{ClientMessage, Hello, ParseError, ServerMessage, UpdateEntry};
use crate::config::Config;
use crate::domain::{ChannelId, Eviction, LiveNotification, PushUpdate, Status};

/// Close code autopush uses for a device that pings too often.
pub const CLOSE_PING_TOO_OFTEN: u16 = 4774;
/// Close code for a presence id that is unknown or was revoked: do not reconnect with it.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code for a device that registers, unregisters or acks faster than allowed.
pub const CLOSE_TOO_MANY_WRITES: u16 = 4429;

/// Live notifications remembered as sent and unacked on one connection, at most.
const SENT_LIVE_MAX: usize = 256;

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
    /// A WebSocket frame RFC 6455 does not allow.
    Framing(&'static str),
    /// A text message that is not UTF-8.
    NotUtf8,
    HelloTimeout,
    PingTooOften,
    /// Registers, unregisters and acks past `device_writes_per_second` (each is a write).
    TooManyWrites,
    Replaced,
    Unresponsive,
    ShuttingDown,
    StoreUnavailable,
    /// The hello's `xpi` is not a known presence id.
    UnknownPresenceId,
    /// The device was removed; its presence id no longer works.
    Revoked,
}

impl From<Eviction> for CloseReason {
    fn from(eviction: Eviction) -> CloseReason {
        match eviction {
            Eviction::Replaced => CloseReason::Replaced,
            Eviction::Revoked => CloseReason::Revoked,
            // Other nodes have set this node's devices offline: they must say hello again.
            Eviction::LeaseLost | Eviction::ShuttingDown => CloseReason::ShuttingDown,
        }
    }
}

/// A WebSocket close frame: its code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: &'static str,
}

/// The one place that maps close reasons to WebSocket close frames.
pub fn close_frame(reason: CloseReason) -> Option<CloseFrame> {
    let (code, text) = match reason {
        CloseReason::Gone => return None,
        CloseReason::Protocol(why) => (1008, why),
        CloseReason::Binary => (1003, "binary frames are not supported"),
        CloseReason::TooLarge => (1009, "message too large"),
        CloseReason::Framing(why) => (1002, why),
        CloseReason::NotUtf8 => (1007, "text is not utf-8"),
        CloseReason::HelloTimeout => (1008, "no hello in time"),
        CloseReason::PingTooOften => (CLOSE_PING_TOO_OFTEN, "pinging too often"),
        CloseReason::TooManyWrites => (CLOSE_TOO_MANY_WRITES, "too many registers, unregisters or acks"),
        CloseReason::Replaced => (1000, "replaced by a newer connection"),
        CloseReason::Unresponsive => (1001, "no response to ping"),
        CloseReason::ShuttingDown => (1001, "server shutting down"),
        CloseReason::StoreUnavailable => (1011, "service unavailable"),
        CloseReason::UnknownPresenceId => (CLOSE_UNAUTHORIZED, "unknown presence id"),
        CloseReason::Revoked => (CLOSE_UNAUTHORIZED, "device removed"),
    };
    Some(CloseFrame { code, reason: text })
}

/// The first message of a connection must be a hello; anything else closes it.
pub fn expect_hello(message: Result<ClientMessage, ParseError>) -> Result<Hello, CloseReason> {
    match message {
        Ok(ClientMessage::Hello(hello)) => Ok(hello),
        Ok(_) => Err(CloseReason::Protocol("the first message must be hello")),
        Err(error) => Err(protocol_error(error)),
    }
}

fn protocol_error(error: ParseError) -> CloseReason {
    CloseReason::Protocol(match error {
        ParseError::InvalidJson => "invalid json",
        ParseError::NotAnObject => "json is not an object",
    })
}

/// The intervals a session keeps, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Keep-alives closer together than this close the connection (4774).
    pub ping_min_interval: Duration,
    /// Status reports are applied at most this often; the latest of a burst wins.
    pub status_min_interval: Duration,
    /// How often a talking device's silence clock is restarted in the store.
    pub touch_every: Duration,
    /// Silence after which the server sends a WebSocket ping.
    pub ping_interval: Duration,
    /// How long an unanswered ping is waited for.
    pub pong_timeout: Duration,
    /// Registers, unregisters and acks per second, on average; bursts up to five seconds' worth.
    pub writes_per_second: u32,
}

impl Limits {
    /// The most writes a connection may make at once: five seconds' worth.
    fn burst(&self) -> f32 {
        self.writes_per_second as f32 * 5.0
    }

    pub fn from_config(config: &Config) -> Limits {
        Limits {
            ping_min_interval: config.ping_min_interval,
            status_min_interval: config.status_min_interval,
            // Often enough that an idle but present device is never swept offline.
            touch_every: config.stale_after / 2,
            ping_interval: config.ws_ping_interval,
            pong_timeout: config.ws_pong_timeout,
            writes_per_second: config.device_writes_per_second,
        }
    }
}

/// A frame from the device.
#[derive(Debug)]
pub enum Frame {
    /// A text frame, parsed.
    Text(Result<ClientMessage, ParseError>),
    /// A WebSocket ping or pong: proof of life, nothing to handle.
    Control,
}

/// What the registry handed the connection since the loop last looked, in one piece.
#[derive(Debug, Default)]
pub struct Batch {
    pub updates: Vec<PushUpdate>,
    pub live: Vec<Arc<LiveNotification>>,
    /// Signals may have been missed: read what the store holds for this connection again.
    pub catch_up: bool,
}

/// How a store effect the session asked for ended (a failure is logged where it happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The channel is the UAID's; the AppServer reaches it at `endpoint`.
    Done {
        endpoint: String,
    },
    TooManyChannels,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    Done,
    Failed,
}

/// Something that happened to the connection.
#[derive(Debug)]
pub enum Input {
    Frame(Frame),
    Outbound(Batch),
    /// The time `Session::wakeup` asked for has come (early ticks do nothing).
    Tick,
    /// The outcome of `Action::Register`, with the request's own spelling of the channel id.
    Registered {
        channel_id: String,
        outcome: Registered,
    },
    Unregistered {
        channel_id: String,
        channel: ChannelId,
        outcome: Unregistered,
    },
    /// What `Action::CatchUp` read from the store, and the batch it held back.
    CaughtUp {
        stored: Vec<PushUpdate>,
        queued: Vec<Arc<LiveNotification>>,
        then: Batch,
    },
    /// The socket is closed (the close frame, if any, is the loop's to send).
    Closed(CloseReason),
}

/// What the socket loop must do, in order.
#[derive(Debug)]
pub enum Action {
    Send(ServerMessage),
    /// Send a WebSocket ping frame.
    Ping,
    /// Restart the device's silence clock in the store.
    Touch,
    /// Register the channel in the store; answer with `Input::Registered`.
    Register {
        channel_id: String,
        channel: ChannelId,
    },
    /// Unregister the channel in the store; answer with `Input::Unregistered`.
    Unregister {
        channel_id: String,
        channel: ChannelId,
    },
    /// Record the device's acks of updates.
    Ack(Vec<(ChannelId, u64)>),
    /// Record the device's acks of live notifications.
    AckNotifications(Vec<String>),
    /// Record that these live notifications were sent.
    MarkDelivered(Vec<String>),
    /// Report the device's status to the presence engine now; when `answer`, the device's
    /// report is answered once the status is durable (200) or could not be recorded (500).
    ApplyStatus {
        status: Status,
        answer: bool,
    },
    /// Read the UAID's stored updates (and the device's queued notifications), first checking
    /// that the UAID still belongs to this node when `check_node`; answer with
    /// `Input::CaughtUp`, handing `then` back.
    CatchUp {
        check_node: bool,
        then: Batch,
    },
    /// Start the grace after which the device is offline.
    Disconnected,
    /// Stop: the loop closes the socket with this reason.
    Close(CloseReason),
}

/// What a connection has sent.
#[derive(Debug, Default)]
struct Sent {
    /// The highest version sent per channel: never send a lower one or the same one again.
    versions: HashMap<ChannelId, u64>,
    /// Live notifications sent and not acked yet: never sent twice.
    live: HashSet<String>,
}

/// One identified connection's state.
#[derive(Debug)]
pub struct Session {
    /// Shared by every session of the node: a copy in each would cost every idle connection.
    limits: Arc<Limits>,
    /// Whether the connection reports presence for a device (hello with `xpi`).
    reports_presence: bool,
    /// What this connection has sent; made when it first sends something (most devices
    /// connect, report and are sent nothing, and an empty map still takes 48 bytes).
    sent: Option<Box<Sent>>,
    last_keepalive: Option<Instant>,
    /// Writes this connection may still make (a token bucket refilled at `writes_per_second`).
    write_tokens: f32,
    tokens_at: Instant,
    /// When a status was last applied, and the latest one waiting for `status_min_interval`.
    last_status: Option<Instant>,
    pending_status: Option<Status>,
    /// When the device's silence clock was last restarted in the store.
    last_touch: Instant,
    /// When the device was last heard from, and when an unanswered ping went out.
    last_heard: Instant,
    ping_sent: Option<Instant>,
}

impl Session {
    /// A session just after a successful hello, at `now`.
    pub fn new(limits: impl Into<Arc<Limits>>, reports_presence: bool, now: Instant) -> Session {
        let limits: Arc<Limits> = limits.into();
        Session {
            write_tokens: limits.burst(),
            limits,
            reports_presence,
            sent: None,
            last_keepalive: None,
            tokens_at: now,
            last_status: None,
            pending_status: None,
            last_touch: now,
            last_heard: now,
            ping_sent: None,
        }
    }

    /// When the session next wants `Input::Tick` for liveness: a ping to send after silence,
    /// or the end of the wait for a pong. The node's sweep delivers it (up to a period late).
    pub fn liveness_due(&self) -> Instant {
        match self.ping_sent {
            Some(at) => at + self.limits.pong_timeout,
            None => self.last_heard + self.limits.ping_interval,
        }
    }

    /// When a status held back by `status_min_interval` falls due, if one is: the connection
    /// keeps a timer only while one waits (rarely, and briefly).
    pub fn status_due(&self) -> Option<Instant> {
        match (self.pending_status, self.last_status) {
            (Some(_), Some(at)) => Some(at + self.limits.status_min_interval),
            _ => None,
        }
    }

    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::Frame(frame) => self.on_frame(frame, now),
            Input::Outbound(batch) => self.on_outbound(batch),
            Input::Tick => self.on_tick(now),
            Input::Registered { channel_id, outcome } => {
                let (status, push_endpoint, reason) = match outcome {
                    Registered::Done { endpoint } => (200, Some(endpoint), None),
                    Registered::TooManyChannels => (429, None, Some("too many channels")),
                    Registered::Failed => (500, None, Some("storage error")),
                };
                // The reply's channelID must equal the request's, whatever its spelling.
                vec![Action::Send(ServerMessage::Register { channel_id, status, push_endpoint, reason })]
            }
            Input::Unregistered { channel_id, channel, outcome } => {
                let (status, reason) = match outcome {
                    Unregistered::Done => {
                        if let Some(sent) = &mut self.sent {
                            sent.versions.remove(&channel);
                        }
                        (200, None)
                    }
                    Unregistered::Failed => (500, Some("storage error")),
                };
                vec![Action::Send(ServerMessage::Unregister { channel_id, status, reason })]
            }
            Input::CaughtUp { stored, queued, then } => {
                let mut actions = Vec::new();
                self.deliver(stored, &mut actions);
                self.deliver_live(queued, &mut actions);
                self.deliver(then.updates, &mut actions);
                self.deliver_live(then.live, &mut actions);
                actions
            }
            Input::Closed(reason) => self.on_closed(reason),
        }
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) -> Vec<Action> {
        self.last_heard = now;
        self.ping_sent = None;
        let Frame::Text(message) = frame else { return Vec::new() };
        let mut actions = Vec::new();
        if self.reports_presence && now.duration_since(self.last_touch) >= self.limits.touch_every {
            self.last_touch = now;
            actions.push(Action::Touch);
        }
        match message {
            Ok(message) => self.on_message(message, now, &mut actions),
            Err(error) => actions.push(Action::Close(protocol_error(error))),
        }
        actions
    }

    fn on_message(&mut self, message: ClientMessage, now: Instant, actions: &mut Vec<Action>) {
        match message {
            ClientMessage::Hello(_) => {
                actions.push(Action::Send(ServerMessage::HelloRefused {
                    status: 401,
                    reason: "duplicate hello",
                }));
                actions.push(Action::Close(CloseReason::Protocol("duplicate hello")));
            }
            ClientMessage::Register { .. } | ClientMessage::Unregister { .. } | ClientMessage::Ack { .. }
                if !self.take_write(now) =>
            {
                actions.push(Action::Close(CloseReason::TooManyWrites));
            }
            ClientMessage::Register { channel_id } => {
                let channel_id = channel_id.unwrap_or_default();
                actions.push(match ChannelId::parse(&channel_id) {
                    Some(channel) => Action::Register { channel_id, channel },
                    None => Action::Send(ServerMessage::Register {
                        channel_id,
                        status: 401,
                        push_endpoint: None,
                        reason: Some("channelID must be a UUID"),
                    }),
                });
            }
            ClientMessage::Unregister { channel_id } => {
                let channel_id = channel_id.unwrap_or_default();
                actions.push(match ChannelId::parse(&channel_id) {
                    Some(channel) => Action::Unregister { channel_id, channel },
                    None => Action::Send(ServerMessage::Unregister {
                        channel_id,
                        status: 401,
                        reason: Some("channelID must be a UUID"),
                    }),
                });
            }
            ClientMessage::Ack { updates, xpn } => {
                let updates: Vec<(ChannelId, u64)> = updates
                    .iter()
                    .filter_map(|(channel, version)| Some((ChannelId::parse(channel)?, *version)))
                    .collect();
                if !updates.is_empty() {
                    actions.push(Action::Ack(updates));
                }
                if let Some(sent) = &mut self.sent {
                    for id in &xpn {
                        sent.live.remove(id);
                    }
                }
                if self.reports_presence && !xpn.is_empty() {
                    actions.push(Action::AckNotifications(xpn));
                }
            }
            ClientMessage::KeepAlive | ClientMessage::Ping => {
                if self
                    .last_keepalive
                    .is_some_and(|last| now.duration_since(last) < self.limits.ping_min_interval)
                {
                    actions.push(Action::Close(CloseReason::PingTooOften));
                    return;
                }
                self.last_keepalive = Some(now);
                actions.push(Action::Send(match message {
                    ClientMessage::KeepAlive => ServerMessage::KeepAlive,
                    _ => ServerMessage::Ping { status: 200, reason: None },
                }));
            }
            ClientMessage::Status(status) => self.report(status, now, actions),
            ClientMessage::Unknown(_) => {
                actions.push(Action::Close(CloseReason::Protocol("unknown messageType")))
            }
        }
    }

    /// Takes one write from the connection's bucket; `false` when it is empty.
    fn take_write(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.tokens_at).as_secs_f32();
        self.tokens_at = now;
        let refilled = self.write_tokens + elapsed * self.limits.writes_per_second as f32;
        self.write_tokens = refilled.min(self.limits.burst());
        if self.write_tokens < 1.0 {
            return false;
        }
        self.write_tokens -= 1.0;
        true
    }

    /// A status report: answered at once, applied at most every `status_min_interval` (the
    /// latest report of a burst wins).
    fn report(&mut self, status: Option<Status>, now: Instant, actions: &mut Vec<Action>) {
        let refuse = |status, reason| Action::Send(ServerMessage::Ping { status, reason: Some(reason) });
        if !self.reports_presence {
            actions.push(refuse(403, "this connection has no presence id: say hello with xpi"));
            return;
        }
        let Some(status) = status else {
            actions.push(refuse(400, "xps must be O, A or U"));
            return;
        };
        let interval = self.limits.status_min_interval;
        if self.pending_status.is_some()
            || self.last_status.is_some_and(|at| now.duration_since(at) < interval)
        {
            self.pending_status = Some(status);
        } else {
            actions.push(self.apply_status(status, true, now));
            return;
        }
        // Taken: applied when the interval has passed (the latest of a burst wins).
        actions.push(Action::Send(ServerMessage::Ping { status: 200, reason: None }));
    }

    fn apply_status(&mut self, status: Status, answer: bool, now: Instant) -> Action {
        self.last_status = Some(now);
        self.last_touch = now;
        Action::ApplyStatus { status, answer }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let (Some(status), Some(at)) = (self.pending_status, self.last_status) {
            if now >= at + self.limits.status_min_interval {
                self.pending_status = None;
                actions.push(self.apply_status(status, false, now));
            }
        }
        // Liveness: ping after `ping_interval` of silence, give up `pong_timeout` later.
        match self.ping_sent {
            Some(at) if now >= at + self.limits.pong_timeout => {
                actions.push(Action::Close(CloseReason::Unresponsive));
            }
            None if now >= self.last_heard + self.limits.ping_interval => {
                self.ping_sent = Some(now);
                actions.push(Action::Ping);
            }
            _ => {}
        }
        actions
    }

    fn on_outbound(&mut self, batch: Batch) -> Vec<Action> {
        if batch.catch_up {
            // What the store holds goes out first; the batch waits for it.
            return vec![Action::CatchUp { check_node: true, then: Batch { catch_up: false, ..batch } }];
        }
        let mut actions = Vec::new();
        self.deliver(batch.updates, &mut actions);
        self.deliver_live(batch.live, &mut actions);
        actions
    }

    /// Sends the updates not already sent at the same or a higher version, as one message.
    fn deliver(&mut self, updates: Vec<PushUpdate>, actions: &mut Vec<Action>) {
        let mut entries: Vec<UpdateEntry> = Vec::with_capacity(updates.len());
        for update in &updates {
            let sent = &mut self.sent.get_or_insert_with(Box::default).versions;
            if sent.get(&update.channel).is_some_and(|&sent| sent >= update.version) {
                continue;
            }
            sent.insert(update.channel, update.version);
            // A later update of the same channel in this batch is higher (or was skipped above).
            entries.retain(|entry| entry.channel != update.channel);
            entries.push(UpdateEntry::from(update));
        }
        if !entries.is_empty() {
            actions.push(Action::Send(ServerMessage::Notification { updates: entries }));
        }
    }

    /// Sends live notifications (only to a device connection) not sent and unacked yet, and
    /// has their delivery noted.
    fn deliver_live(&mut self, mut live: Vec<Arc<LiveNotification>>, actions: &mut Vec<Action>) {
        if !self.reports_presence {
            return;
        }
        // A device that never acks would grow this set without end: past the bound it starts
        // over, and what it has not acked may come again (at least once, as after a reconnect).
        live.retain(|notification| {
            let sent = &mut self.sent.get_or_insert_with(Box::default).live;
            if sent.contains(&notification.id) {
                return false;
            }
            if sent.len() >= SENT_LIVE_MAX {
                sent.clear();
            }
            sent.insert(notification.id.clone())
        });
        if live.is_empty() {
            return;
        }
        let ids = live.iter().map(|n| n.id.clone()).collect();
        actions.push(Action::Send(ServerMessage::Live { xpn: live }));
        actions.push(Action::MarkDelivered(ids));
    }

    /// After the socket closed: apply a status still waiting, then start the grace after which
    /// the device is offline (not for a removed device, nor when the whole node stops: the next
    /// start marks everyone offline).
    fn on_closed(&mut self, reason: CloseReason) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(status) = self.pending_status.take() {
            actions.push(Action::ApplyStatus { status, answer: false });
        }
        if self.reports_presence && !matches!(reason, CloseReason::Revoked | CloseReason::ShuttingDown) {
            actions.push(Action::Disconnected);
        }
        actions
    }
}

#[cfg(test)]
mod tests;
