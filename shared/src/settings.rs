//! Settings every service shares, and the one way a binary stops on bad configuration.
//!
//! Each setting's documentation is its own `help` and `allowed` text (what `--help`, the
//! error messages and the README show), not a doc comment repeating them.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{ConfigError, EXIT_BAD_CONFIG, Layered, Secret, Setting};
use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::redis::{Node, Topology};
use crate::telemetry::LogFormat;
use crate::traces::{OtlpCertificate, TracesConfig, parse_ratio};

pub const REDIS_URL: Setting = Setting {
    name: "REDIS_URL",
    default: "redis://127.0.0.1:6379",
    allowed: "a Redis URL such as redis://[:password@]host:port[/db] or rediss://... for TLS",
    help: "The Redis server holding histories, memberships and instance streams.",
};

pub const REDIS_PASSWORD_FILE: Setting = Setting {
    name: "REDIS_PASSWORD_FILE",
    default: "",
    allowed: "the path of a readable file holding the password (one trailing line break is dropped)",
    help: "Redis password read from a file (a Docker or Kubernetes secret) and put into REDIS_URL, \
           whose own password must then be empty: REDIS_URL=redis://producer@redis:6379.",
};

pub const KEY_PREFIX: Setting = Setting {
    name: "KEY_PREFIX",
    default: DEFAULT_PREFIX,
    allowed: "1 to 64 characters of ASCII letters, digits, ':', '.', '_' or '-'",
    help: "Prefix of every Redis key Streamgate writes (not the ingest stream).",
};

pub const REDIS_POOL_SIZE: Setting = Setting {
    name: "REDIS_POOL_SIZE",
    default: "16",
    allowed: "a whole number from 1 to 1024",
    help: "Maximum pooled Redis connections (blocking readers have their own).",
};

pub const LOG_FORMAT: Setting = Setting {
    name: "LOG_FORMAT",
    default: "text",
    allowed: "text or json",
    help: "Log output format on stderr. The filter is RUST_LOG (default info).",
};

pub const REDIS_CLUSTER_NODES: Setting = Setting {
    name: "REDIS_CLUSTER_NODES",
    default: "",
    allowed: "a comma-separated list of host:port seed nodes of a Redis Cluster",
    help: "Connect to a Redis Cluster through these seed nodes; REDIS_URL then supplies only the \
           user, password and TLS (rediss://).",
};

pub const REDIS_SENTINEL_NODES: Setting = Setting {
    name: "REDIS_SENTINEL_NODES",
    default: "",
    allowed: "a comma-separated list of host:port Sentinels",
    help: "Ask these Redis Sentinels for the primary named by REDIS_SENTINEL_MASTER (and again after \
           a failover); REDIS_URL then supplies only the user, password, database and TLS.",
};

pub const REDIS_SENTINEL_MASTER: Setting = Setting {
    name: "REDIS_SENTINEL_MASTER",
    default: "",
    allowed: "the master name the Sentinels monitor (set with REDIS_SENTINEL_NODES)",
    help: "The name of the primary the Sentinels of REDIS_SENTINEL_NODES watch.",
};

/// `OTEL_EXPORTER_OTLP_ENDPOINT` (the OpenTelemetry SDK's own name).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: Setting = Setting {
    name: "OTEL_EXPORTER_OTLP_ENDPOINT",
    default: "",
    allowed: "an http:// or https:// URL of an OTLP/gRPC collector, such as http://otel-collector:4317",
    help: "Export spans over OTLP/gRPC to this collector (https:// for TLS); empty: no export, and \
           no trace context in routed entries.",
};

