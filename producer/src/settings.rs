//! The producer's settings: each one a [`Setting`] (environment name, default, what is
//! allowed, help) and [`ProducerConfig`], their typed values.
//!
//! Values are merged by [`streamgate::config::Layered`] (defaults < TOML file < environment
//! < flags) and typed here, once; an invalid value is a [`ConfigError`] naming the setting.
//! [`SETTINGS`] lists every setting the producer reads, shared ones included, in the order
//! the README documents them.

use std::net::SocketAddr;
use std::time::Duration;

use streamgate::config::{ConfigError, Layered, Setting, Sources, parse_bool};
use streamgate::settings::{Common, KEY_PREFIX, LOG_FORMAT, REDIS_POOL_SIZE, REDIS_URL};

use crate::ingest::IngestConfig;
use crate::input::Limits;
use crate::publisher::PublisherConfig;

/// `LISTEN_ADDR`.
pub const LISTEN_ADDR: Setting = Setting {
    name: "LISTEN_ADDR",
    default: "127.0.0.1:8090",
    allowed: "a socket address such as 127.0.0.1:8090 or 0.0.0.0:8090 (port 0 picks a free port)",
    help: "Where the HTTP API (POST /publish, /healthz, /readyz) listens.",
};

/// `PUBLISH_TOKEN`.
pub const PUBLISH_TOKEN: Setting = Setting {
    name: "PUBLISH_TOKEN",
    default: "",
    allowed: "any text; empty turns authentication off",
    help: "When set, POST /publish requires `Authorization: Bearer <token>`.",
};

/// `HISTORY_MAX_LEN`.
pub const HISTORY_MAX_LEN: Setting = Setting {
    name: "HISTORY_MAX_LEN",
    default: "10000",
    allowed: "a whole number; 0 means unlimited",
    help: "Events kept per topic history (trimmed approximately, so appends stay O(1)).",
};

/// `HISTORY_MAX_AGE`.
pub const HISTORY_MAX_AGE: Setting = Setting {
    name: "HISTORY_MAX_AGE",
    default: "24h",
    allowed: "a duration such as 90s, 30m or 24h; 0 means unlimited",
    help: "Events older than this are trimmed from a topic's history on its next publish \
           (approximately, by Redis' clock).",
};

/// `DEDUP_WINDOW`.
pub const DEDUP_WINDOW: Setting = Setting {
    name: "DEDUP_WINDOW",
    default: "10m",
    allowed: "a duration from 1s to 7d",
    help: "How long an idempotency key is remembered: a repeat within it returns the original \
           id with duplicate: true and writes nothing.",
};

/// `INSTANCE_STREAM_MAX_LEN`.
pub const INSTANCE_STREAM_MAX_LEN: Setting = Setting {
    name: "INSTANCE_STREAM_MAX_LEN",
    default: "100000",
    allowed: "a whole number from 1 to 100000000",
    help: "Approximate bound of each gateway instance stream of routed events.",
};

/// `MAX_EVENT_BYTES`.
pub const MAX_EVENT_BYTES: Setting = Setting {
    name: "MAX_EVENT_BYTES",
    default: "64KiB",
    allowed: "a size from 1 byte to 64MiB, such as 65536, 64KiB or 1MiB",
    help: "Largest event data accepted (413 over HTTP, dead letter on the ingest stream).",
};

/// `MAX_REQUEST_BYTES`.
pub const MAX_REQUEST_BYTES: Setting = Setting {
    name: "MAX_REQUEST_BYTES",
    default: "1MiB",
    allowed: "a size from 1 byte to 256MiB, such as 1048576 or 1MiB",
    help: "Largest POST /publish body accepted (413 over it).",
};

/// `MAX_BATCH_EVENTS`.
pub const MAX_BATCH_EVENTS: Setting = Setting {
    name: "MAX_BATCH_EVENTS",
    default: "1000",
    allowed: "a whole number from 1 to 100000",
    help: "Most events in one POST /publish batch (413 over it).",
};

/// `MAX_TOPIC_BYTES`.
pub const MAX_TOPIC_BYTES: Setting = Setting {
    name: "MAX_TOPIC_BYTES",
    default: "256",
    allowed: "a whole number from 1 to 4096",
    help: "Longest topic name accepted, in bytes. Keep it equal on gateways and producers.",
};

