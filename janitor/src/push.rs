//! Pushing a sweep's figures to a Prometheus Pushgateway: one `PUT
//! <url>/metrics/job/streamgate_janitor` with the text of [`crate::metrics::render`], which
//! replaces everything the job pushed before (so a kind that went to zero reads zero).
//!
//! The client is hyper's, already in the workspace for the gateway (http, and https
//! through the openssl the Redis client links): the janitor links an HTTP client only for
//! this, and nothing in `streamgate` (the shared library) knows HTTP.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::Url;

/// The Pushgateway job the janitor pushes as.
pub const JOB: &str = "streamgate_janitor";
/// How long one push may take, connection included: a cron run must not hang on it.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an error answer kept for the message.
const MAX_ANSWER_BYTES: usize = 4096;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot push metrics to {url}: {reason}")]
pub struct PushError {
    /// Where (without credentials).
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// Parses and checks `--pushgateway-url`: an `http` or `https` URL with a host.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("not a URL ({error})"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("expected an http:// or https:// URL such as http://pushgateway:9091".to_owned());
    }
    Ok(url)
}

/// The URL a push goes to: `<url>/metrics/job/streamgate_janitor`, after any path `url`
/// already has (a Pushgateway behind a path prefix).
pub fn job_url(url: &Url) -> Url {
    let mut job = url.clone();
    let path = format!("{}/metrics/job/{JOB}", url.path().trim_end_matches('/'));
    job.set_path(&path);
    job
}

/// Pushes `text` (Prometheus text format) for the janitor's job, replacing what it pushed
/// before.
pub async fn push(url: &Url, text: String) -> Result<(), PushError> {
    let target = job_url(url);
    let mut shown = target.clone();
    let _ = shown.set_password(None);
    let failure = |reason: String| PushError { url: shown.to_string(), reason };
    let request = Request::builder()
        .method(Method::PUT)
        .uri(target.as_str())
        .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .map_err(|error| failure(error.to_string()))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let client = Client::builder(TokioExecutor::new()).build(HttpsConnector::new_with_connector(http));
    let exchange = async {
        let response = client.request(request).await.map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        Err(format!("answered {status}: {answer}"))
    };
    tokio::time::timeout(PUSH_TIMEOUT, exchange)
        .await
        .map_err(|_| failure(format!("no answer within {PUSH_TIMEOUT:?}")))?
        .map_err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_path_follows_any_path_prefix() {
        let job = |text| job_url(&parse_url(text).unwrap()).to_string();
        assert_eq!(job("http://pushgateway:9091"), "http://pushgateway:9091/metrics/job/streamgate_janitor");
        assert_eq!(
            job("https://ops.example/push/"),
            "https://ops.example/push/metrics/job/streamgate_janitor"
        );
        assert!(parse_url("ftp://pushgateway").is_err());
        assert!(parse_url("pushgateway:9091").is_err());
    }
}
