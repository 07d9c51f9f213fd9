//! The gateway's outgoing HTTP: one client for the subscribe hook and `JWKS_URL`, over
//! http or https (native TLS: the openssl the Redis client links already), with a bound
//! on the whole exchange and on the answer's size.

use std::time::Duration;

use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTP(S) client.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// A client (loads the system's trust store once).
    pub fn new() -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = HttpsConnector::new_with_connector(http);
        HttpClient { inner: Client::builder(TokioExecutor::new()).build(https) }
    }

    /// Sends `request` and reads the answer, all within `timeout` and at most `max_bytes`
    /// of body; the error says what went wrong, without the URL's query.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(StatusCode, Bytes), String> {
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|error| format!("failed: {error}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|error| format!("answer unreadable or over {max_bytes} bytes: {error}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("timed out after {timeout:?}"))?
    }
}
