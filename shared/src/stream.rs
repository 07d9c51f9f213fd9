//! The entries Streamgate keeps in Redis streams, and how they are read back.
//!
//! A **history entry** (in `P:h:{D}:T`) has fields `d` (data), `p` (the id of the topic's
//! previous event, `0-0` for the first of an epoch) and, when named, `n` (event name).
//! A **routed entry** (in an instance stream `P:i:{I}:s`) repeats the event for the live
//! path: `t` topic, `i` history id, `p` previous id, `e` epoch, `d`, `n` when named, and
//! `ts`, the producer's wall clock when it routed the event (microseconds since the Unix
//! epoch), from which a gateway measures publish-to-deliver latency; and `tp`, only when
//! the publish was traced and sampled: the W3C `traceparent` of the producer's route span,
//! which a gateway's hub makes the parent of its delivery span ([`crate::traces`]).
//! Entries without `ts` or `tp` (from a producer older than the fields, or not sampled) are
//! delivered all the same.
//! `p` is what lets a gateway see a gap (a predecessor newer than what it delivered) and
//! fill it from the history; anything at or below what it delivered is a duplicate.

use redis::Value;
use redis::streams::StreamId;

/// Field names of history entries, routed entries and a topic's meta hash. The Lua scripts
/// that write them (`producer/src/append.lua`, the gateway's history read) spell the same
/// names; these constants are what Rust code uses.
pub mod field {
    /// Entry field: the event's data.
    pub const DATA: &str = "d";
    /// Entry field: the id of the topic's previous event.
    pub const PREV: &str = "p";
    /// Entry field: the event name, when named.
    pub const NAME: &str = "n";
    /// Routed entry field: the topic.
    pub const TOPIC: &str = "t";
    /// Routed entry field: the event's history id.
    pub const ID: &str = "i";
    /// Routed entry field: the history's epoch.
    pub const EPOCH: &str = "e";
    /// Routed entry field: when the producer routed the event, in microseconds since the
    /// Unix epoch by its clock.
    pub const PUBLISHED_AT: &str = "ts";
    /// Routed entry field, only on sampled publishes: the W3C `traceparent` of the
    /// producer's route span.
    pub const TRACE_PARENT: &str = "tp";
    /// Meta hash field: the history's epoch.
    pub const META_EPOCH: &str = "epoch";
    /// Meta hash field: the id of the newest event appended.
    pub const META_LAST: &str = "last";
}

use crate::cursor::{Epoch, HistoryId};

/// One event as stored in a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its history id.
    pub id: HistoryId,
    /// The id of the event before it in the same epoch (`0-0` for the first).
    pub prev: HistoryId,
    /// The event name, if any.
    pub name: Option<String>,
    /// The payload.
    pub data: String,
}

/// One event as routed to an instance stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedEntry {
    /// The topic (not yet validated: the gateway looks it up among its own topics).
    pub topic: String,
    /// The event in the topic's history.
    pub entry: HistoryEntry,
    /// The history's epoch.
    pub epoch: Epoch,
    /// When the producer routed it, in microseconds since the Unix epoch by the producer's
    /// clock; `None` from a producer that does not say.
    pub published_at_micros: Option<u64>,
    /// The W3C `traceparent` of the producer's route span, when the publish was sampled.
    pub trace_parent: Option<String>,
}

/// Why a stream entry could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed stream entry {id}: {reason}")]
pub struct EntryError {
    /// The entry's stream id.
    pub id: String,
    /// What is wrong.
    pub reason: &'static str,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn text_field(entry: &StreamId, name: &str) -> Option<String> {
    entry.map.get(name).and_then(text)
}

impl HistoryEntry {
    /// Decodes a history stream entry.
    pub fn decode(entry: &StreamId) -> Result<HistoryEntry, EntryError> {
        let error = |reason| EntryError { id: entry.id.clone(), reason };
        Ok(HistoryEntry {
            id: entry.id.parse().map_err(|_| error("bad id"))?,
            prev: text_field(entry, field::PREV)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| error("no previous id"))?,
            name: text_field(entry, field::NAME),
            data: text_field(entry, field::DATA).ok_or_else(|| error("no data"))?,
        })
    }
}

