//! What upstream services hand in, parsed once at the edge into [`Publish`] values.
//!
//! The HTTP body, the ingest stream entries and the command line all end in
//! [`parse_event`], so one event is valid or invalid the same way whichever path it took.
//! Everything is checked before anything is written: a batch with one bad event is
//! rejected whole.

use serde::Deserialize;
use streamgate::event::Event;
use streamgate::topic::{EventName, Topic};

use crate::publisher::Publish;

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Limits on what a publisher may hand in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event data, in bytes.
    pub max_event_bytes: usize,
    /// Largest HTTP request body, in bytes.
    pub max_request_bytes: usize,
    /// Most events in one HTTP batch.
    pub max_batch_events: usize,
    /// Longest topic name, in bytes.
    pub max_topic_bytes: usize,
}

/// Why an event or a body was rejected. Messages are meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Malformed: can never be valid as sent (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// Over a size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
}

/// A rejected HTTP body: the rejection and, when one event is at fault, its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRejection {
    /// What is wrong.
    pub rejection: Rejection,
    /// The index of the offending event (0 for a single-object body), if one is at fault.
    pub index: Option<usize>,
}

/// Validates one event's fields: topic, data size, event name and idempotency key.
pub fn parse_event(
    limits: &Limits,
    topic: String,
    data: String,
    event: Option<String>,
    idempotency_key: Option<String>,
) -> Result<Publish, Rejection> {
    let topic =
        Topic::parse(topic, limits.max_topic_bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if data.len() > limits.max_event_bytes {
        return Err(Rejection::TooLarge(format!(
            "data is {} bytes long, the maximum is {} (MAX_EVENT_BYTES)",
            data.len(),
            limits.max_event_bytes
        )));
    }
    let name = event.map(EventName::parse).transpose().map_err(|e| Rejection::Malformed(e.to_string()))?;
    if let Some(key) = &idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(Rejection::Malformed(format!(
            "idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes long, it is {}",
            key.len()
        )));
    }
    Ok(Publish { event: Event { topic, name, data }, idempotency_key })
}

/// One event of an HTTP body, as sent. Unknown fields are rejected: a misspelt
/// `idempotencyKey` silently ignored would turn a safe retry into a duplicate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    topic: String,
    data: serde_json::Value,
    #[serde(default)]
    event: Option<String>,
    #[serde(default, rename = "idempotencyKey")]
    idempotency_key: Option<String>,
}

/// Parses a `POST /publish` body: one event object or an array of them.
///
/// String `data` is delivered as that text; any other JSON value as its compact
/// serialization.
pub fn parse_body(limits: &Limits, body: &[u8]) -> Result<Vec<Publish>, BodyRejection> {
    let whole = |rejection| BodyRejection { rejection, index: None };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| whole(Rejection::Malformed(format!("the body is not valid JSON: {error}"))))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        object @ serde_json::Value::Object(_) => vec![object],
        _ => {
            return Err(whole(Rejection::Malformed(
                "the body must be a JSON object or an array of objects".to_owned(),
            )));
        }
    };
    if items.len() > limits.max_batch_events {
        return Err(whole(Rejection::TooLarge(format!(
            "the batch has {} events, the maximum is {} (MAX_BATCH_EVENTS)",
            items.len(),
            limits.max_batch_events
        ))));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            parse_item(limits, item).map_err(|rejection| BodyRejection { rejection, index: Some(index) })
        })
        .collect()
}

