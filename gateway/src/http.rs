//! The gateway's public HTTP surface: `/events` (SSE), health, readiness and — with
//! `DEMO_PAGE` — the demo page. `router` can be nested into another axum application; the
//! admin listing is on its own listener ([`crate::admin`]).
//!
//! An `/events` request passes, in order: the client's request rate, the request's own
//! validity (400), authorization (401/403), then the caps — streams per client address,
//! streams per gateway, topics per gateway — and only then joins its topics. So a
//! reconnect with a cursor is authorized before anything is replayed, and a refused
//! request never creates a hub.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use streamgate::cursor::{TopicCursor, parse_cursors};
use streamgate::topic::Topic;

use crate::connection::{StreamDeadline, StreamEnd, coalesced, event_stream, join_subscribed};
use crate::error::AppError;
use crate::limits::per_ip::ClientKey;
use crate::startup::AppState;

/// The event that ends a stream whose token expired.
pub const AUTH_EXPIRED_EVENT: &str = "streamgate.auth_expired";

/// How long a new stream waits for its memberships before the response starts (after that
/// it starts anyway and keeps waiting with heartbeats, e.g. while Redis is down).
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The header naming the instance that serves a stream.
pub const INSTANCE_HEADER: &str = "x-streamgate-instance";

/// The gateway's routes. Nest it under any path: `Router::new().nest("/rt", router(state))`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    if state.config.demo_page {
        // The demo page and the JavaScript client it imports (`clients/js`; applications
        // bundle their own copy).
        router = router.route("/", get(demo_page)).route("/streamgate.js", get(js_client));
    }
    // A request span for the short requests, added before `/events` so it does not wrap
    // the event stream: there it would run per body frame of every stream, and a stream's
    // opening and end are logged by the connection itself.
    let router = router.layer(tower_http::trace::TraceLayer::new_for_http());
    // CORS only where browsers of other sites need it: the event stream.
    let cors = crate::startup::cors_layer(&state.config.cors);
    router.route("/events", get(events).layer(cors)).with_state(state)
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

