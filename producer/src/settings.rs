//! The producer's settings: each one a [`Setting`] (environment name, default, what is
//! allowed, help) and [`ProducerConfig`], their typed values.
//!
//! Values are merged by [`streamgate::config::Layered`] (defaults < TOML file < environment
//! < flags) and typed here, once; an invalid value is a [`ConfigError`] naming the setting.
//! [`SETTINGS`] lists every setting the producer reads, shared ones included, in the order
//! the README documents them.
//!
//! Each setting's documentation is its own `help` and `allowed` text (what `--help`, the
//! error messages and the README show), not a doc comment repeating them.

use std::net::SocketAddr;
use std::time::Duration;

use streamgate::config::{ConfigError, Layered, Secret, ServiceConfig, Setting, parse_bool};
use streamgate::settings::{
    COMMON, Common, HISTORY_MAX_AGE, HISTORY_MAX_LEN, MAX_TOPIC_BYTES, Retention, max_topic_bytes,
    with_common,
};

use crate::auth::{AuthConfig, MIN_JWT_SECRET_BYTES};
use crate::ingest::IngestConfig;
use crate::input::Limits;
use crate::publisher::PublisherConfig;

pub const LISTEN_ADDR: Setting = Setting {
    name: "LISTEN_ADDR",
    default: "127.0.0.1:8090",
    allowed: "a socket address such as 127.0.0.1:8090 or 0.0.0.0:8090 (port 0 picks a free port)",
    help: "Where the HTTP API (POST /publish, /healthz, /readyz) listens.",
};

pub const ADMIN_LISTEN_ADDR: Setting = Setting {
    name: "ADMIN_LISTEN_ADDR",
    default: "off",
    allowed: "a socket address such as 127.0.0.1:9091 (port 0 picks a free port), or off",
    help: "Where GET /metrics (Prometheus) is served, apart from LISTEN_ADDR and without \
           authentication; off (or empty) serves no metrics.",
};

pub const PUBLISH_TOKEN: Setting = Setting {
    name: "PUBLISH_TOKEN",
    default: "",
    allowed: "a comma-separated list of tokens (no commas or spaces inside a token)",
    help: "Bearer tokens POST /publish accepts (any of them: add the new one, move publishers, \
           drop the old one to rotate without downtime). Use at least 32 random bytes each.",
};

pub const PUBLISH_TOKEN_FILE: Setting = Setting {
    name: "PUBLISH_TOKEN_FILE",
    default: "",
    allowed: "the path of a readable file with tokens separated by commas or line breaks",
    help: "PUBLISH_TOKEN read from a file (a Docker or Kubernetes secret); not both.",
};

pub const PUBLISH_JWT_SECRET: Setting = Setting {
    name: "PUBLISH_JWT_SECRET",
    default: "",
    allowed: "at least 32 bytes of text",
    help: "When set, POST /publish also accepts HS256 JWTs signed with it, with claims exp, sub \
           and publish (topics: exact names or prefixes ending in *).",
};

pub const PUBLISH_JWT_SECRET_FILE: Setting = Setting {
    name: "PUBLISH_JWT_SECRET_FILE",
    default: "",
    allowed: "the path of a readable file holding at least 32 bytes",
    help: "PUBLISH_JWT_SECRET read from a file (a Docker or Kubernetes secret); not both.",
};

pub const ALLOW_ANONYMOUS_PUBLISH: Setting = Setting {
    name: "ALLOW_ANONYMOUS_PUBLISH",
    default: "false",
    allowed: "true or false",
    help: "Serve POST /publish without authentication on a non-loopback LISTEN_ADDR. Without it \
           such a producer refuses to start.",
};

pub const HEADER_READ_TIMEOUT: Setting = Setting {
    name: "HEADER_READ_TIMEOUT",
    default: "10s",
    allowed: "a duration from 100ms to 5m",
    help: "How long a client may take to send a request's headers (and an idle keep-alive \
           connection may wait for the next request) before the connection is closed.",
};

pub const REQUEST_BODY_TIMEOUT: Setting = Setting {
    name: "REQUEST_BODY_TIMEOUT",
    default: "10s",
    allowed: "a duration from 100ms to 10m",
    help: "How long a client may take to send a POST /publish body (408 after it).",
};

