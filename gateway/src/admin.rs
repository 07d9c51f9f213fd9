//! The admin surface, on its own listener (`ADMIN_LISTEN_ADDR`, loopback by default) so
//! that per-connection details — client addresses, cursors — never share a port with the
//! public: `GET /admin/connections`, paginated, behind `ADMIN_TOKEN` when set.

use std::sync::atomic::Ordering;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use streamgate::cursor::TopicCursor;
use streamgate::topic::Topic;

use crate::startup::AppState;

/// Connections listed per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// The most connections one page lists: a page is built under no lock, but it is built
/// in memory at once.
pub const MAX_PAGE: usize = 1000;

/// The admin routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/connections", get(connections))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// `GET /metrics`: the Prometheus (OpenMetrics text) exposition of the gateway's metrics.
async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.set_events_delivered(state.connections.events_sent_total());
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

/// `?limit=&after=`: up to `limit` connections whose id is above `after`, by id.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Connections per page (1 to [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// The last id of the previous page.
    pub after: Option<u64>,
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.config.admin_token else {
        return next.run(request).await;
    };
    let given = crate::access::credentials::authorization_bearer(request.headers()).unwrap_or_default();
    if same_secret(given.as_bytes(), expected.expose_secret().as_bytes()) {
        return next.run(request).await;
    }
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": "admin token required" }))).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"streamgate-admin\""));
    response
}

/// Compares digests, so the time taken says nothing about how much of the token matched.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let given = Sha256::digest(given);
    let expected = Sha256::digest(expected);
    given.iter().zip(expected.iter()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

async fn connections(State(state): State<AppState>, Query(page): Query<Page>) -> Response {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        let error = format!("limit must be from 1 to {MAX_PAGE}");
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    }
    let after = page.after.unwrap_or(0);
    let all = state.connections.snapshot();
    let mut listed: Vec<_> = all.iter().filter(|info| info.id > after).take(limit + 1).collect();
    let more = listed.len() > limit;
    listed.truncate(limit);
    let next = if more { listed.last().map(|info| info.id) } else { None };
    let connections: Vec<_> = listed
        .iter()
        .map(|info| {
            let positions = info.positions.lock().expect("positions lock").clone();
            let cursors: Vec<TopicCursor> = positions.iter().map(|p| p.cursor()).collect();
            json!({
                "id": info.id,
                "topics": info.topics.iter().map(Topic::as_str).collect::<Vec<_>>(),
                "remoteAddr": info.remote.to_string(),
                "connectedAt": humantime::format_rfc3339_seconds(info.connected_at).to_string(),
                "eventsSent": info.events_sent.load(Ordering::Relaxed),
                "cursor": streamgate::cursor::format_cursors(&info.topics, &cursors),
            })
        })
        .collect();
    Json(json!({
        "instance": state.config.instance_id.as_str(),
        "totals": {
            "open": state.connections.open(),
            "topics": state.hubs.len(),
            "openedTotal": state.connections.opened_total.load(Ordering::Relaxed),
            "slowClosedTotal": state.connections.slow_closed_total.load(Ordering::Relaxed),
            "refusedTotal": state.connections.refused_total.load(Ordering::Relaxed),
            "subscribeHookCalls": state.access.hook_calls(),
        },
        "connections": connections,
        "next": next,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_only() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }
}
