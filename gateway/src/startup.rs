//! Building and running a gateway: `Application::build` connects to Redis, resets what an
//! earlier life under the same instance id left, binds the listener (port 0 works), and
//! starts the membership and reader tasks; `run_until_stopped` serves until the shutdown
//! token fires, then deregisters, ends every stream and drains.

use std::net::SocketAddr;
use std::sync::Arc;

use deadpool_redis::Pool;
use streamgate::keys::Keys;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::connection::Connections;
use crate::hub::{HubContext, Hubs};
use crate::membership::Membership;
use crate::settings::{Cors, GatewayConfig};

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<GatewayConfig>,
    /// Redis pool.
    pub pool: Pool,
    /// Key schema.
    pub keys: Keys,
    /// Topic hubs.
    pub hubs: Arc<Hubs>,
    /// Memberships and liveness.
    pub membership: Arc<Membership>,
    /// Open connections.
    pub connections: Arc<Connections>,
    /// Bounds the history reads of replaying clients that run at once.
    pub replays: Arc<tokio::sync::Semaphore>,
    /// Fires when streams must end (shutdown).
    pub shutdown: CancellationToken,
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
}

/// A gateway that is bound and registered, ready to serve.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tasks_stop: CancellationToken,
}

impl Application {
    /// Connects, registers and binds.
    pub async fn build(config: GatewayConfig) -> Result<Application, StartError> {
        let config = Arc::new(config);
        let redis_error = |source| StartError::Redis {
            url: streamgate::redis::redacted_url(&config.common.redis_url),
            source,
        };
        let pool = streamgate::redis::pool(&config.common.redis_url, config.common.redis_pool_size)
            .map_err(redis_error)?;
        streamgate::redis::check_ready(&pool).await.map_err(redis_error)?;
        // Liveness and membership get their own connections: a replay flood that keeps the
        // main pool busy must not delay the heartbeat past the liveness TTL.
        let membership_pool =
            streamgate::redis::pool(&config.common.redis_url, MEMBERSHIP_POOL_SIZE).map_err(redis_error)?;
        let keys = config.common.keys.clone();
        let membership = Arc::new(Membership::new(config.instance_id.clone(), keys.clone()));
        membership.reset_and_claim(&membership_pool, config.liveness_ttl).await.map_err(redis_error)?;

        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?
            .port();

        let shutdown = CancellationToken::new();
        let tasks_stop = CancellationToken::new();
        let hubs = Hubs::new(HubContext {
            pool: pool.clone(),
            keys: keys.clone(),
            queue_size: config.queue_size,
            queue_bytes: config.queue_bytes,
            read_limit: config.read_limit(),
            membership: Arc::clone(&membership),
            shutdown: tasks_stop.clone(),
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(Arc::clone(&membership).run(
            membership_pool,
            config.liveness_ttl,
            tasks_stop.clone(),
        )));
        tasks.push(tokio::spawn(crate::reader::run(
            config.common.redis_url.clone(),
            keys.instance_stream(&config.instance_id),
            Arc::clone(&hubs),
            tasks_stop.clone(),
        )));
        let mut resyncs = membership.resyncs();
        let hubs_for_resync = Arc::clone(&hubs);
        let resync_stop = tasks_stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = resyncs.changed() => if changed.is_err() { return },
                    _ = resync_stop.cancelled() => return,
                }
                hubs_for_resync.catch_up_all();
            }
        }));
        tasks.push(tokio::spawn(reconcile(Arc::clone(&hubs), config.reconcile_interval, tasks_stop.clone())));
        tracing::info!(instance = %config.instance_id, port, "Gateway registered and listening.");
        let replays = Arc::new(tokio::sync::Semaphore::new(config.replay_concurrency));
        let state = AppState {
            config,
            pool,
            keys,
            hubs,
            membership,
            connections: Arc::new(Connections::default()),
            replays,
            shutdown,
        };
        Ok(Application { listener, port, state, tasks, tasks_stop })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` fires; then deregisters, ends every stream so clients reconnect
    /// elsewhere, and waits up to the drain time for connections to close.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        let Application { listener, state, tasks, tasks_stop, .. } = self;
        let app = crate::http::router(state.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
        let drain = state.config.drain_timeout;
        let stop_signal = stop.clone();
        let state_for_stop = state.clone();
        let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                stop_signal.cancelled().await;
                // Producers stop routing here first, then streams end.
                if let Err(error) = state_for_stop.membership.deregister(&state_for_stop.pool).await {
                    tracing::warn!(%error, "Could not deregister; the janitor will remove this instance.");
                }
                state_for_stop.shutdown.cancel();
            });
        let served = server.into_future();
        tokio::pin!(served);
        let result = tokio::select! {
            result = &mut served => result,
            _ = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(open = state.connections.open(), "Drain time over; exiting with connections open.");
                Ok(())
            }
        };
        tasks_stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        result
    }
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
        match hubs.reconcile_idle().await {
            Ok(0) => {}
            Ok(behind) => tracing::debug!(behind, "Reconciliation found topics behind their histories."),
            // The reader and membership tasks log outages; the next round retries.
            Err(error) => tracing::debug!(%error, "Reconciliation failed."),
        }
    }
}

/// The CORS layer for the configured origins.
pub fn cors_layer(cors: &Cors) -> CorsLayer {
    match cors {
        Cors::Off => CorsLayer::new(),
        Cors::Any => CorsLayer::new().allow_origin(AllowOrigin::any()),
        Cors::List(origins) => {
            let origins =
                origins.iter().filter_map(|o| o.parse().ok()).collect::<Vec<axum::http::HeaderValue>>();
            CorsLayer::new()
                .allow_origin(origins)
                .allow_headers([axum::http::HeaderName::from_static("last-event-id")])
        }
    }
}
