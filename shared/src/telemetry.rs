//! Telemetry: the one place that installs the process-wide `tracing` subscriber.
//!
//! Every binary calls [`init`] once at start-up and keeps the returned [`TelemetryGuard`]
//! until it exits. The subscriber is an `EnvFilter` (from `RUST_LOG`, default `info`), a fmt
//! layer writing text or JSON to **stderr** — stdout is reserved for program output such as
//! the janitor's JSON report — and, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an
//! OpenTelemetry layer exporting spans over OTLP/gRPC (tonic), sampled as
//! `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` say ([`crate::traces`]). An `https://`
//! endpoint is reached over TLS (rustls on ring), verified against the system's trust
//! store, or against `OTEL_EXPORTER_OTLP_CERTIFICATE` alone when that is set.
//!
//! Spans are batched by the SDK's batch span processor and handed to the tonic exporter,
//! whose gRPC channel runs on the Tokio runtime that was current when [`init`] was called.
//! Before exit the caller flushes the pipeline with [`TelemetryGuard::shutdown`] (dropping
//! the guard does the same), so the last spans are not lost.

use std::env::{self, VarError};
use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, ParseError, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

use crate::traces::TracesConfig;

/// Environment variable holding the log filter directives (`tracing_subscriber` syntax).
pub const LOG_FILTER_ENV: &str = "RUST_LOG";

/// Filter used when `RUST_LOG` is unset or blank.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Crates that carry the OTLP export itself. Their spans are kept out of the OpenTelemetry
/// layer: exporting the spans of an export would feed the exporter its own traffic, which
/// under `RUST_LOG=trace` never settles.
const EXPORT_MACHINERY_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
];

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// Every accepted spelling, as listed in parse errors.
    pub const ALLOWED_VALUES: &'static [&'static str] = &["text", "json"];
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    /// Parses `text` or `json`, ignoring ASCII case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.eq_ignore_ascii_case("text") {
            return Ok(Self::Text);
        }
        if value.eq_ignore_ascii_case("json") {
            return Ok(Self::Json);
        }
        Err(TelemetryError::InvalidLogFormat { value: value.to_owned() })
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Everything that can go wrong while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A log format other than `text` or `json` was asked for.
    #[error("invalid log format {value:?}, expected one of: text, json")]
    InvalidLogFormat {
        /// The rejected input.
        value: String,
    },
    /// The `RUST_LOG` directives do not parse.
    #[error("invalid RUST_LOG filter {directives:?}")]
    InvalidFilter {
        /// The rejected directives.
        directives: String,
        /// What the parser objected to.
        #[source]
        source: ParseError,
    },
    /// An environment variable read by [`init`] holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid unicode")]
    NonUnicodeEnv {
        /// Name of the variable.
        name: &'static str,
    },
    /// OTLP export was asked for outside a Tokio runtime; the tonic channel needs one.
    #[error("otlp export needs a tokio runtime, call telemetry::init from inside one")]
    NoTokioRuntime,
    /// The OTLP span exporter could not be built (for example an invalid endpoint).
    #[error("failed to build the otlp span exporter for {endpoint:?}")]
    OtlpExporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's own error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Another global subscriber was installed first (telemetry initialised twice).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialised(#[source] TryInitError),
}

