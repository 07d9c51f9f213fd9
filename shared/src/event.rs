//! The event model and the one SSE encoder every service uses.
//!
//! Encoding follows the WHATWG `text/event-stream` rules: the data is split on `\r\n`, `\r`
//! and `\n` into one `data:` line each, so no payload can end an event early or inject
//! fields; `id:` and `event:` values that would break a line are rejected, never written.
//! SSE cannot carry a bare `\r` inside data: every line break arrives at the client as `\n`.
//!
//! A gateway encodes each event once and shares the bytes among all its subscribers
//! ([`Frame`]); a connection to several topics writes its own `id:` line in front of the
//! shared body.

use bytes::{BufMut, Bytes, BytesMut};

use crate::cursor::TopicCursor;
use crate::topic::{EventName, Topic};

/// The event type of the notice sent when a client's cursor can no longer be honoured.
pub const RESET_EVENT: &str = "streamgate.reset";
/// The event type that carries a stream's first cursor to pages that ask for it
/// (`cursorEvent=1`); its data is empty.
pub const CURSOR_EVENT: &str = "streamgate.cursor";

/// One event as a publisher hands it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The topic it belongs to.
    pub topic: Topic,
    /// The SSE event type, if the publisher named one.
    pub name: Option<EventName>,
    /// The payload, delivered as text.
    pub data: String,
}

/// A field value that SSE cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An `id:` or `event:` value with a line break or NUL.
    #[error("the {field} value contains a line break or NUL")]
    BadFieldValue {
        /// The field: `id` or `event`.
        field: &'static str,
    },
}

fn check_field(field: &'static str, value: &str) -> Result<(), SseError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Err(SseError::BadFieldValue { field });
    }
    Ok(())
}

/// Appends `id: <id>\n`.
pub fn write_id(out: &mut BytesMut, id: &str) -> Result<(), SseError> {
    check_field("id", id)?;
    out.reserve(id.len() + 5);
    out.put_slice(b"id: ");
    out.put_slice(id.as_bytes());
    out.put_u8(b'\n');
    Ok(())
}

