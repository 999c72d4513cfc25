//! The HTTP server under the router: accepts TCP connections and serves HTTP/1.1 on them with a
//! timer, so a connection that sends no request head in time is closed; caps the connections
//! open at once (plain HTTP and upgraded WebSockets together); and closes sockets without
//! resetting what the peer sent last (a lingering close), so a peer reads the server's last
//! words — a WebSocket close frame, a refusal — instead of a reset.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a closing socket keeps reading (and discarding) what the peer still sends, and how
/// much of it, before it is dropped.
pub const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;
/// Refusals (past `max_connections`) being written at once; past this, a connection over the
/// cap is closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;

/// What the server enforces on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A new connection must have sent its first complete request head within this.
    pub header_timeout: Duration,
    /// A kept-alive connection must have sent its next complete request head within this
    /// after the previous answer.
    pub idle_timeout: Duration,
    /// Connections open at once; more are refused with 503.
    pub max_connections: usize,
    /// Kernel send buffer per connection; 0 leaves it to the kernel.
    pub send_buffer: usize,
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Limits {
        Limits {
            header_timeout: config.http_header_timeout,
            idle_timeout: config.http_idle_timeout,
            max_connections: config.max_connections as usize,
            send_buffer: config.socket_send_buffer,
        }
    }
}

/// Serves `router` on `listener` until `stop` fires; then accepts no more, lets each HTTP
/// connection finish its request in flight, and returns once they all have. Upgraded
/// (WebSocket) connections are the router's own: they are not waited for here.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of files, or a connection gone before it was accepted: try again soon.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Presence messages are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        if limits.send_buffer > 0 {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(limits.send_buffer);
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(refuse(tcp, refusal));
            }
            continue;
        };
        let io = Tracked { tcp: Some(tcp), _slot: Some(slot) };
        connections.spawn(connection(io, peer, router.clone(), limits, stop.clone()));
    }
    connections.close();
    connections.wait().await;
}

/// One HTTP connection, until it closes or upgrades.
async fn connection(io: Tracked, peer: SocketAddr, router: Router, limits: Limits, stop: CancellationToken) {
    let asked = Arc::new(AtomicBool::new(false));
    let service = Service { inner: TowerToHyperService::new(router), peer, asked: asked.clone() };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    let first_head = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_head);
    let mut waiting_first = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "http connection ended");
                }
                return;
            }
            () = &mut first_head, if waiting_first => {
                waiting_first = false;
                if !asked.load(Relaxed) {
                    tracing::debug!(%peer, "no request head within http_header_timeout");
                    return;
                }
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The router as hyper calls it, told the peer's address (`ConnectInfo<SocketAddr>`).
#[derive(Clone)]
struct Service {
    inner: TowerToHyperService<Router>,
    peer: SocketAddr,
    asked: Arc<AtomicBool>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Error;
    type Future = <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        self.asked.store(true, Relaxed);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.inner.call(request)
    }
}

/// Past `max_connections`: a 503 in JSON, then close.
async fn refuse(mut tcp: TcpStream, _refusal: OwnedSemaphorePermit) {
    let body = r#"{"code":"too_many_connections","detail":"the server has as many connections open as it allows; try again later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(LINGER, async {
        tcp.write_all(answer.as_bytes()).await?;
        linger(tcp).await;
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Ends the sending side, then reads and discards what the peer still sends until it closes,
/// `LINGER` passes or `LINGER_BYTES` came: closing a socket with unread data would reset the
/// connection, and the peer could lose what was sent last.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut buffer = [0u8; 16384];
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while read < LINGER_BYTES {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// An accepted connection: holds its slot under `max_connections` for as long as the socket
/// lives (an upgraded WebSocket too), and closes with a lingering close when data is unread.
/// An upgraded connection is this type under hyper's `TokioIo`.
pub(crate) struct Tracked {
    tcp: Option<TcpStream>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Tracked {
    fn tcp(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(self.get_mut().tcp.as_mut().expect("present until dropped"))
    }

    /// The TCP stream, for waiting on readiness and reading without a buffer held meanwhile.
    pub(crate) fn stream(&self) -> &TcpStream {
        self.tcp.as_ref().expect("present until dropped")
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let Some(tcp) = self.tcp.take() else { return };
        let mut probe = [0u8; 256];
        // Nothing unread (or the peer is gone): a plain close sends no reset.
        if !matches!(tcp.try_read(&mut probe), Ok(n) if n > 0) {
            return;
        }
        let slot = self._slot.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                linger(tcp).await;
                drop(slot);
            });
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.tcp().poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.tcp().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tcp().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tcp().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.tcp().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|tcp| tcp.is_write_vectored())
    }
}
