//! Shutdown: turning the operator's Ctrl-C or SIGTERM into one cancellation every task sees.
//!
//! [`signal`] is the single place that knows which OS signals mean "stop". Services hand
//! it to `axum::serve(..).with_graceful_shutdown(..)` directly, or call
//! [`cancel_on_signal`] to cancel a [`CancellationToken`] that their loops and SSE streams
//! `select!` on, so long-lived work (blocking reads, open streams) ends promptly and
//! graceful shutdown does not wait forever.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Completes when the process receives Ctrl-C (SIGINT) or, on Unix, SIGTERM.
///
/// # Panics
///
/// If a signal handler cannot be installed, which happens when the Tokio runtime was built
/// without its I/O and signal drivers (`Builder::enable_all`).
pub async fn signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.expect("failed to install the Ctrl-C handler");
    };

    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("failed to install the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "Received shutdown signal."),
        () = terminate => tracing::info!(signal = "SIGTERM", "Received shutdown signal."),
    }
}

/// Spawns a task that cancels `token` when [`signal`] fires, and returns its handle.
///
/// Keep a clone of the token (or child tokens) for the tasks that must stop; the token can
/// still be cancelled by other means, for example a fatal error. Must be called from inside
/// a Tokio runtime. Aborting the handle stops listening for signals.
pub fn cancel_on_signal(token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(cancel_when(signal(), token))
}

/// Cancels `token` once `trigger` completes, or returns early if it is cancelled first.
async fn cancel_when(trigger: impl Future<Output = ()>, token: CancellationToken) {
    tokio::select! {
        () = trigger => token.cancel(),
        () = token.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn token_is_cancelled_when_the_trigger_fires() {
        let token = CancellationToken::new();
        let (fire, fired) = tokio::sync::oneshot::channel::<()>();
        let waiter = tokio::spawn(cancel_when(
            async {
                let _ = fired.await;
            },
            token.clone(),
        ));
        assert!(!token.is_cancelled());

        fire.send(()).unwrap();

        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter did not finish")
            .unwrap();
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn waiter_finishes_when_the_token_is_cancelled_elsewhere() {
        let token = CancellationToken::new();
        let waiter = tokio::spawn(cancel_when(std::future::pending(), token.clone()));

        token.cancel();

        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter did not finish")
            .unwrap();
    }
}
