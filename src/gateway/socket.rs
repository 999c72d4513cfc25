//! The device gateway's socket: one WebSocket per device at `/`, speaking SimplePush.
//!
//! After the hello (`hello`), the loop feeds the session (`session`) what happens (frames,
//! work from the registry, ticks of its clock) and performs the actions it returns: sending
//! messages and calling the store, whose outcomes go back into the session.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::protocol::{self, ClientMessage, ParseError, ServerMessage};
use super::registry::{Attachment, Mail, Outbound};
use super::session::{Action, Batch, CloseReason, Frame, Input, Registered, Session, Unregistered};
use super::wire::{Incoming, WireError};
use super::Gateway;
use crate::clock::unix_now;
use crate::domain::{DeviceId, Uaid};
use crate::metrics::MessageKind;
use crate::ops::presence::ReportError;
use crate::store::Registration;
use tokio::sync::oneshot;

pub use super::session::{CLOSE_PING_TOO_OFTEN, CLOSE_UNAUTHORIZED};

pub(super) use super::wire::WebSocket;

/// What a frame from the device turned out to be.
pub(super) enum ReadFrame {
    Text(String),
    /// Pings and pongs: proof of life, nothing to handle.
    Control,
}

pub(super) async fn read_frame(socket: &mut WebSocket) -> Result<ReadFrame, CloseReason> {
    match socket.read().await {
        Ok(Incoming::Text(text)) => Ok(ReadFrame::Text(text)),
        Ok(Incoming::Binary) => Err(CloseReason::Binary),
        Ok(Incoming::Control) => Ok(ReadFrame::Control),
        Err(error) => Err(error.into()),
    }
}

impl From<WireError> for CloseReason {
    fn from(error: WireError) -> CloseReason {
        match error {
            WireError::Closed => CloseReason::Gone,
            WireError::TooLarge => CloseReason::TooLarge,
            WireError::Backlog => CloseReason::Unresponsive,
            WireError::Protocol(why) => CloseReason::Framing(why),
            WireError::NotUtf8 => CloseReason::NotUtf8,
        }
    }
}

/// Sends a message, giving up after `limit`: a device that stopped reading is closed rather
/// than holding its session (and its liveness timer) forever.
pub(super) async fn send(
    socket: &mut WebSocket,
    message: &ServerMessage,
    limit: Duration,
) -> Result<(), CloseReason> {
    within(limit, socket.send_text(&message.to_json())).await
}

/// Sends a WebSocket ping, giving up after `limit`.
pub(super) async fn ping(socket: &mut WebSocket, limit: Duration) -> Result<(), CloseReason> {
    within(limit, socket.send_ping()).await
}

async fn within(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), WireError>>,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result.map_err(CloseReason::from),
        Err(_) => Err(CloseReason::Unresponsive),
    }
}

/// Waits until `at`, or for ever when there is nothing to wait for. The timer is boxed: it
/// exists only while a status waits, and an idle connection's task holds no room for it.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

fn message_kind(message: &Result<ClientMessage, ParseError>) -> MessageKind {
    match message {
        Ok(ClientMessage::Hello(_)) => MessageKind::Hello,
        Ok(ClientMessage::Register { .. }) => MessageKind::Register,
        Ok(ClientMessage::Unregister { .. }) => MessageKind::Unregister,
        Ok(ClientMessage::Ack { .. }) => MessageKind::Ack,
        Ok(ClientMessage::KeepAlive | ClientMessage::Ping) => MessageKind::Ping,
        Ok(ClientMessage::Status(_)) => MessageKind::Status,
        Ok(ClientMessage::Unknown(_)) | Err(_) => MessageKind::Invalid,
    }
}

/// The device a connection reports presence for (hello with `xpi`).
pub(super) struct BoundDevice {
    pub(super) id: DeviceId,
    /// This connection's number in the presence engine, to tell a reconnect within the grace.
    pub(super) connection: u64,
}

/// An identified connection: its session and what performing the session's actions needs.
pub(super) struct Connection {
    pub(super) state: Gateway,
    pub(super) uaid: Uaid,
    pub(super) attachment: Attachment,
    pub(super) device: Option<BoundDevice>,
    pub(super) session: Session,
    /// Status reports applied and waiting to be durable, answered in order.
    pub(super) answers: Answers,
}

/// A report's answer: whether it became durable.
type Answer = oneshot::Receiver<Result<(), ReportError>>;

