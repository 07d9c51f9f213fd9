//! Waiting on a condition with a deadline, never a bare sleep.

use std::future::Future;
use std::time::Duration;

/// Polls `condition` every 50 ms until it holds; fails the test naming `what` once
/// `within` has passed.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
