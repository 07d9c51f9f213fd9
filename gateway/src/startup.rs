//! Building and running a gateway: `Application::build` connects to Redis, resets what an
//! earlier life under the same instance id left, binds the public and admin listeners
//! (port 0 works), loads the subscriber keys and starts the membership and reader tasks;
//! `run_until_stopped` serves until the shutdown token fires, then deregisters, ends every
//! stream and drains.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use streamgate::keys::Keys;
use streamgate::redis::Redis;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::Access;
use crate::access::config::AuthMode;
use crate::access::jwt::Verifier;
use crate::connection::Connections;
use crate::hub::{HubContext, Hubs};
use crate::limits::per_ip::{OpenPerClient, RatePerClient};
use crate::membership::Membership;
use crate::server::ConnectionLimits;
use crate::settings::{Cors, GatewayConfig};

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<GatewayConfig>,
    /// Redis connections (a pool on one server, the shared cluster connection, ...).
    pub redis: Redis,
    /// Key schema.
    pub keys: Keys,
    /// Topic hubs.
    pub hubs: Arc<Hubs>,
    /// Memberships and liveness.
    pub membership: Arc<Membership>,
    /// Open connections.
    pub connections: Arc<Connections>,
    /// The history reads of replaying clients: bounded, and shared per topic and position.
    pub replays: Arc<crate::replay_reads::ReplayReads>,
    /// Prometheus metrics (`GET /metrics` on the admin listener).
    pub metrics: Arc<crate::metrics::GatewayMetrics>,
    /// Fires when streams must end (shutdown).
    pub shutdown: CancellationToken,
    /// Subscriber authorization.
    pub access: Arc<Access>,
    /// Open streams per client address.
    pub open_per_client: Arc<OpenPerClient>,
    /// New requests per client address.
    pub rate_per_client: Arc<RatePerClient>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis could not be reached or set up.
    #[error("cannot use redis at {url}: {source}")]
    Redis {
        /// The URL (without password).
        url: String,
        /// The cause.
        source: streamgate::redis::RedisError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS_CERT_FILE or TLS_KEY_FILE cannot be used.
    #[error("cannot serve TLS: {0}")]
    Tls(crate::tls::TlsError),
}

/// A gateway that is bound and registered, ready to serve.
pub struct Application {
    listener: TcpListener,
    port: u16,
    admin_listener: Option<TcpListener>,
    admin_port: Option<u16>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AppState,
    /// The background tasks, started by `run_until_stopped`.
    tasks: Vec<BoxFuture<'static, ()>>,
    tasks_stop: CancellationToken,
}