pub const DEDUP_WINDOW: Setting = Setting {
    name: "DEDUP_WINDOW",
    default: "10m",
    allowed: "a duration from 1s to 7d",
    help: "How long an idempotency key is remembered: a repeat within it returns the original \
           id with duplicate: true and writes nothing.",
};

pub const INSTANCE_STREAM_MAX_LEN: Setting = Setting {
    name: "INSTANCE_STREAM_MAX_LEN",
    default: "100000",
    allowed: "a whole number from 1 to 100000000",
    help: "Approximate bound of each gateway instance stream of routed events.",
};

pub const MAX_EVENT_BYTES: Setting = Setting {
    name: "MAX_EVENT_BYTES",
    default: "64KiB",
    allowed: "a size from 1 byte to 64MiB, such as 65536, 64KiB or 1MiB",
    help: "Largest event data accepted (413 over HTTP, dead letter on the ingest stream).",
};

pub const MAX_REQUEST_BYTES: Setting = Setting {
    name: "MAX_REQUEST_BYTES",
    default: "1MiB",
    allowed: "a size from 1 byte to 256MiB, such as 1048576 or 1MiB",
    help: "Largest POST /publish body accepted (413 over it).",
};

pub const MAX_BATCH_EVENTS: Setting = Setting {
    name: "MAX_BATCH_EVENTS",
    default: "1000",
    allowed: "a whole number from 1 to 100000",
    help: "Most events in one POST /publish batch (413 over it).",
};

pub const INGEST_STREAM: Setting = Setting {
    name: "INGEST_STREAM",
    default: "streamgate:ingest",
    allowed: "a Redis key name (not under KEY_PREFIX)",
    help: "The stream upstream services XADD events to (fields topic, data, event, idempotencyKey).",
};

pub const INGEST_GROUP: Setting = Setting {
    name: "INGEST_GROUP",
    default: "streamgate-producers",
    allowed: "a consumer group name",
    help: "The consumer group all producers share on the ingest stream.",
};

pub const INGEST_DEAD_LETTER: Setting = Setting {
    name: "INGEST_DEAD_LETTER",
    default: "streamgate:ingest:dead",
    allowed: "a Redis key name",
    help: "Where ingest entries that can never be valid go, with fields reason and source_id.",
};

pub const INGEST_BATCH: Setting = Setting {
    name: "INGEST_BATCH",
    default: "500",
    allowed: "a whole number from 1 to 10000",
    help: "Most ingest entries read, published and acknowledged together.",
};

pub const INGEST_CLAIM_IDLE: Setting = Setting {
    name: "INGEST_CLAIM_IDLE",
    default: "30s",
    allowed: "a duration from 100ms to 1d",
    help: "Pending ingest entries idle this long (their producer died) are claimed by another.",
};

pub const INGEST_ENABLED: Setting = Setting {
    name: "INGEST_ENABLED",
    default: "true",
    allowed: "true or false",
    help: "Whether `producer serve` consumes the ingest stream.",
};

pub const LIVENESS_CACHE: Setting = Setting {
    name: "LIVENESS_CACHE",
    default: "1s",
    allowed: "a duration from 0s to 1m",
    help: "How long an instance seen alive is trusted before its liveness key is checked again.",
};

pub const REDIS_RESPONSE_TIMEOUT: Setting = Setting {
    name: "REDIS_RESPONSE_TIMEOUT",
    default: "5s",
    allowed: "a duration from 50ms to 1m",
    help: "How long a pooled Redis command may wait for its answer. A publish that times out is \
           answered 504 with written: unknown (Redis may still run it).",
};

pub const MAX_CONCURRENT_PUBLISHES: Setting = Setting {
    name: "MAX_CONCURRENT_PUBLISHES",
    default: "256",
    allowed: "a whole number from 1 to 100000",
    help: "Most POST /publish batches in progress at once, including those whose client left \
           (each runs to completion). Beyond it: 503 with written: false.",
};

