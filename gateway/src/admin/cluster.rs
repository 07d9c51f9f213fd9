//! `GET /admin/cluster`: the whole deployment as Redis sees it, from any gateway.
//!
//! - **Gateways**: the instance index (`P:instances`, newest heartbeat first, at most
//!   [`MAX_GATEWAYS`]), then, per instance, its summary (`P:i:{I}:summary`, written by
//!   [`crate::summary`]) and its liveness key's TTL. Each is one key read on its own (in a
//!   Redis Cluster they are on different slots). Index entries with neither are dead
//!   gateways the janitor has not swept yet: counted, not listed.
//! - **Top topics** by subscribers: a bounded `SCAN` of the group hashes ([`MAX_GROUPS_SCANNED`]
//!   keys at most, `scanComplete` says whether it saw them all), counting only live
//!   gateways' fields; the [`TOP_TOPICS`] largest.
//! - **Ingest**: the ingest stream's length, its consumer group's pending count, lag and
//!   oldest pending entry (`XINFO GROUPS`, `XPENDING`), and the dead-letter stream's length.
//!
//! Other gateways' connections are not fetched here: each gateway lists its own at
//! `/admin/connections` (its admin address is in its summary).

use std::collections::HashSet;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use redis::streams::{StreamInfoGroupsReply, StreamPendingCountReply};
use serde_json::{Value, json};
use streamgate::cursor::HistoryId;
use streamgate::topic::InstanceId;

use super::redis_failed;
use super::topics::{group_fields, rfc3339_ms};
use crate::error::AppError;
use crate::startup::AppState;
use crate::summary::{Summary, unix_ms};

/// Gateways listed at most (from the newest heartbeat down): a page the dashboard can show.
pub const MAX_GATEWAYS: usize = 1000;
/// Topics listed by subscribers.
pub const TOP_TOPICS: usize = 20;
/// Group hashes examined at most per request: bounds the work one dashboard poll (every
/// 2 s) puts on Redis, whatever the number of topics.
pub const MAX_GROUPS_SCANNED: usize = 10_000;
/// `COUNT` of each `SCAN` step (and group hashes read per pipelined round trip).
const SCAN_COUNT: usize = 500;

use streamgate::redis::Conn;

/// `GET /admin/cluster`.
pub async fn cluster(State(state): State<AppState>) -> Result<Response, AppError> {
    let mut conn = state.redis.get().await.map_err(redis_failed)?;
    let now_ms = unix_ms(SystemTime::now());
    let (gateways, dead_in_index) = gateways(&state, &mut conn, now_ms).await?;
    let live: HashSet<String> = gateways
        .iter()
        .filter(|g| g["alive"] == true)
        .filter_map(|g| g["instance"].as_str().map(str::to_owned))
        .collect();
    let (top, groups_scanned, scan_complete) = top_topics(&state, &mut conn, &live).await?;
    let ingest = ingest(&state, &mut conn, now_ms).await?;
    let connections: u64 = gateways.iter().filter_map(|g| g["connections"].as_u64()).sum();
    Ok(Json(json!({
        "instance": state.config.instance_id.as_str(),
        "now": rfc3339_ms(now_ms),
        "nowMs": now_ms,
        "totals": { "gateways": live.len(), "connections": connections },
        "gateways": gateways,
        "deadInIndex": dead_in_index,
        "topTopics": top,
        "groupsScanned": groups_scanned,
        "scanComplete": scan_complete,
        "ingest": ingest,
    }))
    .into_response())
}

/// Every gateway with a liveness key or a summary, newest heartbeat first; and how many
/// index entries have neither.
async fn gateways(state: &AppState, conn: &mut Conn, now_ms: u64) -> Result<(Vec<Value>, usize), AppError> {
    let indexed: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(state.keys.instances())
        .arg(0)
        .arg(MAX_GATEWAYS - 1)
        .query_async(conn)
        .await
        .map_err(|e| redis_failed(e.into()))?;
    let ids: Vec<InstanceId> = indexed.iter().filter_map(|id| InstanceId::parse(id).ok()).collect();
    if ids.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("GET").arg(state.keys.instance_summary(id));
        pipe.cmd("PTTL").arg(state.keys.instance_alive(id));
    }
    let replies: Vec<(Option<String>, i64)> =
        pipe.query_async(conn).await.map_err(|e| redis_failed(e.into()))?;
    let mut listed = Vec::new();
    let mut dead = 0;
    for (id, (summary, ttl_ms)) in ids.iter().zip(replies) {
        let summary: Option<Summary> = summary.and_then(|text| serde_json::from_str(&text).ok());
        // PTTL: -2 no key (dead), -1 a key without TTL (alive, written by hand).
        let alive = ttl_ms != -2;
        if !alive && summary.is_none() {
            dead += 1;
            continue;
        }
        let mut gateway = json!({
            "instance": id.as_str(),
            "alive": alive,
            "livenessTtlMs": (ttl_ms >= 0).then_some(ttl_ms),
            "self": id == &state.config.instance_id,
        });
        if let Some(summary) = summary {
            let details = json!({
                "version": summary.version,
                "listenAddr": summary.listen_addr,
                "adminAddr": summary.admin_addr,
                "connections": summary.connections,
                "topics": summary.topics,
                "eventsDelivered": summary.events_delivered,
                "startedAt": rfc3339_ms(summary.started_at_ms),
                "heartbeatAt": rfc3339_ms(summary.heartbeat_at_ms),
                "heartbeatAtMs": summary.heartbeat_at_ms,
                "heartbeatAgeMs": now_ms.saturating_sub(summary.heartbeat_at_ms),
            });
            if let (Value::Object(gateway), Value::Object(details)) = (&mut gateway, details) {
                gateway.extend(details);
            }
        }
        listed.push(gateway);
    }
    Ok((listed, dead))
}

