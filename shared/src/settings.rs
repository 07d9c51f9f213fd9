//! Settings every service shares, and the one way a binary stops on bad configuration.

use crate::config::{ConfigError, EXIT_BAD_CONFIG, Layered, Secret, Setting};
use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::telemetry::LogFormat;

/// `REDIS_URL`.
pub const REDIS_URL: Setting = Setting {
    name: "REDIS_URL",
    default: "redis://127.0.0.1:6379",
    allowed: "a Redis URL such as redis://[:password@]host:port[/db] or rediss://... for TLS",
    help: "The Redis server holding histories, memberships and instance streams.",
};

/// `REDIS_PASSWORD_FILE`.
pub const REDIS_PASSWORD_FILE: Setting = Setting {
    name: "REDIS_PASSWORD_FILE",
    default: "",
    allowed: "the path of a readable file holding the password (one trailing line break is dropped)",
    help: "Redis password read from a file (a Docker or Kubernetes secret) and put into REDIS_URL, \
           whose own password must then be empty: REDIS_URL=redis://producer@redis:6379.",
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
pub const COMMON: [Setting; 5] = [REDIS_URL, KEY_PREFIX, REDIS_POOL_SIZE, LOG_FORMAT, REDIS_PASSWORD_FILE];

/// The typed values of the shared settings. Its `Debug` output hides the Redis password.
#[derive(Clone)]
pub struct Common {
    /// Redis URL, with the password of `REDIS_PASSWORD_FILE` when that is set. It may hold
    /// a password: log [`crate::redis::redacted_url`] of it, never the URL itself.
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
            redis_url: redis_url(layered)?,
            keys: layered.get_with(&KEY_PREFIX, |raw| Keys::new(raw).ok())?,
            redis_pool_size: layered.get_in_range(&REDIS_POOL_SIZE, 1..=1024)?,
            log_format: layered.get(&LOG_FORMAT)?,
        })
    }
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("redis_url", &crate::redis::redacted_url(&self.redis_url))
            .field("keys", &self.keys)
            .field("redis_pool_size", &self.redis_pool_size)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// `REDIS_URL`, with the password of `REDIS_PASSWORD_FILE` put in. An invalid URL is
/// quoted in the error with its password hidden.
fn redis_url(layered: &Layered) -> Result<String, ConfigError> {
    let raw = layered.raw(&REDIS_URL).trim();
    let invalid = |setting: &Setting, allowed: String| ConfigError::Invalid {
        setting: setting.name.to_owned(),
        value: crate::redis::redacted_url(raw),
        allowed,
    };
    let url =
        crate::redis::validate_url(raw).ok_or_else(|| invalid(&REDIS_URL, REDIS_URL.allowed.to_owned()))?;
    let Some(password) = layered.get_secret_file(&REDIS_PASSWORD_FILE)? else {
        return Ok(url);
    };
    with_password(&url, &password).ok_or_else(|| {
        invalid(
            &REDIS_URL,
            "a redis:// or rediss:// URL without a password of its own when REDIS_PASSWORD_FILE is set"
                .to_owned(),
        )
    })
}

/// `url` with `password` in it, if it is a TCP URL without a password of its own.
fn with_password(url: &str, password: &Secret) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.password().is_some() {
        return None;
    }
    parsed.set_password(Some(password.expose())).ok()?;
    crate::redis::validate_url(parsed.as_str())
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::config::Sources;

    fn load(pairs: &[(&str, &str)]) -> Result<Common, ConfigError> {
        Common::from_layered(&Layered::load(&COMMON, &Sources::from_pairs(pairs)).unwrap())
    }

    #[test]
    fn an_invalid_redis_url_is_quoted_without_its_password() {
        for url in [
            "redis://:hunter2@host:notaport",
            "http://user:hunter2@host:6379",
            "redis://user:hunter2@",
            "user:hunter2@host",
        ] {
            let error = load(&[("REDIS_URL", url)]).unwrap_err().to_string();
            assert!(error.starts_with("invalid REDIS_URL="), "{error}");
            assert!(!error.contains("hunter2") && !error.contains("hun ter2"), "{error}");
        }
    }

    #[test]
    fn debug_output_hides_the_redis_password() {
        let common = load(&[("REDIS_URL", "redis://producer:hunter2@redis:6379")]).unwrap();
        let debug = format!("{common:?}");
        assert!(debug.contains("producer:***@redis") && !debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn the_password_file_goes_into_the_url() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "p@ss:w/rd").unwrap();
        let path = file.path().to_str().unwrap();
        let common =
            load(&[("REDIS_URL", "redis://producer@redis:6379/0"), ("REDIS_PASSWORD_FILE", path)]).unwrap();
        use redis::IntoConnectionInfo as _;
        let info = common.redis_url.as_str().into_connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd"));
        assert_eq!(info.redis_settings().username(), Some("producer"));
        let both = load(&[("REDIS_URL", "redis://:inline@redis:6379"), ("REDIS_PASSWORD_FILE", path)])
            .unwrap_err()
            .to_string();
        assert!(both.contains("REDIS_PASSWORD_FILE") && !both.contains("inline"), "{both}");
    }
}
