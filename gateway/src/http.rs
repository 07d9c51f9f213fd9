//! The gateway's HTTP surface: `/events` (SSE), health, readiness, the admin listing and
//! the demo page. `router` can be nested into another axum application.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use streamgate::cursor::{TopicCursor, parse_cursors};
use streamgate::topic::Topic;

use crate::connection::event_stream;
use crate::error::AppError;
use crate::startup::AppState;

/// How long a new stream waits for its memberships before the response starts (after that
/// it starts anyway and keeps waiting with heartbeats, e.g. while Redis is down).
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The header naming the instance that serves a stream.
pub const INSTANCE_HEADER: &str = "x-streamgate-instance";

/// The gateway's routes. Nest it under any path: `Router::new().nest("/rt", router(state))`.
pub fn router(state: AppState) -> Router {
    let cors = crate::startup::cors_layer(&state.config.cors);
    Router::new()
        .route("/events", get(events))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/connections", get(admin_connections))
        .route("/", get(demo_page))
        .route("/streamgate.js", get(js_client))
        .layer(cors)
        .with_state(state)
}

/// A parsed `/events` request.
#[derive(Debug, PartialEq, Eq)]
pub struct EventsRequest {
    /// Topics in URL order.
    pub topics: Vec<Topic>,
    /// Per-topic cursors, when the client resumes (`None` for a topic the cursor does not
    /// name: it starts live).
    pub cursors: Option<Vec<Option<TopicCursor>>>,
    /// `cursorEvent=1`: the stream's first cursor is also dispatched as a
    /// `streamgate.cursor` event, so a page can store it (an `id:`-only block sets the
    /// browser's `lastEventId` but a page cannot read it).
    pub cursor_event: bool,
}

/// Parses the query string and `Last-Event-ID` of an `/events` request.
pub fn parse_events_request(
    query: Option<&str>,
    last_event_id: Option<&str>,
    max_topics: usize,
    max_topic_bytes: usize,
) -> Result<EventsRequest, AppError> {
    let mut topics: Vec<Topic> = Vec::new();
    let mut query_cursor = None;
    let mut cursor_event = false;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "topic" => {
                if topics.len() == max_topics {
                    return Err(AppError::BadRequest(format!(
                        "too many topics: at most {max_topics} per connection"
                    )));
                }
                let topic = Topic::parse(value.into_owned(), max_topic_bytes)
                    .map_err(|error| AppError::BadRequest(error.to_string()))?;
                if topics.contains(&topic) {
                    return Err(AppError::BadRequest(format!("topic {:?} is listed twice", topic.as_str())));
                }
                topics.push(topic);
            }
            "lastEventId" => query_cursor = Some(value.into_owned()),
            "cursorEvent" => cursor_event = value == "1" || value == "true",
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(AppError::BadRequest("no topic: use /events?topic=NAME (repeat for several)".into()));
    }
    let cursor = last_event_id.map(str::to_owned).or(query_cursor).filter(|c| !c.trim().is_empty());
    let cursors = match cursor {
        None => None,
        Some(text) => {
            Some(parse_cursors(&text, &topics).map_err(|error| AppError::BadRequest(error.to_string()))?)
        }
    };
    Ok(EventsRequest { topics, cursors, cursor_event })
}

async fn events(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value.to_str().map_err(|_| AppError::BadRequest("Last-Event-ID is not visible ASCII".into()))?,
        ),
    };
    let request = parse_events_request(
        query.as_deref(),
        last_event_id,
        state.config.max_topics_per_connection,
        state.config.max_topic_bytes,
    )?;
    let Some(guard) = state.connections.admit(state.config.max_connections, request.topics.clone(), remote)
    else {
        let refusal = AppError::AtCapacity(state.config.max_connections);
        if accepts_event_stream(&headers) {
            return Ok(retry_later(&state, &refusal.to_string()));
        }
        return Err(refusal);
    };
    let instance = HeaderValue::from_str(state.config.instance_id.as_str()).expect("instance ids are ASCII");
    let joined = crate::connection::join(&state, &request.topics, JOIN_WAIT).await;
    let body = Body::from_stream(event_stream(
        state,
        request.topics,
        request.cursors,
        request.cursor_event,
        joined,
        guard,
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(INSTANCE_HEADER, instance);
    Ok(response)
}

/// Whether the client asked for an event stream (EventSource always does).
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("text/event-stream"))
}

