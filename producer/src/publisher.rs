//! The routing core: make a batch of events part of their topics' histories, then put each
//! on the instance stream of every live gateway with subscribers for its topic.
//!
//! A batch costs a constant number of Redis round trips, whatever its size:
//!
//! 1. One Lua script (`append.lua`) appends the whole batch atomically. Per event it checks
//!    the idempotency record, appends to the history with `p` = the topic's previous id,
//!    trims it, and reads the topic's group hash — in the same atomic step, which is what
//!    makes "gateway registers, then reads history" and "producer appends, then reads
//!    membership" catch every event by one path or the other (docs/DELIVERY.md, mechanism 1).
//! 2. At most one pipeline of `EXISTS` for the liveness of instances not seen alive lately.
//! 3. One pipeline of `XADD`s to the live instance streams, plus the topic index update.
//!
//! On a Redis Cluster, every key one event touches shares the topic's hash tag, but a batch
//! spans topics: step 1 groups the batch by hash slot and runs one script per slot, all at
//! once (atomic per slot, not per batch: when one slot's script fails after another's ran,
//! the publish is `OutcomeUnknown`, and a retry with the same idempotency keys is exact).
//! Step 3's pipeline spans instance streams of several slots; the connection splits it
//! into one pipeline per slot, sent at once (`streamgate::redis::Conn`).
//!
//! Each publish is one trace: a `publish` span with `append` (step 1) and `route` (steps 2
//! and 3) under it, at `info`. When the trace is sampled, every routed entry carries the
//! route span's `traceparent` (`tp`), so each gateway's delivery joins the trace; computed
//! once per batch, and not at all when unsampled ([`streamgate::traces`]).
//!
//! When step 2 or 3 fails after step 1 succeeded, the publish still succeeds: the events
//! are in history, and a gateway fills the gap from history when the next routed event
//! names a predecessor it never saw (docs/DELIVERY.md, mechanism 3: hubs reconcile idle topics).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Script, Value};
use streamgate::cursor::{Epoch, HistoryId, TopicCursor};
use streamgate::event::Event;
use streamgate::keys::Keys;
use streamgate::redis::{Conn, Redis, RedisError};
use streamgate::stream::{HistoryEntry, RoutedEntry};
use streamgate::topic::{InstanceId, Topic};

use crate::metrics::{ProducerMetrics, command};

/// The batch append script; see its header for the KEYS/ARGV/reply layout.
const APPEND_SCRIPT: &str = include_str!("append.lua");

/// Above this many cached instances, entries older than the cache time are pruned, so a
/// long-running producer does not remember every gateway that ever existed.
const MAX_CACHED_INSTANCES: usize = 1024;

/// Retention, deduplication and routing settings of a [`Publisher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    /// Events kept per topic history (approximately); `None` for no limit.
    pub history_max_len: Option<u64>,
    /// Age after which events are trimmed (approximately); `None` for no limit.
    pub history_max_age: Option<Duration>,
    /// How long an idempotency key is remembered.
    pub dedup_window: Duration,
    /// Approximate bound of each instance stream.
    pub instance_stream_max_len: u64,
    /// How long an instance seen alive is trusted before checking again.
    pub liveness_cache: Duration,
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The event.
    pub event: Event,
    /// The upstream's key for it: a repeat within the dedup window is a duplicate.
    pub idempotency_key: Option<String>,
}

/// The outcome of publishing one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's topic.
    pub topic: Topic,
    /// The event's position in its topic's history: its `to_string()` is the SSE id a
    /// one-topic subscriber sees.
    pub cursor: TopicCursor,
    /// Whether the event had been published before (same idempotency key within the dedup
    /// window); the cursor is then the original's and nothing new was written.
    pub duplicate: bool,
}

