//! Traces: which traces a process keeps, where their spans go, and the W3C `traceparent`
//! that carries a trace from the producer to the gateways.
//!
//! A publish is one trace: the producer's `publish` span (the root for `POST /publish`; a
//! child of `ingest` for the ingest stream) with `append` (the Lua script) and `route` (the
//! `XADD`s to instance streams) under it. When that trace is **sampled**, every routed entry
//! of the publish carries the `route` span's context in its `tp` field
//! ([`crate::stream::field::TRACE_PARENT`]) as a W3C `traceparent`
//! (`00-<trace id>-<span id>-01`); a gateway's hub that delivers the event opens a `deliver`
//! span whose parent is that context. An unsampled publish writes no `tp`, so a gateway
//! does nothing for it, and a process without `OTEL_EXPORTER_OTLP_ENDPOINT` never samples.
//!
//! Sampling follows the OpenTelemetry SDK environment variables `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, read as Streamgate settings (so they are validated, and may
//! come from the configuration file too). Streamgate's default differs from the SDK's
//! (`parentbased_always_on`): `parentbased_traceidratio` at `0.01`, so turning export on
//! does not trace every publish of a busy producer.

use std::fmt;
use std::str::FromStr;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Sampler;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C Trace Context header (and routed entry field meaning) this module reads and
/// writes.
const TRACEPARENT: &str = "traceparent";

/// The `OTEL_TRACES_SAMPLER` values the OpenTelemetry SDK specifies and this SDK
/// implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A fraction (`OTEL_TRACES_SAMPLER_ARG`) of traces, decided on the trace id.
    TraceIdRatio,
    /// Follow a parent's decision; roots: every trace.
    ParentBasedAlwaysOn,
    /// Follow a parent's decision; roots: none.
    ParentBasedAlwaysOff,
    /// Follow a parent's decision; roots: a fraction (`OTEL_TRACES_SAMPLER_ARG`).
    ParentBasedTraceIdRatio,
}

impl SamplerKind {
    /// Every accepted value, as listed in errors and the README.
    pub const ALLOWED_VALUES: &'static [&'static str] = &[
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ];

    /// Whether the ratio (`OTEL_TRACES_SAMPLER_ARG`) applies.
    pub fn uses_ratio(self) -> bool {
        matches!(self, SamplerKind::TraceIdRatio | SamplerKind::ParentBasedTraceIdRatio)
    }

    fn as_str(self) -> &'static str {
        match self {
            SamplerKind::AlwaysOn => "always_on",
            SamplerKind::AlwaysOff => "always_off",
            SamplerKind::TraceIdRatio => "traceidratio",
            SamplerKind::ParentBasedAlwaysOn => "parentbased_always_on",
            SamplerKind::ParentBasedAlwaysOff => "parentbased_always_off",
            SamplerKind::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }
}

impl FromStr for SamplerKind {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let kinds = [
            SamplerKind::AlwaysOn,
            SamplerKind::AlwaysOff,
            SamplerKind::TraceIdRatio,
            SamplerKind::ParentBasedAlwaysOn,
            SamplerKind::ParentBasedAlwaysOff,
            SamplerKind::ParentBasedTraceIdRatio,
        ];
        kinds.into_iter().find(|kind| kind.as_str().eq_ignore_ascii_case(value)).ok_or(())
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Parses `OTEL_TRACES_SAMPLER_ARG`: a ratio from 0 to 1.
pub fn parse_ratio(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|ratio| (0.0..=1.0).contains(ratio))
}

/// A CA certificate file that OTLP export trusts instead of the system's roots.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpCertificate {
    /// Where it was read from, for messages.
    pub path: String,
    /// Its PEM text.
    pub pem: Vec<u8>,
}

impl fmt::Debug for OtlpCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("OtlpCertificate").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Where spans go and which traces are kept: the typed `OTEL_*` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesConfig {
    /// The OTLP/gRPC collector (`http://` or `https://`); `None`: no export, no trace
    /// context written.
    pub otlp_endpoint: Option<String>,
    /// The CA to verify an `https://` collector with; `None`: the system's trust store.
    pub otlp_certificate: Option<OtlpCertificate>,
    /// `OTEL_TRACES_SAMPLER`.
    pub sampler: SamplerKind,
    /// `OTEL_TRACES_SAMPLER_ARG`, used by the ratio samplers.
    pub ratio: f64,
}

impl Default for TracesConfig {
    /// No export; the default sampler.
    fn default() -> Self {
        TracesConfig {
            otlp_endpoint: None,
            otlp_certificate: None,
            sampler: SamplerKind::ParentBasedTraceIdRatio,
            ratio: 0.01,
        }
    }
}