/// A transient refusal an `EventSource` survives: a browser never retries a non-200
/// answer, so an SSE client gets a 200 stream that only sets `retry:` (the retry interval
/// plus up to as much again of random jitter, so refused clients do not return in one
/// wave), names the reason in a comment and ends. It carries no `id:`, so the browser keeps
/// its `Last-Event-ID` and resumes exactly when it gets in.
fn retry_later(state: &AppState, reason: &str) -> Response {
    let base = state.config.retry_interval.as_millis() as u64;
    let delay = base + fastrand::u64(0..=base);
    let mut body = Vec::with_capacity(reason.len() + 32);
    body.extend_from_slice(&streamgate::event::retry(delay));
    body.extend_from_slice(&streamgate::event::comment(reason));
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let redis_ok = match state.pool.get().await {
        Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
        Err(_) => false,
    };
    let registered = state.membership.is_live();
    let status = if redis_ok && registered { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "redis": redis_ok,
        "registered": registered,
        "instance": state.config.instance_id.as_str(),
    });
    (status, axum::Json(body)).into_response()
}

async fn admin_connections(State(state): State<AppState>) -> impl IntoResponse {
    use std::sync::atomic::Ordering;
    let connections: Vec<_> = state
        .connections
        .snapshot()
        .iter()
        .map(|info| {
            let positions = info.positions.lock().expect("positions lock").clone();
            let cursors: Vec<TopicCursor> = positions.iter().map(|p| p.cursor()).collect();
            let cursor = streamgate::cursor::format_cursors(&info.topics, &cursors);
            json!({
                "id": info.id,
                "topics": info.topics.iter().map(Topic::as_str).collect::<Vec<_>>(),
                "remoteAddr": info.remote.to_string(),
                "connectedAt": humantime::format_rfc3339_seconds(info.connected_at).to_string(),
                "eventsSent": info.events_sent.load(Ordering::Relaxed),
                "cursor": cursor,
            })
        })
        .collect();
    axum::Json(json!({
        "instance": state.config.instance_id.as_str(),
        "totals": {
            "open": state.connections.open(),
            "topics": state.hubs.len(),
            "openedTotal": state.connections.opened_total.load(Ordering::Relaxed),
            "slowClosedTotal": state.connections.slow_closed_total.load(Ordering::Relaxed),
            "refusedTotal": state.connections.refused_total.load(Ordering::Relaxed),
        },
        "connections": connections,
    }))
}

async fn demo_page() -> Html<&'static str> {
    Html(include_str!("demo.html"))
}

/// The JavaScript client (`clients/js`), which the demo page imports.
async fn js_client() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("../../clients/js/src/streamgate.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, header: Option<&str>) -> Result<EventsRequest, AppError> {
        parse_events_request(Some(query), header, 3, 16)
    }

    #[test]
    fn topics_are_repeated_parameters_in_order() {
        let request = parse("topic=b&topic=a%3A1", None).unwrap();
        let names: Vec<_> = request.topics.iter().map(Topic::as_str).collect();
        assert_eq!(names, ["b", "a:1"]);
        assert_eq!(request.cursors, None);
    }

    #[test]
    fn each_bad_request_names_its_problem() {
        let cases = [
            ("", "no topic"),
            ("topic=", "must not be empty"),
            ("topic=a&topic=b&topic=c&topic=d", "too many topics"),
            ("topic=aaaaaaaaaaaaaaaaa", "bytes long"),
            ("topic=a%0Ab", "forbidden character"),
            ("topic=a&topic=a", "listed twice"),
            ("topic=a&lastEventId=zzz", "malformed cursor"),
            ("topic=a&topic=b&lastEventId=0,0,0", "2 topics"),
        ];
        for (query, expected) in cases {
            let error = parse(query, None).unwrap_err().to_string();
            assert!(error.contains(expected), "{query}: {error}");
        }
    }

    #[test]
    fn header_cursor_wins_over_query_parameter() {
        let request = parse("topic=a&lastEventId=zzz", Some("5-0~ep")).unwrap();
        assert_eq!(request.cursors.unwrap()[0].as_ref().unwrap().to_string(), "5-0~ep");
        let request = parse("topic=a&lastEventId=0", None).unwrap();
        assert_eq!(request.cursors.unwrap()[0], Some(TopicCursor::Start));
    }
}