/// `INGEST_STREAM`.
pub const INGEST_STREAM: Setting = Setting {
    name: "INGEST_STREAM",
    default: "streamgate:ingest",
    allowed: "a Redis key name (not under KEY_PREFIX)",
    help: "The stream upstream services XADD events to (fields topic, data, event, idempotencyKey).",
};

/// `INGEST_GROUP`.
pub const INGEST_GROUP: Setting = Setting {
    name: "INGEST_GROUP",
    default: "streamgate-producers",
    allowed: "a consumer group name",
    help: "The consumer group all producers share on the ingest stream.",
};

/// `INGEST_DEAD_LETTER`.
pub const INGEST_DEAD_LETTER: Setting = Setting {
    name: "INGEST_DEAD_LETTER",
    default: "streamgate:ingest:dead",
    allowed: "a Redis key name",
    help: "Where ingest entries that can never be valid go, with fields reason and source_id.",
};

/// `INGEST_BATCH`.
pub const INGEST_BATCH: Setting = Setting {
    name: "INGEST_BATCH",
    default: "500",
    allowed: "a whole number from 1 to 10000",
    help: "Most ingest entries read, published and acknowledged together.",
};

/// `INGEST_CLAIM_IDLE`.
pub const INGEST_CLAIM_IDLE: Setting = Setting {
    name: "INGEST_CLAIM_IDLE",
    default: "30s",
    allowed: "a duration from 100ms to 1d",
    help: "Pending ingest entries idle this long (their producer died) are claimed by another.",
};

/// `INGEST_ENABLED`.
pub const INGEST_ENABLED: Setting = Setting {
    name: "INGEST_ENABLED",
    default: "true",
    allowed: "true or false",
    help: "Whether `producer serve` consumes the ingest stream.",
};

/// `LIVENESS_CACHE`.
pub const LIVENESS_CACHE: Setting = Setting {
    name: "LIVENESS_CACHE",
    default: "1s",
    allowed: "a duration from 0s to 1m",
    help: "How long an instance seen alive is trusted before its liveness key is checked again.",
};

/// `REDIS_RESPONSE_TIMEOUT`.
pub const REDIS_RESPONSE_TIMEOUT: Setting = Setting {
    name: "REDIS_RESPONSE_TIMEOUT",
    default: "5s",
    allowed: "a duration from 50ms to 1m",
    help: "How long a pooled Redis command may wait for its answer. A publish that times out is \
           answered 504 with written: unknown (Redis may still run it).",
};

/// `MAX_CONCURRENT_PUBLISHES`.
pub const MAX_CONCURRENT_PUBLISHES: Setting = Setting {
    name: "MAX_CONCURRENT_PUBLISHES",
    default: "256",
    allowed: "a whole number from 1 to 100000",
    help: "Most POST /publish batches in progress at once, including those whose client left \
           (each runs to completion). Beyond it: 503 with written: false.",
};

/// Every setting the producer reads, shared ones first.
pub const SETTINGS: &[Setting] = &[
    REDIS_URL,
    KEY_PREFIX,
    REDIS_POOL_SIZE,
    LOG_FORMAT,
    LISTEN_ADDR,
    PUBLISH_TOKEN,
    HISTORY_MAX_LEN,
    HISTORY_MAX_AGE,
    DEDUP_WINDOW,
    INSTANCE_STREAM_MAX_LEN,
    MAX_EVENT_BYTES,
    MAX_REQUEST_BYTES,
    MAX_BATCH_EVENTS,
    MAX_TOPIC_BYTES,
    INGEST_STREAM,
    INGEST_GROUP,
    INGEST_DEAD_LETTER,
    INGEST_BATCH,
    INGEST_CLAIM_IDLE,
    INGEST_ENABLED,
    LIVENESS_CACHE,
    REDIS_RESPONSE_TIMEOUT,
    MAX_CONCURRENT_PUBLISHES,
];

/// The producer's configuration, typed.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Settings every service shares (Redis URL, key schema, pool size, log format).
    pub common: Common,
    /// Where the HTTP API listens.
    pub listen_addr: SocketAddr,
    /// The bearer token `POST /publish` requires, if any.
    pub publish_token: Option<String>,
    /// Retention, deduplication and routing of the routing core.
    pub publisher: PublisherConfig,
    /// Limits on what a publisher may hand in.
    pub limits: Limits,
    /// The ingest stream consumer.
    pub ingest: IngestConfig,
    /// How long a pooled Redis command may wait for its answer.
    pub redis_response_timeout: Duration,
    /// Most `POST /publish` batches in progress at once.
    pub max_concurrent_publishes: usize,
}

