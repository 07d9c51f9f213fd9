//! What upstream services hand in, parsed once at the edge into [`Publish`] values.
//!
//! The HTTP body, the ingest stream entries and the command line all end in
//! [`parse_event`], so one event is valid or invalid the same way whichever path it took.
//! Everything is checked before anything is written: a batch with one bad event is
//! rejected whole.

use serde::Deserialize;
use serde::de::DeserializeSeed as _;
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
///
/// An array is read one element at a time, and reading stops at element
/// `MAX_BATCH_EVENTS + 1`: a batch over the limit is refused without parsing the rest.
/// (The body's size is bounded before, by `MAX_REQUEST_BYTES`.)
pub fn parse_body(limits: &Limits, body: &[u8]) -> Result<Vec<Publish>, BodyRejection> {
    let whole = |rejection| BodyRejection { rejection, index: None };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let items = BatchSeed { max_events: limits.max_batch_events }
        .deserialize(&mut deserializer)
        .and_then(|items| deserializer.end().map(|()| items))
        .map_err(|error| match error.classify() {
            serde_json::error::Category::Data if error.to_string().starts_with(BATCH_TOO_LARGE) => {
                whole(Rejection::TooLarge(format!(
                    "the batch has more than {} events (MAX_BATCH_EVENTS)",
                    limits.max_batch_events
                )))
            }
            serde_json::error::Category::Data if error.to_string().starts_with(NOT_A_BATCH) => {
                whole(Rejection::Malformed(NOT_A_BATCH.to_owned()))
            }
            _ => whole(Rejection::Malformed(format!("the body is not valid JSON: {error}"))),
        })?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            parse_item(limits, item).map_err(|rejection| BodyRejection { rejection, index: Some(index) })
        })
        .collect()
}

/// The start of the error a [`BatchSeed`] fails with at the element past the limit.
const BATCH_TOO_LARGE: &str = "batch over MAX_BATCH_EVENTS";
/// The error for a body that is neither an object nor an array.
const NOT_A_BATCH: &str = "the body must be a JSON object or an array of objects";

/// Reads a body's events as JSON values, one at a time, failing at the one past
/// `max_events` (before parsing it or anything after it).
struct BatchSeed {
    max_events: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for BatchSeed {
    type Value = Vec<serde_json::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BatchSeed {
    type Value = Vec<serde_json::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let object = serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(vec![object])
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Never trust a size hint for an allocation: it is at most the limit.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_events));
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            if items.len() == self.max_events {
                return Err(serde::de::Error::custom(BATCH_TOO_LARGE));
            }
            items.push(item);
        }
        Ok(items)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_BATCH))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_BATCH))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_BATCH))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_BATCH))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_BATCH))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_BATCH))
    }
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
    fn a_batch_over_the_limit_is_refused_before_the_rest_is_parsed() {
        // The fifth element is not even JSON: reading stopped at the fourth.
        let body = r#"[{"topic":"a","data":1},{"topic":"a","data":1},{"topic":"a","data":1},{"topic":"a","data":1}, nonsense"#;
        let many = parse(body).unwrap_err();
        assert!(matches!(many.rejection, Rejection::TooLarge(_)), "{many:?}");
    }

    #[test]
    fn trailing_bytes_after_the_body_are_malformed() {
        assert_eq!(malformed_at(r#"{"topic":"a","data":1} {}"#), None);
        assert_eq!(malformed_at(r#"[] x"#), None);
    }

    proptest::proptest! {
        #[test]
        fn no_body_panics_and_every_accepted_batch_is_within_the_limits(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(events) = parse_body(&LIMITS, &body) {
                proptest::prop_assert!(events.len() <= LIMITS.max_batch_events);
                for publish in events {
                    proptest::prop_assert!(publish.event.data.len() <= LIMITS.max_event_bytes);
                    proptest::prop_assert!(publish.event.topic.as_str().len() <= LIMITS.max_topic_bytes);
                }
            }
        }

        #[test]
        fn batches_of_valid_events_are_accepted_exactly_up_to_the_limit(
            events in proptest::collection::vec(("[a-z{}:]{1,8}", "\\PC{0,16}"), 0..6),
        ) {
            let body: Vec<serde_json::Value> =
                events.iter().map(|(topic, data)| serde_json::json!({"topic": topic, "data": data})).collect();
            let body = serde_json::to_vec(&body).unwrap();
            let fits = events.iter().all(|(_, data)| data.len() <= LIMITS.max_event_bytes);
            match parse_body(&LIMITS, &body) {
                Ok(parsed) => {
                    proptest::prop_assert!(fits && events.len() <= LIMITS.max_batch_events);
                    proptest::prop_assert_eq!(parsed.len(), events.len());
                }
                Err(BodyRejection { rejection: Rejection::TooLarge(_), .. }) => {
                    proptest::prop_assert!(!fits || events.len() > LIMITS.max_batch_events);
                }
                Err(other) => proptest::prop_assert!(false, "{other:?}"),
            }
        }
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