/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (the OpenTelemetry SDK's own name).
pub const OTEL_EXPORTER_OTLP_CERTIFICATE: Setting = Setting {
    name: "OTEL_EXPORTER_OTLP_CERTIFICATE",
    default: "",
    allowed: "the path of a readable PEM file of CA certificates",
    help: "The CA certificates an https:// collector is verified with, instead of the system's \
           trust store.",
};

/// `OTEL_TRACES_SAMPLER` (the OpenTelemetry SDK's own name and values).
pub const OTEL_TRACES_SAMPLER: Setting = Setting {
    name: "OTEL_TRACES_SAMPLER",
    default: "parentbased_traceidratio",
    allowed: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or \
              parentbased_traceidratio",
    help: "Which traces are kept (with OTEL_EXPORTER_OTLP_ENDPOINT set).",
};

/// `OTEL_TRACES_SAMPLER_ARG` (the OpenTelemetry SDK's own name).
pub const OTEL_TRACES_SAMPLER_ARG: Setting = Setting {
    name: "OTEL_TRACES_SAMPLER_ARG",
    default: "0.01",
    allowed: "a ratio from 0 to 1, such as 0.01",
    help: "The fraction of traces the ratio samplers keep.",
};

// --- Settings several services read (not all of them), each beside its one reading, so
// that the range in `allowed` and the range checked cannot drift apart. ---

/// `MAX_TOPIC_BYTES`: gateways and producers refuse longer topic names; the janitor leaves
/// keys naming one alone. Read it with [`max_topic_bytes`].
pub const MAX_TOPIC_BYTES: Setting = Setting {
    name: "MAX_TOPIC_BYTES",
    default: "256",
    allowed: "a whole number from 1 to 4096",
    help: "The longest topic name, in bytes: gateways and producers refuse longer ones (400), the \
           janitor reports keys naming one and leaves them alone. Keep it equal on every service.",
};

/// The value of [`MAX_TOPIC_BYTES`].
pub fn max_topic_bytes(layered: &Layered) -> Result<usize, ConfigError> {
    layered.get_in_range(&MAX_TOPIC_BYTES, 1..=4096)
}

/// `HISTORY_MAX_LEN`: producers trim on append, the janitor on its sweep. Read it with
/// [`Retention::from_layered`].
pub const HISTORY_MAX_LEN: Setting = Setting {
    name: "HISTORY_MAX_LEN",
    default: "10000",
    allowed: "a whole number; 0 means unlimited",
    help: "Events kept per topic history (trimmed approximately, so appends stay O(1)). Keep the \
           janitor's equal to the producers'.",
};

/// `HISTORY_MAX_AGE`: producers trim on append, the janitor trims and deletes idle
/// histories. Read it with [`Retention::from_layered`].
pub const HISTORY_MAX_AGE: Setting = Setting {
    name: "HISTORY_MAX_AGE",
    default: "24h",
    allowed: "a duration such as 90s, 30m or 24h; 0 means unlimited",
    help: "Events older than this are trimmed from a topic's history (approximately, by Redis' \
           clock): by producers on its next publish, by the janitor on its sweep, which also \
           deletes a history idle this long with no subscribers. 0: nothing is trimmed by age \
           and no history is deleted.",
};

/// A topic history's retention ([`HISTORY_MAX_LEN`], [`HISTORY_MAX_AGE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events kept per history; `None` for no limit.
    pub max_len: Option<u64>,
    /// Age after which events are trimmed and an idle history deleted; `None` for no limit
    /// (then no history is ever deleted as idle).
    pub max_age: Option<Duration>,
}

impl Retention {
    /// The retention the two settings give; `0` is no limit.
    pub fn from_layered(layered: &Layered) -> Result<Retention, ConfigError> {
        let max_age = layered.get_duration(&HISTORY_MAX_AGE, Duration::ZERO..=Duration::MAX)?;
        Ok(Retention {
            max_len: Some(layered.get::<u64>(&HISTORY_MAX_LEN)?).filter(|&len| len > 0),
            max_age: (!max_age.is_zero()).then_some(max_age),
        })
    }
}

/// The settings in [`Common`].
pub const COMMON: [Setting; 12] = [
    REDIS_URL,
    KEY_PREFIX,
    REDIS_POOL_SIZE,
    LOG_FORMAT,
    REDIS_PASSWORD_FILE,
    REDIS_CLUSTER_NODES,
    REDIS_SENTINEL_NODES,
    REDIS_SENTINEL_MASTER,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
];