/// Why a batch could not be published, and whether it may be in history nonetheless.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// Certainly not written: no connection could be had, or Redis refused the script
    /// before running it (loading, read-only, out of memory, ...). Retrying later may work.
    #[error("redis unavailable, nothing written: {0}")]
    NotWritten(#[source] RedisError),
    /// Perhaps written: the script was sent and no answer came (response timeout, the
    /// connection dropped). Redis may have run it or may still run it, so only a retry with
    /// the same idempotency keys is safe.
    #[error("redis did not answer, the batch may have been written: {0}")]
    OutcomeUnknown(#[source] RedisError),
    /// Redis refused the batch (for example a key of the wrong type).
    #[error("redis refused the batch: {0}")]
    Refused(#[source] RedisError),
    /// The append script answered something this code does not understand.
    #[error("unexpected reply from the append script: {0}")]
    UnexpectedReply(String),
}

impl PublishError {
    /// Whether the failure is Redis being unavailable or silent, so that retrying the same
    /// batch (with the same idempotency keys) is worth it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PublishError::NotWritten(_) | PublishError::OutcomeUnknown(_))
    }

    /// A failure to get a connection: nothing was sent.
    fn no_connection(error: impl Into<RedisError>) -> PublishError {
        PublishError::NotWritten(error.into())
    }

    /// A failure of the append script's round trip.
    fn from_invoke(error: redis::RedisError) -> PublishError {
        match outcome_of(&error) {
            Outcome::NotRun => PublishError::NotWritten(error.into()),
            Outcome::Refused => PublishError::Refused(error.into()),
            Outcome::Unknown => PublishError::OutcomeUnknown(error.into()),
        }
    }
}

/// What a failed script call tells about the script having run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Redis answered that it could not run it now (or the connection was refused).
    NotRun,
    /// Redis answered with another error: a permanent refusal.
    Refused,
    /// No answer: Redis may have run it.
    Unknown,
}

/// Error codes with which Redis refuses a command *before* running it and which may clear
/// up: loading a dump, a replica, out of memory or refusing writes after a failed snapshot
/// (both refused at a script's first write, and a refused script has written nothing),
/// cluster states, an unknown script, another script running, too few replicas.
const NOT_RUN_CODES: &[&str] = &[
    "LOADING",
    "READONLY",
    "OOM",
    "MISCONF",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "NOSCRIPT",
    "BUSY",
    "NOREPLICAS",
    "MOVED",
    "ASK",
];

fn outcome_of(error: &redis::RedisError) -> Outcome {
    if error.is_connection_refusal() {
        return Outcome::NotRun;
    }
    match error.code() {
        Some(code) if NOT_RUN_CODES.contains(&code) => Outcome::NotRun,
        // An error reply: Redis answered, the script was refused or failed before writing
        // (it checks every key's type first).
        Some(_) => Outcome::Refused,
        // Timeouts, I/O errors, a dropped connection: the request may have been executed.
        None => Outcome::Unknown,
    }
}

/// What the append script did with one event.
#[derive(Debug)]
struct Appended {
    id: HistoryId,
    epoch: Epoch,
    prev: HistoryId,
    duplicate: bool,
    /// The group hash: (instance, subscriber count) pairs, unvalidated.
    members: Vec<(String, String)>,
    /// For a duplicate, the original's data and name (which the routed copy must carry).
    original: Option<(String, Option<String>)>,
}

/// Publishes batches of events: appends to history, then routes to live instances.
#[derive(Debug)]
pub struct Publisher {
    redis: Redis,
    keys: Keys,
    config: PublisherConfig,
    append: Script,
    /// When each instance was last seen alive. Only "alive" is cached: an instance seen
    /// dead is checked again on its next use, so a gateway restarting under the same id
    /// (a StatefulSet pod) is never skipped once its liveness key is back.
    seen_alive: Mutex<HashMap<InstanceId, Instant>>,
    /// What it counts: appends, duplicates, fan-out, Redis timings.
    metrics: Arc<ProducerMetrics>,
}

impl Publisher {
    /// A publisher writing under `keys` through `redis`, with metrics of its own.
    pub fn new(redis: Redis, keys: Keys, config: PublisherConfig) -> Publisher {
        Publisher {
            redis,
            keys,
            config,
            append: Script::new(APPEND_SCRIPT),
            seen_alive: Mutex::default(),
            metrics: Arc::new(ProducerMetrics::new()),
        }
    }

