//! Redis connections: [`Redis`] for ordinary commands and dedicated connections for blocking
//! reads, on one server, a Redis Cluster or behind Sentinels ([`Topology`]), start-up checks, and the reconnect policy (capped exponential backoff with one log
//! line per state change, not per retry).
//!
//! redis-rs gives async connections a 500 ms response timeout by default, which breaks
//! `XREAD BLOCK`; blocking reads therefore get their own connection without a response
//! timeout, never a pool checkout, and a caller resumes from the last id it handled after a
//! reconnect.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use deadpool_redis::Runtime;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

mod handle;
mod pool;
mod topology;

pub use handle::{BlockingConnection, Conn, PRIMARY_RECHECK, Redis, SentinelBlocking, SentinelConn};
pub use pool::{Pool, connection_failed};
pub use topology::{Node, Topology};

/// How long to wait for a TCP connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The response timeout of pooled connections. Generous: a batch append script for a
/// thousand events is one command.
pub const POOLED_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pool checkout may wait for a free connection or a new one.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis error, or a pool that could not hand out a connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// A command or connection failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The pool could not hand out a connection.
    #[error("redis pool: {0}")]
    Pool(String),
}

impl From<deadpool::managed::PoolError<redis::RedisError>> for RedisError {
    fn from(error: deadpool::managed::PoolError<redis::RedisError>) -> Self {
        match error {
            deadpool::managed::PoolError::Backend(error) => RedisError::Redis(error),
            other => RedisError::Pool(other.to_string()),
        }
    }
}

/// Parses and checks a Redis URL (`redis://`, `rediss://` for TLS, `redis+unix://`), with
/// optional user name, password and database: `redis://:secret@host:6379/0`.
pub fn validate_url(url: &str) -> Option<String> {
    use redis::IntoConnectionInfo as _;
    url.into_connection_info().ok().map(|_| url.to_owned())
}

/// The URL as it may appear in logs and error messages: a password is replaced by `***`.
/// Text that is no URL at all is shown with everything between `://` and the last `@`
/// hidden, as that is where a password would be.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url).ok().filter(|parsed| parsed.has_host() || !url.contains('@')) {
        Some(mut parsed) if parsed.password().is_some() => {
            // Fails only for URLs that cannot have a password, and this one has one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Some(parsed) if parsed.query().is_some_and(|query| query.contains("pass")) => {
            // `redis+unix:///path?pass=...`.
            let mut hidden = parsed.clone();
            hidden.set_query(Some("***"));
            hidden.to_string()
        }
        Some(_) => url.to_owned(),
        None => match (url.find("://"), url.rfind('@')) {
            (Some(start), Some(end)) if end > start => format!("{}***{}", &url[..start + 3], &url[end..]),
            (None, Some(end)) => format!("***{}", &url[end..]),
            _ => url.to_owned(),
        },
    }
}

/// Builds the pool for ordinary commands. Connections are made lazily.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, RedisError> {
    pool_with_response_timeout(url, max_size, POOLED_RESPONSE_TIMEOUT)
}

/// [`pool`] with another response timeout: how long a command may wait for its answer
/// before it fails with a timeout (the command may still run on the server afterwards).
pub fn pool_with_response_timeout(
    url: &str,
    max_size: usize,
    response_timeout: Duration,
) -> Result<Pool, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    let manager = pool::Manager::new(deadpool_redis::Manager::new_with_config(url, config)?);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|error| RedisError::Pool(error.to_string()))
}

/// Opens a dedicated connection for blocking commands (`XREAD BLOCK`, `XREADGROUP BLOCK`):
/// no response timeout. Never share it: other commands would wait behind the block.
pub async fn blocking_connection(url: &str) -> Result<MultiplexedConnection, RedisError> {
    let client = redis::Client::open(url)?;
    let config =
        AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT)).set_response_timeout(None);
    Ok(client.get_multiplexed_async_connection_with_config(&config).await?)
}

/// Pings Redis and warns loudly when its memory settings could hurt: an eviction policy
/// that could delete Streamgate's keys, or no `maxmemory` at all (on every cluster master).
pub async fn check_ready(redis: &Redis) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    // `INFO memory` rather than `CONFIG GET`: services run as users without admin
    // commands (deploy/redis/users.acl), and managed Redis services often forbid CONFIG.
    let masters = match conn.masters().await? {
        Some(masters) => masters.into_iter().map(Some).collect(),
        None => vec![None],
    };
    for master in masters {
        let info = conn.query_on(master.as_ref(), redis::cmd("INFO").arg("memory")).await;
        let info = info
            .map_err(|error| error.to_string())
            .and_then(|info| redis::from_redis_value::<String>(info).map_err(|error| error.to_string()));
        match info {
            Ok(info) => {
                for warning in memory_warnings(&info) {
                    match &master {
                        Some(node) => tracing::warn!(%node, "{warning}"),
                        None => tracing::warn!("{warning}"),
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "Could not read Redis' memory settings."),
        }
    }
    Ok(())
}

/// What is wrong with Redis' memory settings, from the text of `INFO memory`.
pub fn memory_warnings(info: &str) -> Vec<&'static str> {
    let field =
        |name: &str| info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
    let mut warnings = Vec::new();
    if let Some(policy) = field("maxmemory_policy")
        && policy != "noeviction"
    {
        warnings.push(
            "Redis maxmemory-policy is not noeviction: a full Redis will silently delete topic \
             histories and memberships, and clients will get reset events. Set maxmemory-policy \
             noeviction.",
        );
    }
    if field("maxmemory") == Some("0") {
        warnings.push(
            "Redis maxmemory is 0 (no limit): a Redis that outgrows the machine's memory is \
             killed or swaps instead of refusing writes. Set maxmemory (README, Deploy: sizing).",
        );
    }
    warnings
}