impl ProducerConfig {
    /// Loads and types every setting from `sources`.
    pub fn load(sources: &Sources) -> Result<ProducerConfig, ConfigError> {
        ProducerConfig::from_layered(&Layered::load(SETTINGS, sources)?)
    }

    /// The configuration from the built-in defaults and the given `(setting name, value)`
    /// pairs only (later pairs win), ignoring the process environment and files: for tests
    /// and for embedding the producer in another program.
    pub fn with_overrides(settings: &[(&str, &str)]) -> Result<ProducerConfig, ConfigError> {
        ProducerConfig::load(&Sources::from_pairs(settings))
    }

    /// Types every setting from merged values.
    pub fn from_layered(layered: &Layered) -> Result<ProducerConfig, ConfigError> {
        let unlimited_or = |value: Duration| (!value.is_zero()).then_some(value);
        let publisher = PublisherConfig {
            history_max_len: Some(layered.get::<u64>(&HISTORY_MAX_LEN)?).filter(|&len| len > 0),
            history_max_age: unlimited_or(
                layered.get_duration(&HISTORY_MAX_AGE, Duration::ZERO..=Duration::MAX)?,
            ),
            dedup_window: layered
                .get_duration(&DEDUP_WINDOW, Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600))?,
            instance_stream_max_len: layered.get_in_range(&INSTANCE_STREAM_MAX_LEN, 1..=100_000_000)?,
            liveness_cache: layered
                .get_duration(&LIVENESS_CACHE, Duration::ZERO..=Duration::from_secs(60))?,
        };
        let limits = Limits {
            max_event_bytes: layered.get_bytes(&MAX_EVENT_BYTES, 1..=64 << 20)?,
            max_request_bytes: layered.get_bytes(&MAX_REQUEST_BYTES, 1..=256 << 20)?,
            max_batch_events: layered.get_in_range(&MAX_BATCH_EVENTS, 1..=100_000)?,
            max_topic_bytes: layered.get_in_range(&MAX_TOPIC_BYTES, 1..=4096)?,
        };
        let key_name =
            |raw: &str| (!raw.is_empty() && !raw.chars().any(char::is_control)).then(|| raw.to_owned());
        let ingest = IngestConfig {
            enabled: layered.get_with(&INGEST_ENABLED, parse_bool)?,
            stream: layered.get_with(&INGEST_STREAM, key_name)?,
            group: layered.get_with(&INGEST_GROUP, key_name)?,
            dead_letter: layered.get_with(&INGEST_DEAD_LETTER, key_name)?,
            batch: layered.get_in_range(&INGEST_BATCH, 1..=10_000)?,
            claim_idle: layered.get_duration(
                &INGEST_CLAIM_IDLE,
                Duration::from_millis(100)..=Duration::from_secs(24 * 3600),
            )?,
        };
        check_pairs(layered, &publisher, &ingest)?;
        Ok(ProducerConfig {
            common: Common::from_layered(layered)?,
            listen_addr: layered.get(&LISTEN_ADDR)?,
            // Not trimmed like other settings would be: a token is compared byte for byte.
            publish_token: Some(layered.raw(&PUBLISH_TOKEN).to_owned()).filter(|token| !token.is_empty()),
            publisher,
            limits,
            ingest,
            redis_response_timeout: layered
                .get_duration(&REDIS_RESPONSE_TIMEOUT, Duration::from_millis(50)..=Duration::from_secs(60))?,
            max_concurrent_publishes: layered.get_in_range(&MAX_CONCURRENT_PUBLISHES, 1..=100_000)?,
        })
    }
}

/// How many claim periods (`INGEST_CLAIM_IDLE`) the dedup window must cover: an entry whose
/// producer died after publishing is claimed once idle that long, and claim rounds run every
/// half period, so it is published again up to ~1.5 periods after the first time.
const DEDUP_CLAIM_PERIODS: u32 = 2;

