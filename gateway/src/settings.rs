//! The gateway's settings: the shared ones plus what only a gateway needs.

use std::net::SocketAddr;
use std::time::Duration;

use streamgate::config::{ConfigError, Layered, Setting, Sources, parse_list};
use streamgate::settings::{COMMON, Common};
use streamgate::topic::InstanceId;

/// `LISTEN_ADDR`.
pub const LISTEN_ADDR: Setting = Setting {
    name: "LISTEN_ADDR",
    default: "127.0.0.1:8080",
    allowed: "a socket address such as 0.0.0.0:8080 (port 0 picks a free port)",
    help: "Where the gateway listens for HTTP.",
};
/// `INSTANCE_ID`.
pub const INSTANCE_ID: Setting = Setting {
    name: "INSTANCE_ID",
    default: "",
    allowed: "1 to 128 ASCII letters, digits, '.', '_' or '-' (empty: host name plus a random suffix)",
    help: "This gateway's identity in Redis. Set it to the pod name in a StatefulSet; leave it empty elsewhere.",
};
/// `HEARTBEAT_INTERVAL`.
pub const HEARTBEAT_INTERVAL: Setting = Setting {
    name: "HEARTBEAT_INTERVAL",
    default: "15s",
    allowed: "a duration from 1s to 5m",
    help: "How often an idle SSE stream gets a comment, so proxies do not cut it.",
};
/// `RETRY_INTERVAL`.
pub const RETRY_INTERVAL: Setting = Setting {
    name: "RETRY_INTERVAL",
    default: "2s",
    allowed: "a duration from 100ms to 1m",
    help: "The SSE retry: value: how long a browser waits before reconnecting.",
};
/// `MAX_CONNECTIONS`.
pub const MAX_CONNECTIONS: Setting = Setting {
    name: "MAX_CONNECTIONS",
    default: "10000",
    allowed: "a whole number from 1 to 10000000",
    help: "SSE connections per instance; beyond it an EventSource gets a 200 that only sets retry: (so browsers keep retrying), other clients 503 with Retry-After.",
};
/// `MAX_TOPICS_PER_CONNECTION`.
pub const MAX_TOPICS_PER_CONNECTION: Setting = Setting {
    name: "MAX_TOPICS_PER_CONNECTION",
    default: "32",
    allowed: "a whole number from 1 to 1024",
    help: "How many topic parameters one /events request may name.",
};
/// `MAX_TOPIC_BYTES`.
pub const MAX_TOPIC_BYTES: Setting = Setting {
    name: "MAX_TOPIC_BYTES",
    default: "256",
    allowed: "a whole number from 1 to 4096",
    help: "The longest topic name accepted, in bytes.",
};
/// `QUEUE_SIZE`.
pub const QUEUE_SIZE: Setting = Setting {
    name: "QUEUE_SIZE",
    default: "1024",
    allowed: "a whole number from 16 to 1048576",
    help: "Events a subscriber may fall behind its topic before it is closed (it resumes from its cursor).",
};
/// `QUEUE_BYTES`.
pub const QUEUE_BYTES: Setting = Setting {
    name: "QUEUE_BYTES",
    default: "8MiB",
    allowed: "a size from 64KiB to 1GiB",
    help: "Bytes of encoded events a topic may hold for subscribers that have not read them; a subscriber whose unread events exceed it is closed (it resumes from its cursor).",
};
/// `REPLAY_BATCH`.
pub const REPLAY_BATCH: Setting = Setting {
    name: "REPLAY_BATCH",
    default: "500",
    allowed: "a whole number from 1 to 10000",
    help: "History entries read per XRANGE when a client catches up.",
};
/// `REPLAY_BYTES`.
pub const REPLAY_BYTES: Setting = Setting {
    name: "REPLAY_BYTES",
    default: "1MiB",
    allowed: "a size from 64KiB to 64MiB, such as 1MiB",
    help: "Bytes of events one history read may return (at least one event): bounds what a replaying client pins.",
};
/// `REPLAY_CONCURRENCY`.
pub const REPLAY_CONCURRENCY: Setting = Setting {
    name: "REPLAY_CONCURRENCY",
    default: "32",
    allowed: "a whole number from 1 to 4096",
    help: "History reads for replaying clients that may run at once on one gateway; more wait their turn.",
};
/// `RECONCILE_INTERVAL`.
pub const RECONCILE_INTERVAL: Setting = Setting {
    name: "RECONCILE_INTERVAL",
    default: "1s",
    allowed: "a duration from 100ms to 1m",
    help: "How often topics that received nothing are compared with their histories, so an event appended but never routed is delivered within two intervals.",
};
/// `LIVENESS_TTL`.
pub const LIVENESS_TTL: Setting = Setting {
    name: "LIVENESS_TTL",
    default: "15s",
    allowed: "a duration from 3s to 10m",
    help: "The TTL of the instance's liveness key, refreshed every third of it; the janitor treats an expired instance as dead.",
};
/// `DRAIN_TIMEOUT`.
pub const DRAIN_TIMEOUT: Setting = Setting {
    name: "DRAIN_TIMEOUT",
    default: "10s",
    allowed: "a duration from 0s to 10m",
    help: "On SIGTERM, how long to wait for connections to close before exiting.",
};
/// `CORS_ORIGINS`.
pub const CORS_ORIGINS: Setting = Setting {
    name: "CORS_ORIGINS",
    default: "",
    allowed: "a comma-separated list of origins, or * for any (empty: no CORS headers)",
    help: "Origins allowed to open event streams from other sites.",
};

