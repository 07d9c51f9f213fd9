//! The gateway's settings: the shared ones plus what only a gateway needs.
//!
//! Each setting's documentation is its own `help` and `allowed` text (what `--help`, the
//! error messages and the README show), not a doc comment repeating them.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use streamgate::config::{ConfigError, Layered, ServiceConfig, Setting, parse_bool, parse_list};
use streamgate::settings::{COMMON, Common, MAX_TOPIC_BYTES, max_topic_bytes, with_common};
use streamgate::topic::InstanceId;

use crate::access::config::AccessConfig;
use crate::limits::client_ip::TrustedProxies;

pub const LISTEN_ADDR: Setting = Setting {
    name: "LISTEN_ADDR",
    default: "127.0.0.1:8080",
    allowed: "a socket address such as 0.0.0.0:8080 (port 0 picks a free port)",
    help: "Where the gateway listens for HTTP.",
};
pub const INSTANCE_ID: Setting = Setting {
    name: "INSTANCE_ID",
    default: "",
    allowed: "1 to 128 ASCII letters, digits, '.', '_' or '-' (empty: host name plus a random suffix)",
    help: "This gateway's identity in Redis. Set it to the pod name in a StatefulSet; leave it empty elsewhere.",
};
pub const HEARTBEAT_INTERVAL: Setting = Setting {
    name: "HEARTBEAT_INTERVAL",
    default: "15s",
    allowed: "a duration from 1s to 5m",
    help: "How often an idle SSE stream gets a comment, so proxies do not cut it.",
};
pub const RETRY_INTERVAL: Setting = Setting {
    name: "RETRY_INTERVAL",
    default: "2s",
    allowed: "a duration from 100ms to 1m",
    help: "The SSE retry: value: how long a browser waits before reconnecting.",
};
pub const MAX_CONNECTIONS: Setting = Setting {
    name: "MAX_CONNECTIONS",
    default: "10000",
    allowed: "a whole number from 1 to 10000000",
    help: "SSE connections per instance; beyond it an EventSource gets a 200 that only sets retry: (so browsers keep retrying), other clients 503 with Retry-After.",
};
pub const MAX_TOPICS_PER_CONNECTION: Setting = Setting {
    name: "MAX_TOPICS_PER_CONNECTION",
    default: "32",
    allowed: "a whole number from 1 to 1024",
    help: "How many topic parameters one /events request may name.",
};
pub const QUEUE_SIZE: Setting = Setting {
    name: "QUEUE_SIZE",
    default: "1024",
    allowed: "a whole number from 16 to 1048576",
    help: "Events a subscriber may fall behind its topic before it is closed (it resumes from its cursor).",
};
pub const QUEUE_BYTES: Setting = Setting {
    name: "QUEUE_BYTES",
    default: "8MiB",
    allowed: "a size from 64KiB to 1GiB",
    help: "Bytes of encoded events a topic may hold for subscribers that have not read them; a subscriber whose unread events exceed it is closed (it resumes from its cursor).",
};
pub const REPLAY_BATCH: Setting = Setting {
    name: "REPLAY_BATCH",
    default: "500",
    allowed: "a whole number from 1 to 10000",
    help: "History entries read per XRANGE when a client catches up.",
};
pub const REPLAY_BYTES: Setting = Setting {
    name: "REPLAY_BYTES",
    default: "1MiB",
    allowed: "a size from 64KiB to 64MiB, such as 1MiB",
    help: "Bytes of events one history read may return (at least one event): bounds what a replaying client pins.",
};
pub const REPLAY_CONCURRENCY: Setting = Setting {
    name: "REPLAY_CONCURRENCY",
    default: "32",
    allowed: "a whole number from 1 to 4096",
    help: "History reads for replaying clients that may run at once on one gateway; more wait their turn.",
};
pub const RECONCILE_INTERVAL: Setting = Setting {
    name: "RECONCILE_INTERVAL",
    default: "1s",
    allowed: "a duration from 100ms to 1m",
    help: "How often topics that received nothing are compared with their histories, so an event appended but never routed is delivered within two intervals.",
};
pub const LIVENESS_TTL: Setting = Setting {
    name: "LIVENESS_TTL",
    default: "15s",
    allowed: "a duration from 3s to 10m",
    help: "The TTL of the instance's liveness key, refreshed every third of it; the janitor treats an expired instance as dead.",
};
pub const DRAIN_TIMEOUT: Setting = Setting {
    name: "DRAIN_TIMEOUT",
    default: "10s",
    allowed: "a duration from 0s to 10m",
    help: "On SIGTERM, how long to wait for connections to close before exiting.",
};
pub const CORS_ORIGINS: Setting = Setting {
    name: "CORS_ORIGINS",
    default: "",
    allowed: "a comma-separated list of origins, or * for any (empty: no CORS headers)",
    help: "Origins allowed to open event streams from other sites.",
};

