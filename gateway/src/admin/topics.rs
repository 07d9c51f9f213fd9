//! One topic as Redis holds it, whichever gateways serve it:
//!
//! - `GET /admin/topics/{topic}`: subscribers per gateway (the topic's group hash, with
//!   each gateway's liveness) and in total (live gateways only), the history's length,
//!   first and last id, epoch, and the last publish time (from the topic index).
//! - `GET /admin/topics/{topic}/history?after=&limit=`: the retained events, oldest first,
//!   after an exclusive cursor, a page at a time.
//!
//! A topic with no history, no meta and no subscriber is unknown: `404`. The topic's own
//! keys share one hash tag and are read in one pipelined round trip; the liveness keys and
//! the topic index are other slots, read by key.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use redis::streams::StreamRangeReply;
use serde_json::json;
use streamgate::cursor::{HistoryId, TopicCursor};
use streamgate::stream::field;
use streamgate::topic::{InstanceId, Topic};

use super::{DEFAULT_PAGE, MAX_PAGE, parse_limit, query_pairs, redis_failed};
use crate::error::AppError;
use crate::history::{self, ReadLimit};
use crate::startup::AppState;
use crate::summary::unix_ms;

fn parse_topic(state: &AppState, name: String) -> Result<Topic, AppError> {
    Topic::parse(name, state.config.max_topic_bytes).map_err(|error| AppError::BadRequest(error.to_string()))
}

fn unknown(topic: &Topic) -> AppError {
    AppError::NotFound(format!("unknown topic {:?}: no history and no subscriber", topic.as_str()))
}

/// One gateway's subscribers of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupField {
    /// The gateway.
    pub instance: String,
    /// Its local subscribers.
    pub count: u64,
}

/// The fields of a group hash that name a gateway and a positive count (the janitor
/// removes the others).
pub fn group_fields(hash: Vec<(String, String)>) -> Vec<GroupField> {
    let mut fields: Vec<GroupField> = hash
        .into_iter()
        .filter(|(instance, _)| InstanceId::parse(instance).is_ok())
        .filter_map(|(instance, count)| {
            count.parse::<i64>().ok().filter(|n| *n > 0).map(|n| GroupField { instance, count: n as u64 })
        })
        .collect();
    fields.sort_by(|a, b| a.instance.cmp(&b.instance));
    fields
}

/// Which of `instances` have a liveness key now (one `EXISTS` per key: they are on
/// different slots in a Redis Cluster).
pub async fn alive(state: &AppState, instances: &[String]) -> Result<Vec<bool>, AppError> {
    if instances.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = state.redis.get().await.map_err(redis_failed)?;
    let mut pipe = redis::pipe();
    for instance in instances {
        let id = InstanceId::parse(instance).expect("checked by group_fields");
        pipe.cmd("EXISTS").arg(state.keys.instance_alive(&id));
    }
    let found: Vec<bool> = pipe.query_async(&mut conn).await.map_err(|e| redis_failed(e.into()))?;
    Ok(found)
}

/// What one round trip reads of a topic: its group hash, its history's type, its meta's
/// epoch and newest id, and its score in the topic index (the last publish, unix ms).
type TopicKeys = (Vec<(String, String)>, String, (Option<String>, Option<String>), Option<f64>);