/// The shared settings ([`COMMON`]) followed by a service's `own`: how each service builds
/// its list of every setting, so the shared ones are named in one place only.
///
/// `N` is the length of the whole list, `COMMON.len() + own.len()`; any other `N` stops
/// the build (the constant cannot be evaluated):
///
/// ```
/// use streamgate::config::Setting;
/// use streamgate::settings::{COMMON, with_common};
///
/// const OWN: &[Setting] = &[Setting { name: "PORT", default: "80", allowed: "a port", help: "Port." }];
/// const SETTINGS: &[Setting] = &with_common::<{ COMMON.len() + OWN.len() }>(OWN);
/// assert_eq!(SETTINGS[0].name, "REDIS_URL");
/// assert_eq!(SETTINGS[COMMON.len()].name, "PORT");
/// ```
pub const fn with_common<const N: usize>(own: &[Setting]) -> [Setting; N] {
    assert!(COMMON.len() + own.len() == N, "N must be COMMON.len() + own.len()");
    let mut all = [Setting { name: "", default: "", allowed: "", help: "" }; N];
    let mut index = 0;
    while index < N {
        all[index] = if index < COMMON.len() { COMMON[index] } else { own[index - COMMON.len()] };
        index += 1;
    }
    all
}

/// The typed values of the shared settings. Its `Debug` output hides the Redis password.
#[derive(Clone)]
pub struct Common {
    /// Redis URL, with the password of `REDIS_PASSWORD_FILE` when that is set. It may hold
    /// a password: log [`crate::redis::redacted_url`] of it, never the URL itself.
    pub redis_url: String,
    /// How the Redis nodes are found: one server, a cluster or Sentinels. With a cluster or
    /// Sentinels, `redis_url` supplies only credentials, database and TLS.
    pub redis_topology: Topology,
    /// Key schema.
    pub keys: Keys,
    /// Pool size.
    pub redis_pool_size: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Span export and sampling (`OTEL_*`).
    pub traces: TracesConfig,
}

