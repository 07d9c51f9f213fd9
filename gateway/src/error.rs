//! The gateway's HTTP errors: one enum, mapped to status + JSON in one place.
//!
//! Which refusals an `EventSource` survives matters: a browser never retries a non-200
//! answer. The transient ones (`is_transient`) are answered to SSE clients with a 200 that
//! only sets `retry:` (see `http::retry_later`); the rest (400, 401, 403) close an
//! `EventSource` for good, which is right: the page must change its request or get a new
//! token first.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::access::Denied;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist (404; the admin API).
    #[error("{0}")]
    NotFound(String),
    /// No credentials or bad ones (401 + `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials do not allow this topic (403).
    #[error("not allowed to subscribe to {}", topic.as_deref().map(|t| format!("{t:?}")).unwrap_or_else(|| "these topics".into()))]
    Forbidden {
        /// The topic refused, when known.
        topic: Option<String>,
    },
    /// The instance is at its connection limit (503 + Retry-After).
    #[error("this instance is at its connection limit ({0}); retry or use another instance")]
    AtCapacity(usize),
    /// The instance holds as many topics as it may (503 + Retry-After).
    #[error("this instance is at its topic limit ({0}); retry or use another instance")]
    TopicCapacity(usize),
    /// This client holds as many streams as it may (429 + Retry-After).
    #[error("too many open streams from this address (at most {0})")]
    TooManyStreams(usize),
    /// This client asks too fast (429 + Retry-After).
    #[error("too many requests from this address; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// When a request will be accepted again.
        retry_after: Duration,
    },
    /// The subscribe hook did not decide (503 + Retry-After).
    #[error("authorization is unavailable; retry")]
    AuthUnavailable,
    /// Redis is unavailable (503).
    #[error("redis is unavailable")]
    Unavailable,
}

impl AppError {
    /// Whether the client should simply retry (an `EventSource` must then get a 200 that
    /// sets `retry:`, or it would stop for good).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AppError::AtCapacity(_)
                | AppError::TopicCapacity(_)
                | AppError::TooManyStreams(_)
                | AppError::RateLimited { .. }
                | AppError::AuthUnavailable
                | AppError::Unavailable
        )
    }

    /// How long the client should wait before retrying.
    pub fn retry_after(&self) -> Duration {
        match self {
            AppError::RateLimited { retry_after } => *retry_after,
            _ => Duration::from_secs(1),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::TooManyStreams(_) | AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::AtCapacity(_)
            | AppError::TopicCapacity(_)
            | AppError::AuthUnavailable
            | AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<Denied> for AppError {
    fn from(denied: Denied) -> AppError {
        match denied {
            Denied::Unauthenticated(reason) => AppError::Unauthorized(reason),
            Denied::Forbidden { topic } => AppError::Forbidden { topic },
            Denied::Unavailable(cause) => {
                tracing::warn!(%cause, "Subscribe authorization unavailable; the client retries.");
                AppError::AuthUnavailable
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let AppError::Forbidden { topic: Some(topic) } = &self {
            body["topic"] = serde_json::Value::from(topic.as_str());
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.is_transient() {
            let seconds = self.retry_after().as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let AppError::Unauthorized(reason) = &self {
            // RFC 6750 §3: no error code when no token came, invalid_token otherwise.
            let challenge = if reason.starts_with("missing") {
                HeaderValue::from_static("Bearer realm=\"streamgate\"")
            } else {
                HeaderValue::from_static("Bearer realm=\"streamgate\", error=\"invalid_token\"")
            };
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
