//! The HTTP API: `POST /publish`, `GET /healthz`, `GET /readyz`; and, on the admin
//! listener, `GET /metrics`.
//!
//! Handlers return `Result<_, AppError>`; [`AppError`] is the one place that maps failures
//! to a status and a JSON body `{"error": "..."}` (plus `"index"` when one event of a batch
//! is at fault, and `"written"` when Redis failed: `false` with 503, `"unknown"` with 504).
//! 4xx carry a message for the client; 5xx an opaque one, with the cause logged once here.
//!
//! A publish runs apart from the request's future — on the group-commit writer
//! (`crate::group`), or on a task of its own on a Redis Cluster: axum drops a handler's
//! future when its client disconnects, and a publish stopped between the append and the
//! routing step would leave its event in history but on no gateway's live path until the
//! next event of its topic. [`PublishTasks`] bounds how many publishes are in progress
//! (`MAX_CONCURRENT_PUBLISHES`) and lets shutdown wait for them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::error::{AppError, RETRY_AFTER_SECONDS};
use crate::group;
use crate::input::parse_body;
use crate::metrics::{ProducerMetrics, StatusLabels};
use crate::publisher::{Publish, Published, Publisher};
use crate::startup::AppState;

/// Publishes that run to completion whatever their client does, at most a bounded number
/// at once.
#[derive(Clone, Debug)]
pub struct PublishTasks {
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    /// The group-commit writer (`crate::group`); `None` on a Redis Cluster, where each
    /// publish runs on a task of its own.
    writer: Option<mpsc::UnboundedSender<group::Request>>,
}

impl PublishTasks {
    /// Room for `max_concurrent` publishes at once, through `publisher`. With `group_commit`,
    /// on a single Redis (or Sentinel), they are group-committed by a writer task started
    /// here; otherwise each runs on a task of its own.
    pub fn new(publisher: &Arc<Publisher>, max_concurrent: usize, group_commit: bool) -> PublishTasks {
        let writer = (group_commit && !publisher.redis().is_cluster())
            .then(|| group::spawn_writer(Arc::clone(publisher)));
        PublishTasks {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            tracker: TaskTracker::new(),
            writer,
        }
    }

    /// Publishes `batch` apart from the request's future and waits for the outcome. Dropping
    /// the returned future (the client went away) does not stop the publish. At the limit
    /// nothing is started: [`AppError::TooBusy`].
    async fn publish(
        &self,
        publisher: &Arc<Publisher>,
        scope: Option<String>,
        batch: Vec<Publish>,
    ) -> Result<Vec<Published>, AppError> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().map_err(|_| AppError::TooBusy)?;
        if let Some(writer) = &self.writer {
            let (reply, outcome) = oneshot::channel();
            let held = (permit, self.tracker.token());
            writer
                .send(group::Request { scope, batch, reply, _held: held })
                .map_err(|_| AppError::Panicked("the group-commit writer stopped".to_owned()))?;
            return match outcome.await {
                Ok(outcome) => outcome.map_err(AppError::from),
                Err(_) => Err(AppError::Panicked("the group-commit writer stopped".to_owned())),
            };
        }
        let publisher = Arc::clone(publisher);
        let task = self.tracker.spawn(async move {
            let outcome = publisher.publish_as(scope.as_deref(), &batch).await;
            drop(permit);
            outcome
        });
        match task.await {
            Ok(outcome) => outcome.map_err(AppError::from),
            Err(error) => Err(AppError::Panicked(error.to_string())),
        }
    }

    /// After the server stopped: waits (at most `within`) for publishes whose clients left
    /// before their answer, so their routing step is not cut off by the process exiting.
    pub async fn wait(&self, within: Duration) {
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait()).await.is_err() {
            tracing::warn!(n_publishes = self.tracker.len(), "Stopping with publishes still running.");
        }
    }
}