impl Common {
    /// Types the shared settings.
    pub fn from_layered(layered: &Layered) -> Result<Common, ConfigError> {
        Ok(Common {
            redis_url: redis_url(layered)?,
            redis_topology: topology(layered)?,
            keys: layered.get_with(&KEY_PREFIX, |raw| Keys::new(raw).ok())?,
            redis_pool_size: layered.get_in_range(&REDIS_POOL_SIZE, 1..=1024)?,
            log_format: layered.get(&LOG_FORMAT)?,
            traces: traces(layered)?,
        })
    }
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("redis_url", &crate::redis::redacted_url(&self.redis_url))
            .field("redis_topology", &self.redis_topology)
            .field("keys", &self.keys)
            .field("redis_pool_size", &self.redis_pool_size)
            .field("log_format", &self.log_format)
            .field("traces", &self.traces)
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

/// `REDIS_CLUSTER_NODES`, or `REDIS_SENTINEL_NODES` with `REDIS_SENTINEL_MASTER`, or
/// neither: one server at `REDIS_URL`.
fn topology(layered: &Layered) -> Result<Topology, ConfigError> {
    let nodes = |setting: &Setting| -> Result<Option<Vec<Node>>, ConfigError> {
        let raw = layered.raw(setting).trim();
        if raw.is_empty() {
            return Ok(None);
        }
        Node::parse_list(raw).map(Some).ok_or_else(|| ConfigError::Invalid {
            setting: setting.name.to_owned(),
            value: raw.to_owned(),
            allowed: setting.allowed.to_owned(),
        })
    };
    let cluster = nodes(&REDIS_CLUSTER_NODES)?;
    let sentinels = nodes(&REDIS_SENTINEL_NODES)?;
    let master = layered.raw(&REDIS_SENTINEL_MASTER).trim().to_owned();
    let conflict = |first: &Setting, second: &Setting, reason: &str| ConfigError::Conflict {
        first: format!("{}={}", first.name, layered.raw(first).trim()),
        second: format!("{}={}", second.name, layered.raw(second).trim()),
        reason: reason.to_owned(),
    };
    match (cluster, sentinels) {
        (Some(_), Some(_)) => Err(conflict(
            &REDIS_CLUSTER_NODES,
            &REDIS_SENTINEL_NODES,
            "Redis is either a cluster or watched by Sentinels; set one of them",
        )),
        (Some(_), None) if !master.is_empty() => Err(conflict(
            &REDIS_CLUSTER_NODES,
            &REDIS_SENTINEL_MASTER,
            "a Redis Cluster has no Sentinel master name; unset REDIS_SENTINEL_MASTER",
        )),
        (Some(nodes), None) => Ok(Topology::Cluster { nodes }),
        (None, Some(_)) if master.is_empty() => Err(ConfigError::Invalid {
            setting: REDIS_SENTINEL_MASTER.name.to_owned(),
            value: String::new(),
            allowed: "the master name the Sentinels monitor, required with REDIS_SENTINEL_NODES".to_owned(),
        }),
        (None, Some(nodes)) => Ok(Topology::Sentinel { nodes, master }),
        (None, None) if !master.is_empty() => Err(ConfigError::Invalid {
            setting: REDIS_SENTINEL_NODES.name.to_owned(),
            value: String::new(),
            allowed: "the Sentinels' host:port list, required with REDIS_SENTINEL_MASTER".to_owned(),
        }),
        (None, None) => Ok(Topology::Single),
    }
}

/// The `OTEL_*` settings. A certificate without an `https://` endpoint would be silently
/// unused, so it is refused.
fn traces(layered: &Layered) -> Result<TracesConfig, ConfigError> {
    let otlp_endpoint = layered.get_with(&OTEL_EXPORTER_OTLP_ENDPOINT, |raw| {
        if raw.is_empty() {
            return Some(None);
        }
        let url = url::Url::parse(raw).ok()?;
        let usable =
            matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty());
        usable.then(|| Some(raw.to_owned()))
    })?;
    let certificate_path = layered.raw(&OTEL_EXPORTER_OTLP_CERTIFICATE).trim();
    let otlp_certificate = if certificate_path.is_empty() {
        None
    } else {
        let invalid = |why: String| ConfigError::Invalid {
            setting: OTEL_EXPORTER_OTLP_CERTIFICATE.name.to_owned(),
            value: certificate_path.to_owned(),
            allowed: format!("{} ({why})", OTEL_EXPORTER_OTLP_CERTIFICATE.allowed),
        };
        let pem = std::fs::read(certificate_path).map_err(|error| invalid(error.to_string()))?;
        if !pem.windows(PEM_CERTIFICATE.len()).any(|window| window == PEM_CERTIFICATE) {
            return Err(invalid("no PEM certificate in it".to_owned()));
        }
        if !otlp_endpoint.as_deref().is_some_and(|endpoint| endpoint.starts_with("https://")) {
            return Err(ConfigError::Conflict {
                first: format!("{}={certificate_path}", OTEL_EXPORTER_OTLP_CERTIFICATE.name),
                second: format!("{}={}", OTEL_EXPORTER_OTLP_ENDPOINT.name, otlp_endpoint.unwrap_or_default()),
                reason: "a CA certificate is only used with an https:// endpoint".to_owned(),
            });
        }
        Some(OtlpCertificate { path: certificate_path.to_owned(), pem })
    };
    Ok(TracesConfig {
        otlp_endpoint,
        otlp_certificate,
        sampler: layered.get(&OTEL_TRACES_SAMPLER)?,
        ratio: layered.get_with(&OTEL_TRACES_SAMPLER_ARG, parse_ratio)?,
    })
}

/// What every PEM certificate starts with.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// `url` with `password` in it, if it is a TCP URL without a password of its own.
fn with_password(url: &str, password: &Secret) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.password().is_some() {
        return None;
    }
    parsed.set_password(Some(password.expose())).ok()?;
    crate::redis::validate_url(parsed.as_str())
}