/// The `name=value` pairs of a query string, `application/x-www-form-urlencoded` style
/// (`+` is a space, `%XX` a byte), refusing text that is not UTF-8 once decoded — where a
/// lenient decoder would turn it into U+FFFD and subscribe the client to a topic it never
/// named.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, AppError> {
    fn decode(text: &str) -> Result<String, AppError> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let hex = |b: &u8| (*b as char).to_digit(16);
            match bytes[at] {
                b'+' => out.push(b' '),
                b'%' => match (bytes.get(at + 1).and_then(hex), bytes.get(at + 2).and_then(hex)) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        at += 2;
                    }
                    _ => out.push(b'%'),
                },
                byte => out.push(byte),
            }
            at += 1;
        }
        String::from_utf8(out)
            .map_err(|_| AppError::BadRequest("the query string is not UTF-8 once percent-decoded".into()))
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
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
    for (name, value) in query_pairs(query.unwrap_or(""))? {
        match name.as_str() {
            "topic" => {
                if topics.len() == max_topics {
                    return Err(AppError::BadRequest(format!(
                        "too many topics: at most {max_topics} per connection"
                    )));
                }
                let topic = Topic::parse(value, max_topic_bytes)
                    .map_err(|error| AppError::BadRequest(error.to_string()))?;
                if topics.contains(&topic) {
                    return Err(AppError::BadRequest(format!("topic {:?} is listed twice", topic.as_str())));
                }
                topics.push(topic);
            }
            "lastEventId" => query_cursor = Some(value),
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
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let limits = &state.config.limits;
    let client_ip = limits.trusted_proxies.client_ip(remote, &headers);
    let client = ClientKey::of(client_ip);
    if let Err(retry_after) = state.rate_per_client.check(client, tokio::time::Instant::now()) {
        return refuse(&state, &headers, AppError::RateLimited { retry_after });
    }
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
    let grant = match state.access.authorize(&headers, query.as_deref(), &request.topics, client_ip).await {
        Ok(grant) => grant,
        Err(denied) => {
            let error = AppError::from(denied);
            tracing::debug!(%client_ip, %error, "Subscription refused.");
            return refuse(&state, &headers, error);
        }
    };
    let Some(client_slot) = state.open_per_client.admit(client, limits.max_connections_per_ip) else {
        return refuse(&state, &headers, AppError::TooManyStreams(limits.max_connections_per_ip));
    };
    let Some(guard) = state.connections.admit(state.config.max_connections, request.topics.clone(), remote)
    else {
        return refuse(&state, &headers, AppError::AtCapacity(state.config.max_connections));
    };
    let Some(subscriptions) = state.hubs.join_all(&request.topics, limits.max_topics) else {
        return refuse(&state, &headers, AppError::TopicCapacity(limits.max_topics));
    };
    let instance = HeaderValue::from_str(state.config.instance_id.as_str()).expect("instance ids are ASCII");
    let joined = join_subscribed(&state, subscriptions, JOIN_WAIT).await;
    let deadline = stream_deadline(limits.max_stream_lifetime, grant.expires_at, &request.topics);
    let stream =
        event_stream(state, request.topics, request.cursors, request.cursor_event, joined, guard, deadline);
    // The client's slot is held as long as its stream is.
    let stream = futures_util::StreamExt::map(stream, move |chunk| {
        let _held = &client_slot;
        chunk
    });
    // Over HTTP/2 every chunk is a DATA frame: what is ready at once goes as one, so a
    // stream that was held back by flow control resumes with a few frames, not one per
    // event. (The HTTP/1.1 paths write what is ready with one `writev` already.)
    let body = if version == Version::HTTP_2 {
        Body::from_stream(coalesced(stream))
    } else {
        Body::from_stream(stream)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(INSTANCE_HEADER, instance);
    Ok(response)
}

/// Answers a refused `/events` request: a transient refusal to an `EventSource` as a 200
/// that only sets `retry:` (it would never retry anything else); everything else as the
/// error it is.
fn refuse(state: &AppState, headers: &HeaderMap, error: AppError) -> Result<Response, AppError> {
    state.metrics.connections_refused.inc();
    if error.is_transient() && accepts_event_stream(headers) {
        let at_least = match &error {
            AppError::RateLimited { retry_after } => *retry_after,
            _ => std::time::Duration::ZERO,
        };
        return Ok(retry_later(state, &error.to_string(), at_least));
    }
    Err(error)
}

/// When a stream must end on its own: at the token's expiry or after the longest lifetime,
/// whichever comes first.
fn stream_deadline(
    lifetime: Option<std::time::Duration>,
    expires_at: Option<std::time::SystemTime>,
    topics: &[Topic],
) -> Option<StreamDeadline> {
    let now = tokio::time::Instant::now();
    let by_lifetime =
        lifetime.map(|lifetime| StreamDeadline { at: now + lifetime, end: StreamEnd::Lifetime });
    let by_expiry = expires_at.map(|expires_at| {
        let left = expires_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        StreamDeadline { at: now + left, end: StreamEnd::AuthExpired(auth_expired_event(topics)) }
    });
    match (by_lifetime, by_expiry) {
        (Some(lifetime), Some(expiry)) => Some(if expiry.at <= lifetime.at { expiry } else { lifetime }),
        (lifetime, expiry) => lifetime.or(expiry),
    }
}

/// `event: streamgate.auth_expired` with the stream's topics, and no `id:` (the client's
/// `lastEventId` stays the stream's cursor, so it resumes exactly with a new token).
pub fn auth_expired_event(topics: &[Topic]) -> bytes::Bytes {
    let data = json!({
        "reason": "token_expired",
        "topics": topics.iter().map(Topic::as_str).collect::<Vec<_>>(),
    })
    .to_string();
    let mut out = bytes::BytesMut::with_capacity(data.len() + 48);
    streamgate::event::write_body(&mut out, Some(AUTH_EXPIRED_EVENT), &data).expect("a fixed event name");
    out.freeze()
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
/// answer, so an SSE client gets a 200 stream that only sets `retry:` (the retry interval,
/// or `at_least` when longer, plus up to as much again of random jitter, so refused
/// clients do not return in one wave), names the reason in a comment and ends. It carries
/// no `id:`, so the browser keeps its `Last-Event-ID` and resumes exactly when it gets in.
fn retry_later(state: &AppState, reason: &str, at_least: std::time::Duration) -> Response {
    let base = state.config.retry_interval.max(at_least).as_millis() as u64;
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
    let redis_ok = match state.redis.get().await {
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
    use proptest::prelude::*;

    fn parse(query: &str, header: Option<&str>) -> Result<EventsRequest, AppError> {
        parse_events_request(Some(query), header, 3, 16)
    }

    #[test]
    fn the_query_decodes_like_a_form_and_keeps_stray_percent_signs() {
        let pairs = query_pairs("topic=a+b&topic=%E2%9C%93&x=100%&&flag").unwrap();
        let expected = [("topic", "a b"), ("topic", "\u{2713}"), ("x", "100%"), ("flag", "")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        assert_eq!(pairs, expected);
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
            ("topic=%FF%FE", "not UTF-8"),
            ("topic=a&lastEventId=%C3", "not UTF-8"),
            ("topic=a&%80=1", "not UTF-8"),
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

    proptest! {
        /// Whatever a client sends as query and `Last-Event-ID`, parsing answers (a request
        /// or a 400) without panicking, and never admits more topics than allowed.
        #[test]
        fn any_query_and_cursor_parse_or_are_refused(query in "\\PC{0,300}", cursor in proptest::option::of("[ -~]{0,200}")) {
            if let Ok(request) = parse_events_request(Some(&query), cursor.as_deref(), 3, 16) {
                prop_assert!(!request.topics.is_empty() && request.topics.len() <= 3);
                if let Some(cursors) = request.cursors {
                    prop_assert_eq!(cursors.len(), request.topics.len());
                }
            }
        }

        /// Topics listed in a URL come back in order, and a cursor the gateway wrote for
        /// them is read back as the same per-topic positions.
        #[test]
        fn topics_and_cursors_round_trip(
            names in proptest::collection::btree_set("[a-z0-9:*._-]{1,12}", 1..4),
            positions in proptest::collection::vec((1u64..u64::MAX / 2, 0u64..100), 4),
        ) {
            let names: Vec<String> = names.into_iter().collect();
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for name in &names {
                query.append_pair("topic", name);
            }
            let query = query.finish();
            let epoch = streamgate::cursor::Epoch::parse("k3j9x2mf0a").unwrap();
            let cursors: Vec<TopicCursor> = names
                .iter()
                .zip(&positions)
                .map(|(_, (ms, seq))| TopicCursor::at(epoch.clone(), streamgate::cursor::HistoryId { ms: *ms, seq: *seq }))
                .collect();
            let text = streamgate::cursor::format_cursors(&names, &cursors);
            let request = parse_events_request(Some(&query), Some(&text), 3, 16).unwrap();
            let parsed: Vec<&str> = request.topics.iter().map(Topic::as_str).collect();
            prop_assert_eq!(parsed, names.iter().map(String::as_str).collect::<Vec<_>>());
            let expected: Vec<Option<TopicCursor>> = cursors.into_iter().map(Some).collect();
            prop_assert_eq!(request.cursors, Some(expected));
        }
    }
}
