//! TLS on the public listener (`TLS_CERT_FILE`, `TLS_KEY_FILE`), for deployments with
//! only a layer-4 load balancer in front: rustls on ring, ALPN `h2` then `http/1.1`, so
//! browsers get HTTP/2 and every `EventSource` of a page shares one connection.
//!
//! The files are read at start-up (a missing file, a file without a certificate or key,
//! or a key that does not match the certificate stops the gateway with the reason), then
//! checked every `TLS_RELOAD_INTERVAL`: when either file changed, the pair is read again
//! and new handshakes use it. A renewed certificate needs no restart; a broken renewal is
//! logged and the previous pair kept.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// ALPN protocols offered, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the certificate chain and its key are, and how often to look for a new pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
}

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    path: String,
    reason: String,
}

impl TlsError {
    fn new(path: &Path, reason: impl fmt::Display) -> TlsError {
        TlsError { path: path.display().to_string(), reason: reason.to_string() }
    }
}

/// The pair being served, replaced when the files change.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner())))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the pair and checks that the key is the certificate's.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| TlsError::new(&files.cert, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::new(&files.cert, error))?;
    if chain.is_empty() {
        return Err(TlsError::new(
            &files.cert,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        TlsError::new(&files.key, format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| {
        TlsError::new(&files.key, format!("does not go with {}: {error}", files.cert.display()))
    })
}

/// The files' modification times (`None` where unreadable).
fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (time(&files.cert), time(&files.key))
}

/// An acceptor serving `files`, and the task (to spawn) that reloads them when they
/// change, until `stop` fires.
pub fn acceptor(
    files: TlsFiles,
    stop: CancellationToken,
) -> Result<(TlsAcceptor, impl std::future::Future<Output = ()> + Send + 'static), TlsError> {
    let provider = provider();
    let certified = load(&files, &provider)?;
    let reloading = Arc::new(Reloading { files, current: RwLock::new(Arc::new(certified)) });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::new(&reloading.files.cert, error))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&reloading) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok((TlsAcceptor::from(Arc::new(config)), reload_when_changed(reloading, provider, stop)))
}

async fn reload_when_changed(
    reloading: Arc<Reloading>,
    provider: Arc<CryptoProvider>,
    stop: CancellationToken,
) {
    let mut seen = modified(&reloading.files);
    let mut ticks = tokio::time::interval(reloading.files.reload_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = modified(&reloading.files);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&reloading.files, &provider) {
            Ok(certified) => {
                *reloading.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Arc::new(certified);
                tracing::info!(cert = %reloading.files.cert.display(), "TLS certificate reloaded.");
            }
            Err(error) => {
                tracing::warn!(%error, "TLS certificate or key changed but cannot be used; keeping the previous pair.");
            }
        }
    }
}

/// Whether ALPN settled the protocol: `Some(true)` for h2, `Some(false)` for HTTP/1.1.
pub fn negotiated_h2(alpn: Option<&[u8]>) -> Option<bool> {
    match alpn {
        Some(b"h2") => Some(true),
        Some(b"http/1.1") => Some(false),
        _ => None,
    }
}