pub const ADMIN_LISTEN_ADDR: Setting = Setting {
    name: "ADMIN_LISTEN_ADDR",
    default: "127.0.0.1:9080",
    allowed: "a socket address such as 127.0.0.1:9080 (port 0 picks a free port), or off",
    help: "Where /admin/* is served, apart from the public listener; off (or empty) serves no admin endpoint.",
};
pub const ADMIN_TOKEN: Setting = Setting {
    name: "ADMIN_TOKEN",
    default: "",
    allowed: "any text of 16 or more characters (empty: no token)",
    help: "Bearer token required by /admin/* when set.",
};
/// `INGEST_STREAM` (as the producers have it: `/admin/cluster` reports its lag).
pub const INGEST_STREAM: Setting = Setting {
    name: "INGEST_STREAM",
    default: "streamgate:ingest",
    allowed: "a Redis key name without control characters (not under KEY_PREFIX)",
    help: "The producers' ingest stream, whose consumer group's lag /admin/cluster reports.",
};
/// `INGEST_GROUP` (as the producers have it).
pub const INGEST_GROUP: Setting = Setting {
    name: "INGEST_GROUP",
    default: "streamgate-producers",
    allowed: "a consumer group name without control characters",
    help: "The producers' consumer group on the ingest stream, for /admin/cluster.",
};
/// `INGEST_DEAD_LETTER` (as the producers have it).
pub const INGEST_DEAD_LETTER: Setting = Setting {
    name: "INGEST_DEAD_LETTER",
    default: "streamgate:ingest:dead",
    allowed: "a Redis key name without control characters",
    help: "The producers' dead-letter stream, whose length /admin/cluster reports.",
};
pub const DEMO_PAGE: Setting = Setting {
    name: "DEMO_PAGE",
    default: "false",
    allowed: "true or false",
    help: "Serve the demo page at / on the public listener.",
};
pub const SUBSCRIBE_AUTH: Setting = Setting {
    name: "SUBSCRIBE_AUTH",
    default: "none",
    allowed: "none, jwt or hook",
    help: "How /events requests are authorized: not at all, by a JWT, or by asking SUBSCRIBE_AUTH_URL.",
};
pub const JWT_SECRET: Setting = Setting {
    name: "JWT_SECRET",
    default: "",
    allowed: "a secret of at least 32 bytes (empty: none)",
    help: "HS256 key of subscriber tokens (SUBSCRIBE_AUTH=jwt).",
};
pub const JWT_SECRET_FILE: Setting = Setting {
    name: "JWT_SECRET_FILE",
    default: "",
    allowed: "a readable file holding a secret of at least 32 bytes (one trailing newline is removed)",
    help: "JWT_SECRET from a file, read at start-up (for Docker and Kubernetes secrets).",
};
pub const JWKS_FILE: Setting = Setting {
    name: "JWKS_FILE",
    default: "",
    allowed: "a readable JWKS JSON file of RSA, EC (P-256, P-384) or Ed25519 public keys",
    help: "Public keys of subscriber tokens (RS256, ES256, ...), chosen by kid when the token names one.",
};
pub const JWKS_URL: Setting = Setting {
    name: "JWKS_URL",
    default: "",
    allowed: "an http:// or https:// URL of a JWKS document (empty: none)",
    help: "Public keys of subscriber tokens fetched at start-up and every JWKS_REFRESH.",
};
pub const JWKS_REFRESH: Setting = Setting {
    name: "JWKS_REFRESH",
    default: "5m",
    allowed: "a duration from 10s to 24h",
    help: "How often JWKS_URL is fetched again (also at most every 30 s when a token names an unknown kid).",
};
pub const JWT_AUDIENCE: Setting = Setting {
    name: "JWT_AUDIENCE",
    default: "",
    allowed: "a comma-separated list of audiences (empty: tokens must carry no aud)",
    help: "Accepted aud values; when set, aud is required.",
};
pub const JWT_ISSUER: Setting = Setting {
    name: "JWT_ISSUER",
    default: "",
    allowed: "a comma-separated list of issuers (empty: not checked)",
    help: "Accepted iss values; when set, iss is required.",
};
pub const AUTH_COOKIE: Setting = Setting {
    name: "AUTH_COOKIE",
    default: "streamgate_token",
    allowed: "a cookie name: 1 to 64 ASCII letters, digits, '_' or '-'",
    help: "The cookie a subscriber token may come in (set it HttpOnly).",
};
pub const ALLOW_QUERY_TOKEN: Setting = Setting {
    name: "ALLOW_QUERY_TOKEN",
    default: "false",
    allowed: "true or false",
    help: "Accept the token as ?token= too. URLs end up in access logs: use short-lived tokens.",
};
pub const SUBSCRIBE_AUTH_URL: Setting = Setting {
    name: "SUBSCRIBE_AUTH_URL",
    default: "",
    allowed: "an http:// or https:// URL",
    help: "The hook POSTed for every /events request with SUBSCRIBE_AUTH=hook.",
};
pub const SUBSCRIBE_AUTH_TIMEOUT: Setting = Setting {
    name: "SUBSCRIBE_AUTH_TIMEOUT",
    default: "2s",
    allowed: "a duration from 100ms to 30s",
    help: "How long the hook may take to answer; slower counts as unavailable.",
};
pub const SUBSCRIBE_AUTH_CACHE: Setting = Setting {
    name: "SUBSCRIBE_AUTH_CACHE",
    default: "10s",
    allowed: "a duration from 0s (no cache) to 10m",
    help: "How long a hook answer is reused for the same credentials and topics.",
};
pub const PUBLIC_TOPIC_PREFIXES: Setting = Setting {
    name: "PUBLIC_TOPIC_PREFIXES",
    default: "",
    allowed: "a comma-separated list of non-empty prefixes such as public:",
    help: "Topics starting with one of these need no token.",
};
pub const MAX_CONNECTIONS_PER_IP: Setting = Setting {
    name: "MAX_CONNECTIONS_PER_IP",
    default: "1000",
    allowed: "a whole number from 0 (no limit) to 10000000",
    help: "Open streams per client address (IPv6: per /64) on one gateway.",
};
pub const SUBSCRIBE_RATE_PER_IP: Setting = Setting {
    name: "SUBSCRIBE_RATE_PER_IP",
    default: "20",
    allowed: "a number of requests per second from 0 (no limit) to 1000000, such as 20 or 0.5",
    help: "Sustained /events requests per second per client address, after SUBSCRIBE_BURST_PER_IP.",
};
pub const SUBSCRIBE_BURST_PER_IP: Setting = Setting {
    name: "SUBSCRIBE_BURST_PER_IP",
    default: "100",
    allowed: "a whole number from 1 to 1000000",
    help: "/events requests a client address may make at once before SUBSCRIBE_RATE_PER_IP applies.",
};
pub const TRUSTED_PROXIES: Setting = Setting {
    name: "TRUSTED_PROXIES",
    default: "127.0.0.0/8,::1/128",
    allowed: "a comma-separated list of IP addresses or CIDRs, or none",
    help: "Peers whose X-Forwarded-For is believed when finding a client's address.",
};
pub const MAX_TOPICS: Setting = Setting {
    name: "MAX_TOPICS",
    default: "100000",
    allowed: "a whole number from 1 to 10000000",
    help: "Topics with local subscribers (hubs) on one gateway; a request needing more is refused as retryable.",
};
pub const MAX_STREAM_LIFETIME: Setting = Setting {
    name: "MAX_STREAM_LIFETIME",
    default: "0s",
    allowed: "0s (no limit) or a duration from 1s to 7d",
    help: "Streams end after this long (after an id:-only block); clients reconnect and resume.",
};
pub const HEADER_READ_TIMEOUT: Setting = Setting {
    name: "HEADER_READ_TIMEOUT",
    default: "10s",
    allowed: "a duration from 1s to 5m",
    help: "How long a client may take to send a request's headers (slowloris); slower connections are closed.",
};
pub const MAX_HEADER_BYTES: Setting = Setting {
    name: "MAX_HEADER_BYTES",
    default: "32KiB",
    allowed: "a size from 8KiB to 1MiB",
    help: "Largest request head (request line and headers); larger gets 431.",
};