impl HistoryEntry {
    /// The field/value pairs of this entry in a history stream (what the producer's append
    /// script writes).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![(field::PREV, self.prev.to_string())];
        if let Some(name) = &self.name {
            fields.push((field::NAME, name.clone()));
        }
        fields.push((field::DATA, self.data.clone()));
        fields
    }
}

impl RoutedEntry {
    /// Decodes an instance stream entry.
    pub fn decode(entry: &StreamId) -> Result<RoutedEntry, EntryError> {
        let error = |reason| EntryError { id: entry.id.clone(), reason };
        let id = text_field(entry, field::ID)
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| error("no history id"))?;
        Ok(RoutedEntry {
            topic: text_field(entry, field::TOPIC).ok_or_else(|| error("no topic"))?,
            epoch: text_field(entry, field::EPOCH)
                .and_then(|e| Epoch::parse(&e))
                .ok_or_else(|| error("no epoch"))?,
            entry: HistoryEntry {
                id,
                prev: text_field(entry, field::PREV)
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| error("no previous id"))?,
                name: text_field(entry, field::NAME),
                data: text_field(entry, field::DATA).ok_or_else(|| error("no data"))?,
            },
            published_at_micros: text_field(entry, field::PUBLISHED_AT).and_then(|ts| ts.parse().ok()),
            trace_parent: text_field(entry, field::TRACE_PARENT),
        })
    }

    /// The field/value pairs to `XADD` to an instance stream; `published_at_micros` is the
    /// producer's clock when it routes the event (see [`field::PUBLISHED_AT`]), and
    /// `trace_parent` the route span's `traceparent` when sampled ([`field::TRACE_PARENT`]).
    pub fn fields(
        topic: &str,
        entry: &HistoryEntry,
        epoch: &Epoch,
        published_at_micros: Option<u64>,
        trace_parent: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (field::TOPIC, topic.to_owned()),
            (field::ID, entry.id.to_string()),
            (field::PREV, entry.prev.to_string()),
            (field::EPOCH, epoch.as_str().to_owned()),
            (field::DATA, entry.data.clone()),
        ];
        if let Some(name) = &entry.name {
            fields.push((field::NAME, name.clone()));
        }
        if let Some(micros) = published_at_micros {
            fields.push((field::PUBLISHED_AT, micros.to_string()));
        }
        if let Some(trace_parent) = trace_parent {
            fields.push((field::TRACE_PARENT, trace_parent.to_owned()));
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn stream_id(id: &str, fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: id.to_owned(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn routed_entry_round_trips_through_its_fields() {
        let entry = HistoryEntry {
            id: "5-1".parse().unwrap(),
            prev: "5-0".parse().unwrap(),
            name: Some("status".into()),
            data: "{\"a\":1}".into(),
        };
        let epoch = Epoch::parse("abc").unwrap();
        let trace_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (published_at_micros, trace_parent) in
            [(Some(1_732_350_000_123_456), Some(trace_parent)), (None, None)]
        {
            let fields = RoutedEntry::fields("order:1", &entry, &epoch, published_at_micros, trace_parent);
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(pairs.iter().any(|(name, _)| *name == field::TRACE_PARENT), trace_parent.is_some());
            let decoded = RoutedEntry::decode(&stream_id("9-0", &pairs)).unwrap();
            let expected = RoutedEntry {
                topic: "order:1".into(),
                entry: entry.clone(),
                epoch: epoch.clone(),
                published_at_micros,
                trace_parent: trace_parent.map(str::to_owned),
            };
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn history_entry_without_previous_id_is_malformed() {
        let error = HistoryEntry::decode(&stream_id("5-0", &[("d", "x")])).unwrap_err();
        assert_eq!(error.reason, "no previous id");
    }
}