/// Keeps the OpenTelemetry pipeline alive; flush it with [`TelemetryGuard::shutdown`] before
/// the process exits.
///
/// Dropping the guard also flushes and shuts the pipeline down. Both block the calling
/// thread for up to a few seconds while the last spans are sent, and the export itself runs
/// on the Tokio runtime: call them from a multi-threaded runtime (the `#[tokio::main]`
/// default) or from `spawn_blocking`, never from the only thread of a current-thread runtime.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the span exporter down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Flushes pending spans and shuts the exporter down. Errors (collector unreachable,
    /// timeout) are reported on stderr: at exit there is no one left to return them to.
    pub fn shutdown(mut self) {
        self.shutdown_tracer_provider();
    }

    fn shutdown_tracer_provider(&mut self) {
        let Some(tracer_provider) = self.tracer_provider.take() else {
            return;
        };
        // stderr rather than `tracing`: the subscriber's exporter is what is being shut down.
        if let Err(error) = tracer_provider.force_flush() {
            eprintln!("telemetry: failed to flush spans: {error}");
        }
        if let Err(error) = tracer_provider.shutdown() {
            eprintln!("telemetry: failed to shut down the span exporter: {error}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown_tracer_provider();
    }
}

/// Installs the global subscriber: the log filter from `RUST_LOG` (default `info`), and
/// OTLP export as `traces` says (off without an endpoint).
///
/// When OTLP export is on this must be called from inside a Tokio runtime, which then
/// carries the gRPC channel; otherwise it returns [`TelemetryError::NoTokioRuntime`].
/// Call it once per process; a second call returns [`TelemetryError::AlreadyInitialised`].
pub fn init(
    service_name: &'static str,
    format: LogFormat,
    traces: &TracesConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = read_env(LOG_FILTER_ENV)?.unwrap_or_default();
    init_with(service_name, format, traces, &filter)
}

/// [`init`] with the log filter given explicitly instead of read from the environment:
/// directives in `RUST_LOG` syntax; blank means `info`.
pub fn init_with(
    service_name: &'static str,
    format: LogFormat,
    traces: &TracesConfig,
    filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = build_filter(filter)?;
    let tracer_provider = match &traces.otlp_endpoint {
        Some(_) => Some(build_tracer_provider(service_name, traces)?),
        None => None,
    };

    let otel_layer = tracer_provider.as_ref().map(|tracer_provider| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer_provider.tracer(service_name))
            .with_filter(filter_fn(is_application_telemetry))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(format))
        .with(otel_layer)
        .try_init()
        .map_err(TelemetryError::AlreadyInitialised)?;

    Ok(TelemetryGuard { tracer_provider })
}

/// Parses log filter directives (`RUST_LOG` syntax) without installing anything; blank
/// input means [`DEFAULT_LOG_FILTER`].
pub fn build_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    let directives = match directives.trim() {
        "" => DEFAULT_LOG_FILTER,
        directives => directives,
    };
    EnvFilter::builder()
        .parse(directives)
        .map_err(|source| TelemetryError::InvalidFilter { directives: directives.to_owned(), source })
}

/// Reads an environment variable: unset is `None`, non-UTF-8 is an error rather than
/// silently ignored configuration.
fn read_env(name: &'static str) -> Result<Option<String>, TelemetryError> {
    match env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => Err(TelemetryError::NonUnicodeEnv { name }),
    }
}

fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

fn is_application_telemetry(metadata: &Metadata<'_>) -> bool {
    !is_export_machinery(metadata.target())
}

/// Whether `target` is one of [`EXPORT_MACHINERY_TARGETS`] or one of their modules.
fn is_export_machinery(target: &str) -> bool {
    EXPORT_MACHINERY_TARGETS.iter().any(|machinery| {
        target.strip_prefix(machinery).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// An SDK tracer provider that samples as `traces` says, batches spans and exports them
/// over OTLP/gRPC to its endpoint (over TLS for `https://`).
fn build_tracer_provider(
    service_name: &'static str,
    traces: &TracesConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    // tonic spawns its channel worker with `tokio::spawn`, which would panic here.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoTokioRuntime);
    }
    let endpoint = traces.otlp_endpoint.as_deref().unwrap_or_default();
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        builder = builder.with_tls_config(tls_config(traces));
    }
    let exporter = builder
        .build()
        .map_err(|source| TelemetryError::OtlpExporter { endpoint: endpoint.to_owned(), source })?;
    let resource = Resource::builder().with_service_name(service_name).build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(traces.sampler())
        .with_batch_exporter(exporter)
        .build())
}

