//! Settings every service shares, and the one way a binary stops on bad configuration.

use crate::config::{ConfigError, EXIT_BAD_CONFIG, Layered, Setting};
use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::telemetry::LogFormat;

/// `REDIS_URL`.
pub const REDIS_URL: Setting = Setting {
    name: "REDIS_URL",
    default: "redis://127.0.0.1:6379",
    allowed: "a Redis URL such as redis://[:password@]host:port[/db] or rediss://... for TLS",
    help: "The Redis server holding histories, memberships and instance streams.",
};

/// `KEY_PREFIX`.
pub const KEY_PREFIX: Setting = Setting {
    name: "KEY_PREFIX",
    default: DEFAULT_PREFIX,
    allowed: "1 to 64 characters of ASCII letters, digits, ':', '.', '_' or '-'",
    help: "Prefix of every Redis key Streamgate writes (not the ingest stream).",
};

/// `REDIS_POOL_SIZE`.
pub const REDIS_POOL_SIZE: Setting = Setting {
    name: "REDIS_POOL_SIZE",
    default: "16",
    allowed: "a whole number from 1 to 1024",
    help: "Maximum pooled Redis connections (blocking readers have their own).",
};

/// `LOG_FORMAT`.
pub const LOG_FORMAT: Setting = Setting {
    name: "LOG_FORMAT",
    default: "text",
    allowed: "text or json",
    help: "Log output format on stderr. The filter is RUST_LOG (default info).",
};

/// The settings in [`Common`].
pub const COMMON: [Setting; 4] = [REDIS_URL, KEY_PREFIX, REDIS_POOL_SIZE, LOG_FORMAT];

/// The typed values of the shared settings.
#[derive(Debug, Clone)]
pub struct Common {
    /// Redis URL.
    pub redis_url: String,
    /// Key schema.
    pub keys: Keys,
    /// Pool size.
    pub redis_pool_size: usize,
    /// Log format.
    pub log_format: LogFormat,
}

impl Common {
    /// Types the shared settings.
    pub fn from_layered(layered: &Layered) -> Result<Common, ConfigError> {
        Ok(Common {
            redis_url: layered.get_with(&REDIS_URL, crate::redis::validate_url)?,
            keys: layered.get_with(&KEY_PREFIX, |raw| Keys::new(raw).ok())?,
            redis_pool_size: layered.get_in_range(&REDIS_POOL_SIZE, 1..=1024)?,
            log_format: layered.get(&LOG_FORMAT)?,
        })
    }
}

/// Unwraps a configuration result, or prints the one-line error and exits with code 2.
pub fn or_exit<T>(result: Result<T, ConfigError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    }
}
