//! The connection-level HTTP server both listeners use: HTTP/1.1 by hyper directly,
//! because `axum::serve` gives no way to bound how long a client may take to send its
//! headers (it sets no timer, so hyper's header-read timeout never runs).
//!
//! Each connection gets `HEADER_READ_TIMEOUT` to send a request's head (slowloris: a
//! client trickling a header byte by byte is closed when it runs out) and at most
//! `MAX_HEADER_BYTES` of head, beyond which hyper answers `431` without reading more.
//! The peer's address reaches handlers as axum's `ConnectInfo<SocketAddr>`.
//!
//! Shutdown mirrors `axum::serve`'s graceful shutdown: stop accepting, let every
//! connection finish its response in progress (SSE streams end on the gateway's own
//! shutdown token), and return once all are closed.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's head.
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes (at least 8 KiB: hyper's floor).
    pub max_header_bytes: usize,
}

/// How long to pause accepting after an error such as running out of file descriptors,
/// so the loop does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
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
        let service =
            router.clone().map_request(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
        let service = TowerToHyperService::new(service);
        let mut shutdown = shutdown.clone();
        let alive = connection_alive.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, %remote, "Connection ended with an error.");
                        }
                        break;
                    }
                    changed = shutdown.changed(), if !shutting_down => {
                        shutting_down = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(alive);
        });
    }
    drop(listener);
    let _ = shutdown_sender.send(true);
    drop(connection_alive);
    all_closed.closed().await;
}