pub const PUBLISH_GROUP_COMMIT: Setting = Setting {
    name: "PUBLISH_GROUP_COMMIT",
    default: "true",
    allowed: "true or false",
    help: "Whether concurrent POST /publish requests share one append script call and one \
           routing pipeline (group commit; not on a Redis Cluster). Each request keeps its own \
           result and outcome.",
};

/// Every setting the producer reads, shared ones first.
pub const SETTINGS: &[Setting] = &with_common::<{ COMMON.len() + OWN.len() }>(OWN);

/// The settings only the producer reads.
const OWN: &[Setting] = &[
    LISTEN_ADDR,
    ADMIN_LISTEN_ADDR,
    PUBLISH_TOKEN,
    PUBLISH_TOKEN_FILE,
    PUBLISH_JWT_SECRET,
    PUBLISH_JWT_SECRET_FILE,
    ALLOW_ANONYMOUS_PUBLISH,
    HEADER_READ_TIMEOUT,
    REQUEST_BODY_TIMEOUT,
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
    PUBLISH_GROUP_COMMIT,
];

/// The producer's configuration, typed.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Settings every service shares (Redis URL, key schema, pool size, log format).
    pub common: Common,
    /// Where the HTTP API listens.
    pub listen_addr: SocketAddr,
    /// Where `GET /metrics` is served; `None` for nowhere.
    pub admin_listen_addr: Option<SocketAddr>,
    /// How publishers authenticate.
    pub auth: AuthConfig,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub request_body_timeout: Duration,
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
    /// Whether concurrent `POST /publish` requests are group-committed (`crate::group`).
    pub publish_group_commit: bool,
}

impl ServiceConfig for ProducerConfig {
    const SETTINGS: &'static [Setting] = SETTINGS;

    fn from_layered(layered: &Layered) -> Result<ProducerConfig, ConfigError> {
        let retention = Retention::from_layered(layered)?;
        let publisher = PublisherConfig {
            history_max_len: retention.max_len,
            history_max_age: retention.max_age,
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
            max_topic_bytes: max_topic_bytes(layered)?,
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
            admin_listen_addr: layered.get_with(&ADMIN_LISTEN_ADDR, |raw| match raw {
                "" => Some(None),
                off if off.eq_ignore_ascii_case("off") => Some(None),
                addr => addr.parse().ok().map(Some),
            })?,
            auth: auth_config(layered)?,
            header_read_timeout: layered
                .get_duration(&HEADER_READ_TIMEOUT, Duration::from_millis(100)..=Duration::from_secs(300))?,
            request_body_timeout: layered
                .get_duration(&REQUEST_BODY_TIMEOUT, Duration::from_millis(100)..=Duration::from_secs(600))?,
            publisher,
            limits,
            ingest,
            redis_response_timeout: layered
                .get_duration(&REDIS_RESPONSE_TIMEOUT, Duration::from_millis(50)..=Duration::from_secs(60))?,
            max_concurrent_publishes: layered.get_in_range(&MAX_CONCURRENT_PUBLISHES, 1..=100_000)?,
            publish_group_commit: layered.get_with(&PUBLISH_GROUP_COMMIT, parse_bool)?,
        })
    }
}

/// The publishers' credentials. Error messages name the settings, never a secret.
fn auth_config(layered: &Layered) -> Result<AuthConfig, ConfigError> {
    let tokens: Vec<Secret> = layered
        .get_secret(&PUBLISH_TOKEN, &PUBLISH_TOKEN_FILE)?
        .map(|list| {
            list.expose()
                .split([',', '\n'])
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .map(Secret::new)
                .collect()
        })
        .unwrap_or_default();
    if tokens.iter().any(|token| token.expose().contains(char::is_whitespace)) {
        return Err(ConfigError::Invalid {
            setting: PUBLISH_TOKEN.name.to_owned(),
            value: "<hidden>".to_owned(),
            allowed: PUBLISH_TOKEN.allowed.to_owned(),
        });
    }
    let jwt_secret = layered.get_secret(&PUBLISH_JWT_SECRET, &PUBLISH_JWT_SECRET_FILE)?;
    if let Some(secret) = &jwt_secret
        && secret.expose().len() < MIN_JWT_SECRET_BYTES
    {
        return Err(ConfigError::Invalid {
            setting: PUBLISH_JWT_SECRET.name.to_owned(),
            value: format!("<hidden, {} bytes>", secret.expose().len()),
            allowed: PUBLISH_JWT_SECRET.allowed.to_owned(),
        });
    }
    Ok(AuthConfig {
        tokens,
        jwt_secret,
        allow_anonymous: layered.get_with(&ALLOW_ANONYMOUS_PUBLISH, parse_bool)?,
    })
}

