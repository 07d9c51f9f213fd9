//! The connection-level HTTP server both listeners use: hyper directly, because
//! `axum::serve` gives no way to bound how long a client may take to send its headers (it
//! sets no timer, so hyper's header-read timeout never runs).
//!
//! Each connection speaks HTTP/1.1 or HTTP/2: over TLS as ALPN settled it, in clear text
//! by what the client sends first (HTTP/2 with prior knowledge, "h2c", for proxies that
//! speak it). HTTP/2 carries up to `HTTP2_MAX_CONCURRENT_STREAMS` streams per connection,
//! so a page with many `EventSource`s needs one connection rather than six.
//!
//! Bounds per connection, against clients that hold resources without using them:
//! - the TLS handshake, and in clear text the first byte, within `HEADER_READ_TIMEOUT`;
//! - each HTTP/1.1 request head within `HEADER_READ_TIMEOUT` (slowloris: a client
//!   trickling a header byte by byte is closed when it runs out), at most
//!   `MAX_HEADER_BYTES` of it (beyond, hyper answers `431` without reading more); HTTP/2
//!   header lists are bounded by the same size;
//! - a connection with no request in progress for a whole `HEADER_READ_TIMEOUT` is closed
//!   (HTTP/2: `GOAWAY`), so an idle HTTP/2 connection does not stay open for ever.
//!
//! The peer's address reaches handlers as axum's `ConnectInfo<SocketAddr>`.
//!
//! Shutdown mirrors `axum::serve`'s graceful shutdown: stop accepting, let every
//! connection finish its response in progress (SSE streams end on the gateway's own
//! shutdown token), and return once all are closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http1_stream::{self, FirstRequest, Prefixed};
use tower::ServiceExt as _;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's head (and to finish a TLS handshake, and the longest a
    /// connection may stay without a request in progress).
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes (at least 8 KiB: hyper's floor).
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
}

/// Connections the kernel may hold for the accept loop (capped by `net.core.somaxconn`).
/// Tokio's default of 1,024 overflowed when thousands of clients reconnected at once (a
/// gateway restart): the kernel dropped their SYNs and each client waited a whole
/// second to try again.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` with `LISTEN_BACKLOG`.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As the standard library's `bind`: a restarted gateway can bind while connections of
    // its earlier life are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long to pause accepting after an error such as running out of file descriptors,
/// so the loop does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// HTTP/2 pings on a quiet connection, and how long the answer may take: a peer that
/// vanished without a FIN is noticed even when no stream writes.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Requests of one connection: in progress (until the response body is dropped) and
/// started in all.
#[derive(Debug, Default)]
struct Requests {
    in_progress: AtomicU64,
    started: AtomicU64,
}

/// One request in progress, until dropped.
struct RequestGuard(Arc<Requests>);

impl RequestGuard {
    fn enter(requests: &Arc<Requests>) -> RequestGuard {
        requests.in_progress.fetch_add(1, Ordering::Relaxed);
        requests.started.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(requests))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()> + Send,
) {
    // Every connection task holds a receiver; `closed()` completes once all are dropped.
    let (all_closed, connection_alive) = watch::channel(());
    let (shutdown_sender, shutdown) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "Accept failed.");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let alive = connection_alive.clone();
        tokio::spawn(async move {
            serve_connection(stream, remote, router, limits, tls, shutdown).await;
            drop(alive);
        });
    }
    drop(listener);
    let _ = shutdown_sender.send(true);
    drop(connection_alive);
    all_closed.closed().await;
}