    /// The Redis connections it writes through.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The producer's metrics (this publisher's and everything built on it).
    pub fn metrics(&self) -> &Arc<ProducerMetrics> {
        &self.metrics
    }

    /// Publishes a batch: one result per event, in order. On error nothing of the batch is
    /// in history, except after [`PublishError::OutcomeUnknown`], when all of it may be.
    /// Idempotency keys are in the shared scope of publishers without an identity.
    pub async fn publish(&self, batch: &[Publish]) -> Result<Vec<Published>, PublishError> {
        self.publish_as(None, batch).await
    }

    /// [`Publisher::publish`] for a publisher with an identity: its idempotency keys are
    /// in `scope` (see [`Keys::idempotency`]), apart from every other publisher's.
    pub async fn publish_as(
        &self,
        scope: Option<&str>,
        batch: &[Publish],
    ) -> Result<Vec<Published>, PublishError> {
        self.publish_scoped(&vec![scope; batch.len()], batch).await
    }

    /// [`Publisher::publish_as`] with a scope per event (`scopes[i]` for `batch[i]`): the
    /// events of several publishers in one script call (`crate::group`'s group commit).
    #[tracing::instrument(name = "publish", skip_all, fields(n_events = batch.len()))]
    pub async fn publish_scoped(
        &self,
        scopes: &[Option<&str>],
        batch: &[Publish],
    ) -> Result<Vec<Published>, PublishError> {
        debug_assert_eq!(scopes.len(), batch.len());
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.get().await.map_err(|error| {
            self.metrics.redis.error(command::APPEND);
            PublishError::no_connection(error)
        })?;
        let appended =
            self.metrics.redis.time(command::APPEND, self.append(&mut conn, scopes, batch)).await?;
        let duplicates = appended.iter().filter(|appended| appended.duplicate).count() as u64;
        self.metrics.duplicates.inc_by(duplicates);
        self.metrics.events_appended.inc_by(appended.len() as u64 - duplicates);
        if let Err(error) = self.route(&mut conn, batch, &appended).await {
            tracing::warn!(
                %error,
                n_events = batch.len(),
                "Failed to route appended events; gateways will fill the gap from history."
            );
        }
        Ok(batch
            .iter()
            .zip(appended)
            .map(|(publish, appended)| Published {
                topic: publish.event.topic.clone(),
                cursor: TopicCursor::at(appended.epoch, appended.id),
                duplicate: appended.duplicate,
            })
            .collect())
    }

