//! The producer's Prometheus metrics, served at `GET /metrics` on its admin listener
//! (`ADMIN_LISTEN_ADDR`, off by default).
//!
//! One registry per producer (no global recorder, so tests can run several producers in one
//! process). Labels are bounded enumerations — a status code from a fixed set, a command
//! name — never a topic or a publisher. Per event only atomics change, plus one observation
//! of the routing fan-out; the ingest backlog is read on a timer, not per entry.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use streamgate::metrics::{RedisCommandMetrics, registered};

/// The `command` label values of the producer's Redis metrics: a fixed set.
pub mod command {
    /// The append script of a batch.
    pub const APPEND: &str = "append";
    /// The pipelined `EXISTS` of instances not seen alive lately.
    pub const LIVENESS: &str = "liveness";
    /// The pipeline of routing `XADD`s and the topic index update.
    pub const ROUTE: &str = "route";
    /// A page of the ingest stream (new, own pending or claimed entries).
    pub const INGEST_READ: &str = "ingest_read";
    /// Acknowledging (`XACK` + `XDEL`) a handled ingest batch, its dead letters first.
    pub const INGEST_ACK: &str = "ingest_ack";
    /// The `XPENDING` summary of the ingest group (every
    /// [`crate::ingest::BACKLOG_INTERVAL`]).
    pub const INGEST_PENDING: &str = "ingest_pending";
    /// Every command name.
    pub const ALL: [&str; 6] = [APPEND, LIVENESS, ROUTE, INGEST_READ, INGEST_ACK, INGEST_PENDING];
}

/// The HTTP statuses `POST /publish` answers; any other is counted as `other`.
const STATUSES: [(u16, &str); 10] = [
    (200, "200"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (408, "408"),
    (413, "413"),
    (415, "415"),
    (500, "500"),
    (503, "503"),
    (504, "504"),
];

/// A publish request's answer, as a label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusLabels {
    /// The status code, or `other`.
    pub status: &'static str,
}

impl StatusLabels {
    /// The label of `status`: its code when in the fixed set, else `other`.
    pub fn of(status: u16) -> StatusLabels {
        let status = STATUSES.iter().find(|(code, _)| *code == status).map_or("other", |(_, label)| label);
        StatusLabels { status }
    }
}

/// Buckets of the routing fan-out: the number of instance streams one event is added to.
const FANOUT_BUCKETS: [f64; 9] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Every metric of one producer.
#[derive(Debug)]
pub struct ProducerMetrics {
    registry: Registry,
    /// `POST /publish` requests, by the status answered.
    pub publish_requests: Family<StatusLabels, Counter>,
    /// Events appended to histories (duplicates excluded), from every source.
    pub events_appended: Counter,
    /// Events found to be repeats of an idempotency key: nothing written.
    pub duplicates: Counter,
    /// Instance streams each event was routed to.
    pub route_fanout: Histogram,
    /// Ingest entries copied to the dead-letter stream.
    pub dead_letters: Counter,
    /// Entries of the ingest group read by a producer and not yet acknowledged.
    pub ingest_pending: Gauge,
    /// Age of the oldest of them, by the Redis server's clock.
    pub ingest_oldest_pending_age_seconds: Gauge<f64, AtomicU64>,
    /// Redis command latency and errors.
    pub redis: RedisCommandMetrics,
}

impl ProducerMetrics {
    /// A registry with every metric at zero.
    pub fn new() -> ProducerMetrics {
        let mut registry = Registry::with_prefix("streamgate_producer");
        let redis = RedisCommandMetrics::register(&mut registry, &command::ALL);
        ProducerMetrics {
            publish_requests: registered(
                &mut registry,
                "publish_requests",
                "POST /publish requests, by the status answered",
                Family::default(),
            ),
            events_appended: registered(
                &mut registry,
                "events_appended",
                "Events appended to topic histories (duplicates excluded)",
                Counter::default(),
            ),
            duplicates: registered(
                &mut registry,
                "duplicates",
                "Events that repeated an idempotency key within the dedup window (nothing written)",
                Counter::default(),
            ),
            route_fanout: registered(
                &mut registry,
                "route_fanout",
                "Instance streams one event was routed to",
                Histogram::new(FANOUT_BUCKETS),
            ),
            dead_letters: registered(
                &mut registry,
                "dead_letters",
                "Ingest entries copied to the dead-letter stream",
                Counter::default(),
            ),
            ingest_pending: registered(
                &mut registry,
                "ingest_pending",
                "Ingest entries read by a producer and not yet acknowledged (every producer of the group)",
                Gauge::default(),
            ),
            ingest_oldest_pending_age_seconds: registered(
                &mut registry,
                "ingest_oldest_pending_age_seconds",
                "Age of the oldest unacknowledged ingest entry, by the Redis server's clock",
                Gauge::default(),
            ),
            redis,
            registry,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        ProducerMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_outside_the_fixed_set_are_other() {
        assert_eq!(StatusLabels::of(200).status, "200");
        assert_eq!(StatusLabels::of(504).status, "504");
        assert_eq!(StatusLabels::of(418).status, "other");
    }
}
