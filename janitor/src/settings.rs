//! The janitor's settings: the shared ones, the retention it enforces (same names and
//! meaning as the producer's), and the bounds of one sweep.
//!
//! Values are merged by [`streamgate::config::Layered`] (defaults < TOML file < environment
//! < flags) and typed here, once; an invalid value is a [`ConfigError`] naming the setting.
//!
//! Each setting's documentation is its own `help` and `allowed` text (what `--help`, the
//! error messages and the README show), not a doc comment repeating them.

use std::time::Duration;

use streamgate::config::{ConfigError, Layered, ServiceConfig, Setting, parse_bool};
use streamgate::settings::{
    COMMON, Common, HISTORY_MAX_AGE, HISTORY_MAX_LEN, MAX_TOPIC_BYTES, Retention, max_topic_bytes,
    with_common,
};

use crate::instances::MIN_CLAIM_TTL;
use crate::sweep::SweepSettings;

pub const SWEEP_BUDGET: Setting = Setting {
    name: "SWEEP_BUDGET",
    default: "100000",
    allowed: "a whole number from 1 to 1000000000",
    help: "Most keys one sweep examines; the next full pass resumes where this one stopped.",
};

pub const SCAN_COUNT: Setting = Setting {
    name: "SCAN_COUNT",
    default: "500",
    allowed: "a whole number from 1 to 10000",
    help: "The COUNT of each SCAN, SSCAN and HSCAN, and the size of each batch of keys.",
};

pub const FULL_SCAN: Setting = Setting {
    name: "FULL_SCAN",
    default: "true",
    allowed: "true or false",
    help: "Also SCAN the keyspace for orphans no index names (otherwise only the instance and \
           topic indexes are swept).",
};

pub const SWEEP_CLAIM_TTL: Setting = Setting {
    name: "SWEEP_CLAIM_TTL",
    default: "60s",
    allowed: "a duration from 3s to 1h",
    help: "How long a janitor's claim on a dead gateway lives unless extended (before every batch). \
           A gateway restarting under that id waits at most this long for a janitor that died; a \
           janitor paused longer removes nothing more (its removals are fenced by Redis' clock).",
};

/// Every setting the janitor reads, shared ones first.
pub const SETTINGS: &[Setting] = &with_common::<{ COMMON.len() + OWN.len() }>(OWN);

/// The settings only the janitor reads.
const OWN: &[Setting] = &[
    HISTORY_MAX_LEN,
    HISTORY_MAX_AGE,
    SWEEP_BUDGET,
    SCAN_COUNT,
    FULL_SCAN,
    MAX_TOPIC_BYTES,
    SWEEP_CLAIM_TTL,
];

/// The janitor's configuration, typed.
#[derive(Debug, Clone)]
pub struct JanitorConfig {
    /// Settings every service shares (Redis URL, key schema, pool size, log format).
    pub common: Common,
    /// What one sweep enforces and how much it may do.
    pub sweep: SweepSettings,
}

impl ServiceConfig for JanitorConfig {
    const SETTINGS: &'static [Setting] = SETTINGS;

    fn from_layered(layered: &Layered) -> Result<JanitorConfig, ConfigError> {
        let sweep = SweepSettings {
            retention: Retention::from_layered(layered)?,
            budget: layered.get_in_range(&SWEEP_BUDGET, 1..=1_000_000_000)?,
            scan_count: layered.get_in_range(&SCAN_COUNT, 1..=10_000)?,
            full_scan: layered.get_with(&FULL_SCAN, parse_bool)?,
            max_topic_bytes: max_topic_bytes(layered)?,
            claim_ttl: layered.get_duration(&SWEEP_CLAIM_TTL, MIN_CLAIM_TTL..=Duration::from_secs(3600))?,
        };
        Ok(JanitorConfig { common: Common::from_layered(layered)?, sweep })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = JanitorConfig::with_overrides(&[]).unwrap();
        assert_eq!(config.sweep.retention.max_len, Some(10_000));
        assert_eq!(config.sweep.retention.max_age, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(config.sweep.budget, 100_000);
        assert_eq!(config.sweep.scan_count, 500);
        assert!(config.sweep.full_scan);
        assert_eq!(config.sweep.max_topic_bytes, 256);
        assert_eq!(config.sweep.claim_ttl, Duration::from_secs(60));
    }

    #[test]
    fn zero_means_unlimited_retention() {
        let config =
            JanitorConfig::with_overrides(&[("HISTORY_MAX_LEN", "0"), ("HISTORY_MAX_AGE", "0")]).unwrap();
        assert_eq!(config.sweep.retention, Retention { max_len: None, max_age: None });
    }

    #[test]
    fn invalid_values_name_the_setting() {
        for (name, value) in [
            ("SWEEP_BUDGET", "0"),
            ("SCAN_COUNT", "lots"),
            ("FULL_SCAN", "perhaps"),
            ("HISTORY_MAX_AGE", "soon"),
            ("SWEEP_CLAIM_TTL", "2s"),
        ] {
            let error = JanitorConfig::with_overrides(&[(name, value)]).unwrap_err().to_string();
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
