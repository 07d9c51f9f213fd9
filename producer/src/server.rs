//! The producer's HTTP accept loop: [`axum::serve`] with one addition it does not offer, a
//! header-read timeout.
//!
//! `axum::serve` gives hyper no timer, so a client may take forever to send its request
//! headers (slowloris: many such connections exhaust descriptors and memory). Here hyper's
//! HTTP/1 connection has [`TokioTimer`] and `header_read_timeout` (`HEADER_READ_TIMEOUT`),
//! which also closes keep-alive connections left idle that long. The body's own deadline
//! is the handler's (`REQUEST_BODY_TIMEOUT`, answered `408`).
//!
//! Graceful shutdown is as in `axum::serve`: once `shutdown` is cancelled the listener is
//! closed, idle connections are closed, and requests in flight finish before this returns.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The pause after an accept error that is not about one connection (out of file
/// descriptors, say): retrying at once would spin (axum::serve does the same).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "Failed to accept a connection; pausing.");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let service = router.clone().map_request(|request: Request<Incoming>| request.map(Body::new));
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, %remote, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors that concern one connection only (it was reset before it was accepted).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