impl Application {
    /// Connects, registers and binds. Nothing runs in the background until
    /// [`Application::run_until_stopped`] starts it, as in the producer.
    pub async fn build(config: GatewayConfig) -> Result<Application, StartError> {
        let config = Arc::new(config);
        // TLS first: a certificate that cannot be used stops the gateway before it claims
        // its instance in Redis.
        let tasks_stop = CancellationToken::new();
        let (tls, reload_tls) = match &config.tls {
            None => (None, None),
            Some(files) => {
                let (acceptor, reload) =
                    crate::tls::acceptor(files.clone(), tasks_stop.clone()).map_err(StartError::Tls)?;
                (Some(acceptor), Some(reload))
            }
        };
        let redis_error = |source| StartError::Redis {
            url: streamgate::redis::redacted_url(&config.common.redis_url),
            source,
        };
        let connect = |pool_size| {
            Redis::new(
                &config.common.redis_url,
                &config.common.redis_topology,
                pool_size,
                streamgate::redis::POOLED_RESPONSE_TIMEOUT,
            )
        };
        let redis = connect(config.common.redis_pool_size).map_err(redis_error)?;
        streamgate::redis::check_ready(&redis).await.map_err(redis_error)?;
        // Liveness and membership get their own connections: a replay flood that keeps the
        // main pool busy must not delay the heartbeat past the liveness TTL.
        let membership_pool = connect(MEMBERSHIP_POOL_SIZE).map_err(redis_error)?;
        let keys = config.common.keys.clone();
        let metrics = Arc::new(crate::metrics::GatewayMetrics::new());
        let membership =
            Arc::new(Membership::new(config.instance_id.clone(), keys.clone(), Arc::clone(&metrics)));
        membership.reset_and_claim(&membership_pool, config.liveness_ttl).await.map_err(redis_error)?;

        let listener = crate::server::bind(config.listen_addr)
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?
            .port();
        let (admin_listener, admin_port) = match config.admin_listen_addr {
            None => (None, None),
            Some(addr) => {
                let bind_error = |source| StartError::Bind { addr, source };
                let listener = crate::server::bind(addr).map_err(bind_error)?;
                let port = listener.local_addr().map_err(bind_error)?.port();
                (Some(listener), Some(port))
            }
        };
        warn_about_exposure(&config);

        let shutdown = CancellationToken::new();
        let hubs = Hubs::new(HubContext {
            redis: redis.clone(),
            keys: keys.clone(),
            queue_size: config.queue_size,
            queue_bytes: config.queue_bytes,
            read_limit: config.read_limit(),
            membership: Arc::clone(&membership),
            metrics: Arc::clone(&metrics),
            traces: config.common.traces.exporting(),
            shutdown: tasks_stop.clone(),
        });
        let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
        tasks.extend(reload_tls.map(|reload| reload.boxed()));
        tasks.push(Box::pin(Arc::clone(&membership).run(
            membership_pool,
            config.liveness_ttl,
            tasks_stop.clone(),
        )));
        tasks.push(Box::pin(crate::reader::run(
            redis.clone(),
            keys.instance_stream(&config.instance_id),
            Arc::clone(&hubs),
            tasks_stop.clone(),
        )));
        let mut resyncs = membership.resyncs();
        let hubs_for_resync = Arc::clone(&hubs);
        let resync_stop = tasks_stop.clone();
        tasks.push(Box::pin(async move {
            loop {
                tokio::select! {
                    changed = resyncs.changed() => if changed.is_err() { return },
                    _ = resync_stop.cancelled() => return,
                }
                hubs_for_resync.catch_up_all();
            }
        }));
        tasks.push(Box::pin(reconcile(Arc::clone(&hubs), config.reconcile_interval, tasks_stop.clone())));
        let mut verifier = None;
        if let AuthMode::Jwt(jwt) = &config.access.mode {
            let keys = Arc::new(Verifier::new(jwt.keys.clone(), jwt.audience.clone(), jwt.issuer.clone()));
            if let Some(url) = &jwt.jwks_url {
                let fetched = crate::access::jwks::fetch_once(url, &jwt.keys, &keys).await;
                tasks.push(Box::pin(crate::access::jwks::refresh(
                    url.clone(),
                    jwt.jwks_refresh,
                    jwt.keys.clone(),
                    Arc::clone(&keys),
                    fetched,
                    tasks_stop.clone(),
                )));
            }
            verifier = Some(keys);
        }
        let access = Arc::new(Access::new(config.access.clone(), verifier));
        tracing::info!(instance = %config.instance_id, port, admin_port, "Gateway registered and listening.");
        let replays = Arc::new(crate::replay_reads::ReplayReads::new(
            config.replay_concurrency,
            config.read_limit(),
            redis.clone(),
            keys.clone(),
            Arc::clone(&metrics),
        ));
        let config_limits = config.limits.clone();
        let state = AppState {
            config,
            redis,
            keys,
            hubs,
            membership,
            connections: Arc::new(Connections::default()),
            replays,
            metrics,
            shutdown,
            access,
            open_per_client: Arc::new(OpenPerClient::default()),
            rate_per_client: Arc::new(RatePerClient::new(
                config_limits.subscribe_rate_per_ip,
                config_limits.subscribe_burst_per_ip,
            )),
        };
        let identity = crate::summary::Identity {
            listen_addr: SocketAddr::new(state.config.listen_addr.ip(), port).to_string(),
            admin_addr: state
                .config
                .admin_listen_addr
                .zip(admin_port)
                .map(|(addr, port)| SocketAddr::new(addr.ip(), port).to_string()),
            started_at_ms: crate::summary::unix_ms(std::time::SystemTime::now()),
        };
        crate::summary::write(&state, &identity).await;
        tasks.push(Box::pin(crate::summary::run(state.clone(), identity, tasks_stop.clone())));
        Ok(Application { listener, port, admin_listener, admin_port, tls, state, tasks, tasks_stop })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's bound port (`None` with `ADMIN_LISTEN_ADDR=off`).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// The state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts the background tasks (membership, the reader, reconciliation, summaries,
    /// key and certificate refreshes) and serves until `stop` fires; then deregisters, ends every stream so clients reconnect
    /// elsewhere, and waits up to the drain time for connections to close.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        let Application { listener, admin_listener, tls, state, tasks, tasks_stop, .. } = self;
        let tasks: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        let app = crate::http::router(state.clone());
        let limits = ConnectionLimits {
            header_read_timeout: state.config.limits.header_read_timeout,
            max_header_bytes: state.config.limits.max_header_bytes,
            http2_max_concurrent_streams: state.config.limits.http2_max_concurrent_streams,
        };
        let drain = state.config.drain_timeout;
        let stop_signal = stop.clone();
        let state_for_stop = state.clone();
        let public = crate::server::serve(listener, app, limits, tls, async move {
            stop_signal.cancelled().await;
            // Producers stop routing here first, then streams end.
            if let Err(error) = state_for_stop.membership.deregister(&state_for_stop.redis).await {
                tracing::warn!(%error, "Could not deregister; the janitor will remove this instance.");
            }
            state_for_stop.shutdown.cancel();
        });
        let admin_stop = stop.clone();
        let admin_state = state.clone();
        let admin = async move {
            if let Some(listener) = admin_listener {
                let app =
                    crate::admin::router(admin_state).layer(tower_http::trace::TraceLayer::new_for_http());
                crate::server::serve(listener, app, limits, None, admin_stop.cancelled_owned()).await;
            }
        };
        let served = async move {
            tokio::join!(public, admin);
        };
        tokio::pin!(served);
        tokio::select! {
            _ = &mut served => {}
            _ = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(open = state.connections.open(), "Drain time over; exiting with connections open.");
            }
        }
        tasks_stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Says loudly at start-up when the public listener is reachable from other hosts and
/// anyone may subscribe to anything, and when the admin listener is open to other hosts
/// without a token.
fn warn_about_exposure(config: &GatewayConfig) {
    for warning in exposure_warnings(config) {
        tracing::warn!("{warning}");
    }
}

/// The start-up warnings `config` deserves (see [`warn_about_exposure`]).
pub fn exposure_warnings(config: &GatewayConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.access.is_open() && !config.listen_addr.ip().is_loopback() {
        warnings.push(format!(
            "SUBSCRIBE_AUTH=none on {}: ANYONE who reaches this port can read EVERY topic. \
             Set SUBSCRIBE_AUTH=jwt or hook, or PUBLIC_TOPIC_PREFIXES for what is meant to be public.",
            config.listen_addr
        ));
    }
    if let Some(admin) = config.admin_listen_addr
        && !admin.ip().is_loopback()
        && config.admin_token.is_none()
    {
        warnings.push(format!(
            "The admin listener on {admin} is reachable from other hosts without ADMIN_TOKEN."
        ));
    }
    warnings
}

/// Connections of the membership task's own pool (flushes and heartbeats, one at a time).
const MEMBERSHIP_POOL_SIZE: usize = 2;

/// Reconciles idle hubs with their histories every `interval` until `stop`.
async fn reconcile(hubs: Arc<Hubs>, interval: std::time::Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        hubs.metrics().reconciliations.inc();
        match hubs.reconcile_idle().await {
            Ok(0) => {}
            Ok(behind) => {
                hubs.metrics().reconcile_behind.inc_by(behind as u64);
                tracing::debug!(behind, "Reconciliation found topics behind their histories.");
            }
            // The reader and membership tasks log outages; the next round retries.
            Err(error) => tracing::debug!(%error, "Reconciliation failed."),
        }
    }
}

/// The CORS layer for the configured origins.
pub fn cors_layer(cors: &Cors) -> CorsLayer {
    match cors {
        Cors::Off => CorsLayer::new(),
        // Any origin: no credentials (the CORS rules forbid them with `*`), so only public
        // topics or `?token=` work cross-site.
        Cors::Any => CorsLayer::new().allow_origin(AllowOrigin::any()).allow_headers([
            axum::http::HeaderName::from_static("last-event-id"),
            axum::http::header::AUTHORIZATION,
        ]),
        // Listed origins may send credentials: `new EventSource(url, {withCredentials: true})`
        // then carries the auth cookie.
        Cors::List(origins) => {
            let origins =
                origins.iter().filter_map(|o| o.parse().ok()).collect::<Vec<axum::http::HeaderValue>>();
            CorsLayer::new().allow_origin(origins).allow_credentials(true).allow_headers([
                axum::http::HeaderName::from_static("last-event-id"),
                axum::http::header::AUTHORIZATION,
            ])
        }
    }
}
