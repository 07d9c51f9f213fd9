//! The gateway's HTTP errors: one enum, mapped to status + JSON in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// The instance is at its connection limit (503 + Retry-After).
    #[error("this instance is at its connection limit ({0}); retry or use another instance")]
    AtCapacity(usize),
    /// Redis is unavailable (503).
    #[error("redis is unavailable")]
    Unavailable,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::AtCapacity(_) | AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = axum::Json(serde_json::json!({ "error": self.to_string() }));
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