/// Appends the body of an event: `event:` (when named), the `data:` lines and the blank
/// line that dispatches it.
pub fn write_body(out: &mut BytesMut, name: Option<&str>, data: &str) -> Result<(), SseError> {
    out.reserve(data.len() + 16);
    if let Some(name) = name {
        check_field("event", name)?;
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    Ok(())
}

/// Splits on `\r\n`, `\r` and `\n` (the event-stream line terminators). An empty string is
/// one empty line, so an event with empty data is still dispatched.
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

/// An encoded event: `id:` line followed by the body, with the body addressable alone.
#[derive(Debug, Clone)]
pub struct Frame {
    bytes: Bytes,
    body_start: usize,
}

impl Frame {
    /// Encodes an event once.
    pub fn encode(id: &str, name: Option<&str>, data: &str) -> Result<Frame, SseError> {
        let mut out = BytesMut::with_capacity(id.len() + data.len() + 32);
        write_id(&mut out, id)?;
        let body_start = out.len();
        write_body(&mut out, name, data)?;
        Ok(Frame { bytes: out.freeze(), body_start })
    }

    /// The whole event, `id:` line included (what a one-topic connection sends).
    pub fn full(&self) -> Bytes {
        self.bytes.clone()
    }

    /// Its length in bytes, `id:` line included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it has no bytes (never true of an encoded event).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The event without its `id:` line (shared by connections that write their own id).
    pub fn body(&self) -> Bytes {
        self.bytes.slice(self.body_start..)
    }
}

/// The notice sent before delivery resumes when events may have been lost for `topic`.
///
/// `reason` is `trimmed` (the cursor is older than the retained history) or
/// `history_lost` (the history the cursor points into no longer exists).
pub fn reset_body(topic: &Topic, reason: &str) -> Bytes {
    let data = serde_json::json!({ "topic": topic.as_str(), "reason": reason }).to_string();
    let mut out = BytesMut::with_capacity(data.len() + 40);
    write_body(&mut out, Some(RESET_EVENT), &data).expect("reset notices are well-formed");
    out.freeze()
}

/// Writes an `id:` line for a cursor list and returns the bytes.
pub fn id_line(cursor: &str) -> Result<Bytes, SseError> {
    let mut out = BytesMut::with_capacity(cursor.len() + 5);
    write_id(&mut out, cursor)?;
    Ok(out.freeze())
}

/// A comment line (ignored by clients; used for heartbeats and the greeting). Line breaks
/// in `text` are replaced by spaces.
pub fn comment(text: &str) -> Bytes {
    let text = text.replace(['\r', '\n'], " ");
    Bytes::from(format!(": {text}\n\n"))
}

/// The `retry:` field telling clients how long to wait before reconnecting.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// The `id:` value of a one-topic event.
pub fn single_topic_id(cursor: &TopicCursor) -> String {
    cursor.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use proptest::prelude::*;

    /// Parses SSE bytes with an independent parser (eventsource-stream).
    fn parse(bytes: Bytes) -> Vec<eventsource_stream::Event> {
        use eventsource_stream::Eventsource;
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(stream.eventsource().map(|e| e.unwrap()).collect())
    }

    fn normalize(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    #[test]
    fn splits_every_line_terminator() {
        let frame = Frame::encode("1-0~e", None, "a\nb\r\nc\rd").unwrap();
        assert_eq!(&frame.full()[..], b"id: 1-0~e\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(&frame.body()[..], b"data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn injection_attempt_arrives_as_one_event_with_that_data() {
        let data = "x\n\nevent: evil\ndata: y\r\n\rid: 9";
        let frame = Frame::encode("1-0~e", Some("status"), data).unwrap();
        let events = parse(frame.full());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "status");
        assert_eq!(events[0].id, "1-0~e");
        assert_eq!(events[0].data, normalize(data));
    }

    #[test]
    fn empty_data_is_still_an_event() {
        let events = parse(Frame::encode("1-0~e", None, "").unwrap().full());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn rejects_bad_id_and_event_values() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert!(Frame::encode(bad, None, "x").is_err());
            assert!(Frame::encode("1", Some(bad), "x").is_err());
        }
    }

    #[test]
    fn reset_notice_names_topic_and_reason() {
        let topic = Topic::parse("order:1", 256).unwrap();
        let mut bytes = id_line("0-0~abc").unwrap().to_vec();
        bytes.extend_from_slice(&reset_body(&topic, "trimmed"));
        let events = parse(Bytes::from(bytes));
        assert_eq!(events[0].event, RESET_EVENT);
        let json: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(json, serde_json::json!({"topic": "order:1", "reason": "trimmed"}));
    }

    #[test]
    fn comments_and_retry_dispatch_nothing() {
        let mut bytes = retry(1500).to_vec();
        bytes.extend_from_slice(&comment("instance gw\nx"));
        assert!(parse(Bytes::from(bytes)).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_payload_round_trips_through_an_independent_parser(
            data in "(?s).{0,200}",
            name in proptest::option::of("[a-zA-Z0-9 :._-]{1,20}"),
            id in "[0-9]{1,13}-[0-9]{1,3}~[a-z0-9]{1,10}",
        ) {
            let frame = Frame::encode(&id, name.as_deref(), &data).unwrap();
            // Two events back to back must also stay apart.
            let mut bytes = frame.full().to_vec();
            bytes.extend_from_slice(&frame.full());
            let events = parse(Bytes::from(bytes));
            prop_assert_eq!(events.len(), 2);
            for event in events {
                prop_assert_eq!(&event.data, &normalize(&data));
                prop_assert_eq!(&event.id, &id);
                prop_assert_eq!(event.event, name.clone().unwrap_or_else(|| "message".to_owned()));
            }
        }
    }
}
