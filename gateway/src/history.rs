//! Reading a topic's history: one pipelined round trip returns the history's epoch, its
//! newest id and a bounded batch of entries after a position.

use deadpool_redis::Pool;
use redis::streams::StreamRangeReply;
use streamgate::cursor::{Epoch, HistoryId, TopicCursor};
use streamgate::keys::Keys;
use streamgate::redis::RedisError;
use streamgate::stream::HistoryEntry;
use streamgate::topic::Topic;

/// A position in a topic's history as the gateway tracks it: the epoch (unknown until the
/// topic has a history) and the last event delivered in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The history's epoch; `None` while no history has been seen.
    pub epoch: Option<Epoch>,
    /// The last event delivered (`0-0`: none yet).
    pub last: HistoryId,
}

impl Position {
    /// Before everything, in whatever epoch comes.
    pub const START: Position = Position { epoch: None, last: HistoryId::ZERO };

    /// The start of `epoch`.
    pub fn start_of(epoch: Epoch) -> Position {
        Position { epoch: Some(epoch), last: HistoryId::ZERO }
    }

    /// As a client cursor.
    pub fn cursor(&self) -> TopicCursor {
        match &self.epoch {
            None => TopicCursor::Start,
            Some(epoch) => TopicCursor::at(epoch.clone(), self.last),
        }
    }

    /// From a client cursor.
    pub fn from_cursor(cursor: &TopicCursor) -> Position {
        match cursor {
            TopicCursor::Start => Position::START,
            TopicCursor::At { epoch, id } => Position { epoch: Some(epoch.clone()), last: *id },
        }
    }
}

/// One read of a topic's history.
#[derive(Debug)]
pub struct HistoryRead {
    /// The current epoch, if the topic has a history.
    pub epoch: Option<Epoch>,
    /// The newest id in the history (from its meta), if any.
    pub last: Option<HistoryId>,
    /// Entries after the requested id, oldest first, at most the requested count.
    pub entries: Vec<HistoryEntry>,
}

/// Reads the meta and up to `count` entries after `after` in one round trip.
pub async fn read_after(
    pool: &Pool,
    keys: &Keys,
    topic: &Topic,
    after: HistoryId,
    count: usize,
) -> Result<HistoryRead, RedisError> {
    let mut conn = pool.get().await?;
    let start = format!("({after}");
    let ((epoch, last), range): ((Option<String>, Option<String>), StreamRangeReply) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.meta(topic))
        .arg("epoch")
        .arg("last")
        .cmd("XRANGE")
        .arg(keys.history(topic))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
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
    })
}

/// Reads only the meta (epoch and newest id).
pub async fn read_meta(pool: &Pool, keys: &Keys, topic: &Topic) -> Result<Position, RedisError> {
    let mut conn = pool.get().await?;
    let (epoch, last): (Option<String>, Option<String>) =
        redis::cmd("HMGET").arg(keys.meta(topic)).arg("epoch").arg("last").query_async(&mut conn).await?;
    Ok(match epoch.as_deref().and_then(Epoch::parse) {
        None => Position::START,
        Some(epoch) => {
            Position { epoch: Some(epoch), last: last.and_then(|l| l.parse().ok()).unwrap_or_default() }
        }
    })
}