/// Every gateway setting, shared ones first.
pub const SETTINGS: &[Setting] = &[
    COMMON[0],
    COMMON[1],
    COMMON[2],
    COMMON[3],
    COMMON[4],
    LISTEN_ADDR,
    INSTANCE_ID,
    HEARTBEAT_INTERVAL,
    RETRY_INTERVAL,
    MAX_CONNECTIONS,
    MAX_TOPICS_PER_CONNECTION,
    MAX_TOPIC_BYTES,
    QUEUE_SIZE,
    QUEUE_BYTES,
    REPLAY_BATCH,
    REPLAY_BYTES,
    REPLAY_CONCURRENCY,
    RECONCILE_INTERVAL,
    LIVENESS_TTL,
    DRAIN_TIMEOUT,
    CORS_ORIGINS,
];

/// Which origins may read the streams from other sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers.
    Off,
    /// Any origin.
    Any,
    /// These origins.
    List(Vec<String>),
}

/// The gateway's typed configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Shared settings.
    pub common: Common,
    /// Listen address.
    pub listen_addr: SocketAddr,
    /// Instance id.
    pub instance_id: InstanceId,
    /// Heartbeat comment interval.
    pub heartbeat_interval: Duration,
    /// SSE retry value.
    pub retry_interval: Duration,
    /// Connection limit.
    pub max_connections: usize,
    /// Topics per connection.
    pub max_topics_per_connection: usize,
    /// Topic name limit.
    pub max_topic_bytes: usize,
    /// Per-topic broadcast capacity.
    pub queue_size: usize,
    /// Per-topic bound on the bytes of unread events.
    pub queue_bytes: usize,
    /// XRANGE batch.
    pub replay_batch: usize,
    /// Bytes one history read may return.
    pub replay_bytes: usize,
    /// Concurrent replay reads.
    pub replay_concurrency: usize,
    /// How often idle hubs are reconciled with history.
    pub reconcile_interval: Duration,
    /// Liveness TTL.
    pub liveness_ttl: Duration,
    /// Drain time on shutdown.
    pub drain_timeout: Duration,
    /// CORS.
    pub cors: Cors,
}

impl GatewayConfig {
    /// Loads and types the configuration from `sources`.
    pub fn load(sources: &Sources) -> Result<GatewayConfig, ConfigError> {
        let layered = Layered::load(SETTINGS, sources)?;
        let instance_id = match layered.get_optional(&INSTANCE_ID) {
            None => InstanceId::generate(),
            Some(_) => layered.get_with(&INSTANCE_ID, |raw| InstanceId::parse(raw).ok())?,
        };
        let cors = layered.get_with(&CORS_ORIGINS, |raw| {
            let origins = parse_list(raw);
            Some(match origins.as_slice() {
                [] => Cors::Off,
                [any] if any == "*" => Cors::Any,
                _ if origins.iter().all(|o| o.starts_with("http://") || o.starts_with("https://")) => {
                    Cors::List(origins)
                }
                _ => return None,
            })
        })?;
        let config = GatewayConfig {
            common: Common::from_layered(&layered)?,
            listen_addr: layered.get(&LISTEN_ADDR)?,
            instance_id,
            heartbeat_interval: layered
                .get_duration(&HEARTBEAT_INTERVAL, Duration::from_secs(1)..=Duration::from_secs(300))?,
            retry_interval: layered
                .get_duration(&RETRY_INTERVAL, Duration::from_millis(100)..=Duration::from_secs(60))?,
            max_connections: layered.get_in_range(&MAX_CONNECTIONS, 1..=10_000_000)?,
            max_topics_per_connection: layered.get_in_range(&MAX_TOPICS_PER_CONNECTION, 1..=1024)?,
            max_topic_bytes: layered.get_in_range(&MAX_TOPIC_BYTES, 1..=4096)?,
            queue_size: layered.get_in_range(&QUEUE_SIZE, 16..=1 << 20)?,
            queue_bytes: layered.get_bytes(&QUEUE_BYTES, 64 << 10..=1 << 30)?,
            replay_batch: layered.get_in_range(&REPLAY_BATCH, 1..=10_000)?,
            replay_bytes: layered.get_bytes(&REPLAY_BYTES, 64 << 10..=64 << 20)?,
            replay_concurrency: layered.get_in_range(&REPLAY_CONCURRENCY, 1..=4096)?,
            reconcile_interval: layered
                .get_duration(&RECONCILE_INTERVAL, Duration::from_millis(100)..=Duration::from_secs(60))?,
            liveness_ttl: layered
                .get_duration(&LIVENESS_TTL, Duration::from_secs(3)..=Duration::from_secs(600))?,
            drain_timeout: layered.get_duration(&DRAIN_TIMEOUT, Duration::ZERO..=Duration::from_secs(600))?,
            cors,
        };
        config.check_pairs()?;
        Ok(config)
    }