impl TracesConfig {
    /// Whether spans are exported (and so whether a trace context is worth carrying).
    pub fn exporting(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    /// The SDK sampler these settings describe.
    pub fn sampler(&self) -> Sampler {
        let ratio = Sampler::TraceIdRatioBased(self.ratio);
        match self.sampler {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::TraceIdRatio => ratio,
            SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerKind::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(ratio)),
        }
    }
}

/// The W3C `traceparent` of `span`, if it is part of a sampled trace; `None` when it is
/// not sampled, disabled by the log filter, or no OpenTelemetry layer is installed. Asking
/// makes the sampling decision for `span` (it starts the OpenTelemetry span).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    if !span_context.is_valid() || !span_context.is_sampled() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    ))
}

/// Makes the trace of `traceparent` the parent of `span`, which must not have been
/// entered yet. Returns whether it did: a malformed value, or a span unknown to an
/// OpenTelemetry layer, leaves `span` as it was.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) -> bool {
    let context = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    if !context.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(context).is_ok()
}

/// Adds an event named `name` with whole-number attributes to `span`'s OpenTelemetry span,
/// without entering it (entering would stamp its end time) and without a log line. Does
/// nothing for a span no OpenTelemetry layer knows.
pub fn add_event(span: &tracing::Span, name: &'static str, attributes: &[(&'static str, i64)]) {
    let attributes =
        attributes.iter().map(|(key, value)| opentelemetry::KeyValue::new(*key, *value)).collect();
    span.add_event(name, attributes);
}

/// A carrier holding only a `traceparent`.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case(TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Keeps every span exported (the SDK's own in-memory exporter needs its `testing`
    /// feature, which would rebuild the SDK for the whole workspace's tests).
    #[derive(Debug, Clone, Default)]
    struct Collected(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collected {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    impl Collected {
        fn spans(&self) -> Vec<SpanData> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn sampler_kinds_parse_in_any_case_and_list_every_value() {
        for value in SamplerKind::ALLOWED_VALUES {
            let kind: SamplerKind = value.to_ascii_uppercase().parse().unwrap();
            assert_eq!(kind.to_string(), *value);
        }
        assert!("parentbased_jaeger_remote".parse::<SamplerKind>().is_err());
        assert!("".parse::<SamplerKind>().is_err());
    }

    #[test]
    fn ratios_are_from_zero_to_one() {
        assert_eq!(parse_ratio("0"), Some(0.0));
        assert_eq!(parse_ratio("0.25"), Some(0.25));
        assert_eq!(parse_ratio("1"), Some(1.0));
        for bad in ["-0.1", "1.5", "NaN", "one", ""] {
            assert_eq!(parse_ratio(bad), None, "{bad}");
        }
    }

    /// A subscriber with an OpenTelemetry layer sampling by `sampler`, into memory.
    fn with_layer(sampler: Sampler) -> (impl tracing::Subscriber + Send + Sync, Collected) {
        let exporter = Collected::default();
        let provider =
            SdkTracerProvider::builder().with_sampler(sampler).with_simple_exporter(exporter.clone()).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        (subscriber, exporter)
    }

    #[test]
    fn a_sampled_span_round_trips_through_its_traceparent() {
        let (subscriber, exporter) = with_layer(Sampler::AlwaysOn);
        tracing::subscriber::with_default(subscriber, || {
            let route = tracing::info_span!("route");
            let traceparent = traceparent(&route).expect("sampled");
            assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"), "{traceparent}");
            drop(route);

            let deliver = tracing::info_span!("deliver");
            assert!(set_remote_parent(&deliver, &traceparent));
            drop(deliver);
        });
        let spans = exporter.spans();
        let route = spans.iter().find(|span| span.name == "route").unwrap();
        let deliver = spans.iter().find(|span| span.name == "deliver").unwrap();
        assert_eq!(deliver.span_context.trace_id(), route.span_context.trace_id());
        assert_eq!(deliver.parent_span_id, route.span_context.span_id());
    }

    #[test]
    fn unsampled_spans_and_spans_without_a_layer_have_no_traceparent() {
        let (subscriber, _exporter) = with_layer(Sampler::AlwaysOff);
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(traceparent(&tracing::info_span!("route")), None);
        });
        let plain = tracing_subscriber::registry();
        tracing::subscriber::with_default(plain, || {
            assert_eq!(traceparent(&tracing::info_span!("route")), None);
        });
    }

    #[test]
    fn a_malformed_traceparent_sets_no_parent() {
        let (subscriber, _exporter) = with_layer(Sampler::AlwaysOn);
        tracing::subscriber::with_default(subscriber, || {
            for bad in ["", "00-xyz", "00-00000000000000000000000000000000-0000000000000000-01"] {
                assert!(!set_remote_parent(&tracing::info_span!("deliver"), bad), "{bad:?}");
            }
        });
    }
}