/// The TLS of an `https://` endpoint: the CA of `OTEL_EXPORTER_OTLP_CERTIFICATE` alone when
/// set (a private collector), else the system's trust store. (The exporter's own default
/// trusts nothing, and tonic refuses to start without system roots even when a CA is
/// given: hence one or the other, never both.)
fn tls_config(traces: &TracesConfig) -> ClientTlsConfig {
    match &traces.otlp_certificate {
        Some(certificate) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&certificate.pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{Tracer as _, TracerProvider as _};

    use super::*;

    #[test]
    fn log_format_parses_text_and_json_in_any_case() {
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("Json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    }

    #[test]
    fn log_format_rejects_unknown_values_listing_the_allowed_ones() {
        let error = "yaml".parse::<LogFormat>().unwrap_err();

        let message = error.to_string();
        assert!(message.contains("yaml"), "{message}");
        for allowed in LogFormat::ALLOWED_VALUES {
            assert!(message.contains(allowed), "{message}");
        }
    }

    #[test]
    fn log_format_display_round_trips_through_parse() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>().unwrap(), format);
        }
    }

    #[test]
    fn build_filter_accepts_rust_log_directives() {
        assert!(build_filter("info,streamgate=debug,redis=warn").is_ok());
    }

    #[test]
    fn build_filter_defaults_blank_input_to_info() {
        let filter = build_filter("  ").unwrap();

        assert_eq!(filter.to_string(), DEFAULT_LOG_FILTER);
    }

    #[test]
    fn build_filter_rejects_garbage_naming_rust_log() {
        let error = build_filter("info,[[[").unwrap_err();

        assert!(matches!(error, TelemetryError::InvalidFilter { .. }));
        assert!(error.to_string().contains("RUST_LOG"), "{error}");
    }

    #[test]
    fn export_machinery_is_recognised_by_crate_and_module() {
        assert!(is_export_machinery("h2"));
        assert!(is_export_machinery("hyper_util::client::legacy"));
        assert!(is_export_machinery("tonic::transport"));
        assert!(!is_export_machinery("streamgate::redis"));
        assert!(!is_export_machinery("h2o"));
    }

    fn export_to(endpoint: &str) -> TracesConfig {
        TracesConfig { otlp_endpoint: Some(endpoint.to_owned()), ..TracesConfig::default() }
    }

    #[tokio::test]
    async fn an_https_endpoint_builds_with_the_system_roots_or_a_given_ca() {
        assert!(build_tracer_provider("test", &export_to("https://127.0.0.1:4317")).is_ok());
        let with_ca = TracesConfig {
            otlp_certificate: Some(crate::traces::OtlpCertificate {
                path: "ca.pem".to_owned(),
                pem: b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec(),
            }),
            ..export_to("https://127.0.0.1:4317")
        };
        assert!(build_tracer_provider("test", &with_ca).is_ok());
    }

    #[test]
    fn otlp_export_outside_a_tokio_runtime_is_an_error_not_a_panic() {
        let error = build_tracer_provider("test", &export_to("http://127.0.0.1:4317")).unwrap_err();

        assert!(matches!(error, TelemetryError::NoTokioRuntime));
    }

    #[tokio::test]
    async fn otlp_export_with_an_invalid_endpoint_is_an_error() {
        let error = build_tracer_provider("test", &export_to("not a uri")).unwrap_err();

        assert!(matches!(error, TelemetryError::OtlpExporter { .. }), "{error:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_tracer_provider_shuts_down_promptly_without_a_collector() {
        // Nothing listens on this port; the export fails, and that is fine.
        let tracer_provider = build_tracer_provider("test", &export_to("http://127.0.0.1:4317")).unwrap();
        tracer_provider.tracer("test").in_span("span-with-nowhere-to-go", |_context| {});
        let guard = TelemetryGuard { tracer_provider: Some(tracer_provider) };

        let shutdown = tokio::task::spawn_blocking(move || guard.shutdown());

        tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown hung").unwrap();
    }
}