    /// Rejects settings that are valid alone but break the guarantee together.
    fn check_pairs(&self) -> Result<(), ConfigError> {
        if self.queue_size < self.replay_batch {
            return Err(ConfigError::Conflict {
                first: format!("{}={}", QUEUE_SIZE.name, self.queue_size),
                second: format!("{}={}", REPLAY_BATCH.name, self.replay_batch),
                reason:
                    "a hub's catch-up puts a whole batch in the queue at once, so every subscriber would \
                         be closed as too slow; make QUEUE_SIZE at least REPLAY_BATCH"
                        .to_owned(),
            });
        }
        if self.queue_bytes < self.replay_bytes {
            return Err(ConfigError::Conflict {
                first: format!("{}={}", QUEUE_BYTES.name, self.queue_bytes),
                second: format!("{}={}", REPLAY_BYTES.name, self.replay_bytes),
                reason: "a hub's catch-up puts a whole read in the queue at once, so every subscriber would \
                         be closed as too slow; make QUEUE_BYTES at least REPLAY_BYTES"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// How much one history read may return.
    pub fn read_limit(&self) -> crate::history::ReadLimit {
        crate::history::ReadLimit { count: self.replay_batch, bytes: self.replay_bytes }
    }

    /// The defaults, with the given overrides (setting name, value): for tests and embedding.
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::load(&Sources::from_pairs(overrides))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = GatewayConfig::with_overrides(&[]).unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(config.max_topics_per_connection, 32);
        assert_eq!(config.cors, Cors::Off);
        assert_eq!(config.queue_bytes, 8 << 20);
        assert_ne!(config.instance_id, GatewayConfig::with_overrides(&[]).unwrap().instance_id);
    }

    #[test]
    fn a_queue_smaller_than_a_replay_batch_is_rejected() {
        let error =
            GatewayConfig::with_overrides(&[("QUEUE_SIZE", "100"), ("REPLAY_BATCH", "500")]).unwrap_err();
        assert!(error.to_string().starts_with("QUEUE_SIZE=100 and REPLAY_BATCH=500 conflict: "), "{error}");
    }

    #[test]
    fn a_queue_smaller_in_bytes_than_a_replay_read_is_rejected() {
        let error =
            GatewayConfig::with_overrides(&[("QUEUE_BYTES", "64KiB"), ("REPLAY_BYTES", "1MiB")]).unwrap_err();
        assert!(
            error.to_string().starts_with("QUEUE_BYTES=65536 and REPLAY_BYTES=1048576 conflict: "),
            "{error}"
        );
    }

    #[test]
    fn queue_bytes_takes_a_size_within_its_range() {
        let config =
            GatewayConfig::with_overrides(&[("QUEUE_BYTES", "64KiB"), ("REPLAY_BYTES", "64KiB")]).unwrap();
        assert_eq!(config.queue_bytes, 64 << 10);
        let error = GatewayConfig::with_overrides(&[("QUEUE_BYTES", "2GiB")]).unwrap_err();
        assert_eq!(error.to_string(), "invalid QUEUE_BYTES=\"2GiB\": expected a size from 64KiB to 1GiB");
    }

    #[test]
    fn heartbeat_below_one_second_is_rejected() {
        let error = GatewayConfig::with_overrides(&[("HEARTBEAT_INTERVAL", "500ms")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid HEARTBEAT_INTERVAL=\"500ms\": expected a duration from 1s to 5m"
        );
    }
}
