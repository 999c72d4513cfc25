//! A device's connection from its start: the WebSocket upgrade at `/`, then the hello
//! handshake (wait for the device's hello, check its presence id, assign the UAID, attach the
//! connection to the registry and send what the store holds for it), then the socket loop
//! (`socket`) until it closes. Every step of the hello that touches the store lives here.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::protocol::{self, Hello, ServerMessage};
use super::session::{self, close_frame, Action, Batch, CloseReason, Input, Session};
use super::socket::{read_frame, send, BoundDevice, Connection, ReadFrame, WebSocket};
use super::wire::WireLimits;
use super::Gateway;
use crate::clock::unix_now;
use crate::domain::{DeviceBinding, Eviction, Uaid};
use crate::http::error::ApiError;
use crate::http::header_tokens as tokens;
use crate::metrics::MessageKind;
use crate::server::Tracked;
use crate::store::UaidOwner;

/// The subprotocol SimplePush clients offer; chosen when offered.
const SUBPROTOCOL: &str = "push-notification";

/// The WebSocket upgrade at `/` (RFC 6455, section 4.2): a valid request is answered `101` and
/// its connection becomes the device's socket, in a task of its own; anything else is told that
/// this path speaks SimplePush.
pub async fn upgrade(State(state): State<Gateway>, mut request: Request) -> Response {
    let accept = match accept_key(request.method(), request.headers()) {
        Ok(accept) => accept,
        Err(status) => return websocket_required(status),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return websocket_required(StatusCode::UPGRADE_REQUIRED);
    };
    let offered = offers(request.headers(), SUBPROTOCOL);
    let tracker = state.tracker.clone();
    tokio::spawn(tracker.track_future(serve(state, on_upgrade)));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if offered {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    response
}

fn websocket_required(status: StatusCode) -> Response {
    ApiError::new(
        status,
        "websocket_required",
        "this path speaks SimplePush over WebSocket; connect with a WebSocket client",
    )
    .into_response()
}

/// The `Sec-WebSocket-Accept` a valid opening handshake is answered with, or why there is none:
/// plain HTTP is told an upgrade is required, a broken handshake is a bad request.
fn accept_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, StatusCode> {
    if method != Method::GET {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !tokens(headers, header::UPGRADE).any(|token| token.eq_ignore_ascii_case("websocket")) {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    let upgrade = tokens(headers, header::CONNECTION).any(|token| token.eq_ignore_ascii_case("upgrade"));
    let version = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if upgrade && version => {
            HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| StatusCode::BAD_REQUEST)
        }
        _ => Err(StatusCode::BAD_REQUEST),
    }
}

/// Whether the `Sec-WebSocket-Protocol` header offers `name`.
fn offers(headers: &HeaderMap, name: &str) -> bool {
    tokens(headers, header::SEC_WEBSOCKET_PROTOCOL).any(|offered| offered == name)
}

/// A connection from the upgrade to the close frame. Not an `async fn`: its arguments would be
/// kept twice in the task (as arguments and as the body's locals), and an idle connection's
/// task is most of what a device costs. The task is the connection's own (not a wrapper's
/// around it), so an idle device holds only this future.
#[allow(clippy::manual_async_fn)]
fn serve(state: Gateway, on_upgrade: OnUpgrade) -> impl std::future::Future<Output = ()> {
    async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let config = &state.config;
        let limits = WireLimits {
            read_chunk: config.ws_read_buffer as u32,
            max_message: config.max_message_size as u32,
            max_output: config.ws_write_buffer_max as u32,
        };
        // The server under the router hands over its own connection type; the socket works on
        // the TCP stream itself, without hyper's boxed one around it. (In a block: what is left
        // of the parts is not kept in the task.)
        let mut socket = {
            let Ok(parts) = upgraded.downcast::<TokioIo<Tracked>>() else {
                tracing::error!("an upgraded connection not from this server's listener; closed");
                return;
            };
            WebSocket::new(parts.io.into_inner(), &parts.read_buf, limits)
        };
        state.metrics.connections.fetch_add(1, Relaxed);
        state.metrics.connections_total.fetch_add(1, Relaxed);
        let reason = life(&state, &mut socket).await;
        let _ = tokio::time::timeout(state.config.ws_write_timeout, socket.close(close_frame(reason))).await;
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
///
/// Not an `async fn`, for the reason `serve` gives.
#[allow(clippy::manual_async_fn)]
fn life<'a>(
    state: &'a Gateway,
    socket: &'a mut WebSocket,
) -> impl std::future::Future<Output = CloseReason> + 'a {
    async move {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), HeaderValue::from_static(value)))
            .collect()
    }

    const VALID: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_valid_opening_handshake_is_answered_with_the_key_rfc_6455_gives() {
        let accept = accept_key(&Method::GET, &handshake(&VALID)).expect("valid");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn anything_else_is_refused_with_a_status_that_says_why() {
        assert_eq!(accept_key(&Method::POST, &handshake(&VALID)), Err(StatusCode::METHOD_NOT_ALLOWED));
        assert_eq!(
            accept_key(&Method::GET, &HeaderMap::new()),
            Err(StatusCode::UPGRADE_REQUIRED),
            "plain HTTP"
        );
        for missing in 0..VALID.len() {
            let mut pairs = VALID.to_vec();
            let (name, _) = pairs.remove(missing);
            let expected =
                if name == "upgrade" { StatusCode::UPGRADE_REQUIRED } else { StatusCode::BAD_REQUEST };
            assert_eq!(accept_key(&Method::GET, &handshake(&pairs)), Err(expected), "without {name}");
        }
        let mut old = VALID.to_vec();
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(
            accept_key(&Method::GET, &handshake(&old)),
            Err(StatusCode::BAD_REQUEST),
            "another version"
        );
    }

    #[test]
    fn the_subprotocol_is_chosen_only_when_offered() {
        assert!(offers(&handshake(&[("sec-websocket-protocol", "chat, push-notification")]), SUBPROTOCOL));
        assert!(!offers(&handshake(&[("sec-websocket-protocol", "chat")]), SUBPROTOCOL));
        assert!(!offers(&HeaderMap::new(), SUBPROTOCOL));
    }
}