/// The topics with the most subscribers on live gateways, from a bounded scan of the group
/// hashes; also how many were examined and whether that was all of them.
async fn top_topics(
    state: &AppState,
    conn: &mut Conn,
    live: &HashSet<String>,
) -> Result<(Vec<Value>, usize, bool), AppError> {
    let pattern = state.keys.group_pattern();
    let mut scanned = 0;
    let mut complete = true;
    let mut counted: Vec<(String, u64, usize)> = Vec::new();
    // A cluster SCAN covers one node: scan every master in turn.
    let masters = conn.masters().await.map_err(redis_failed)?;
    let nodes: Vec<Option<&streamgate::redis::Node>> = match &masters {
        Some(masters) => masters.iter().map(Some).collect(),
        None => vec![None],
    };
    for node in nodes {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
            let reply = conn.query_on(node, &scan).await.map_err(redis_failed)?;
            let (next, names): (u64, Vec<String>) = redis::from_redis_value(reply)
                .map_err(|e| redis_failed(redis::RedisError::from(e).into()))?;
            let names: Vec<String> = names.into_iter().take(MAX_GROUPS_SCANNED - scanned).collect();
            scanned += names.len();
            if !names.is_empty() {
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.cmd("HGETALL").arg(name);
                }
                let hashes: Vec<Vec<(String, String)>> =
                    pipe.query_async(conn).await.map_err(|e| redis_failed(e.into()))?;
                for (name, hash) in names.iter().zip(hashes) {
                    let Some(topic) = state.keys.topic_of(name) else { continue };
                    let fields: Vec<_> =
                        group_fields(hash).into_iter().filter(|f| live.contains(&f.instance)).collect();
                    let subscribers: u64 = fields.iter().map(|f| f.count).sum();
                    if subscribers > 0 {
                        counted.push((topic, subscribers, fields.len()));
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
            if scanned >= MAX_GROUPS_SCANNED {
                complete = false;
                break;
            }
        }
        if !complete {
            break;
        }
    }
    counted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counted.truncate(TOP_TOPICS);
    let top = counted
        .into_iter()
        .map(|(topic, subscribers, gateways)| json!({ "topic": topic, "subscribers": subscribers, "gateways": gateways }))
        .collect();
    Ok((top, scanned, complete))
}

/// The ingest stream's consumer group: pending entries, lag, the oldest pending entry; and
/// the dead letters.
async fn ingest(state: &AppState, conn: &mut Conn, now_ms: u64) -> Result<Value, AppError> {
    let names = &state.config.ingest;
    let (stream_type, dead_type): (String, String) = redis::pipe()
        .cmd("TYPE")
        .arg(&names.stream)
        .cmd("TYPE")
        .arg(&names.dead_letter)
        .query_async(conn)
        .await
        .map_err(|e| redis_failed(e.into()))?;
    let dead_letters: u64 = if dead_type == "stream" {
        redis::cmd("XLEN")
            .arg(&names.dead_letter)
            .query_async(conn)
            .await
            .map_err(|e| redis_failed(e.into()))?
    } else {
        0
    };
    let mut ingest = json!({
        "stream": names.stream,
        "group": names.group,
        "length": 0,
        "groupExists": false,
        "deadLetter": names.dead_letter,
        "deadLetters": dead_letters,
    });
    if stream_type != "stream" {
        return Ok(ingest);
    }
    let (length, groups): (u64, StreamInfoGroupsReply) = redis::pipe()
        .cmd("XLEN")
        .arg(&names.stream)
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(&names.stream)
        .query_async(conn)
        .await
        .map_err(|e| redis_failed(e.into()))?;
    ingest["length"] = json!(length);
    let Some(group) = groups.groups.into_iter().find(|g| g.name == names.group) else {
        return Ok(ingest);
    };
    ingest["groupExists"] = json!(true);
    ingest["pending"] = json!(group.pending);
    ingest["lag"] = json!(group.lag);
    ingest["consumers"] = json!(group.consumers);
    ingest["lastDeliveredId"] = json!(group.last_delivered_id);
    if group.pending > 0 {
        let oldest: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&names.stream)
            .arg(&names.group)
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(conn)
            .await
            .map_err(|e| redis_failed(e.into()))?;
        if let Some(entry) = oldest.ids.first() {
            let added_ms = entry.id.parse::<HistoryId>().map(|id| id.ms).ok();
            ingest["oldestPending"] = json!({
                "id": entry.id,
                "consumer": entry.consumer,
                "idleMs": entry.last_delivered_ms,
                "deliveries": entry.times_delivered,
                "ageMs": added_ms.map(|ms| now_ms.saturating_sub(ms)),
            });
        }
    }
    Ok(ingest)
}
