//! Keys from `JWKS_URL`: fetched at start-up and every `JWKS_REFRESH`, and sooner (at most
//! every [`UNKNOWN_KID_REFETCH`]) when a token names a key id the set does not have — an
//! identity provider that rotates keys publishes the new one before signing with it.
//!
//! A failed fetch keeps the keys held (and logs once per failure streak); until the first
//! success, tokens that need those keys are refused with 401.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

use axum::http::Request;
use bytes::Bytes;
use http_body_util::Full;

use crate::access::http_client::HttpClient;
use crate::access::jwt::{Verifier, VerifyingKey, keys_of_jwks};

/// The soonest a token with an unknown `kid` makes the set be fetched again.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay after a failed fetch.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Fetches `url` once into `verifier` (keeping `static_keys` beside them): at start-up,
/// so the first requests find the keys. Returns whether it worked.
pub async fn fetch_once(url: &Url, static_keys: &[VerifyingKey], verifier: &Verifier) -> bool {
    match fetch(&HttpClient::new(), url).await {
        Ok(keys) => {
            let mut all = static_keys.to_vec();
            all.extend(keys);
            verifier.replace_keys(all);
            true
        }
        Err(error) => {
            tracing::warn!(%url, %error, "Cannot fetch the JWKS at start-up; retrying in the background.");
            false
        }
    }
}

/// Fetches `url` into `verifier` (keeping `static_keys` beside them) every `every`, and
/// when a token names an unknown key id, until `stop`. `fetched` says whether the start-up
/// fetch worked.
pub async fn refresh(
    url: Url,
    every: Duration,
    static_keys: Vec<VerifyingKey>,
    verifier: Arc<Verifier>,
    fetched: bool,
    stop: CancellationToken,
) {
    let client = HttpClient::new();
    let unknown_kid: Arc<Notify> = Arc::clone(&verifier.unknown_kid);
    let mut failing = !fetched;
    let mut last_fetch = tokio::time::Instant::now();
    let mut wait = if fetched { every } else { RETRY_AFTER_FAILURE.min(every) };
    loop {
        let soonest_refetch = last_fetch + UNKNOWN_KID_REFETCH;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = async { unknown_kid.notified().await; tokio::time::sleep_until(soonest_refetch).await } => {}
            _ = stop.cancelled() => return,
        }
        last_fetch = tokio::time::Instant::now();
        wait = match fetch(&client, &url).await {
            Ok(keys) => {
                if failing {
                    tracing::info!(%url, keys = keys.len(), "JWKS fetched again.");
                }
                failing = false;
                let mut all = static_keys.clone();
                all.extend(keys);
                verifier.replace_keys(all);
                every
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%url, %error, "Cannot fetch the JWKS; keeping the keys held, retrying.");
                }
                failing = true;
                RETRY_AFTER_FAILURE.min(every)
            }
        };
    }
}

async fn fetch(client: &HttpClient, url: &Url) -> Result<Vec<VerifyingKey>, String> {
    let request = Request::get(url.as_str())
        .header(axum::http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|error| error.to_string())?;
    let (status, body) = client.send(request, FETCH_TIMEOUT, MAX_JWKS_BYTES).await?;
    if !status.is_success() {
        return Err(format!("it answered {status}"));
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| "the document is not UTF-8".to_owned())?;
    keys_of_jwks(&text).map_err(|problem| format!("expected {problem}"))
}
