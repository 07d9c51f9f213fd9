//! The admin surface, on its own listener (`ADMIN_LISTEN_ADDR`, loopback by default) so
//! that per-connection details — client addresses, cursors — never share a port with the
//! public. Everything but the dashboard's page is behind `ADMIN_TOKEN` when set:
//!
//! - `GET /admin/connections` (paginated, `?topic=` and `?remote=` filters) and
//!   `DELETE /admin/connections/{id}`: this gateway's streams ([`connections`]).
//! - `GET /admin/topics/{topic}` and `/admin/topics/{topic}/history`: one topic as Redis
//!   holds it — subscribers per gateway, history, epoch ([`topics`]).
//! - `GET /admin/cluster`: every live gateway, the top topics, the ingest lag ([`cluster`]).
//! - `GET /metrics`: Prometheus.
//! - `GET /admin`: the dashboard, one self-contained page that holds no data itself; its
//!   scripts fetch the endpoints above with the token given as `?token=` (kept in
//!   `sessionStorage`, sent as `Authorization: Bearer`).

pub mod cluster;
pub mod connections;
pub mod topics;

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::{Digest, Sha256};
use streamgate::redis::RedisError;

use crate::error::AppError;
use crate::startup::AppState;

/// Items listed per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// The most items one page lists: a page is built in memory at once.
pub const MAX_PAGE: usize = 1000;

/// The admin routes.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/admin/connections", get(connections::list))
        .route("/admin/connections/{id}", delete(connections::close))
        .route("/admin/topics/{topic}", get(topics::topic))
        .route("/admin/topics/{topic}/history", get(topics::history))
        .route("/admin/cluster", get(cluster::cluster))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    // The page holds no data (a browser cannot send a bearer token when it navigates);
    // everything it shows comes from the routes above, with the token.
    Router::new().route("/admin", get(dashboard)).merge(protected).with_state(state)
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

/// `GET /admin`: the dashboard. Its scripts and styles are inline and it may fetch only
/// this origin; no referrer leaves it (its URL may carry `?token=`).
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// The `name=value` pairs of a query string (the last of a name wins).
pub(crate) fn query_pairs(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

/// `limit=`: `default` when absent, else a whole number from 1 to `max`.
pub(crate) fn parse_limit(value: Option<&String>, default: usize, max: usize) -> Result<usize, AppError> {
    let Some(value) = value else { return Ok(default) };
    value
        .parse::<usize>()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| AppError::BadRequest(format!("limit must be from 1 to {max}")))
}

/// A Redis failure behind an admin read: logged, answered `503`.
pub(crate) fn redis_failed(error: RedisError) -> AppError {
    tracing::warn!(%error, "An admin read from Redis failed.");
    AppError::Unavailable
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