/// Why `producer serve` refuses to start with an otherwise valid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve POST /publish on {addr} without authentication: set PUBLISH_TOKEN, \
     PUBLISH_TOKEN_FILE, PUBLISH_JWT_SECRET or PUBLISH_JWT_SECRET_FILE, or ALLOW_ANONYMOUS_PUBLISH=true \
     to publish without on purpose"
)]
pub struct UnprotectedListener {
    /// The non-loopback listen address.
    pub addr: SocketAddr,
}

impl ProducerConfig {
    /// `serve` on a non-loopback address needs authentication, unless anonymous publishing
    /// is allowed on purpose: an open publish endpoint lets anyone write to any topic.
    pub fn check_exposure(&self) -> Result<(), UnprotectedListener> {
        if self.listen_addr.ip().is_loopback() || self.auth.is_required() || self.auth.allow_anonymous {
            return Ok(());
        }
        Err(UnprotectedListener { addr: self.listen_addr })
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
        ProducerConfig::load(&streamgate::config::Sources { env, ..Default::default() })
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8090");
        assert_eq!(config.admin_listen_addr, None);
        assert!(config.auth.tokens.is_empty() && config.auth.jwt_secret.is_none());
        assert!(!config.auth.allow_anonymous);
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.request_body_timeout, Duration::from_secs(10));
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
    fn the_admin_listener_is_an_address_or_off() {
        let config = load(&[("ADMIN_LISTEN_ADDR", "127.0.0.1:9091")]).unwrap();
        assert_eq!(config.admin_listen_addr, Some("127.0.0.1:9091".parse().unwrap()));
        for off in ["off", "OFF", ""] {
            assert_eq!(load(&[("ADMIN_LISTEN_ADDR", off)]).unwrap().admin_listen_addr, None, "{off:?}");
        }
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
            ("ADMIN_LISTEN_ADDR", "9091"),
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
    fn tokens_are_a_list_and_secrets_never_show_in_errors_or_debug() {
        let config = load(&[("PUBLISH_TOKEN", " first-token , second-token,")]).unwrap();
        let tokens: Vec<&str> = config.auth.tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["first-token", "second-token"]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("first-token"), "{debug}");
        let short = load(&[("PUBLISH_JWT_SECRET", "too-short-secret")]).unwrap_err().to_string();
        assert!(short.starts_with("invalid PUBLISH_JWT_SECRET=") && !short.contains("too-short"), "{short}");
        let both = load(&[("PUBLISH_TOKEN", "t-1"), ("PUBLISH_TOKEN_FILE", "/x")]).unwrap_err().to_string();
        assert!(!both.contains("t-1"), "{both}");
    }

    #[test]
    fn a_non_loopback_listener_needs_authentication_or_an_explicit_opt_out() {
        let exposed = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("LISTEN_ADDR", "0.0.0.0:8090")];
            pairs.extend_from_slice(extra);
            load(&pairs).unwrap().check_exposure()
        };
        let error = exposed(&[]).unwrap_err().to_string();
        assert!(error.contains("0.0.0.0:8090") && error.contains("ALLOW_ANONYMOUS_PUBLISH"), "{error}");
        assert!(exposed(&[("PUBLISH_TOKEN", "t")]).is_ok());
        assert!(exposed(&[("PUBLISH_JWT_SECRET", &"s".repeat(32))]).is_ok());
        assert!(exposed(&[("ALLOW_ANONYMOUS_PUBLISH", "true")]).is_ok());
        assert!(load(&[("LISTEN_ADDR", "127.0.0.1:0")]).unwrap().check_exposure().is_ok());
        assert!(load(&[("LISTEN_ADDR", "[::1]:0")]).unwrap().check_exposure().is_ok());
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
