//! An OTLP/gRPC trace collector in this process, for tests of span export: the generated
//! `TraceService` server of opentelemetry-proto, served by hyper's HTTP/2 on a loopback
//! port, in clear text or over TLS (rustls, ALPN `h2`, as a gRPC client requires). It keeps
//! every span it receives.

use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::certificate::Certificate;

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of the process that exported it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its trace id (16 bytes).
    pub trace_id: Vec<u8>,
    /// Its span id (8 bytes).
    pub span_id: Vec<u8>,
    /// Its parent's span id; empty for a root.
    pub parent_span_id: Vec<u8>,
    /// Its attributes, with values as text.
    pub attributes: Vec<(String, String)>,
    /// Its events: name and attributes (values as text).
    pub events: Vec<(String, Vec<(String, String)>)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// The W3C `traceparent` naming this span as the parent (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A collector listening on 127.0.0.1; stops on drop.
pub struct Collector {
    /// Its port.
    pub port: u16,
    tls: bool,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: JoinHandle<()>,
}

impl Collector {
    /// A collector speaking gRPC in clear text (`http://`).
    pub async fn start() -> Collector {
        Collector::serve(None).await
    }

    /// A collector speaking gRPC over TLS (`https://`) with `certificate` (for 127.0.0.1).
    pub async fn start_tls(certificate: &Certificate) -> Collector {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certificate.cert)
            .expect("the certificate file")
            .collect::<Result<_, _>>()
            .expect("PEM certificates");
        let key = PrivateKeyDer::from_pem_file(&certificate.key).expect("a PEM private key");
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a usable certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec()];
        Collector::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let port = listener.local_addr().expect("its address").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Sink(Arc::clone(&spans)));
        let is_tls = tls.is_some();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = TowerToHyperService::new(service.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                        }
                        None => {
                            let _ = http2.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Collector { port, tls: is_tls, spans, task }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans lock").clone()
    }

    /// The spans received so far from `service` named `name`.
    pub fn named(&self, service: &str, name: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|span| span.service == service && span.name == name).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Sink(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|resource| text_pairs(&resource.attributes));
            let service = resource
                .unwrap_or_default()
                .into_iter()
                .find(|(key, _)| key == "service.name")
                .map(|(_, value)| value)
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: text_pairs(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|event| (event.name.clone(), text_pairs(&event.attributes)))
                        .collect(),
                });
            }
        }
        self.0.lock().expect("spans lock").extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Attributes as (key, value as text) pairs.
fn text_pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|attribute| {
            let value = match attribute.value.as_ref().and_then(|value| value.value.as_ref()) {
                Some(any_value::Value::StringValue(text)) => text.clone(),
                Some(any_value::Value::IntValue(number)) => number.to_string(),
                Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
                Some(any_value::Value::DoubleValue(number)) => number.to_string(),
                other => format!("{other:?}"),
            };
            (attribute.key.clone(), value)
        })
        .collect()
}