/// Rejects pairs of valid settings where one silently defeats the other.
fn check_pairs(
    layered: &Layered,
    publisher: &PublisherConfig,
    ingest: &IngestConfig,
) -> Result<(), ConfigError> {
    let conflict = |setting: &Setting, expected: String| ConfigError::Invalid {
        setting: setting.name.to_owned(),
        value: layered.raw(setting).to_owned(),
        allowed: expected,
    };
    // An idempotency record outliving its event: a retry would answer "duplicate" with an
    // id the history no longer holds (and a subscriber resuming there gets a reset).
    if let Some(max_age) = publisher.history_max_age
        && publisher.dedup_window > max_age
    {
        return Err(conflict(
            &DEDUP_WINDOW,
            format!(
                "at most HISTORY_MAX_AGE={:?}: an idempotency record must not outlive the event it \
                 points at",
                layered.raw(&HISTORY_MAX_AGE)
            ),
        ));
    }
    // An ingest entry re-delivered after its producer died must still find its record.
    if ingest.enabled && publisher.dedup_window < ingest.claim_idle * DEDUP_CLAIM_PERIODS {
        return Err(conflict(
            &DEDUP_WINDOW,
            format!(
                "at least {DEDUP_CLAIM_PERIODS} x INGEST_CLAIM_IDLE={:?}: an ingest entry claimed from \
                 a dead producer would be published twice",
                layered.raw(&INGEST_CLAIM_IDLE)
            ),
        ));
    }
    // Dead letters appended to the stream they came from would be read, rejected and
    // dead-lettered again, forever.
    if ingest.dead_letter == ingest.stream {
        return Err(conflict(
            &INGEST_DEAD_LETTER,
            format!(
                "a key other than INGEST_STREAM={:?}: dead letters would be consumed again",
                ingest.stream
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use streamgate::topic::DEFAULT_MAX_TOPIC_BYTES;

    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<ProducerConfig, ConfigError> {
        let env: HashMap<String, String> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ProducerConfig::load(&Sources { env, ..Sources::default() })
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8090");
        assert_eq!(config.publish_token, None);
        assert_eq!(config.publisher.history_max_len, Some(10_000));
        assert_eq!(config.publisher.history_max_age, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(config.publisher.dedup_window, Duration::from_secs(600));
        assert_eq!(config.publisher.instance_stream_max_len, 100_000);
        assert_eq!(config.publisher.liveness_cache, Duration::from_secs(1));
        assert_eq!(config.limits.max_event_bytes, 64 * 1024);
        assert_eq!(config.limits.max_request_bytes, 1024 * 1024);
        assert_eq!(config.limits.max_batch_events, 1000);
        assert_eq!(config.limits.max_topic_bytes, DEFAULT_MAX_TOPIC_BYTES);
        assert_eq!(config.ingest.stream, "streamgate:ingest");
        assert_eq!(config.ingest.group, "streamgate-producers");
        assert_eq!(config.ingest.dead_letter, "streamgate:ingest:dead");
        assert_eq!(config.ingest.batch, 500);
        assert_eq!(config.ingest.claim_idle, Duration::from_secs(30));
        assert!(config.ingest.enabled);
    }

    #[test]
    fn overrides_replace_defaults_and_unknown_names_are_errors() {
        let config =
            ProducerConfig::with_overrides(&[("MAX_BATCH_EVENTS", "5"), ("max_batch_events", "7")]).unwrap();
        assert_eq!(config.limits.max_batch_events, 7);
        assert!(ProducerConfig::with_overrides(&[("NO_SUCH_SETTING", "1")]).is_err());
    }

    #[test]
    fn zero_means_unlimited_retention() {
        let config = load(&[("HISTORY_MAX_LEN", "0"), ("HISTORY_MAX_AGE", "0s")]).unwrap();
        assert_eq!(config.publisher.history_max_len, None);
        assert_eq!(config.publisher.history_max_age, None);
    }

    #[test]
    fn invalid_values_name_the_setting() {
        for (name, value) in [
            ("LISTEN_ADDR", "nowhere"),
            ("MAX_EVENT_BYTES", "lots"),
            ("DEDUP_WINDOW", "0s"),
            ("INGEST_ENABLED", "perhaps"),
            ("MAX_BATCH_EVENTS", "0"),
        ] {
            let error = load(&[(name, value)]).unwrap_err().to_string();
            assert!(error.starts_with(&format!("invalid {name}=")), "{error}");
        }
    }

    #[test]
    fn every_setting_is_listed_once_with_help() {
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        assert!(SETTINGS.iter().all(|s| !s.help.is_empty() && !s.allowed.is_empty()));
    }
}
