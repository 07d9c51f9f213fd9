//! An SSE client for tests, parsing with an independent parser (eventsource-stream), that
//! behaves like a browser's `EventSource` where it matters: it sends `Last-Event-ID`.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// One open event stream.
pub struct SseStream {
    /// The response status.
    pub status: reqwest::StatusCode,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    events: Events,
}

/// Opens `url` with an optional `Last-Event-ID`. Panics unless the server answers.
pub async fn connect(url: &str, last_event_id: Option<&str>) -> SseStream {
    let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("last-event-id", id)).into_iter().collect();
    connect_with_headers(url, &headers).await
}

/// Opens `url` as an `EventSource` would (`Accept: text/event-stream`) with these extra
/// headers (`Cookie`, `Authorization`, `Last-Event-ID`, ...). Panics unless the server
/// answers; any status is returned.
pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> SseStream {
    let client = reqwest::Client::new();
    let mut request = client.get(url).header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = response.bytes_stream().boxed();
    let mut first = Vec::new();
    if status == reqwest::StatusCode::OK {
        first = until_cursor(&mut body).await;
    }
    let events = futures_util::stream::iter(first.into_iter().map(Ok))
        .chain(body)
        .eventsource()
        .map(|item| item.map_err(|e| e.to_string()))
        .boxed();
    SseStream { status, headers, events }
}

/// How long [`connect`] waits for a stream's cursor.
const CURSOR_WAIT: Duration = Duration::from_secs(5);

/// Reads a stream's first chunks until its cursor (its first `id:`, sent once the gateway
/// is subscribed) arrived, the stream ended, or `CURSOR_WAIT` passed (a gateway that cannot
/// reach Redis sends only heartbeats); returns them, to be parsed as usual. A stream owes
/// its client what is published after its cursor, not after its headers: when Redis is
/// slower than the gateway's join wait, the headers come first.
async fn until_cursor(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Vec<bytes::Bytes> {
    let mut cursor = crate::last_event_id::LastEventId::default();
    let mut chunks = Vec::new();
    let until = tokio::time::Instant::now() + CURSOR_WAIT;
    while cursor.get().is_none() {
        match tokio::time::timeout_at(until, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                cursor.feed(&chunk);
                chunks.push(chunk);
            }
            _ => break,
        }
    }
    chunks
}

impl SseStream {
    /// The next event, or `None` if the stream ended or `timeout` passed.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        match tokio::time::timeout(timeout, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            _ => None,
        }
    }

    /// Collects `n` events, failing the test if they do not arrive within `deadline`.
    pub async fn take(&mut self, n: usize, deadline: Duration) -> Vec<Event> {
        let until = tokio::time::Instant::now() + deadline;
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(event) => events.push(event),
                None => panic!("got {} of {n} events before the deadline: {events:?}", events.len()),
            }
        }
        events
    }

    /// The events until the stream ends, or until `deadline` (then the test fails).
    pub async fn until_end(&mut self, deadline: Duration) -> Vec<Event> {
        let until = tokio::time::Instant::now() + deadline;
        let mut events = Vec::new();
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.next()).await {
                Ok(Some(Ok(event))) => events.push(event),
                Ok(Some(Err(_))) | Ok(None) => return events,
                Err(_) => panic!("the stream did not end within {deadline:?}; got {events:?}"),
            }
        }
    }

    /// Asserts that no event arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Some(event) = self.next_event(window).await {
            panic!("expected no event, got {event:?}");
        }
    }
}

/// Reads raw bytes of a response body until `needle` appears or `deadline` passes.
pub async fn read_raw_until(url: &str, needle: &str, deadline: Duration) -> String {
    let response = reqwest::Client::new().get(url).send().await.expect("gateway answers");
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let until = tokio::time::Instant::now() + deadline;
    while !seen.contains(needle) {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    seen
}
