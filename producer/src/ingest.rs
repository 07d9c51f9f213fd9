//! The ingest stream consumer: upstream services `XADD` events to a stream (default
//! `streamgate:ingest`, fields `topic`, `data`, optional `event` and `idempotencyKey`);
//! producers share it through one consumer group.
//!
//! Each entry is published with an idempotency key (the upstream's `idempotencyKey`, or
//! `ingest:<entry id>`), and acknowledged (`XACK` + `XDEL`) only after it is in history.
//! So an entry re-delivered after a crash — a producer that died between publish and
//! acknowledge has its pending entries claimed by another after `INGEST_CLAIM_IDLE` — is a
//! duplicate, not a second history entry, as long as it comes back within the dedup window.
//! The same holds when a publish's outcome is unknown (Redis did not answer in time, but
//! may have run the append): the batch in hand is retried with the same keys, so Redis
//! answers "duplicate" for whatever the first attempt wrote.
//!
//! An entry that can never be valid is copied to the dead-letter stream with a `reason`
//! and its `source_id`, then acknowledged: the consumer never stops on bad input. Redis
//! errors are retried with backoff, logged once per outage; the batch in hand is kept and
//! finished, not dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use streamgate::redis::{Backoff, OutageLog, RedisError, blocking_connection};
use streamgate::topic::InstanceId;
use tokio_util::sync::CancellationToken;

use crate::input::{Limits, parse_event};
use crate::publisher::{Publish, PublishError, Publisher};

/// The longest a read blocks. Short enough that claims and shutdown are noticed promptly.
const MAX_BLOCK: Duration = Duration::from_millis(2000);
/// The shortest pause between two claim rounds, whatever `INGEST_CLAIM_IDLE` is.
const MIN_CLAIM_EVERY: Duration = Duration::from_millis(50);
/// Approximate bound of the dead-letter stream, so a flood of bad input cannot fill Redis.
const DEAD_LETTER_MAX_LEN: u64 = 100_000;
/// A consumer idle this many claim periods (`INGEST_CLAIM_IDLE`) is a producer that is gone:
/// a live one reads at least every `MAX_BLOCK`, which resets its idle time.
const STALE_CONSUMER_FACTOR: u32 = 10;

/// Deletes a consumer only while it has no pending entries: deleting one with pending
/// entries would drop them from the group's pending list, and nobody would ever get them.
/// KEYS: stream. ARGV: group, consumer. Returns 1 when deleted.
const DELETE_IDLE_CONSUMER: &str = r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"#;
/// The fields an ingest entry may have.
const FIELDS: &str = "topic, data, event, idempotencyKey";

/// Settings of the ingest consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Whether `producer serve` runs the consumer.
    pub enabled: bool,
    /// The ingest stream's key.
    pub stream: String,
    /// The consumer group producers share.
    pub group: String,
    /// The dead-letter stream's key.
    pub dead_letter: String,
    /// Most entries handled together.
    pub batch: usize,
    /// Pending entries idle this long are claimed from their (presumably dead) consumer.
    pub claim_idle: Duration,
}

/// Why a step of the loop failed; the loop backs off and retries.
#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<redis::RedisError> for IngestError {
    fn from(error: redis::RedisError) -> Self {
        IngestError::Redis(error.into())
    }
}

impl From<deadpool_redis::PoolError> for IngestError {
    fn from(error: deadpool_redis::PoolError) -> Self {
        IngestError::Redis(error.into())
    }
}

/// Where the loop is in its cycle of reading new entries and claiming abandoned ones.
#[derive(Debug)]
struct LoopState {
    /// The dedicated connection for blocking reads; `None` after an error.
    reader: Option<MultiplexedConnection>,
    /// Whether the consumer group is known to exist.
    group_ready: bool,
    /// When the next claim round starts.
    next_claim: Instant,
    /// The `XAUTOCLAIM` cursor of a claim round in progress.
    claim_cursor: Option<String>,
    /// Entries read or claimed but not yet acknowledged.
    in_hand: Vec<StreamId>,
}