fn parse_item(limits: &Limits, item: serde_json::Value) -> Result<Publish, Rejection> {
    if !item.is_object() {
        return Err(Rejection::Malformed("an event must be a JSON object".to_owned()));
    }
    let raw: RawEvent =
        serde_json::from_value(item).map_err(|error| Rejection::Malformed(error.to_string()))?;
    let data = match raw.data {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    parse_event(limits, raw.topic, data, raw.event, raw.idempotency_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { max_event_bytes: 16, max_request_bytes: 1024, max_batch_events: 3, max_topic_bytes: 8 };

    fn parse(body: &str) -> Result<Vec<Publish>, BodyRejection> {
        parse_body(&LIMITS, body.as_bytes())
    }

    fn malformed_at(body: &str) -> Option<usize> {
        match parse(body) {
            Err(BodyRejection { rejection: Rejection::Malformed(_), index }) => index,
            other => panic!("expected a malformed body, got {other:?}"),
        }
    }

    #[test]
    fn single_object_is_a_batch_of_one() {
        let events =
            parse(r#"{"topic":"order:1","data":"hi","event":"status","idempotencyKey":"k1"}"#).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.topic.as_str(), "order:1");
        assert_eq!(events[0].event.data, "hi");
        assert_eq!(events[0].event.name.as_ref().map(|n| n.as_str()), Some("status"));
        assert_eq!(events[0].idempotency_key.as_deref(), Some("k1"));
    }

    #[test]
    fn string_data_is_delivered_as_is_and_other_values_compactly() {
        let events = parse(
            r#"[{"topic":"a","data":"x\ny"},{"topic":"a","data":{"k": [1, 2]}},{"topic":"a","data":null}]"#,
        )
        .unwrap();
        let data: Vec<&str> = events.iter().map(|p| p.event.data.as_str()).collect();
        assert_eq!(data, ["x\ny", r#"{"k":[1,2]}"#, "null"]);
        assert!(events.iter().all(|p| p.event.name.is_none() && p.idempotency_key.is_none()));
    }

    #[test]
    fn bad_event_is_reported_with_its_index() {
        assert_eq!(malformed_at(r#"[{"topic":"a","data":1},{"topic":"","data":1}]"#), Some(1));
        assert_eq!(malformed_at(r#"[{"topic":"a","data":1},{"topic":"a"}]"#), Some(1));
        assert_eq!(malformed_at(r#"{"topic":"a","data":1,"event":"a\nb"}"#), Some(0));
        assert_eq!(malformed_at(r#"{"topic":"a","data":1,"event":"streamgate.reset"}"#), Some(0));
        assert_eq!(malformed_at(r#"{"topic":"a","data":1,"evnt":"x"}"#), Some(0));
        assert_eq!(malformed_at(r#"{"topic":5,"data":1}"#), Some(0));
        assert_eq!(malformed_at(r#"{"topic":"a","data":1,"idempotencyKey":""}"#), Some(0));
        assert_eq!(malformed_at(r#"[{"topic":"a","data":1}, 7]"#), Some(1));
        assert_eq!(malformed_at(r#"{"topic":"toolongtopic","data":1}"#), Some(0));
    }

    #[test]
    fn malformed_body_has_no_index() {
        assert_eq!(malformed_at("not json"), None);
        assert_eq!(malformed_at("42"), None);
        assert_eq!(malformed_at(r#""text""#), None);
    }

    #[test]
    fn limits_are_too_large_not_malformed() {
        let big =
            parse(r#"[{"topic":"a","data":"ok"},{"topic":"a","data":"12345678901234567"}]"#).unwrap_err();
        assert!(matches!(big.rejection, Rejection::TooLarge(_)));
        assert_eq!(big.index, Some(1));
        let many = parse(r#"[{"topic":"a","data":1},{"topic":"a","data":1},{"topic":"a","data":1},{"topic":"a","data":1}]"#)
            .unwrap_err();
        assert!(matches!(many.rejection, Rejection::TooLarge(_)));
        assert_eq!(many.index, None);
    }

    #[test]
    fn idempotency_key_length_is_bounded() {
        let key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
        assert!(parse_event(&LIMITS, "a".into(), "d".into(), None, Some(key.clone())).is_ok());
        let longer = format!("{key}k");
        assert!(parse_event(&LIMITS, "a".into(), "d".into(), None, Some(longer)).is_err());
    }

    #[test]
    fn empty_batch_is_accepted() {
        assert!(parse("[]").unwrap().is_empty());
    }
}