pub const TLS_CERT_FILE: Setting = Setting {
    name: "TLS_CERT_FILE",
    default: "",
    allowed: "a path to a PEM file (the certificate, then its intermediates), with TLS_KEY_FILE",
    help: "Serve the public listener over TLS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate chain; \
           re-read when it changes. Empty: clear text (HTTP/1.1, and HTTP/2 with prior knowledge).",
};
pub const TLS_KEY_FILE: Setting = Setting {
    name: "TLS_KEY_FILE",
    default: "",
    allowed: "a path to a PEM private key (PKCS#8, PKCS#1 or SEC1), with TLS_CERT_FILE",
    help: "The private key of TLS_CERT_FILE's certificate; re-read when it changes.",
};
pub const TLS_RELOAD_INTERVAL: Setting = Setting {
    name: "TLS_RELOAD_INTERVAL",
    default: "10s",
    allowed: "a duration from 1s to 1h",
    help: "How often TLS_CERT_FILE and TLS_KEY_FILE are checked for a change (a renewed certificate is served without restart).",
};
pub const HTTP2_MAX_CONCURRENT_STREAMS: Setting = Setting {
    name: "HTTP2_MAX_CONCURRENT_STREAMS",
    default: "128",
    allowed: "a whole number from 1 to 10000",
    help: "Streams (each /events stream is one) a client may have open on one HTTP/2 connection.",
};