/// Consumes the ingest stream and publishes what it reads.
#[derive(Debug)]
pub struct IngestConsumer {
    publisher: Arc<Publisher>,
    limits: Limits,
    config: IngestConfig,
    redis_url: String,
    consumer: String,
}

impl IngestConsumer {
    /// A consumer with a name unique to this process (host name + random suffix).
    pub fn new(publisher: Arc<Publisher>, limits: Limits, config: IngestConfig, redis_url: String) -> Self {
        let consumer = InstanceId::generate().as_str().to_owned();
        IngestConsumer { publisher, limits, config, redis_url, consumer }
    }

    /// This consumer's name in the group.
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// Runs until `shutdown` is cancelled, finishing the batch in hand unless Redis is down.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            stream = %self.config.stream,
            group = %self.config.group,
            consumer = %self.consumer,
            "Consuming the ingest stream."
        );
        let mut outage = OutageLog::new("ingest consumer");
        let mut backoff = Backoff::redis();
        // Claim at once: a producer restarting after a crash picks up what it left behind.
        let mut state = LoopState {
            reader: None,
            group_ready: false,
            next_claim: Instant::now(),
            claim_cursor: None,
            in_hand: Vec::new(),
        };
        while !shutdown.is_cancelled() {
            match self.step(&mut state, &shutdown).await {
                Ok(()) => {
                    outage.recovered();
                    backoff.reset();
                }
                Err(error) => {
                    outage.failed(&error);
                    state.reader = None;
                    state.group_ready = false;
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        if !state.in_hand.is_empty() {
            tracing::info!(
                n_entries = state.in_hand.len(),
                "Stopping with unacknowledged ingest entries; another producer will claim them."
            );
        }
    }

    /// One step: finish the batch in hand, or fetch the next one.
    async fn step(&self, state: &mut LoopState, shutdown: &CancellationToken) -> Result<(), IngestError> {
        if !state.in_hand.is_empty() {
            self.handle(&state.in_hand).await?;
            state.in_hand.clear();
            return Ok(());
        }
        if !state.group_ready {
            self.ensure_group().await?;
            state.group_ready = true;
        }
        if state.claim_cursor.is_some() || Instant::now() >= state.next_claim {
            let cursor = state.claim_cursor.take().unwrap_or_else(|| "0-0".to_owned());
            let (next, claimed) = self.claim(&cursor).await?;
            if next == "0-0" {
                state.next_claim = Instant::now() + self.claim_every();
                // A finished claim round: whatever a gone producer had pending is ours now,
                // so its consumer name can go too.
                self.prune_consumers().await?;
            } else {
                state.claim_cursor = Some(next);
            }
            if !claimed.is_empty() {
                tracing::info!(n_entries = claimed.len(), "Claimed abandoned ingest entries.");
            }
            state.in_hand = claimed;
            return Ok(());
        }
        let block = state
            .next_claim
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), MAX_BLOCK);
        let reader = match &mut state.reader {
            Some(reader) => reader,
            None => state.reader.insert(blocking_connection(&self.redis_url).await?),
        };
        // Only the read races shutdown: entries it was about to return stay pending and are
        // claimed later; entries in hand are finished first.
        tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            read = self.read_new(reader, block) => {
                state.in_hand = read?;
                Ok(())
            }
        }
    }

    fn claim_every(&self) -> Duration {
        (self.config.claim_idle / 2).max(MIN_CLAIM_EVERY)
    }

    /// Creates the consumer group (and the stream) unless it exists. From `0`, so entries
    /// added before the first producer ever started are not skipped.
    async fn ensure_group(&self) -> Result<(), IngestError> {
        let mut conn = self.publisher.pool().get().await?;
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// `XREADGROUP ... >`: entries never delivered to any consumer.
    async fn read_new(
        &self,
        reader: &mut MultiplexedConnection,
        block: Duration,
    ) -> Result<Vec<StreamId>, IngestError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.config.batch)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.config.stream)
            .arg(">")
            .query_async(reader)
            .await?;
        Ok(reply.map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect()).unwrap_or_default())
    }

    /// One page of `XAUTOCLAIM`: pending entries idle longer than `INGEST_CLAIM_IDLE`.
    async fn claim(&self, cursor: &str) -> Result<(String, Vec<StreamId>), IngestError> {
        let mut conn = self.publisher.pool().get().await?;
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg(self.config.claim_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.config.batch)
            .query_async(&mut conn)
            .await?;
        Ok((reply.next_stream_id, reply.claimed))
    }

    /// Removes the consumer names of producers that are gone (idle for
    /// `STALE_CONSUMER_FACTOR` claim periods, nothing pending), so restarts do not pile up
    /// names in the group.
    async fn prune_consumers(&self) -> Result<(), IngestError> {
        let mut conn = self.publisher.pool().get().await?;
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .query_async(&mut conn)
            .await?;
        let stale_ms = (self.config.claim_idle * STALE_CONSUMER_FACTOR).as_millis() as usize;
        for consumer in reply.consumers {
            if consumer.name == self.consumer || consumer.pending > 0 || consumer.idle < stale_ms {
                continue;
            }
            let deleted: i64 = redis::cmd("EVAL")
                .arg(DELETE_IDLE_CONSUMER)
                .arg(1)
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&consumer.name)
                .query_async(&mut conn)
                .await?;
            if deleted > 0 {
                tracing::info!(consumer = %consumer.name, "Removed the ingest consumer of a producer that is gone.");
            }
        }
        Ok(())
    }

    /// Publishes the valid entries, dead-letters the others, then acknowledges them all in
    /// one pipeline. Fails only when Redis is unavailable or silent (the outcome unknown);
    /// the caller retries the batch, with the same idempotency keys.
    async fn handle(&self, entries: &[StreamId]) -> Result<(), IngestError> {
        let mut valid = Vec::with_capacity(entries.len());
        let mut dead: Vec<(&StreamId, String)> = Vec::new();
        for entry in entries {
            match parse_entry(&self.limits, entry) {
                Ok(publish) => valid.push((entry, publish)),
                Err(reason) => dead.push((entry, reason)),
            }
        }
        let batch: Vec<Publish> = valid.iter().map(|(_, publish)| publish.clone()).collect();
        match self.publisher.publish(&batch).await {
            Ok(_) => {}
            Err(error) if error.is_retryable() => return Err(error.into()),
            // Redis refused the batch: find the entries it refuses one by one, so one bad
            // topic key cannot hold the rest back forever.
            Err(error) => {
                tracing::warn!(%error, "Ingest batch refused; publishing its entries one by one.");
                for (entry, publish) in &valid {
                    match self.publisher.publish(std::slice::from_ref(publish)).await {
                        Ok(_) => {}
                        Err(error) if error.is_retryable() => return Err(error.into()),
                        Err(error) => dead.push((entry, format!("publish failed: {error}"))),
                    }
                }
            }
        }
        for (entry, reason) in &dead {
            tracing::warn!(entry_id = %entry.id, reason = %reason, "Dead-lettering an ingest entry.");
        }
        self.acknowledge(entries, &dead).await
    }

    /// Dead letters first, then `XACK` + `XDEL`, in one pipeline (Redis runs it in order,
    /// so an entry is never acknowledged without its dead letter).
    async fn acknowledge(
        &self,
        entries: &[StreamId],
        dead: &[(&StreamId, String)],
    ) -> Result<(), IngestError> {
        let mut pipe = redis::pipe();
        for (entry, reason) in dead {
            let letter = pipe
                .cmd("XADD")
                .arg(&self.config.dead_letter)
                .arg("MAXLEN")
                .arg("~")
                .arg(DEAD_LETTER_MAX_LEN)
                .arg("*")
                .arg("reason")
                .arg(reason)
                .arg("source_id")
                .arg(&entry.id);
            for (field, value) in sorted_fields(entry) {
                letter.arg(field).arg(raw_bytes(value));
            }
            letter.ignore();
        }
        let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        pipe.cmd("XACK").arg(&self.config.stream).arg(&self.config.group).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(&self.config.stream).arg(&ids).ignore();
        let mut conn = self.publisher.pool().get().await?;
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

fn sorted_fields(entry: &StreamId) -> Vec<(&String, &Value)> {
    let mut fields: Vec<_> = entry.map.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields
}

fn raw_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes.clone(),
        Value::SimpleString(text) => text.as_bytes().to_vec(),
        Value::Int(number) => number.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

/// Validates an ingest entry, or says why it can never be valid.
fn parse_entry(limits: &Limits, entry: &StreamId) -> Result<Publish, String> {
    let (mut topic, mut data, mut event, mut key) = (None, None, None, None);
    for (field, value) in sorted_fields(entry) {
        let text = match value {
            Value::BulkString(bytes) => {
                String::from_utf8(bytes.clone()).map_err(|_| format!("field {field} is not UTF-8 text"))?
            }
            Value::SimpleString(text) => text.clone(),
            _ => return Err(format!("field {field} is not text")),
        };
        let slot = match field.as_str() {
            "topic" => &mut topic,
            "data" => &mut data,
            "event" => &mut event,
            "idempotencyKey" => &mut key,
            unknown => return Err(format!("unknown field {unknown:?}, expected {FIELDS}")),
        };
        *slot = Some(text);
    }
    let topic = topic.ok_or("missing field topic")?;
    let data = data.ok_or("missing field data")?;
    // Without an upstream key the entry id is one: a re-delivered entry is a duplicate.
    let key = key.unwrap_or_else(|| format!("ingest:{}", entry.id));
    parse_event(limits, topic, data, event, Some(key)).map_err(|rejection| rejection.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { max_event_bytes: 8, max_request_bytes: 100, max_batch_events: 10, max_topic_bytes: 16 };

    fn entry(fields: &[(&str, &[u8])]) -> StreamId {
        StreamId {
            id: "7-1".to_owned(),
            map: fields.iter().map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.to_vec()))).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn entry_without_key_is_keyed_by_its_id() {
        let publish = parse_entry(&LIMITS, &entry(&[("topic", b"t"), ("data", b"x")])).unwrap();
        assert_eq!(publish.idempotency_key.as_deref(), Some("ingest:7-1"));
        let publish = parse_entry(
            &LIMITS,
            &entry(&[("topic", b"t"), ("data", b"x"), ("idempotencyKey", b"up-1"), ("event", b"e")]),
        )
        .unwrap();
        assert_eq!(publish.idempotency_key.as_deref(), Some("up-1"));
        assert_eq!(publish.event.name.unwrap().as_str(), "e");
    }

    #[test]
    fn invalid_entries_say_why() {
        let reason = |fields: &[(&str, &[u8])]| parse_entry(&LIMITS, &entry(fields)).unwrap_err();
        assert_eq!(reason(&[("data", b"x")]), "missing field topic");
        assert_eq!(reason(&[("topic", b"t")]), "missing field data");
        assert!(
            reason(&[("topic", b"t"), ("data", b"x"), ("extra", b"1")]).contains("unknown field \"extra\"")
        );
        assert!(reason(&[("topic", b"t"), ("data", b"\xff")]).contains("not UTF-8"));
        assert!(reason(&[("topic", b"t"), ("data", b"123456789")]).contains("MAX_EVENT_BYTES"));
        assert!(reason(&[("topic", b"a\nb"), ("data", b"x")]).contains("topic"));
    }
}
