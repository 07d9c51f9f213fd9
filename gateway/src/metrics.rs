//! The gateway's Prometheus metrics, served at `GET /metrics` on the admin listener.
//!
//! One registry per gateway instance (no global recorder, so tests can run several gateways
//! in one process). Labels are bounded enumerations — never a topic or a client — so the
//! number of series does not grow with traffic. Hot paths only add to atomics; the one
//! histogram on the delivery path (publish-to-deliver latency) is observed once per event
//! per hub, never per subscriber.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use streamgate::continuity::ResetReason;
use streamgate::metrics::{RedisCommandMetrics, registered};

/// The `command` label values of the gateway's Redis metrics: a fixed set.
pub mod command {
    /// The instance stream's `XREAD BLOCK` (errors only: its duration is its wait).
    pub const XREAD: &str = "xread";
    /// A history read: the read script of a replay or a hub catch-up, a hub's first meta
    /// read, the walk back after a lost tail.
    pub const HISTORY_READ: &str = "history_read";
    /// The reconciliation's pipelined read of idle hubs' metas.
    pub const META_READ: &str = "meta_read";
    /// A membership flush: the pipeline of group-hash changes and the liveness claim.
    pub const MEMBERSHIP_FLUSH: &str = "membership_flush";
    /// A liveness heartbeat (the claim script alone).
    pub const LIVENESS: &str = "liveness";
    /// The newest id of the instance stream (`XREVRANGE + - COUNT 1`), after a read that
    /// filled its batch.
    pub const STREAM_INFO: &str = "stream_info";
    /// Every command name.
    pub const ALL: [&str; 6] = [XREAD, HISTORY_READ, META_READ, MEMBERSHIP_FLUSH, LIVENESS, STREAM_INFO];
}

/// Buckets of publish-to-deliver latency: 0.5 ms to ~16 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

/// Buckets of topics per membership flush: 1 to 16,384, by fours.
fn flush_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 4.0, 8)
}

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
    /// Replay reads a client joined instead of sending its own (same topic and position,
    /// not sent yet).
    pub replay_reads_shared: Counter,
    /// Resets sent to subscribers, by reason.
    pub resets: Family<ResetLabels, Counter>,
    /// Hub catch-ups from history (gaps, reconciliations, epochs).
    pub hub_catch_ups: Counter,
    /// Idle hubs a reconciliation round found behind their histories.
    pub reconcile_behind: Counter,
    /// Subscriptions (a connection's hold on one topic) open now.
    pub subscriptions: Gauge,
    /// Seconds from the producer routing an event to a hub handing it to its subscribers.
    publish_to_deliver: Histogram,
    /// Catch-ups from history started by a routed entry that did not follow the hub's
    /// position (a gap: reordered or crashed producers, a trimmed instance stream).
    pub hub_gap_fills: Counter,
    /// Reconciliation rounds run.
    pub reconciliations: Counter,
    /// Topics written per membership flush.
    pub membership_flush_topics: Histogram,
    /// How far, by the Redis server's clock, the reader's last read is behind the newest
    /// entry of the instance stream.
    pub instance_stream_lag_seconds: Gauge<f64, AtomicU64>,
    /// Redis command latency and errors.
    pub redis: RedisCommandMetrics,
}

impl GatewayMetrics {
    /// A registry with every metric at zero.
    pub fn new() -> GatewayMetrics {
        let mut registry = Registry::with_prefix("streamgate_gateway");
        let redis = RedisCommandMetrics::register(&mut registry, &command::ALL);
        let metrics = GatewayMetrics {
            connections_open: registered(
                &mut registry,
                "connections_open",
                "SSE streams open now",
                Gauge::default(),
            ),
            connections_opened: registered(
                &mut registry,
                "connections_opened",
                "SSE streams opened",
                Counter::default(),
            ),
            connections_closed: registered(
                &mut registry,
                "connections_closed",
                "SSE streams ended, by reason",
                Family::default(),
            ),
            connections_refused: registered(
                &mut registry,
                "connections_refused",
                "Requests refused at a limit (connections, per address, rate, topics)",
                Counter::default(),
            ),
            hubs: registered(&mut registry, "hubs", "Topics with a hub on this gateway", Gauge::default()),
            events_delivered: registered(
                &mut registry,
                "events_delivered",
                "Events written to subscribers, live and replayed",
                Counter::default(),
            ),
            events_delivered_reported: std::sync::Mutex::new(0),
            events_replayed: registered(
                &mut registry,
                "events_replayed",
                "Events replayed from history",
                Counter::default(),
            ),
            replays_in_progress: registered(
                &mut registry,
                "replays_in_progress",
                "Replays running now",
                Gauge::default(),
            ),
            replay_reads_shared: registered(
                &mut registry,
                "replay_reads_shared",
                "History reads a replaying client joined rather than sending its own",
                Counter::default(),
            ),
            resets: registered(
                &mut registry,
                "resets",
                "Resets sent to subscribers, by reason",
                Family::default(),
            ),
            hub_catch_ups: registered(
                &mut registry,
                "hub_catch_ups",
                "Hub catch-ups from history",
                Counter::default(),
            ),
            reconcile_behind: registered(
                &mut registry,
                "reconcile_behind",
                "Idle hubs found behind their histories by reconciliation",
                Counter::default(),
            ),
            subscriptions: registered(
                &mut registry,
                "subscriptions",
                "Subscriptions open now (one per topic of each SSE stream)",
                Gauge::default(),
            ),
            publish_to_deliver: registered(
                &mut registry,
                "publish_to_deliver_seconds",
                "Seconds from the producer routing an event to a hub handing it to its subscribers \
                 (producer and gateway clocks)",
                Histogram::new(latency_buckets()),
            ),
            hub_gap_fills: registered(
                &mut registry,
                "hub_gap_fills",
                "Hub catch-ups started by a routed event that did not follow the hub's position",
                Counter::default(),
            ),
            reconciliations: registered(
                &mut registry,
                "reconciliations",
                "Reconciliation rounds run",
                Counter::default(),
            ),
            membership_flush_topics: registered(
                &mut registry,
                "membership_flush_topics",
                "Topics written per membership flush",
                Histogram::new(flush_buckets()),
            ),
            instance_stream_lag_seconds: registered(
                &mut registry,
                "instance_stream_lag_seconds",
                "How far the instance stream reader's last read is behind the stream's newest entry \
                 (Redis clock; 0 when a read emptied the stream)",
                Gauge::default(),
            ),
            redis,
            registry,
        };
        // Every series of a fixed label set exists from the start, at zero.
        for reason in [
            CloseReason::ClientGone,
            CloseReason::Slow,
            CloseReason::Drained,
            CloseReason::Auth,
            CloseReason::Lifetime,
        ] {
            let _ = metrics.connections_closed.get_or_create(&CloseLabels { reason });
        }
        for reason in [ResetReason::Trimmed, ResetReason::HistoryLost] {
            let _ = metrics.resets.get_or_create(&reason.into());
        }
        metrics
    }

    /// Observes the latency of an event the producer routed at `published_at_micros` (by
    /// its clock), delivered now (by this gateway's). A producer clock ahead of this one
    /// would make it negative: it counts as zero.
    pub fn observe_publish_to_deliver(&self, published_at_micros: u64) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let published_at = Duration::from_micros(published_at_micros);
        self.publish_to_deliver.observe(now.saturating_sub(published_at).as_secs_f64());
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