/// Every gateway setting, shared ones first.
pub const SETTINGS: &[Setting] = &with_common::<{ COMMON.len() + OWN.len() }>(OWN);

/// The settings only the gateway reads.
const OWN: &[Setting] = &[
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
    ADMIN_LISTEN_ADDR,
    ADMIN_TOKEN,
    INGEST_STREAM,
    INGEST_GROUP,
    INGEST_DEAD_LETTER,
    DEMO_PAGE,
    SUBSCRIBE_AUTH,
    JWT_SECRET,
    JWT_SECRET_FILE,
    JWKS_FILE,
    JWKS_URL,
    JWKS_REFRESH,
    JWT_AUDIENCE,
    JWT_ISSUER,
    AUTH_COOKIE,
    ALLOW_QUERY_TOKEN,
    SUBSCRIBE_AUTH_URL,
    SUBSCRIBE_AUTH_TIMEOUT,
    SUBSCRIBE_AUTH_CACHE,
    PUBLIC_TOPIC_PREFIXES,
    MAX_CONNECTIONS_PER_IP,
    SUBSCRIBE_RATE_PER_IP,
    SUBSCRIBE_BURST_PER_IP,
    TRUSTED_PROXIES,
    MAX_TOPICS,
    MAX_STREAM_LIFETIME,
    HEADER_READ_TIMEOUT,
    MAX_HEADER_BYTES,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TLS_RELOAD_INTERVAL,
    HTTP2_MAX_CONCURRENT_STREAMS,
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
    /// Where `/admin/*` is served (`None`: nowhere).
    pub admin_listen_addr: Option<SocketAddr>,
    /// Bearer token `/admin/*` requires.
    pub admin_token: Option<SecretString>,
    /// The producers' ingest stream names, for `/admin/cluster`.
    pub ingest: IngestNames,
    /// Whether `/` serves the demo page.
    pub demo_page: bool,
    /// Subscriber authorization.
    pub access: AccessConfig,
    /// Per-client and per-gateway limits.
    pub limits: Limits,
    /// TLS on the public listener (`None`: clear text).
    pub tls: Option<crate::tls::TlsFiles>,
}

