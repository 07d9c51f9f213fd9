//! The `deliver` span of a sampled event on this gateway: a child of the producer's route
//! span, whose context came in the routed entry's `tp` ([`streamgate::traces`]).
//!
//! One span per event per hub, never per subscriber: it opens when the hub takes the
//! routed entry and ends when the last subscriber has taken the event from the hub's ring
//! (the span travels with the shared event and ends when it is dropped). Each subscriber's
//! hand-over to its connection is an event `sent` on it, for the first [`MAX_SENT_EVENTS`]
//! subscribers; the `sent` attribute counts them all. Entries without `tp` (unsampled, or
//! from an older producer), or a gateway that exports no spans, cost nothing here.

use std::sync::atomic::{AtomicU64, Ordering};

use streamgate::cursor::HistoryId;
use streamgate::topic::Topic;

/// Subscribers recorded one by one on a delivery span: enough to see the spread of
/// hand-over times, bounded so a topic with 10,000 subscribers does not make a span of
/// 10,000 events.
pub const MAX_SENT_EVENTS: u64 = 32;

/// How a hub delivered a traced event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight from the routed entry: it followed the hub's position.
    Direct,
    /// From the history, in a catch-up the entry started (a gap before it).
    CatchUp,
    /// Not at all: the hub had already delivered it (from the history).
    Duplicate,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::CatchUp => "catch_up",
            Path::Duplicate => "duplicate",
        }
    }
}

/// The delivery span of one sampled event on one hub.
#[derive(Debug)]
pub struct DeliveryTrace {
    span: tracing::Span,
    sent: AtomicU64,
}

impl DeliveryTrace {
    /// A `deliver` span for event `id` of `topic`, child of `trace_parent`; `None` when the
    /// value is malformed or the span is not recorded (filtered out by `RUST_LOG`, no
    /// OpenTelemetry layer).
    pub fn start(topic: &Topic, id: HistoryId, trace_parent: &str) -> Option<DeliveryTrace> {
        let span = tracing::info_span!(
            parent: None,
            "deliver",
            topic = %topic,
            id = %id,
            path = tracing::field::Empty,
            subscribers = tracing::field::Empty,
            sent = tracing::field::Empty,
        );
        streamgate::traces::set_remote_parent(&span, trace_parent)
            .then(|| DeliveryTrace { span, sent: AtomicU64::new(0) })
    }

    /// Records how the hub delivered the event.
    pub fn path(&self, path: Path) {
        self.span.record("path", path.as_str());
    }

    /// Records how many subscribers the hub shared the event with.
    pub fn subscribers(&self, subscribers: usize) {
        self.span.record("subscribers", subscribers as u64);
    }

    /// A subscriber's connection took the event (to write it to its client).
    pub fn sent(&self, connection: u64) {
        if self.sent.fetch_add(1, Ordering::Relaxed) < MAX_SENT_EVENTS {
            streamgate::traces::add_event(&self.span, "sent", &[("connection", connection as i64)]);
        }
    }
}

impl Drop for DeliveryTrace {
    fn drop(&mut self) {
        self.span.record("sent", self.sent.load(Ordering::Relaxed));
    }
}
