//! The gateway's Prometheus metrics, served at `GET /metrics` on the admin listener.
//!
//! One registry per gateway instance (no global recorder, so tests can run several gateways
//! in one process). Labels are bounded enumerations — never a topic or a client — so the
//! number of series does not grow with traffic. Hot paths only add to atomics.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use streamgate::continuity::ResetReason;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client went away (or its stream ended for any other reason than below).
    ClientGone,
    /// It fell `QUEUE_SIZE` events or `QUEUE_BYTES` behind.
    Slow,
    /// The gateway is shutting down.
    Drained,
    /// Its token expired.
    Auth,
    /// `MAX_STREAM_LIFETIME` passed.
    Lifetime,
    /// An operator closed it (`DELETE /admin/connections/{id}`).
    Admin,
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            CloseReason::ClientGone => "client_gone",
            CloseReason::Slow => "slow",
            CloseReason::Drained => "drained",
            CloseReason::Auth => "auth",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Admin => "admin",
        })
    }
}

/// A stream's end, as a label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabels {
    /// Why.
    pub reason: CloseReason,
}

/// A reset's reason, as a label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResetLabels {
    /// `trimmed` or `history_lost`.
    pub reason: ResetLabel,
}

/// [`ResetReason`] as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetLabel {
    /// Retention removed events.
    Trimmed,
    /// The history was lost or recreated.
    HistoryLost,
}

impl EncodeLabelValue for ResetLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            ResetLabel::Trimmed => ResetReason::Trimmed.as_str(),
            ResetLabel::HistoryLost => ResetReason::HistoryLost.as_str(),
        })
    }
}

impl From<ResetReason> for ResetLabels {
    fn from(reason: ResetReason) -> Self {
        let reason = match reason {
            ResetReason::Trimmed => ResetLabel::Trimmed,
            ResetReason::HistoryLost => ResetLabel::HistoryLost,
        };
        ResetLabels { reason }
    }
}

/// Every metric of one gateway.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    /// SSE streams open now.
    pub connections_open: Gauge,
    /// Streams opened since start.
    pub connections_opened: Counter,
    /// Streams ended, by reason.
    pub connections_closed: Family<CloseLabels, Counter>,
    /// Requests refused at a limit (connections, per-address, rate, topics).
    pub connections_refused: Counter,
    /// Topics with a hub on this gateway.
    pub hubs: Gauge,
    /// Events written to subscribers (live and replayed), resets included: brought up to
    /// date from the connections' own counters at each scrape ([`Self::set_events_delivered`]).
    events_delivered: Counter,
    /// The total last reported, so concurrent scrapes add each event once.
    events_delivered_reported: std::sync::Mutex<u64>,
    /// Events replayed from history to resuming clients.
    pub events_replayed: Counter,
    /// Replays running now.
    pub replays_in_progress: Gauge,
    /// Resets sent to subscribers, by reason.
    pub resets: Family<ResetLabels, Counter>,
    /// Hub catch-ups from history (gaps, reconciliations, epochs).
    pub hub_catch_ups: Counter,
    /// Idle hubs a reconciliation round found behind their histories.
    pub reconcile_behind: Counter,
}

impl GatewayMetrics {
    /// A registry with every metric at zero.
    pub fn new() -> GatewayMetrics {
        let mut registry = Registry::with_prefix("streamgate_gateway");
        let metrics = GatewayMetrics {
            connections_open: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            connections_refused: Counter::default(),
            hubs: Gauge::default(),
            events_delivered: Counter::default(),
            events_delivered_reported: std::sync::Mutex::new(0),
            events_replayed: Counter::default(),
            replays_in_progress: Gauge::default(),
            resets: Family::default(),
            hub_catch_ups: Counter::default(),
            reconcile_behind: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("connections_open", "SSE streams open now", metrics.connections_open.clone());
        registry.register("connections_opened", "SSE streams opened", metrics.connections_opened.clone());
        registry.register(
            "connections_closed",
            "SSE streams ended, by reason",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "connections_refused",
            "Requests refused at a limit (connections, per address, rate, topics)",
            metrics.connections_refused.clone(),
        );
        registry.register("hubs", "Topics with a hub on this gateway", metrics.hubs.clone());
        registry.register(
            "events_delivered",
            "Events written to subscribers, live and replayed",
            metrics.events_delivered.clone(),
        );
        registry.register("events_replayed", "Events replayed from history", metrics.events_replayed.clone());
        registry.register("replays_in_progress", "Replays running now", metrics.replays_in_progress.clone());
        registry.register("resets", "Resets sent to subscribers, by reason", metrics.resets.clone());
        registry.register("hub_catch_ups", "Hub catch-ups from history", metrics.hub_catch_ups.clone());
        registry.register(
            "reconcile_behind",
            "Idle hubs found behind their histories by reconciliation",
            metrics.reconcile_behind.clone(),
        );
        GatewayMetrics { registry, ..metrics }
    }

    /// Brings `events_delivered` up to `total` (the connections' own counts).
    pub fn set_events_delivered(&self, total: u64) {
        let mut reported = self.events_delivered_reported.lock().expect("metrics lock");
        if total > *reported {
            self.events_delivered.inc_by(total - *reported);
            *reported = total;
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}