/// Capped exponential backoff with jitter, for the services' retry loops: backon's
/// policy for the delays, and a sleep that gives way to cancellation.
///
/// The loops keep their own shape (a reconnect label, an outage log, a reset after each
/// success), which a retry-a-closure helper would hide; what they share is here.
#[derive(Debug)]
pub struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max`; each delay gets up to as much again of
    /// random jitter, so reconnecting processes spread out.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let policy = ExponentialBuilder::default()
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff { policy, delays: policy.build() }
    }

    /// The default for Redis reconnects: 100 ms doubling to 5 s.
    pub fn redis() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(Duration::MAX)
    }

    /// Sleeps the next delay; `false` when `cancel` fired first.
    pub async fn pause(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.next_delay()) => true,
            () = cancel.cancelled() => false,
        }
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

/// Logs a dependency's outages once when they start and once when they end, never per retry.
#[derive(Debug)]
pub struct OutageLog {
    what: &'static str,
    down_since: Option<std::time::Instant>,
    failures: u64,
}

impl OutageLog {
    /// A log for `what` (for example "instance stream reader").
    pub fn new(what: &'static str) -> OutageLog {
        OutageLog { what, down_since: None, failures: 0 }
    }

    /// Records a failure; logs only the first of an outage.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.failures += 1;
        if self.down_since.is_none() {
            self.down_since = Some(std::time::Instant::now());
            tracing::warn!(component = self.what, %error, "Redis unavailable; retrying with backoff.");
        }
    }

    /// Records a success; logs the end of an outage. Returns whether one had been going on.
    pub fn recovered(&mut self) -> bool {
        let Some(since) = self.down_since.take() else {
            return false;
        };
        tracing::info!(
            component = self.what,
            outage_ms = since.elapsed().as_millis() as u64,
            failed_attempts = self.failures,
            "Redis available again."
        );
        self.failures = 0;
        true
    }

    /// Whether an outage is going on.
    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        for (delay, base) in delays.iter().zip([100u64, 200, 400, 400, 400]) {
            assert!(
                *delay >= Duration::from_millis(base) && *delay <= Duration::from_millis(base * 2),
                "{delays:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn urls_with_password_and_tls_are_accepted() {
        for url in ["redis://127.0.0.1:6379", "redis://:secret@host:6380/2", "rediss://user:pw@host:6380"] {
            assert!(validate_url(url).is_some(), "{url}");
        }
        for url in ["http://host", "not a url", ""] {
            assert!(validate_url(url).is_none(), "{url}");
        }
    }

    #[test]
    fn redacted_url_hides_only_the_password() {
        assert_eq!(redacted_url("redis://:secret@host:6380/2"), "redis://:***@host:6380/2");
        assert_eq!(redacted_url("redis://user:secret@host"), "redis://user:***@host");
        assert_eq!(redacted_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted_url("redis+unix:///tmp/r.sock?pass=secret"), "redis+unix:///tmp/r.sock?***");
        assert_eq!(redacted_url("redis://u:se cret@host:x"), "redis://***@host:x");
        assert_eq!(redacted_url("u:secret@host"), "***@host");
    }

    #[test]
    fn memory_warnings_name_eviction_and_no_limit() {
        let info = |maxmemory: &str, policy: &str| {
            format!("# Memory\r\nused_memory:1\r\nmaxmemory:{maxmemory}\r\nmaxmemory_policy:{policy}\r\n")
        };
        assert!(memory_warnings(&info("1073741824", "noeviction")).is_empty());
        assert_eq!(memory_warnings(&info("0", "noeviction")).len(), 1);
        assert!(memory_warnings(&info("0", "noeviction"))[0].contains("maxmemory is 0"));
        assert_eq!(memory_warnings(&info("1024", "allkeys-lru")).len(), 1);
        assert_eq!(memory_warnings(&info("0", "allkeys-lru")).len(), 2);
    }

    #[test]
    fn outage_log_reports_transitions_only() {
        let mut log = OutageLog::new("test");
        assert!(!log.recovered());
        log.failed(&"boom");
        log.failed(&"boom");
        assert!(log.is_down());
        assert!(log.recovered());
        assert!(!log.is_down());
    }
}
