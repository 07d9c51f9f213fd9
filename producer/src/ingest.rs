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
//!
//! **Oversize entries are never loaded.** Anyone who may `XADD` to the ingest stream could
//! add an entry of hundreds of megabytes (or with a million fields); `XREADGROUP` and
//! `XAUTOCLAIM` would hand it whole to the producer, a page of them at once. So both run
//! inside a Lua script ([`READ_PAGE`]) that returns, per entry, only the fields within
//! their limits (`data` up to `MAX_EVENT_BYTES`, the others up to [`MAX_SMALL_FIELD_BYTES`],
//! at most [`MAX_FIELDS`] fields); an oversize value comes back as its length and SHA-1
//! instead, and the dead letter keeps that digest, not a copy. A page is thus bounded by
//! `INGEST_BATCH` × (`MAX_EVENT_BYTES` + a few KiB), whatever was added. The entry is
//! still in Redis' memory (it was accepted there); bound that with `maxmemory` and the
//! `ingest` ACL user (deploy/redis/users.acl).
//!
//! A script cannot block (`XREADGROUP ... BLOCK` is refused inside scripts), so an idle
//! consumer polls every [`IDLE_POLL`], and reads again at once after a non-empty page.
//! A read whose answer is lost (Redis did not answer in time) may still have delivered
//! entries to this consumer: after any failure the consumer first reads its own pending
//! entries (`XREADGROUP ... 0`) until none is left, so they are not left waiting for a
//! claim round.
//!
//! The group's backlog (entries read and not yet acknowledged, and the age of the oldest)
//! is read for the metrics every [`BACKLOG_INTERVAL`] by [`watch_backlog`], one `XPENDING`
//! summary and the server's `TIME` in one round trip — never per entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Script, Value};
use streamgate::redis::{Backoff, OutageLog, RedisError};
use streamgate::topic::InstanceId;
use tokio_util::sync::CancellationToken;

use crate::input::{Limits, parse_event};
use crate::metrics::command;
use crate::publisher::{Publish, PublishError, Publisher};

/// How often the ingest backlog gauges are refreshed: a fraction of a usual scrape
/// interval (15 s), and one cheap round trip each time.
pub const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);

/// How long an idle consumer waits before reading again: the most an entry added to an
/// idle stream waits (a read cannot block inside the page script). 20 reads a second per
/// producer cost Redis next to nothing.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Most fields an ingest entry may have: `topic`, `data`, `event`, `idempotencyKey`.
pub const MAX_FIELDS: usize = 4;
/// Longest field name, and longest value of a field other than `data`: above every topic
/// (`MAX_TOPIC_BYTES` is at most 4096), event name and idempotency key.
pub const MAX_SMALL_FIELD_BYTES: usize = 4096;
/// The shortest pause between two claim rounds, whatever `INGEST_CLAIM_IDLE` is.
const MIN_CLAIM_EVERY: Duration = Duration::from_millis(50);
/// Approximate bound of the dead-letter stream, so a flood of bad input cannot fill Redis.
const DEAD_LETTER_MAX_LEN: u64 = 100_000;
/// A consumer idle this many claim periods (`INGEST_CLAIM_IDLE`) is a producer that is gone:
/// a live one reads at least every `IDLE_POLL`, which resets its idle time.
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

/// Reads one page of entries, new (`XREADGROUP ... >`) or claimed (`XAUTOCLAIM`), without
/// sending any oversize value over the wire: each value over its limit is replaced by its
/// length and SHA-1, and an entry with too many fields is sent without its fields.
///
/// KEYS: stream. ARGV: mode (`new`, `own` — this consumer's pending entries — or `claim`),
/// group, consumer, count, min idle ms, claim cursor, max data bytes, max other bytes (also
/// field names), max fields.
/// Reply: {next cursor ('0-0' for `new`), entries}; entry: {id, n_fields, fields, oversize}
/// where fields = {name, value, ...} of those within limits (none when n_fields > max)
/// and oversize = {name, length, sha1, ...}, a name over the limit being 'sha1:<digest>'.
pub const READ_PAGE: &str = r#"
local mode, group, consumer, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_data, max_other, max_fields = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local next, entries = '0-0', {}
if mode == 'claim' then
  local reply = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[5], ARGV[6], 'COUNT', count)
  next, entries = reply[1], reply[2]