/// The producers' ingest stream, consumer group and dead-letter stream (the gateway only
/// reads their sizes, for `/admin/cluster`; keep them equal to the producers' settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestNames {
    /// `INGEST_STREAM`.
    pub stream: String,
    /// `INGEST_GROUP`.
    pub group: String,
    /// `INGEST_DEAD_LETTER`.
    pub dead_letter: String,
}

impl IngestNames {
    fn from_layered(layered: &Layered) -> Result<IngestNames, ConfigError> {
        let name =
            |raw: &str| (!raw.is_empty() && !raw.chars().any(char::is_control)).then(|| raw.to_owned());
        Ok(IngestNames {
            stream: layered.get_with(&INGEST_STREAM, name)?,
            group: layered.get_with(&INGEST_GROUP, name)?,
            dead_letter: layered.get_with(&INGEST_DEAD_LETTER, name)?,
        })
    }
}

/// Limits against abuse (each `0` or `None` where it can be off).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open streams per client address (`0`: no limit).
    pub max_connections_per_ip: usize,
    /// New `/events` requests per second per client address (`0`: no limit).
    pub subscribe_rate_per_ip: f64,
    /// Requests a client address may make at once.
    pub subscribe_burst_per_ip: u32,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Topics with hubs on this gateway.
    pub max_topics: usize,
    /// How long a stream may last.
    pub max_stream_lifetime: Option<Duration>,
    /// Time to send a request's head.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
}

impl Limits {
    fn from_layered(layered: &Layered) -> Result<Limits, ConfigError> {
        let lifetime =
            layered.get_duration(&MAX_STREAM_LIFETIME, Duration::ZERO..=Duration::from_secs(7 * 86_400))?;
        if !lifetime.is_zero() && lifetime < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                setting: MAX_STREAM_LIFETIME.name.into(),
                value: layered.raw(&MAX_STREAM_LIFETIME).trim().into(),
                allowed: MAX_STREAM_LIFETIME.allowed.into(),
            });
        }
        Ok(Limits {
            max_connections_per_ip: layered.get_in_range(&MAX_CONNECTIONS_PER_IP, 0..=10_000_000)?,
            subscribe_rate_per_ip: layered.get_with(&SUBSCRIBE_RATE_PER_IP, |raw| {
                raw.parse::<f64>().ok().filter(|rate| (0.0..=1_000_000.0).contains(rate))
            })?,
            subscribe_burst_per_ip: layered.get_in_range(&SUBSCRIBE_BURST_PER_IP, 1..=1_000_000)?,
            trusted_proxies: layered.get_with(&TRUSTED_PROXIES, TrustedProxies::parse)?,
            max_topics: layered.get_in_range(&MAX_TOPICS, 1..=10_000_000)?,
            max_stream_lifetime: (!lifetime.is_zero()).then_some(lifetime),
            header_read_timeout: layered
                .get_duration(&HEADER_READ_TIMEOUT, Duration::from_secs(1)..=Duration::from_secs(300))?,
            max_header_bytes: layered.get_bytes(&MAX_HEADER_BYTES, 8 << 10..=1 << 20)?,
            http2_max_concurrent_streams: layered.get_in_range(&HTTP2_MAX_CONCURRENT_STREAMS, 1..=10_000)?,
        })
    }
}