    /// Step 1: the atomic append of the whole batch (of each slot's part of it, on a
    /// cluster).
    #[tracing::instrument(name = "append", skip_all, fields(n_events = batch.len()))]
    async fn append(
        &self,
        conn: &mut Conn,
        scopes: &[Option<&str>],
        batch: &[Publish],
    ) -> Result<Vec<Appended>, PublishError> {
        let groups = if conn.is_cluster() {
            slot_groups(batch.iter().map(|publish| self.keys.history(&publish.event.topic)))
        } else {
            vec![(0..batch.len()).collect()]
        };
        if groups.len() == 1 {
            return self.append_part(conn, scopes, batch).await;
        }
        let parts = groups.iter().map(|positions| {
            let part: Vec<Publish> = positions.iter().map(|position| batch[*position].clone()).collect();
            let part_scopes: Vec<Option<&str>> = positions.iter().map(|position| scopes[*position]).collect();
            let mut conn = conn.clone_cluster().expect("slot groups only on a cluster");
            async move { self.append_part(&mut conn, &part_scopes, &part).await }
        });
        let results = futures_util::future::join_all(parts).await;
        let any_written = results.iter().any(Result::is_ok);
        let mut appended: Vec<Option<Appended>> = (0..batch.len()).map(|_| None).collect();
        for (positions, result) in groups.iter().zip(results) {
            match result {
                Ok(part) => {
                    for (position, one) in positions.iter().zip(part) {
                        appended[*position] = Some(one);
                    }
                }
                // Another slot's part is in history: the batch as a whole may be.
                Err(PublishError::NotWritten(error)) if any_written => {
                    return Err(PublishError::OutcomeUnknown(error));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(appended.into_iter().map(|one| one.expect("every position in one group")).collect())
    }

    /// One append script for `batch`, whose keys must all be on one slot on a cluster.
    async fn append_part(
        &self,
        conn: &mut Conn,
        scopes: &[Option<&str>],
        batch: &[Publish],
    ) -> Result<Vec<Appended>, PublishError> {
        let mut invocation = self.append.prepare_invoke();
        invocation
            .arg(self.config.history_max_len.unwrap_or(0))
            .arg(self.config.history_max_age.map_or(0, |age| age.as_millis().max(1)).to_string())
            .arg(self.config.dedup_window.as_millis().max(1).to_string())
            .arg(batch.len());
        for (Publish { event, idempotency_key }, scope) in batch.iter().zip(scopes) {
            let history = self.keys.history(&event.topic);
            invocation.key(&history).key(self.keys.meta(&event.topic)).key(self.keys.group(&event.topic));
            match idempotency_key {
                Some(key) => invocation.key(self.keys.idempotency(&event.topic, *scope, key)),
                None => invocation.key(&history),
            };
            invocation
                .arg(&event.data)
                .arg(event.name.as_ref().map_or("", |name| name.as_str()))
                .arg(Epoch::generate().as_str())
                .arg(if idempotency_key.is_some() { "1" } else { "0" });
        }
        let reply: Value = invocation.invoke_async(conn).await.map_err(PublishError::from_invoke)?;
        decode_reply(reply, batch.len())
    }

    /// Steps 2 and 3: liveness, then one pipeline of routed entries and the topic index.
    #[tracing::instrument(name = "route", skip_all, fields(n_events = batch.len(), n_routed = tracing::field::Empty))]
    async fn route(
        &self,
        conn: &mut Conn,
        batch: &[Publish],
        appended: &[Appended],
    ) -> Result<(), RedisError> {
        let targets: Vec<Vec<InstanceId>> =
            appended.iter().map(|a| subscribed_instances(&a.members)).collect();
        let wanted: BTreeSet<&InstanceId> = targets.iter().flatten().collect();
        let live = self.live_instances(conn, wanted).await?;
        // The producer's clock when routing: the gateways measure publish-to-deliver from it.
        let published_at_micros =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
        // One per batch, only when this trace is sampled: the gateways' deliveries become
        // children of this span.
        let route_span = tracing::Span::current();
        let trace_parent = streamgate::traces::traceparent(&route_span);
        let mut n_routed = 0;

        let mut pipe = redis::pipe();
        for ((publish, appended), targets) in batch.iter().zip(appended).zip(&targets) {
            let instances: Vec<&InstanceId> = targets.iter().filter(|i| live.contains(*i)).collect();
            self.metrics.route_fanout.observe(instances.len() as f64);
            if instances.is_empty() {
                continue;
            }
            let (data, name) = match &appended.original {
                Some((data, name)) => (data.clone(), name.clone()),
                None => {
                    (publish.event.data.clone(), publish.event.name.as_ref().map(|n| n.as_str().to_owned()))
                }
            };
            let entry = HistoryEntry { id: appended.id, prev: appended.prev, name, data };
            let fields = RoutedEntry::fields(
                publish.event.topic.as_str(),
                &entry,
                &appended.epoch,
                Some(published_at_micros),
                trace_parent.as_deref(),
            );
            n_routed += instances.len();
            for instance in instances {
                pipe.cmd("XADD")
                    .arg(self.keys.instance_stream(instance))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.config.instance_stream_max_len)
                    .arg("*")
                    .arg(&fields)
                    .ignore();
            }
        }
        // The janitor's index of topics by last publish; GT so it never moves backwards
        // when producers' clocks disagree.
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let topics: BTreeSet<&str> = batch.iter().map(|p| p.event.topic.as_str()).collect();
        let index = pipe.cmd("ZADD").arg(self.keys.topics()).arg("GT");
        for topic in topics {
            index.arg(now_ms).arg(topic);
        }
        index.ignore();
        route_span.record("n_routed", n_routed);
        let () = self.metrics.redis.time(command::ROUTE, pipe.query_async(conn)).await?;
        Ok(())
    }

    /// Which of `wanted` are live: cached "alive" answers younger than the cache time,
    /// and one pipelined `EXISTS` round trip for the rest.
    async fn live_instances(
        &self,
        conn: &mut Conn,
        wanted: BTreeSet<&InstanceId>,
    ) -> Result<HashSet<InstanceId>, RedisError> {
        let now = Instant::now();
        let mut live = HashSet::new();
        let mut unknown = Vec::new();
        {
            let seen_alive = self.seen_alive.lock().unwrap_or_else(PoisonError::into_inner);
            for instance in wanted {
                match seen_alive.get(instance) {
                    Some(seen) if now.duration_since(*seen) < self.config.liveness_cache => {
                        live.insert(instance.clone());
                    }
                    _ => unknown.push(instance.clone()),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(live);
        }
        let mut pipe = redis::pipe();
        for instance in &unknown {
            pipe.exists(self.keys.instance_alive(instance));
        }
        let alive: Vec<bool> = self.metrics.redis.time(command::LIVENESS, pipe.query_async(conn)).await?;
        let mut seen_alive = self.seen_alive.lock().unwrap_or_else(PoisonError::into_inner);
        for (instance, alive) in unknown.into_iter().zip(alive) {
            if alive {
                seen_alive.insert(instance.clone(), now);
                live.insert(instance);
            } else {
                seen_alive.remove(&instance);
            }
        }
        if seen_alive.len() > MAX_CACHED_INSTANCES {
            let ttl = self.config.liveness_cache;
            seen_alive.retain(|_, seen| now.duration_since(*seen) < ttl);
        }
        Ok(live)
    }
}

/// The positions of `keys` grouped by Redis Cluster hash slot, in order of first
/// appearance (and in order within each group).
fn slot_groups(keys: impl Iterator<Item = String>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_slot: HashMap<redis::cluster_routing::Slot, usize> = HashMap::new();
    for (position, key) in keys.enumerate() {
        let group = *by_slot.entry(redis::cluster_routing::Slot::for_key(&key)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(position);
    }
    groups
}

/// The instances of a group hash with a positive subscriber count. Fields that are not a
/// valid instance id or count are skipped: they cannot name an instance stream.
fn subscribed_instances(members: &[(String, String)]) -> Vec<InstanceId> {
    members
        .iter()
        .filter(|(_, count)| count.trim().parse::<i64>().is_ok_and(|count| count > 0))
        .filter_map(|(instance, _)| InstanceId::parse(instance.as_str()).ok())
        .collect()
}

fn unexpected(what: impl Into<String>) -> PublishError {
    PublishError::UnexpectedReply(what.into())
}

fn text(value: Value) -> Result<String, PublishError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| unexpected("text that is not UTF-8"))
        }
        Value::SimpleString(text) => Ok(text),
        Value::Okay => Ok("OK".to_owned()),
        other => Err(unexpected(format!("expected text, got {other:?}"))),
    }
}

fn history_id(value: Value) -> Result<HistoryId, PublishError> {
    let text = text(value)?;
    text.parse().map_err(|_| unexpected(format!("malformed stream id {text:?}")))
}

/// Decodes the append script's reply (see the script's header).
fn decode_reply(reply: Value, n_events: usize) -> Result<Vec<Appended>, PublishError> {
    let Value::Array(items) = reply else {
        return Err(unexpected(format!("expected an array, got {reply:?}")));
    };
    if items.len() != n_events {
        return Err(unexpected(format!("{} results for {n_events} events", items.len())));
    }
    items.into_iter().map(decode_one).collect()
}

fn decode_one(item: Value) -> Result<Appended, PublishError> {
    let Value::Array(fields) = item else {
        return Err(unexpected(format!("expected an array per event, got {item:?}")));
    };
    let mut fields = fields.into_iter();
    let mut next = || fields.next().ok_or_else(|| unexpected("too few fields in an event's result"));
    let duplicate = match next()? {
        Value::Int(0) => false,
        Value::Int(1) => true,
        other => return Err(unexpected(format!("expected 0 or 1, got {other:?}"))),
    };
    let id = history_id(next()?)?;
    let epoch_text = text(next()?)?;
    let epoch =
        Epoch::parse(&epoch_text).ok_or_else(|| unexpected(format!("malformed epoch {epoch_text:?}")))?;
    let prev = history_id(next()?)?;
    let members = match next()? {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            while let (Some(instance), Some(count)) = (flat.next(), flat.next()) {
                pairs.push((text(instance)?, text(count)?));
            }
            pairs
        }
        other => return Err(unexpected(format!("expected the group hash, got {other:?}"))),
    };
    let original = if duplicate {
        let data = text(next()?)?;
        let name = text(next()?)?;
        Some((data, Some(name).filter(|name| !name.is_empty())))
    } else {
        None
    };
    Ok(Appended { id, epoch, prev, duplicate, members, original })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn decodes_appended_and_duplicate_results() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                bulk("5-0"),
                bulk("abc"),
                bulk("4-0"),
                Value::Array(vec![bulk("gw-1"), bulk("2"), bulk("gw-2"), bulk("0")]),
            ]),
            Value::Array(vec![
                Value::Int(1),
                bulk("3-0"),
                bulk("abc"),
                bulk("2-0"),
                Value::Array(vec![]),
                bulk("data"),
                bulk(""),
            ]),
        ]);
        let decoded = decode_reply(reply, 2).unwrap();
        assert!(!decoded[0].duplicate);
        assert_eq!(decoded[0].id.to_string(), "5-0");
        assert_eq!(decoded[0].prev.to_string(), "4-0");
        assert_eq!(subscribed_instances(&decoded[0].members), vec![InstanceId::parse("gw-1").unwrap()]);
        assert!(decoded[1].duplicate);
        assert_eq!(decoded[1].original, Some(("data".to_owned(), None)));
    }

    /// The error a reply `-<line>` turns into.
    fn server_error(line: &str) -> redis::RedisError {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap().extract_error().unwrap_err()
    }

    #[test]
    fn refusals_before_running_are_not_written_and_silence_is_unknown() {
        for line in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MISCONF Redis is configured to save RDB snapshots",
            "NOSCRIPT No matching script.",
            "BUSY Redis is busy running a script.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            assert_eq!(outcome_of(&server_error(line)), Outcome::NotRun, "{line}");
        }
        assert_eq!(outcome_of(&server_error("WRONGTYPE key holds a list")), Outcome::Refused);
        assert_eq!(outcome_of(&server_error("ERR Error running script")), Outcome::Refused);
        let io = |kind| redis::RedisError::from(std::io::Error::new(kind, "test"));
        assert_eq!(outcome_of(&io(std::io::ErrorKind::ConnectionRefused)), Outcome::NotRun);
        for kind in [
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(outcome_of(&io(kind)), Outcome::Unknown, "{kind:?}");
        }
    }

    #[test]
    fn a_batch_is_grouped_by_slot_keeping_its_order() {
        let keys = Keys::new("sg").unwrap();
        let topic = |name: &str| Topic::parse(name, 64).unwrap();
        let history = ["a", "b", "a", "c", "b"].map(|name| keys.history(&topic(name)));
        let groups = slot_groups(history.into_iter());
        assert_eq!(groups, vec![vec![0, 2], vec![1, 4], vec![3]]);
    }

    #[test]
    fn wrong_number_of_results_is_an_error() {
        assert!(matches!(decode_reply(Value::Array(vec![]), 1), Err(PublishError::UnexpectedReply(_))));
    }

    #[test]
    fn members_with_bad_ids_or_counts_are_skipped() {
        let members: Vec<(String, String)> = [("gw-1", "1"), ("bad id", "3"), ("gw-2", "-1"), ("gw-3", "x")]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(subscribed_instances(&members), vec![InstanceId::parse("gw-1").unwrap()]);
    }
}