/// Prints `error` as the one line on stderr and returns the exit code of a process stopped
/// by bad configuration, for `main` to return: each binary ends by returning its
/// [`ExitCode`], never by `std::process::exit`, so whatever is set up so far is dropped.
pub fn bad_config(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_BAD_CONFIG)
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
    fn cluster_and_sentinel_nodes_are_parsed_and_their_conflicts_named() {
        let single = load(&[]).unwrap();
        assert_eq!(single.redis_topology, Topology::Single);
        let cluster = load(&[("REDIS_CLUSTER_NODES", "10.0.0.1:7000, redis-1:7001")]).unwrap();
        assert_eq!(
            cluster.redis_topology,
            Topology::Cluster { nodes: vec![Node::new("10.0.0.1", 7000), Node::new("redis-1", 7001)] }
        );
        let sentinel =
            load(&[("REDIS_SENTINEL_NODES", "s1:26379,s2:26379"), ("REDIS_SENTINEL_MASTER", "mymaster")])
                .unwrap();
        assert_eq!(
            sentinel.redis_topology,
            Topology::Sentinel {
                nodes: vec![Node::new("s1", 26379), Node::new("s2", 26379)],
                master: "mymaster".to_owned()
            }
        );
        for (pairs, named) in [
            (&[("REDIS_CLUSTER_NODES", "host")][..], "invalid REDIS_CLUSTER_NODES=\"host\""),
            (&[("REDIS_CLUSTER_NODES", "host:0")][..], "invalid REDIS_CLUSTER_NODES"),
            (&[("REDIS_CLUSTER_NODES", "a:1,,b:2")][..], "invalid REDIS_CLUSTER_NODES"),
            (&[("REDIS_SENTINEL_NODES", "s1:x")][..], "invalid REDIS_SENTINEL_NODES"),
            (&[("REDIS_SENTINEL_NODES", "s1:26379")][..], "invalid REDIS_SENTINEL_MASTER"),
            (&[("REDIS_SENTINEL_MASTER", "mymaster")][..], "invalid REDIS_SENTINEL_NODES"),
            (
                &[
                    ("REDIS_CLUSTER_NODES", "a:1"),
                    ("REDIS_SENTINEL_NODES", "s:2"),
                    ("REDIS_SENTINEL_MASTER", "m"),
                ][..],
                "REDIS_CLUSTER_NODES=a:1 and REDIS_SENTINEL_NODES=s:2 conflict",
            ),
            (
                &[("REDIS_CLUSTER_NODES", "a:1"), ("REDIS_SENTINEL_MASTER", "m")][..],
                "REDIS_CLUSTER_NODES=a:1 and REDIS_SENTINEL_MASTER=m conflict",
            ),
        ] {
            let error = load(pairs).unwrap_err().to_string();
            assert!(error.starts_with(named), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn traces_default_to_no_export_and_a_one_percent_parent_based_ratio() {
        let traces = load(&[]).unwrap().traces;
        assert_eq!(traces, TracesConfig::default());
        assert!(!traces.exporting());
        assert_eq!(traces.sampler, crate::traces::SamplerKind::ParentBasedTraceIdRatio);
        assert_eq!(traces.ratio, 0.01);
    }

    #[test]
    fn traces_settings_are_validated_naming_the_setting() {
        let mut ca = tempfile::NamedTempFile::new().unwrap();
        writeln!(ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").unwrap();
        let ca = ca.path().to_str().unwrap().to_owned();
        let not_pem = tempfile::NamedTempFile::new().unwrap();
        let not_pem = not_pem.path().to_str().unwrap().to_owned();
        let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317");
        let ok = load(&[https, ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca), ("OTEL_TRACES_SAMPLER_ARG", "1")])
            .unwrap()
            .traces;
        assert_eq!(ok.otlp_endpoint.as_deref(), Some("https://collector:4317"));
        assert_eq!(ok.otlp_certificate.unwrap().path, ca);
        assert_eq!(ok.ratio, 1.0);
        for (pairs, named) in [
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")], "invalid OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://c:4317")], "invalid OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![("OTEL_TRACES_SAMPLER", "sometimes")], "invalid OTEL_TRACES_SAMPLER=\"sometimes\""),
            (vec![("OTEL_TRACES_SAMPLER_ARG", "2")], "invalid OTEL_TRACES_SAMPLER_ARG=\"2\""),
            (
                vec![https, ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such.pem")],
                "invalid OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            (
                vec![https, ("OTEL_EXPORTER_OTLP_CERTIFICATE", &not_pem)],
                "invalid OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
                ],
                "OTEL_EXPORTER_OTLP_CERTIFICATE=",
            ),
        ] {
            let error = load(&pairs).unwrap_err().to_string();
            assert!(error.starts_with(named), "{pairs:?}: {error}");
        }
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