/// `TLS_CERT_FILE` and `TLS_KEY_FILE`: both or neither.
fn tls_files(layered: &Layered) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    match (layered.get_optional(&TLS_CERT_FILE), layered.get_optional(&TLS_KEY_FILE)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
            cert: cert.into(),
            key: key.into(),
            reload_interval: layered
                .get_duration(&TLS_RELOAD_INTERVAL, Duration::from_secs(1)..=Duration::from_secs(3600))?,
        })),
        (cert, key) => Err(ConfigError::Conflict {
            first: format!("{}={}", TLS_CERT_FILE.name, cert.unwrap_or_default()),
            second: format!("{}={}", TLS_KEY_FILE.name, key.unwrap_or_default()),
            reason: "TLS needs both the certificate and its key; set both, or neither for clear text"
                .to_owned(),
        }),
    }
}

/// `ADMIN_TOKEN`: at least this long, so it cannot be guessed by trying.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

impl ServiceConfig for GatewayConfig {
    const SETTINGS: &'static [Setting] = SETTINGS;

    fn from_layered(layered: &Layered) -> Result<GatewayConfig, ConfigError> {
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
            common: Common::from_layered(layered)?,
            listen_addr: layered.get(&LISTEN_ADDR)?,
            instance_id,
            heartbeat_interval: layered
                .get_duration(&HEARTBEAT_INTERVAL, Duration::from_secs(1)..=Duration::from_secs(300))?,
            retry_interval: layered
                .get_duration(&RETRY_INTERVAL, Duration::from_millis(100)..=Duration::from_secs(60))?,
            max_connections: layered.get_in_range(&MAX_CONNECTIONS, 1..=10_000_000)?,
            max_topics_per_connection: layered.get_in_range(&MAX_TOPICS_PER_CONNECTION, 1..=1024)?,
            max_topic_bytes: max_topic_bytes(layered)?,
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
            admin_listen_addr: layered.get_with(&ADMIN_LISTEN_ADDR, |raw| match raw {
                "" => Some(None),
                off if off.eq_ignore_ascii_case("off") => Some(None),
                addr => addr.parse().ok().map(Some),
            })?,
            admin_token: match layered.get_optional(&ADMIN_TOKEN) {
                None => None,
                Some(token) if token.chars().count() >= MIN_ADMIN_TOKEN_CHARS => {
                    Some(SecretString::from(token))
                }
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        setting: ADMIN_TOKEN.name.into(),
                        value: "(hidden)".into(),
                        allowed: ADMIN_TOKEN.allowed.into(),
                    });
                }
            },
            ingest: IngestNames::from_layered(layered)?,
            demo_page: layered.get_with(&DEMO_PAGE, parse_bool)?,
            access: AccessConfig::from_layered(layered)?,
            limits: Limits::from_layered(layered)?,
            tls: tls_files(layered)?,
        };
        config.check_pairs()?;
        Ok(config)
    }
}

