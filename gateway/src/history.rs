//! Reading a topic's history for a subscriber: one atomic script returns the history's
//! epoch, its newest id and the entries after a position, bounded by count *and* bytes, so
//! a client 100,000 events behind a topic of 64 KiB events never makes one huge reply or
//! pins a huge batch in the gateway.

use redis::Script;
use redis::streams::StreamRangeReply;
use streamgate::continuity::{HistoryView, Link};
use streamgate::cursor::{Epoch, HistoryId};
use streamgate::keys::Keys;
use streamgate::redis::Redis;
use streamgate::redis::RedisError;
use streamgate::stream::HistoryEntry;
use streamgate::stream::field;
use streamgate::topic::Topic;

pub use streamgate::cursor::Position;

/// Reads the meta and the entries after a position in one atomic step (so "the newest id"
/// and "what is held after the position" describe the same instant), stopping before the
/// entry that would take the reply past the byte budget (one entry is always returned).
///
/// KEYS: meta, history. ARGV: start (exclusive, `(<id>`), count, byte budget.
/// Reply: {epoch or nil, last or nil, entries as XRANGE returns them, 1 if more may
/// follow (the count or the budget was reached) else 0}.
const READ_AFTER: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'last')
local entries, more = {}, 0
if redis.call('TYPE', KEYS[2])['ok'] == 'stream' then
  local budget = tonumber(ARGV[3])
  local range = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
  if #range == tonumber(ARGV[2]) then more = 1 end
  for i, entry in ipairs(range) do
    local size = 0
    for _, value in ipairs(entry[2]) do size = size + #value end
    if i > 1 and size > budget then
      more = 1
      break
    end
    budget = budget - size
    entries[i] = entry
  end
end
return {meta[1], meta[2], entries, more}
"#;

/// The compiled [`READ_AFTER`]: its SHA-1 computed once, not on every read.
static READ_AFTER_SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(READ_AFTER));

/// How much of a topic's history one read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Entries at most.
    pub count: usize,
    /// Bytes of entry fields at most (at least one entry is always returned).
    pub bytes: usize,
}

/// One read of a topic's history.
#[derive(Debug)]
pub struct HistoryRead {
    /// The current epoch, if the topic has a history.
    pub epoch: Option<Epoch>,
    /// The newest id in the history (from its meta), if any.
    pub last: Option<HistoryId>,
    /// Entries after the requested id, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Whether the read stopped at its count or byte limit (more may follow).
    pub truncated: bool,
}

impl HistoryRead {
    /// What the continuity rule needs of this read.
    pub fn view(&self) -> HistoryView<'_> {
        HistoryView {
            epoch: self.epoch.as_ref(),
            newest: self.last,
            first: self.entries.first().map(|entry| Link { id: entry.id, prev: entry.prev }),
        }
    }
}

/// Reads the meta and the entries after `after`, within `limit`, in one round trip.
pub async fn read_after(
    redis: &Redis,
    keys: &Keys,
    topic: &Topic,
    after: HistoryId,
    limit: ReadLimit,
) -> Result<HistoryRead, RedisError> {
    let mut conn = redis.get().await?;
    let (epoch, last, range, more): (Option<String>, Option<String>, StreamRangeReply, u8) =
        READ_AFTER_SCRIPT
            .key(keys.meta(topic))
            .key(keys.history(topic))
            .arg(format!("({after}"))
            .arg(limit.count)
            .arg(limit.bytes)
            .invoke_async(&mut conn)
            .await?;
    let mut entries = Vec::with_capacity(range.ids.len());
    for raw in &range.ids {
        match HistoryEntry::decode(raw) {
            Ok(entry) => entries.push(entry),
            Err(error) => tracing::warn!(%error, topic = %topic, "Skipping malformed history entry."),
        }
    }
    Ok(HistoryRead {
        epoch: epoch.as_deref().and_then(Epoch::parse),
        last: last.and_then(|l| l.parse().ok()),
        entries,
        truncated: more == 1,
    })
}

/// The ids of up to `count` entries at or before `at`, newest first.
pub async fn ids_at_or_before(
    redis: &Redis,
    keys: &Keys,
    topic: &Topic,
    at: HistoryId,
    count: usize,
) -> Result<Vec<HistoryId>, RedisError> {
    let mut conn = redis.get().await?;
    let range: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys.history(topic))
        .arg(at.to_string())
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?;
    Ok(range.ids.iter().filter_map(|entry| entry.id.parse().ok()).collect())
}

/// Reads only the meta (epoch and newest id).
pub async fn read_meta(redis: &Redis, keys: &Keys, topic: &Topic) -> Result<Position, RedisError> {
    let mut conn = redis.get().await?;
    let (epoch, last): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(keys.meta(topic))
        .arg(field::META_EPOCH)
        .arg(field::META_LAST)
        .query_async(&mut conn)
        .await?;
    Ok(position_of(epoch, last))
}

/// Reads the meta of many topics in one pipelined round trip.
pub async fn read_metas(redis: &Redis, keys: &Keys, topics: &[Topic]) -> Result<Vec<Position>, RedisError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = redis.get().await?;
    let mut pipe = redis::pipe();
    for topic in topics {
        pipe.cmd("HMGET").arg(keys.meta(topic)).arg(field::META_EPOCH).arg(field::META_LAST);
    }
    let metas: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
    Ok(metas.into_iter().map(|(epoch, last)| position_of(epoch, last)).collect())
}

fn position_of(epoch: Option<String>, last: Option<String>) -> Position {
    match epoch.as_deref().and_then(Epoch::parse) {
        None => Position::START,
        Some(epoch) => {
            Position { epoch: Some(epoch), last: last.and_then(|l| l.parse().ok()).unwrap_or_default() }
        }
    }
}

/// Entries examined per step when looking back for the surviving tail.
const LOOK_BACK: usize = 64;

/// After Redis lost a history's tail (a restore from an older snapshot, a failover to a
/// replica that lagged), new events may have been appended with ids *at or before* the
/// lost position — when the new server's clock is behind the old one's. Starting from
/// `candidate` (the newest id the continuity rule could name), walks back to the newest
/// entry `delivered` says was delivered before the loss: delivery resumes right after it,
/// so the new events are delivered, not taken for ones already seen.
///
/// Gives up after a few steps (a loss that deep with a clock that far behind is not worth
/// more round trips) and then resumes at the oldest entry it examined.
pub async fn surviving_tail(
    redis: &Redis,
    keys: &Keys,
    topic: &Topic,
    candidate: HistoryId,
    delivered: impl Fn(HistoryId) -> bool,
) -> Result<HistoryId, RedisError> {
    if delivered(candidate) {
        return Ok(candidate);
    }
    let mut from = candidate;
    for _ in 0..4 {
        let ids = ids_at_or_before(redis, keys, topic, from, LOOK_BACK).await?;
        if let Some(found) = ids.iter().copied().find(|id| delivered(*id)) {
            return Ok(found);
        }
        match ids.last() {
            // Reached the start of the history: everything held is new.
            _ if ids.len() < LOOK_BACK => return Ok(HistoryId::ZERO),
            Some(oldest) => from = *oldest,
            None => return Ok(HistoryId::ZERO),
        }
    }
    Ok(from)
}