/// The router, apart from serving it, so tests can drive it with `oneshot` too.
pub fn router(state: AppState) -> Router {
    let count_status = axum::middleware::map_response_with_state(
        Arc::clone(state.publisher.metrics()),
        count_publish_status,
    );
    Router::new()
        .route("/publish", post(publish).layer(count_status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The admin listener's router: `GET /metrics` only.
pub fn admin_router(metrics: Arc<ProducerMetrics>) -> Router {
    Router::new().route("/metrics", get(serve_metrics)).layer(TraceLayer::new_for_http()).with_state(metrics)
}

/// `GET /metrics`: the Prometheus (OpenMetrics text) exposition of the producer's metrics.
async fn serve_metrics(State(metrics): State<Arc<ProducerMetrics>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
        .into_response()
}

/// Counts every answer of `POST /publish` by its status.
async fn count_publish_status(State(metrics): State<Arc<ProducerMetrics>>, response: Response) -> Response {
    metrics.publish_requests.get_or_create(&StatusLabels::of(response.status().as_u16())).inc();
    response
}

/// One event's result, as `POST /publish` and `producer publish` print it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublishResult {
    /// The topic.
    pub topic: String,
    /// The SSE id a one-topic subscriber sees for the event (`<ms>-<seq>~<epoch>`).
    pub id: String,
    /// Whether it was a repeat of an idempotency key (nothing new written).
    pub duplicate: bool,
}

impl From<&Published> for PublishResult {
    fn from(published: &Published) -> Self {
        PublishResult {
            topic: published.topic.as_str().to_owned(),
            id: published.cursor.to_string(),
            duplicate: published.duplicate,
        }
    }
}

/// The body of a successful `POST /publish`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublishResponse {
    /// One result per event, in the order of the request.
    pub results: Vec<PublishResult>,
}

/// `POST /publish`: one event object or an array of them; one result per event.
async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, AppError> {
    let principal = state.auth.authenticate(&headers).map_err(|error| {
        tracing::debug!(%error, "Publish refused: not authenticated.");
        AppError::Unauthorized
    })?;
    if !is_json(&headers) {
        return Err(AppError::UnsupportedMediaType);
    }
    let body = tokio::time::timeout(
        state.request_body_timeout,
        read_body(&headers, body, state.limits.max_request_bytes),
    )
    .await
    .map_err(|_| AppError::BodyTimeout(state.request_body_timeout))??;
    let batch = parse_body(&state.limits, &body)?;
    if let Some((index, denied)) =
        batch.iter().enumerate().find(|(_, publish)| !principal.may_publish(publish.event.topic.as_str()))
    {
        return Err(AppError::Forbidden { topic: denied.event.topic.as_str().to_owned(), index });
    }
    let published = state.tasks.publish(&state.publisher, principal.idempotency_scope(), batch).await?;
    let results = published.iter().map(PublishResult::from).collect();
    Ok(Json(PublishResponse { results }))
}

/// `GET /healthz`: the process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis answers a PING through the pool.
async fn readyz(State(state): State<AppState>) -> Response {
    let ping = async {
        let mut conn = state.publisher.redis().get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())
    };
    match ping.await {
        Ok(_) => Json(json!({ "status": "ready" })).into_response(),
        Err(error) => {
            tracing::debug!(%error, "Not ready: Redis does not answer.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS))],
                Json(json!({ "status": "unavailable" })),
            )
                .into_response()
        }
    }
}

/// `application/json`, with no parameter other than `charset=utf-8` (JSON is UTF-8).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let essence_ok = parts.next().is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    essence_ok
        && parts.filter(|p| !p.is_empty()).all(|parameter| {
            parameter.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// Reads the body up to `limit` bytes. Done by hand rather than with `axum::body::to_bytes`
/// because its error does not say whether the limit was hit (413) or the client went away
/// (400) without naming `http-body-util`'s error type.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, AppError> {
    let too_large = || AppError::TooLarge {
        message: format!("the request body is over {limit} bytes (MAX_REQUEST_BYTES)"),
        index: None,
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut bytes = BytesMut::with_capacity(declared.map_or(0, |length| length as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| AppError::BadRequest {
            message: format!("could not read the request body: {error}"),
            index: None,
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn json_content_type_with_utf8_charset_only() {
        for good in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json(&content_type(good)), "{good}");
        }
        for bad in [
            "text/plain",
            "application/json-seq",
            "application/json; charset=latin1",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json(&content_type(bad)), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn body_over_the_limit_is_too_large_even_without_content_length() {
        let error = read_body(&HeaderMap::new(), Body::from(vec![b'x'; 11]), 10).await.unwrap_err();
        assert!(matches!(error, AppError::TooLarge { index: None, .. }));
        let ok = read_body(&HeaderMap::new(), Body::from(vec![b'x'; 10]), 10).await.unwrap();
        assert_eq!(ok.len(), 10);
    }
}