impl GatewayConfig {
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
        assert_eq!(config.admin_listen_addr, Some("127.0.0.1:9080".parse().unwrap()));
        assert!(config.access.is_open() && !config.demo_page);
        assert_eq!(config.limits.max_stream_lifetime, None);
        assert_eq!(config.queue_bytes, 8 << 20);
        assert_ne!(config.instance_id, GatewayConfig::with_overrides(&[]).unwrap().instance_id);
    }

    #[test]
    fn an_open_gateway_on_a_public_address_is_warned_about_and_a_private_one_is_not() {
        let exposed = GatewayConfig::with_overrides(&[
            ("LISTEN_ADDR", "0.0.0.0:8080"),
            ("ADMIN_LISTEN_ADDR", "0.0.0.0:9080"),
            ("SUBSCRIBE_AUTH", "none"),
        ])
        .unwrap();
        let warnings = crate::startup::exposure_warnings(&exposed);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("ANYONE who reaches this port can read EVERY topic"));
        assert!(warnings[1].contains("without ADMIN_TOKEN"));
        let private = GatewayConfig::with_overrides(&[("LISTEN_ADDR", "127.0.0.1:8080")]).unwrap();
        assert!(crate::startup::exposure_warnings(&private).is_empty());
    }

    #[test]
    fn a_queue_smaller_than_a_replay_batch_is_rejected() {
        let error =
            GatewayConfig::with_overrides(&[("QUEUE_SIZE", "100"), ("REPLAY_BATCH", "500")]).unwrap_err();
        assert!(error.to_string().starts_with("QUEUE_SIZE=100 and REPLAY_BATCH=500 conflict: "), "{error}");
    }

    #[test]
    fn access_settings_of_another_mode_are_refused() {
        let error =
            GatewayConfig::with_overrides(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")]).unwrap_err();
        assert!(
            error.to_string().starts_with("SUBSCRIBE_AUTH=none and JWT_SECRET=(set) conflict"),
            "{error}"
        );
        let error = GatewayConfig::with_overrides(&[("SUBSCRIBE_AUTH", "jwt")]).unwrap_err();
        assert!(error.to_string().contains("set JWT_SECRET"), "{error}");
        let error =
            GatewayConfig::with_overrides(&[("SUBSCRIBE_AUTH", "jwt"), ("JWT_SECRET", "short")]).unwrap_err();
        assert!(!error.to_string().contains("short"), "the secret is never printed: {error}");
        let error = GatewayConfig::with_overrides(&[("SUBSCRIBE_AUTH", "hook")]).unwrap_err();
        assert!(error.to_string().starts_with("invalid SUBSCRIBE_AUTH_URL"), "{error}");
    }

    #[test]
    fn the_admin_listener_can_be_turned_off_and_limits_parse() {
        for off in ["off", "", "OFF"] {
            let config = GatewayConfig::with_overrides(&[("ADMIN_LISTEN_ADDR", off)]).unwrap();
            assert_eq!(config.admin_listen_addr, None);
        }
        assert!(GatewayConfig::with_overrides(&[("ADMIN_TOKEN", "short")]).is_err());
        assert!(GatewayConfig::with_overrides(&[("MAX_STREAM_LIFETIME", "500ms")]).is_err());
        let config =
            GatewayConfig::with_overrides(&[("MAX_STREAM_LIFETIME", "1h"), ("SUBSCRIBE_RATE_PER_IP", "0.5")])
                .unwrap();
        assert_eq!(config.limits.max_stream_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(config.limits.subscribe_rate_per_ip, 0.5);
        assert!(GatewayConfig::with_overrides(&[("MAX_HEADER_BYTES", "4KiB")]).is_err());
        assert!(GatewayConfig::with_overrides(&[("TRUSTED_PROXIES", "not-an-ip")]).is_err());
    }

    #[test]
    fn ingest_names_default_to_the_producers_and_refuse_control_characters() {
        let config = GatewayConfig::with_overrides(&[]).unwrap();
        assert_eq!(config.ingest.stream, "streamgate:ingest");
        assert_eq!(config.ingest.group, "streamgate-producers");
        assert_eq!(config.ingest.dead_letter, "streamgate:ingest:dead");
        let error = GatewayConfig::with_overrides(&[("INGEST_GROUP", "a\nb")]).unwrap_err();
        assert!(error.to_string().starts_with("invalid INGEST_GROUP="), "{error}");
        let error = GatewayConfig::with_overrides(&[("INGEST_STREAM", "")]).unwrap_err();
        assert!(error.to_string().starts_with("invalid INGEST_STREAM="), "{error}");
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
