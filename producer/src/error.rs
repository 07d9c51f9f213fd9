//! How a request fails: every refusal of the producer's HTTP API as a status code and a
//! JSON body (`{"error": ..., "index"?: ..., "written"?: ...}`), as the gateway's
//! `error` module does for its own.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::input::{BodyRejection, Rejection};
use crate::publisher::PublishError;

/// Seconds a client is asked to wait before retrying while Redis is unavailable.
pub(crate) const RETRY_AFTER_SECONDS: &str = "1";

/// Every way a request can fail.
#[derive(Debug)]
pub enum AppError {
    /// 400: the body or one of its events can never be valid.
    BadRequest {
        /// For the client.
        message: String,
        /// The offending event's index.
        index: Option<usize>,
    },
    /// 413: over a size limit.
    TooLarge {
        /// For the client.
        message: String,
        /// The offending event's index.
        index: Option<usize>,
    },
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 401: authentication is configured and the request's credential is missing or wrong.
    Unauthorized,
    /// 403: the credential does not grant the topic of the event at `index`.
    Forbidden {
        /// The topic.
        topic: String,
        /// The event's index.
        index: usize,
    },
    /// 408: the body did not arrive within `REQUEST_BODY_TIMEOUT`.
    BodyTimeout(Duration),
    /// 503: nothing was written (Redis unavailable); retry after a second.
    Unavailable(PublishError),
    /// 503: `MAX_CONCURRENT_PUBLISHES` publishes are running; nothing was started.
    TooBusy,
    /// 504: Redis did not answer; the batch may have been written.
    OutcomeUnknown(PublishError),
    /// 500: anything else.
    Internal(PublishError),
    /// 500: the publish task panicked; the batch may have been written.
    Panicked(String),
}

impl From<BodyRejection> for AppError {
    fn from(BodyRejection { rejection, index }: BodyRejection) -> Self {
        match rejection {
            Rejection::Malformed(message) => AppError::BadRequest { message, index },
            Rejection::TooLarge(message) => AppError::TooLarge { message, index },
        }
    }
}

impl From<PublishError> for AppError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::NotWritten(_) => AppError::Unavailable(error),
            PublishError::OutcomeUnknown(_) => AppError::OutcomeUnknown(error),
            PublishError::Refused(_) | PublishError::UnexpectedReply(_) => AppError::Internal(error),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let error_body = |message: &str, index: Option<usize>| match index {
            Some(index) => json!({ "error": message, "index": index }),
            None => json!({ "error": message }),
        };
        match self {
            AppError::BadRequest { message, index } => {
                (StatusCode::BAD_REQUEST, Json(error_body(&message, index))).into_response()
            }
            AppError::TooLarge { message, index } => {
                (StatusCode::PAYLOAD_TOO_LARGE, Json(error_body(&message, index))).into_response()
            }
            AppError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Json(error_body("the Content-Type must be application/json", None)),
            )
                .into_response(),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                Json(error_body("a valid `Authorization: Bearer <token>` header is required", None)),
            )
                .into_response(),
            AppError::Forbidden { topic, index } => (
                StatusCode::FORBIDDEN,
                Json(error_body(&format!("this credential may not publish to topic {topic:?}"), Some(index))),
            )
                .into_response(),
            AppError::BodyTimeout(within) => (
                StatusCode::REQUEST_TIMEOUT,
                // The rest of the body may still trickle in: the connection is not reused.
                [(header::CONNECTION, HeaderValue::from_static("close"))],
                Json(error_body(
                    &format!("the request body did not arrive within {within:?} (REQUEST_BODY_TIMEOUT)"),
                    None,
                )),
            )
                .into_response(),
            AppError::Unavailable(error) => {
                tracing::warn!(%error, "Publish failed: Redis unavailable, nothing written.");
                not_written("temporarily unavailable, nothing was written; retry later")
            }
            AppError::TooBusy => {
                // Not a warning per request: under overload that would flood the log.
                tracing::debug!("Publish refused: MAX_CONCURRENT_PUBLISHES publishes are running.");
                not_written("too many publishes in progress, nothing was written; retry later")
            }
            AppError::OutcomeUnknown(error) => {
                tracing::warn!(%error, "Publish outcome unknown: Redis did not answer.");
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    Json(json!({
                        "error": "redis did not answer; the events may have been written. \
                                  Retry with the same idempotency keys",
                        "written": "unknown",
                    })),
                )
                    .into_response()
            }
            AppError::Internal(error) => {
                tracing::error!(%error, "Publish failed.");
                (StatusCode::INTERNAL_SERVER_ERROR, Json(error_body("internal error", None))).into_response()
            }
            AppError::Panicked(error) => {
                tracing::error!(%error, "The publish task panicked.");
                (StatusCode::INTERNAL_SERVER_ERROR, Json(error_body("internal error", None))).into_response()
            }
        }
    }
}

/// 503 with `Retry-After` and `"written": false`.
fn not_written(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS))],
        Json(json!({ "error": message, "written": false })),
    )
        .into_response()
}
