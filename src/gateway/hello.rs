//! A device's connection from its start: the WebSocket upgrade at `/`, then the hello
//! handshake (wait for the device's hello, check its presence id, assign the UAID, attach the
//! connection to the registry and send what the store holds for it), then the socket loop
//! (`socket`) until it closes. Every step of the hello that touches the store lives here.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::protocol::{self, Hello, ServerMessage};
use super::session::{self, close_frame, Action, Batch, CloseReason, Input, Session};
use super::socket::{read_frame, send, send_frame, BoundDevice, Connection, ReadFrame};
use super::Gateway;
use crate::clock::unix_now;
use crate::domain::{DeviceBinding, Eviction, Uaid};
use crate::http::error::ApiError;
use crate::metrics::MessageKind;
use crate::store::UaidOwner;

use axum::extract::ws::WebSocket;

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

/// A connection from the upgrade to the close frame. Not an `async fn`: its arguments would be
/// kept twice in the task (as arguments and as the body's locals), and an idle connection's
/// task is most of what a device costs.
#[allow(clippy::manual_async_fn)]
fn serve(state: Gateway, mut socket: WebSocket) -> impl std::future::Future<Output = ()> {
    async move {
        state.metrics.connections.fetch_add(1, Relaxed);
        state.metrics.connections_total.fetch_add(1, Relaxed);
        let reason = life(&state, &mut socket).await;
        if let Some(frame) = close_frame(reason) {
            let _ = send_frame(&mut socket, Message::Close(Some(frame)), state.config.ws_write_timeout).await;
        }
        state.metrics.connections.fetch_sub(1, Relaxed);
        tracing::debug!(?reason, "device connection closed");
    }
}

/// The hello, the socket loop until the connection ends, and the closing work; the reason to
/// close comes out.
///
/// The handshake and the closing work are boxed, and so is each round of actions in the loop:
/// a task's future takes the size of its largest state for as long as it lives, and an idle
/// connection only ever waits in the loop's select. The handshake's result is taken apart
/// within its statement, so that the task holds the connection once, not also the result.
async fn life(state: &Gateway, socket: &mut WebSocket) -> CloseReason {
    let mut connection = match Box::pin(handshake(state, socket)).await {
        Ok(connection) => connection,
        Err(reason) => return reason,
    };
    let reason = connection.run(socket).await;
    // Unless a newer connection has it, the UAID is connected nowhere from now: the
    // expiry sweep counts its idle time from here (`record_closes` tells the store).
    state.registry.detach(&connection.uaid, connection.attachment.id);
    let closing = connection.session.step(Input::Closed(reason), Instant::now());
    // Nothing is sent any more; only the store and the presence engine hear of it.
    let _ = Box::pin(connection.perform(socket, closing.into())).await;
    reason
}

/// Waits for the hello, assigns the UAID, replies and flushes stored notifications.
pub(super) async fn handshake(state: &Gateway, socket: &mut WebSocket) -> Result<Connection, CloseReason> {
    let deadline = Instant::now() + state.config.hello_timeout;
    let text = loop {
        let frame = tokio::select! {
            frame = read_frame(socket) => frame?,
            _ = tokio::time::sleep_until(deadline) => return Err(CloseReason::HelloTimeout),
            _ = state.shutdown.cancelled() => return Err(CloseReason::ShuttingDown),
        };
        if let ReadFrame::Text(text) = frame {
            break text;
        }
    };
    let hello = session::expect_hello(protocol::parse(&text)).inspect_err(|_| {
        state.metrics.message(MessageKind::Invalid);
    })?;
    state.metrics.message(MessageKind::Hello);
    let device = match &hello.xpi {
        None => None,
        Some(xpi) => match state.store.device_by_prid(&crate::secrets::digest(xpi)).await {
            Ok(Some(binding)) => Some(binding),
            Ok(None) => {
                let refused = ServerMessage::HelloRefused { status: 401, reason: "unknown presence id" };
                let _ = send(socket, &refused, state.config.ws_write_timeout).await;
                return Err(CloseReason::UnknownPresenceId);
            }
            Err(error) => return Err(unavailable(socket, &error, state.config.ws_write_timeout).await),
        },
    };
    let uaid = match assign_uaid(state, &hello, device.as_ref()).await {
        Ok(uaid) => uaid,
        Err(error) => return Err(unavailable(socket, &error, state.config.ws_write_timeout).await),
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
    let session = Session::new(state.limits.clone(), device.is_some(), Instant::now());
    let mut connection =
        Connection { state: state.clone(), uaid, attachment, device, session, answers: Default::default() };
    // Right after hello the store names this node: no need to check it.
    let welcome = [
        Action::Send(ServerMessage::Hello { uaid: uaid.to_string(), status: 200 }),
        Action::CatchUp { check_node: false, then: Batch::default() },
    ];
    match connection.perform(socket, welcome.into()).await {
        Ok(()) => Ok(connection),
        Err(reason) => {
            state.registry.detach(&uaid, connection.attachment.id);
            Err(reason)
        }
    }
}

async fn unavailable(
    socket: &mut WebSocket,
    error: &crate::store::StoreError,
    limit: Duration,
) -> CloseReason {
    tracing::error!(error = %crate::error::chain(error), "hello failed: store unavailable");
    let _ = send(socket, &ServerMessage::HelloRefused { status: 503, reason: "service unavailable" }, limit)
        .await;
    CloseReason::StoreUnavailable
}

/// Keeps a known UAID; anything else (missing, malformed, unknown) gets a fresh one, so a
/// device can never choose its own id. A UAID belongs to one device: one that another device
/// holds is treated as unknown too (whether this hello has a PrID or none), and the other
/// device's connection is left alone.
/// A device hello (with `xpi`) also binds the UAID to the device, replacing any earlier one.
async fn assign_uaid(
    state: &Gateway,
    hello: &Hello,
    device: Option<&DeviceBinding>,
) -> Result<Uaid, crate::store::StoreError> {
    let requested = hello.uaid.as_deref().and_then(Uaid::parse);
    let mut uaid = match requested {
        Some(uaid) => match state.store.uaid_owner(&uaid).await? {
            UaidOwner::Unbound => Some(uaid),
            UaidOwner::Device(owner) if device.is_some_and(|binding| binding.device == owner) => Some(uaid),
            UaidOwner::Device(_) | UaidOwner::Unknown => None,
        },
        None => None,
    }
    .unwrap_or_else(Uaid::random);
    let now = unix_now();
    if let Some(binding) = device {
        // Bound first: a UAID another device took meanwhile is not touched, not even its node.
        if !state.store.bind_device(&binding.device, &uaid, now).await? {
            uaid = Uaid::random();
            state.store.bind_device(&binding.device, &uaid, now).await?;
        }
    }
    state.store.connect_uaid(&uaid, now).await?;
    Ok(uaid)
}