/// One connection, from the handshake to its close. In clear text, the first request
/// head decides: an event stream over HTTP/1.1, by far the most connections, is served
/// from the socket in this task's own future ([`crate::http1_stream`]); anything else goes
/// to hyper (HTTP/1.1, or HTTP/2 with prior knowledge), in a box of its own, as do TLS
/// connections, so an idle event stream does not pay for their larger state.
async fn serve_connection(
    mut stream: TcpStream,
    remote: std::net::SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let wait = limits.header_read_timeout;
    let Some(acceptor) = tls else {
        // Boxed, like the handler's future below: a stream's task then holds only what its
        // idle wait needs.
        let first = http1_stream::read_first(&mut stream, limits.max_header_bytes);
        match Box::pin(tokio::time::timeout(wait, first)).await {
            Ok(Some(FirstRequest::Events(request))) => {
                let answer = Box::pin(http1_stream::respond(router, remote, request)).await;
                http1_stream::send(stream, answer).await;
            }
            Ok(Some(FirstRequest::Http1(read))) => {
                let io = TokioIo::new(Prefixed::new(read, stream));
                Box::pin(serve_hyper(io, Protocol::Http1, remote, router, limits, shutdown)).await;
            }
            Ok(Some(FirstRequest::Http2(read))) => {
                let io = TokioIo::new(Prefixed::new(read, stream));
                Box::pin(serve_hyper(io, Protocol::Http2, remote, router, limits, shutdown)).await;
            }
            // Closed, or no complete request head within the header read timeout.
            Ok(None) | Err(_) => {}
        }
        return;
    };
    let handshake = Box::pin(tokio::time::timeout(wait, acceptor.accept(stream)));
    let stream = match handshake.await {
        Ok(Ok(stream)) => Box::new(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, %remote, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake not finished in time.");
            return;
        }
    };
    // ALPN decides; a client that offered none speaks HTTP/1.1.
    let protocol = match crate::tls::negotiated_h2(stream.get_ref().1.alpn_protocol()) {
        Some(true) => Protocol::Http2,
        _ => Protocol::Http1,
    };
    Box::pin(serve_hyper(TokioIo::new(stream), protocol, remote, router, limits, shutdown)).await;
}

/// The HTTP version hyper speaks on a connection.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves a connection with hyper.
async fn serve_hyper<I>(
    io: I,
    protocol: Protocol,
    remote: std::net::SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let requests = Arc::new(Requests::default());
    let service = TowerToHyperService::new(counted_service(router, remote, Arc::clone(&requests)));
    let idle = limits.header_read_timeout;
    match protocol {
        Protocol::Http1 => {
            let connection = http1_builder(limits).serve_connection(io, service);
            drive(connection, remote, idle, &requests, shutdown).await;
        }
        Protocol::Http2 => {
            let connection = http2_builder(limits).serve_connection(io, service);
            drive(connection, remote, idle, &requests, shutdown).await;
        }
    }
}

fn http1_builder(limits: ConnectionLimits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
}

fn http2_builder(limits: ConnectionLimits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// The router as a per-connection service: the peer's address in each request, and each
/// request counted in progress until its response body is dropped (an SSE stream: until
/// it ends).
fn counted_service(
    router: Router,
    remote: std::net::SocketAddr,
    requests: Arc<Requests>,
) -> impl tower::Service<
    axum::extract::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone
+ Send {
    tower::service_fn(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        let guard = RequestGuard::enter(&requests);
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_progress = &guard;
                    frame
                }))
            }))
        }
    })
}

/// Runs `connection` to its end: a graceful shutdown when the server stops, or when no
/// request has been in progress for a whole `idle` period.
async fn drive<C>(
    connection: C,
    remote: std::net::SocketAddr,
    idle: Duration,
    requests: &Requests,
    mut shutdown: watch::Receiver<bool>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    let mut idle_check = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    let mut started_at_last_check = 0;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %remote, "Connection ended with an error.");
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                closing = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = idle_check.tick(), if !closing => {
                let started = requests.started.load(Ordering::Relaxed);
                if requests.in_progress.load(Ordering::Relaxed) == 0 && started == started_at_last_check {
                    tracing::debug!(%remote, "Closing a connection idle for the header read timeout.");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                started_at_last_check = started;
            }
        }
    }
}