else
  local from = (mode == 'own') and '0' or '>'
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', KEYS[1], from)
  if reply then entries = reply[1][2] end
end
local page = {}
for _, entry in ipairs(entries) do
  local raw = entry[2] or {}
  local n_fields = #raw / 2
  local fields, oversize = {}, {}
  if n_fields <= max_fields then
    for j = 1, #raw, 2 do
      local name, value = raw[j], raw[j + 1]
      local limit = (name == 'data') and max_data or max_other
      if #name > max_other then
        name = 'sha1:' .. redis.sha1hex(name)
        limit = -1
      end
      if #value > limit then
        oversize[#oversize + 1] = name
        oversize[#oversize + 1] = #value
        oversize[#oversize + 1] = redis.sha1hex(value)
      else
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
  end
  page[#page + 1] = {entry[1], n_fields, fields, oversize}
end
return {next, page}
"#;

/// An ingest entry as [`READ_PAGE`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestEntry {
    /// The entry's id in the ingest stream.
    pub id: String,
    /// How many fields it has.
    pub n_fields: usize,
    /// Its fields within their limits, in stream order.
    pub fields: Vec<(String, Vec<u8>)>,
    /// Its values over their limits: name, length in bytes, hex SHA-1.
    pub oversize: Vec<(String, u64, String)>,
}

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

/// Where the loop is in its cycle of reading new entries and claiming abandoned ones.
#[derive(Debug)]
struct LoopState {
    /// Whether the consumer group is known to exist.
    group_ready: bool,
    /// When the next claim round starts.
    next_claim: Instant,
    /// The `XAUTOCLAIM` cursor of a claim round in progress.
    claim_cursor: Option<String>,
    /// Entries read or claimed but not yet acknowledged.
    in_hand: Vec<IngestEntry>,
    /// Whether the last read of new entries found none (then wait before the next).
    idle: bool,
    /// Whether this consumer's own pending entries are to be read first (after a
    /// failure, a read whose answer was lost may have delivered some).
    recover_own: bool,
}

/// Consumes the ingest stream and publishes what it reads.
#[derive(Debug)]
pub struct IngestConsumer {
    publisher: Arc<Publisher>,
    limits: Limits,
    config: IngestConfig,
    consumer: String,
    read_page: Script,
}

impl IngestConsumer {
    /// A consumer with a name unique to this process (host name + random suffix).
    pub fn new(publisher: Arc<Publisher>, limits: Limits, config: IngestConfig) -> Self {
        let consumer = InstanceId::generate().as_str().to_owned();
        IngestConsumer { publisher, limits, config, consumer, read_page: Script::new(READ_PAGE) }
    }

    /// Its settings.
    pub fn config(&self) -> &IngestConfig {
        &self.config
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
            group_ready: false,
            next_claim: Instant::now(),
            claim_cursor: None,
            in_hand: Vec::new(),
            idle: false,
            recover_own: false,
        };
        while !shutdown.is_cancelled() {
            match self.step(&mut state, &shutdown).await {
                Ok(()) => {
                    outage.recovered();
                    backoff.reset();
                }
                Err(error) => {
                    outage.failed(&error);
                    state.group_ready = false;
                    state.recover_own = true;
                    if !backoff.pause(&shutdown).await {
                        break;
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
        if state.recover_own {
            let (_, own) = self.read(Page::Own).await?;
            state.recover_own = !own.is_empty();
            state.in_hand = own;
            return Ok(());
        }
        if state.claim_cursor.is_some() || Instant::now() >= state.next_claim {
            let cursor = state.claim_cursor.take().unwrap_or_else(|| "0-0".to_owned());
            let (next, claimed) = self.read(Page::Claim { cursor: &cursor }).await?;
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
        if state.idle {
            let pause = state.next_claim.saturating_duration_since(Instant::now()).min(IDLE_POLL);
            state.idle = false;
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => return Ok(()),
            }
        }
        // Entries a read returns are ours until acknowledged: the read is not raced with
        // shutdown (it does not block), so they are always handled or left pending.
        let (_, read) = self.read(Page::New).await?;
        state.idle = read.is_empty();
        state.in_hand = read;
        Ok(())
    }

    fn claim_every(&self) -> Duration {
        (self.config.claim_idle / 2).max(MIN_CLAIM_EVERY)
    }

    /// Creates the consumer group (and the stream) unless it exists. From `0`, so entries
    /// added before the first producer ever started are not skipped.
    async fn ensure_group(&self) -> Result<(), IngestError> {
        let mut conn = self.publisher.redis().get().await?;
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

    /// One page of entries through [`READ_PAGE`]: new ones (never delivered to any
    /// consumer), or pending ones idle longer than `INGEST_CLAIM_IDLE` (claimed).
    async fn read(&self, page: Page<'_>) -> Result<(String, Vec<IngestEntry>), IngestError> {
        let (mode, cursor) = match page {
            Page::New => ("new", "0-0"),
            Page::Own => ("own", "0-0"),
            Page::Claim { cursor } => ("claim", cursor),
        };
        let mut invocation = self.read_page.key(&self.config.stream);
        invocation
            .arg(mode)
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg(self.config.batch)
            .arg(self.config.claim_idle.as_millis() as u64)
            .arg(cursor)
            .arg(self.limits.max_event_bytes)
            .arg(MAX_SMALL_FIELD_BYTES)
            .arg(MAX_FIELDS);
        let metrics = &self.publisher.metrics().redis;
        let reply: Value = metrics
            .time(command::INGEST_READ, async {
                let mut conn = self.publisher.redis().get().await?;
                Ok::<_, IngestError>(invocation.invoke_async(&mut conn).await?)
            })
            .await?;
        decode_page(reply).ok_or_else(|| {
            IngestError::Redis(RedisError::Pool("unexpected reply from the ingest page script".to_owned()))
        })
    }

    /// Removes the consumer names of producers that are gone (idle for
    /// `STALE_CONSUMER_FACTOR` claim periods, nothing pending), so restarts do not pile up
    /// names in the group.
    async fn prune_consumers(&self) -> Result<(), IngestError> {
        let mut conn = self.publisher.redis().get().await?;
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
    ///
    /// Its span is the root of the batch's trace, as a `POST /publish` is of a request's.
    #[tracing::instrument(name = "ingest", skip_all, fields(n_entries = entries.len()))]
    async fn handle(&self, entries: &[IngestEntry]) -> Result<(), IngestError> {
        let mut valid = Vec::with_capacity(entries.len());
        let mut dead: Vec<(&IngestEntry, String)> = Vec::new();
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
        entries: &[IngestEntry],
        dead: &[(&IngestEntry, String)],
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
            for (field, value) in &entry.fields {
                letter.arg(field).arg(value);
            }
            // An oversize value is kept as its digest and length, never copied.
            for (field, length, sha1) in &entry.oversize {
                letter.arg(format!("{field}:sha1")).arg(sha1).arg(format!("{field}:bytes")).arg(length);
            }
            letter.ignore();
        }
        let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        let mut conn = self.publisher.redis().get().await?;
        // On a Redis Cluster the two streams may be on different nodes, where one pipeline
        // would run its parts at once: write the dead letters first.
        if conn.is_cluster() && !dead.is_empty() {
            let () = pipe.query_async(&mut conn).await?;
            pipe = redis::pipe();
        }
        pipe.cmd("XACK").arg(&self.config.stream).arg(&self.config.group).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(&self.config.stream).arg(&ids).ignore();
        let metrics = self.publisher.metrics();
        metrics
            .redis
            .time(command::INGEST_ACK, async {
                let () = pipe.query_async(&mut conn).await?;
                Ok::<_, IngestError>(())
            })
            .await?;
        metrics.dead_letters.inc_by(dead.len() as u64);
        Ok(())
    }
}

/// Refreshes the ingest backlog gauges (`ingest_pending`, `ingest_oldest_pending_age_seconds`)
/// every [`BACKLOG_INTERVAL`] until `shutdown`. A failed read leaves them as they were (the
/// error is counted; the consumer logs outages).
pub async fn watch_backlog(publisher: Arc<Publisher>, config: IngestConfig, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(BACKLOG_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let metrics = publisher.metrics();
        let read = async {
            let mut conn = publisher.redis().get().await?;
            let (summary, time): (Value, Value) = redis::pipe()
                .cmd("XPENDING")
                .arg(&config.stream)
                .arg(&config.group)
                .cmd("TIME")
                .query_async(&mut conn)
                .await?;
            Ok::<_, IngestError>((summary, time))
        };
        let Ok((summary, time)) = metrics.redis.time(command::INGEST_PENDING, read).await else {
            continue;
        };
        match backlog(summary, time) {
            Some(Backlog { pending, oldest_age_seconds }) => {
                metrics.ingest_pending.set(pending);
                metrics.ingest_oldest_pending_age_seconds.set(oldest_age_seconds);
            }
            None => tracing::debug!("Unexpected reply to XPENDING or TIME; ingest backlog not updated."),
        }
    }
}

/// The ingest group's backlog at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Backlog {
    /// Entries read and not acknowledged.
    pending: i64,
    /// Age of the oldest of them by the server's clock (its id's milliseconds), 0 if none.
    oldest_age_seconds: f64,
}

/// Reads an `XPENDING` summary (`[count, smallest id, largest id, consumers]`) against the
/// server's `TIME` (`[seconds, microseconds]`).
fn backlog(summary: Value, time: Value) -> Option<Backlog> {
    let Value::Array(summary) = summary else { return None };
    let mut summary = summary.into_iter();
    let Some(Value::Int(pending)) = summary.next() else { return None };
    let Value::Array(time) = time else { return None };
    let mut time = time.into_iter().map(|part| text_of(part)?.parse::<u64>().ok());
    let (Some(Some(seconds)), Some(Some(micros))) = (time.next(), time.next()) else { return None };
    let now_ms = seconds * 1000 + micros / 1000;
    let oldest_age_seconds = match summary.next().and_then(text_of) {
        Some(oldest) => {
            let oldest_ms: u64 = oldest.split_once('-')?.0.parse().ok()?;
            now_ms.saturating_sub(oldest_ms) as f64 / 1000.0
        }
        None => 0.0,
    };
    Some(Backlog { pending, oldest_age_seconds })
}

/// Which page [`IngestConsumer::read`] reads.
#[derive(Debug, Clone, Copy)]
enum Page<'c> {
    /// New entries.
    New,
    /// This consumer's own pending entries.
    Own,
    /// Abandoned entries, from a claim cursor.
    Claim { cursor: &'c str },
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::Int(number) => Some(number.to_string().into_bytes()),
        _ => None,
    }
}

fn text_of(value: Value) -> Option<String> {
    String::from_utf8(bytes_of(value)?).ok()
}

/// Decodes [`READ_PAGE`]'s reply.
fn decode_page(reply: Value) -> Option<(String, Vec<IngestEntry>)> {
    let Value::Array(parts) = reply else { return None };
    let [next, Value::Array(entries)] = <[Value; 2]>::try_from(parts).ok()? else { return None };
    let entries = entries
        .into_iter()
        .map(|entry| {
            let Value::Array(parts) = entry else { return None };
            let [id, n_fields, Value::Array(fields), Value::Array(oversize)] =
                <[Value; 4]>::try_from(parts).ok()?
            else {
                return None;
            };
            let Value::Int(n_fields) = n_fields else { return None };
            let mut pairs = Vec::with_capacity(fields.len() / 2);
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                pairs.push((text_of(name)?, bytes_of(value)?));
            }
            let mut big = Vec::with_capacity(oversize.len() / 3);
            let mut oversize = oversize.into_iter();
            while let (Some(name), Some(Value::Int(length)), Some(sha1)) =
                (oversize.next(), oversize.next(), oversize.next())
            {
                big.push((text_of(name)?, u64::try_from(length).ok()?, text_of(sha1)?));
            }
            Some(IngestEntry {
                id: text_of(id)?,
                n_fields: usize::try_from(n_fields).ok()?,
                fields: pairs,
                oversize: big,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((text_of(next)?, entries))
}

/// Validates an ingest entry, or says why it can never be valid.
fn parse_entry(limits: &Limits, entry: &IngestEntry) -> Result<Publish, String> {
    if entry.n_fields > MAX_FIELDS {
        return Err(format!(
            "the entry has {} fields, at most {MAX_FIELDS} ({FIELDS}) are allowed",
            entry.n_fields
        ));
    }
    if let Some((field, length, _)) = entry.oversize.first() {
        let (limit, setting) = if field == "data" {
            (limits.max_event_bytes, "MAX_EVENT_BYTES")
        } else {
            (MAX_SMALL_FIELD_BYTES, "the limit of fields other than data")
        };
        return Err(format!("field {field} is {length} bytes long, over {limit} ({setting})"));
    }
    let (mut topic, mut data, mut event, mut key) = (None, None, None, None);
    for (field, value) in &entry.fields {
        let text =
            String::from_utf8(value.clone()).map_err(|_| format!("field {field} is not UTF-8 text"))?;
        let slot = match field.as_str() {
            "topic" => &mut topic,
            "data" => &mut data,
            "event" => &mut event,
            "idempotencyKey" => &mut key,
            unknown => return Err(format!("unknown field {unknown:?}, expected {FIELDS}")),
        };
        if slot.replace(text).is_some() {
            return Err(format!("field {field} is given twice"));
        }
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

    #[test]
    fn the_backlog_is_the_pending_count_and_the_oldest_ids_age_by_the_servers_clock() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let time = || Value::Array(vec![bulk("1700000010"), bulk("250000")]);
        let summary = Value::Array(vec![
            Value::Int(3),
            bulk("1700000000000-0"),
            bulk("1700000009000-4"),
            Value::Array(vec![Value::Array(vec![bulk("p-1"), bulk("3")])]),
        ]);
        assert_eq!(backlog(summary, time()), Some(Backlog { pending: 3, oldest_age_seconds: 10.25 }));
        let empty = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(backlog(empty, time()), Some(Backlog { pending: 0, oldest_age_seconds: 0.0 }));
        assert_eq!(backlog(Value::Nil, time()), None);
    }

    const LIMITS: Limits =
        Limits { max_event_bytes: 8, max_request_bytes: 100, max_batch_events: 10, max_topic_bytes: 16 };

    fn entry(fields: &[(&str, &[u8])]) -> IngestEntry {
        IngestEntry {
            id: "7-1".to_owned(),
            n_fields: fields.len(),
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(),
            oversize: Vec::new(),
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

    #[test]
    fn oversize_and_overfull_entries_are_refused_naming_the_limit() {
        let mut big = entry(&[("topic", b"t")]);
        big.n_fields = 2;
        big.oversize.push(("data".to_owned(), 1 << 20, "ab".repeat(20)));
        assert!(parse_entry(&LIMITS, &big).unwrap_err().contains("MAX_EVENT_BYTES"));
        let mut many = entry(&[]);
        many.n_fields = 1000;
        assert!(parse_entry(&LIMITS, &many).unwrap_err().contains("1000 fields"));
    }

    #[test]
    fn pages_decode_fields_and_digests() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Int(2),
                Value::Array(vec![bulk("topic"), bulk("t")]),
                Value::Array(vec![bulk("data"), Value::Int(99), bulk("ff00")]),
            ])]),
        ]);
        let (next, entries) = decode_page(reply).unwrap();
        assert_eq!(next, "0-0");
        assert_eq!(entries[0].fields, vec![("topic".to_owned(), b"t".to_vec())]);
        assert_eq!(entries[0].oversize, vec![("data".to_owned(), 99, "ff00".to_owned())]);
    }
}