/// The answers a connection still owes, in order. Held only while one is owed: an idle
/// connection keeps a null pointer here, not a queue and its buffer.
#[derive(Default)]
#[allow(clippy::box_collection)] // The box is the point: 8 bytes in an idle connection's task, not 32.
pub(super) struct Answers(Option<Box<VecDeque<Answer>>>);

impl Answers {
    fn push(&mut self, answer: Answer) {
        self.0.get_or_insert_default().push_back(answer);
    }

    /// The oldest answer owed, if any.
    fn oldest(&mut self) -> Option<&mut Answer> {
        self.0.as_mut().and_then(|queue| queue.front_mut())
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The oldest answer came: forgets it, and the queue once it is empty.
    fn pop(&mut self) {
        if let Some(queue) = &mut self.0 {
            queue.pop_front();
            if queue.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl Connection {
    /// Not an `async fn` (see `hello::serve`): its arguments are kept once in the task.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run<'a>(
        &'a mut self,
        socket: &'a mut WebSocket,
    ) -> impl std::future::Future<Output = CloseReason> + 'a {
        async move {
            // The node's stop comes as an eviction (`sweep_liveness`), which reaches every attached
            // connection; one attached after it finds the node stopping here.
            if self.state.shutdown.is_cancelled() {
                return CloseReason::ShuttingDown;
            }
            loop {
                // Liveness comes from the node's sweep; a timer of its own only while a status waits.
                self.state.registry.wake_at(&self.attachment, self.session.liveness_due());
                let status_due = self.session.status_due();
                let input = tokio::select! {
                    mail = self.attachment.next() => match mail {
                        Mail::Evicted(eviction) => return eviction.into(),
                        Mail::Tick => Input::Tick,
                        // Everything queued goes out together.
                        Mail::Work(queue) => {
                            let mut batch = Batch::default();
                            for outbound in queue {
                                match outbound {
                                    Outbound::Update(update) => batch.updates.push(*update),
                                    Outbound::Notification(notification) => batch.live.push(notification),
                                    Outbound::CatchUp => batch.catch_up = true,
                                }
                            }
                            Input::Outbound(batch)
                        }
                    },
                    frame = read_frame(socket) => match frame {
                        Ok(ReadFrame::Control) => Input::Frame(Frame::Control),
                        Ok(ReadFrame::Text(text)) => {
                            let message = protocol::parse(&text);
                            self.state.metrics.message(message_kind(&message));
                            Input::Frame(Frame::Text(message))
                        }
                        Err(reason) => return reason,
                    },
                    () = until(status_due) => Input::Tick,
                    recorded = async { self.answers.oldest().expect("not empty").await }, if !self.answers.is_empty() => {
                        self.answers.pop();
                        let answer = match recorded {
                            Ok(Ok(())) => ServerMessage::Ping { status: 200, reason: None },
                            Ok(Err(error)) => {
                                tracing::error!(error = %crate::error::chain(&error), "status not recorded");
                                ServerMessage::Ping { status: 500, reason: Some("status not recorded") }
                            }
                            Err(_) => ServerMessage::Ping { status: 500, reason: Some("status not recorded") },
                        };
                        if let Err(reason) = Box::pin(send(socket, &answer, self.state.config.ws_write_timeout)).await {
                            return reason;
                        }
                        continue;
                    }
                };
                let actions = self.session.step(input, Instant::now());
                // Boxed: only the select above is held while the connection is idle (see `hello::serve`).
                if let Err(reason) = Box::pin(self.perform(socket, actions.into())).await {
                    return reason;
                }
            }
        }
    }

    /// Performs the session's actions in order; the actions an outcome leads to come before
    /// the rest. Ends with the reason to close, if one came up.
    pub(super) async fn perform(
        &mut self,
        socket: &mut WebSocket,
        mut actions: VecDeque<Action>,
    ) -> Result<(), CloseReason> {
        while let Some(action) = actions.pop_front() {
            let Some(input) = self.effect(socket, action).await? else { continue };
            let follow = self.session.step(input, Instant::now());
            for action in follow.into_iter().rev() {
                actions.push_front(action);
            }
        }
        Ok(())
    }

    /// Carries out one action; what the session must hear back comes as an input.
    async fn effect(&mut self, socket: &mut WebSocket, action: Action) -> Result<Option<Input>, CloseReason> {
        let state = &self.state;
        let device = self.device.as_ref();
        match action {
            Action::Send(message) => {
                send(socket, &message, state.config.ws_write_timeout).await?;
                if let ServerMessage::Notification { updates } = &message {
                    state.metrics.notifications_delivered.fetch_add(updates.len() as u64, Relaxed);
                }
            }
            Action::Ping => {
                ping(socket, state.config.ws_write_timeout).await?;
            }
            Action::Close(reason) => return Err(reason),
            Action::Touch => {
                let Some(device) = device else { return Ok(None) };
                if let Err(error) = state.store.touch_device(&device.id, unix_now()).await {
                    tracing::error!(error = %crate::error::chain(&error), "cannot record device activity");
                }
            }
            Action::ApplyStatus { status, answer } => {
                let Some(device) = device else { return Ok(None) };
                // Applied now; durable a little later, without holding this connection up.
                let recorded = state.presence.submit(&device.id, Some(device.connection), status).await;
                if answer {
                    self.answers.push(recorded);
                }
            }
            Action::Disconnected => {
                let Some(device) = self.device.take() else { return Ok(None) };
                state.presence.disconnected(device.id, device.connection);
            }
            Action::Register { channel_id, channel } => {
                let config = &state.config;
                let registration = state
                    .store
                    .register_channel(&self.uaid, &channel, config.max_channels_per_uaid, unix_now())
                    .await;
                let outcome = match registration {
                    Ok(Registration::Registered) => {
                        let token = state.keys.seal(&self.uaid, &channel);
                        Registered::Done { endpoint: format!("{}/update/{token}", state.public_url) }
                    }
                    Ok(Registration::TooManyChannels) => Registered::TooManyChannels,
                    Err(error) => {
                        tracing::error!(error = %crate::error::chain(&error), "register failed");
                        Registered::Failed
                    }
                };
                return Ok(Some(Input::Registered { channel_id, outcome }));
            }
            Action::Unregister { channel_id, channel } => {
                let outcome = match state.store.unregister_channel(&self.uaid, &channel).await {
                    Ok(()) => Unregistered::Done,
                    Err(error) => {
                        tracing::error!(error = %crate::error::chain(&error), "unregister failed");
                        Unregistered::Failed
                    }
                };
                return Ok(Some(Input::Unregistered { channel_id, channel, outcome }));
            }
            Action::Ack(updates) => {
                for (channel, version) in updates {
                    if let Err(error) = state.store.ack(&self.uaid, &channel, version).await {
                        tracing::error!(error = %crate::error::chain(&error), "ack not recorded");
                    }
                }
            }
            Action::AckNotifications(ids) => {
                let Some(device) = device else { return Ok(None) };
                if let Err(error) = state.store.ack_notifications(&device.id, &ids).await {
                    tracing::error!(error = %crate::error::chain(&error), "notification ack not recorded");
                }
            }
            Action::MarkDelivered(ids) => {
                let Some(device) = device else { return Ok(None) };
                if let Err(error) = state.store.mark_delivered(&device.id, &ids, unix_now()).await {
                    tracing::error!(error = %crate::error::chain(&error), "notification delivery not recorded");
                }
            }
            Action::CatchUp { check_node, then } => {
                if check_node {
                    self.still_here().await?;
                }
                let (stored, queued) = self.stored().await?;
                return Ok(Some(Input::CaughtUp { stored, queued, then }));
            }
        }
        Ok(None)
    }

    /// Whether this is still the UAID's connection: if the UAID said hello on another node
    /// since and the signal that should have closed this connection was lost, it closes now.
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

    /// The UAID's stored updates, and the device's queued live notifications.
    async fn stored(
        &self,
    ) -> Result<
        (Vec<crate::domain::PushUpdate>, Vec<std::sync::Arc<crate::domain::LiveNotification>>),
        CloseReason,
    > {
        let stored = self.state.store.pending_updates(&self.uaid).await.map_err(|error| {
            tracing::error!(error = %crate::error::chain(&error), "cannot read stored notifications");
            CloseReason::StoreUnavailable
        })?;
        let queued = match &self.device {
            Some(device) => {
                self.state.store.pending_notifications(&device.id, unix_now()).await.map_err(|error| {
                    tracing::error!(error = %crate::error::chain(&error), "cannot read queued notifications");
                    CloseReason::StoreUnavailable
                })?
            }
            None => Vec::new(),
        };
        Ok((stored, queued.into_iter().map(std::sync::Arc::new).collect()))
    }
}
