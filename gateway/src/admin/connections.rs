//! This gateway's streams: `GET /admin/connections` lists them in id order, a page at a
//! time, optionally only those of one topic (`?topic=`) or one client (`?remote=`, an IP
//! address or `IP:port`); `DELETE /admin/connections/{id}` ends one. The stream ends the
//! way `MAX_STREAM_LIFETIME` ends it — its cursor block, then the end of the response —
//! so an `EventSource` reconnects by itself with its `Last-Event-ID` and resumes exactly.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use streamgate::cursor::TopicCursor;
use streamgate::topic::Topic;

use super::{DEFAULT_PAGE, MAX_PAGE, parse_limit, query_pairs};
use crate::connection::ConnectionInfo;
use crate::error::AppError;
use crate::startup::AppState;

/// Which connections a listing shows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only those subscribed to this topic.
    pub topic: Option<Topic>,
    /// Only those from this client.
    pub remote: Option<Remote>,
}

/// `?remote=`: a client address, with or without its port.
#[derive(Debug, PartialEq, Eq)]
pub enum Remote {
    /// Any port of this address.
    Ip(IpAddr),
    /// Exactly this address and port.
    Socket(SocketAddr),
}

impl Filter {
    /// Parses `topic=` and `remote=`.
    pub fn parse(
        topic: Option<&String>,
        remote: Option<&String>,
        max_topic_bytes: usize,
    ) -> Result<Filter, AppError> {
        let topic = match topic {
            None => None,
            Some(name) => Some(
                Topic::parse(name.as_str(), max_topic_bytes)
                    .map_err(|error| AppError::BadRequest(format!("topic: {error}")))?,
            ),
        };
        let remote = match remote {
            None => None,
            Some(text) => Some(if let Ok(socket) = text.parse::<SocketAddr>() {
                Remote::Socket(socket)
            } else if let Ok(ip) = text.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                Remote::Ip(ip)
            } else {
                return Err(AppError::BadRequest("remote must be an IP address or IP:port".into()));
            }),
        };
        Ok(Filter { topic, remote })
    }

    /// Whether `info` passes.
    pub fn admits(&self, info: &ConnectionInfo) -> bool {
        let topic_ok = self.topic.as_ref().is_none_or(|topic| info.topics.contains(topic));
        let remote_ok = match &self.remote {
            None => true,
            Some(Remote::Ip(ip)) => info.remote.ip() == *ip,
            Some(Remote::Socket(socket)) => info.remote == *socket,
        };
        topic_ok && remote_ok
    }
}

/// `GET /admin/connections?limit=&after=&topic=&remote=`: up to `limit` connections that
/// pass the filter and whose id is above `after`, by id, and `next` (the `after` of the
/// next page, `null` on the last).
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let query = query_pairs(query.as_deref());
    let limit = parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?;
    let after = match query.get("after") {
        None => 0,
        Some(after) => after
            .parse::<u64>()
            .map_err(|_| AppError::BadRequest("after must be a connection id (a whole number)".into()))?,
    };
    let filter = Filter::parse(query.get("topic"), query.get("remote"), state.config.max_topic_bytes)?;
    let all = state.connections.snapshot();
    let mut listed: Vec<_> =
        all.iter().filter(|info| info.id > after && filter.admits(info)).take(limit + 1).collect();
    let more = listed.len() > limit;
    listed.truncate(limit);
    let next = if more { listed.last().map(|info| info.id) } else { None };
    let connections: Vec<_> = listed.iter().map(|info| describe(info)).collect();
    Ok(Json(json!({
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
    .into_response())
}

fn describe(info: &ConnectionInfo) -> serde_json::Value {
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
}

/// `DELETE /admin/connections/{id}`: ends that stream (`204`), or `404` when no such
/// connection is open.
pub async fn close(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, AppError> {
    let id =
        id.parse::<u64>().map_err(|_| AppError::BadRequest("a connection id is a whole number".into()))?;
    if !state.connections.close(id) {
        return Err(AppError::NotFound(format!("no open connection {id}")));
    }
    tracing::info!(
        connection = id,
        "Closing a stream as an operator asked; the client resumes from its cursor."
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(topic: Option<&str>, remote: Option<&str>) -> Result<Filter, AppError> {
        let topic = topic.map(str::to_owned);
        let remote = remote.map(str::to_owned);
        Filter::parse(topic.as_ref(), remote.as_ref(), 16)
    }

    #[test]
    fn remote_takes_an_address_with_or_without_its_port() {
        assert_eq!(
            filter(None, Some("10.0.0.1")).unwrap().remote,
            Some(Remote::Ip("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(filter(None, Some("[::1]")).unwrap().remote, Some(Remote::Ip("::1".parse().unwrap())));
        assert_eq!(
            filter(None, Some("10.0.0.1:4000")).unwrap().remote,
            Some(Remote::Socket("10.0.0.1:4000".parse().unwrap()))
        );
        for bad in ["", "host.example", "10.0.0.1:x"] {
            assert!(filter(None, Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_is_validated_like_a_subscription() {
        assert!(filter(Some("order:1"), None).is_ok());
        for bad in ["", "a\nb", "seventeen-bytes-x"] {
            assert!(matches!(filter(Some(bad), None), Err(AppError::BadRequest(_))), "{bad:?}");
        }
    }
}