/// `GET /admin/topics/{topic}`.
pub async fn topic(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    let topic = parse_topic(&state, name)?;
    let keys = &state.keys;
    let history_key = keys.history(&topic);
    let mut conn = state.redis.get().await.map_err(redis_failed)?;
    let (group, history_type, (epoch, last), last_publish): TopicKeys = redis::pipe()
        .cmd("HGETALL")
        .arg(keys.group(&topic))
        .cmd("TYPE")
        .arg(&history_key)
        .cmd("HMGET")
        .arg(keys.meta(&topic))
        .arg(field::META_EPOCH)
        .arg(field::META_LAST)
        .cmd("ZSCORE")
        .arg(keys.topics())
        .arg(topic.as_str())
        .query_async(&mut conn)
        .await
        .map_err(|e| redis_failed(e.into()))?;
    let (length, first, newest) = if history_type == "stream" {
        let (length, first, newest): (u64, StreamRangeReply, StreamRangeReply) = redis::pipe()
            .cmd("XLEN")
            .arg(&history_key)
            .cmd("XRANGE")
            .arg(&history_key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(&history_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_failed(e.into()))?;
        let id_of = |reply: StreamRangeReply| reply.ids.into_iter().next().map(|entry| entry.id);
        (length, id_of(first), id_of(newest))
    } else {
        (0, None, None)
    };
    drop(conn);
    let fields = group_fields(group);
    if fields.is_empty() && length == 0 && epoch.is_none() {
        return Err(unknown(&topic));
    }
    let instances: Vec<String> = fields.iter().map(|f| f.instance.clone()).collect();
    let alive = alive(&state, &instances).await?;
    let total: u64 = fields.iter().zip(&alive).filter(|(_, alive)| **alive).map(|(f, _)| f.count).sum();
    let gateways: Vec<_> = fields
        .iter()
        .zip(&alive)
        .map(|(f, alive)| json!({ "instance": f.instance, "subscribers": f.count, "alive": alive }))
        .collect();
    let last_cursor = match (&epoch, &last) {
        (Some(epoch), Some(last)) => Some(format!("{last}~{epoch}")),
        _ => None,
    };
    let last_publish_ms = last_publish.map(|ms| ms as u64);
    Ok(Json(json!({
        "topic": topic.as_str(),
        "subscribers": { "total": total, "gateways": gateways },
        "history": {
            "length": length,
            "firstId": first,
            "lastId": newest,
            "epoch": epoch,
            "lastCursor": last_cursor,
        },
        "lastPublishMs": last_publish_ms,
        "lastPublishAt": last_publish_ms.map(rfc3339_ms),
    }))
    .into_response())
}

/// A unix time in ms as RFC 3339 (UTC, milliseconds).
pub fn rfc3339_ms(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `after=`: a history id (`<ms>-<seq>`) or a cursor the gateway wrote (`<id>~<epoch>`);
/// absent or `0`: from the oldest event held.
pub fn parse_after(after: Option<&String>) -> Result<HistoryId, AppError> {
    let bad =
        || AppError::BadRequest("after must be a history id (ms-seq) or a cursor (ms-seq~epoch)".into());
    match after.map(String::as_str) {
        None | Some("0") => Ok(HistoryId::ZERO),
        Some(text) if text.contains('~') => match text.parse::<TopicCursor>() {
            Ok(TopicCursor::At { id, .. }) => Ok(id),
            _ => Err(bad()),
        },
        Some(text) => text.parse().map_err(|_| bad()),
    }
}

/// `GET /admin/topics/{topic}/history?after=&limit=`: up to `limit` events after `after`,
/// oldest first, within the gateway's byte budget of one history read (`REPLAY_BYTES`),
/// and `next`, the `after` of the next page (`null` when none is held yet).
pub async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let topic = parse_topic(&state, name)?;
    let query = query_pairs(query.as_deref());
    let limit = parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?;
    let after = parse_after(query.get("after"))?;
    // One more than asked: whether a next page exists is then known, not guessed.
    let read_limit = ReadLimit { count: limit + 1, bytes: state.config.replay_bytes };
    let read = history::read_after(&state.redis, &state.keys, &topic, after, read_limit)
        .await
        .map_err(redis_failed)?;
    if read.epoch.is_none() && read.entries.is_empty() {
        return Err(unknown(&topic));
    }
    let more = read.truncated || read.entries.len() > limit;
    let mut entries = read.entries;
    entries.truncate(limit);
    let next = if more { entries.last().map(|entry| entry.id.to_string()) } else { None };
    let events: Vec<_> = entries
        .iter()
        .map(|entry| {
            json!({
                "id": entry.id.to_string(),
                "cursor": read.epoch.clone().map(|epoch| TopicCursor::at(epoch, entry.id).to_string()),
                "event": entry.name,
                "data": entry.data,
                "prev": entry.prev.to_string(),
                "time": rfc3339_ms(entry.id.ms),
            })
        })
        .collect();
    Ok(Json(json!({
        "topic": topic.as_str(),
        "epoch": read.epoch.as_ref().map(|epoch| epoch.as_str()),
        "lastId": read.last.map(|id| id.to_string()),
        "events": events,
        "next": next,
        "now": rfc3339_ms(unix_ms(std::time::SystemTime::now())),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_takes_an_id_or_a_cursor() {
        let after = |text: &str| parse_after(Some(&text.to_owned()));
        assert_eq!(parse_after(None).unwrap(), HistoryId::ZERO);
        assert_eq!(after("0").unwrap(), HistoryId::ZERO);
        assert_eq!(after("17-2").unwrap(), HistoryId { ms: 17, seq: 2 });
        assert_eq!(after("17-2~k3j9x2mf0a").unwrap(), HistoryId { ms: 17, seq: 2 });
        for bad in ["", "17", "x-1", "17-2~", "17-2~bad epoch", "0~abc"] {
            assert!(matches!(after(bad), Err(AppError::BadRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn only_gateways_with_a_positive_count_are_subscribers() {
        let hash = vec![
            ("gw-2".to_owned(), "3".to_owned()),
            ("gw-1".to_owned(), "1".to_owned()),
            ("gw-0".to_owned(), "0".to_owned()),
            ("gw-9".to_owned(), "-1".to_owned()),
            ("gw-8".to_owned(), "many".to_owned()),
            ("bad id".to_owned(), "5".to_owned()),
        ];
        let expected = vec![
            GroupField { instance: "gw-1".into(), count: 1 },
            GroupField { instance: "gw-2".into(), count: 3 },
        ];
        assert_eq!(group_fields(hash), expected);
    }
}
