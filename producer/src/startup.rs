//! Building and running the producer service: [`Application::build`] connects to Redis and
//! binds the listener itself, so tests ask for port 0 and read the port back;
//! [`Application::run_until_stopped`] serves HTTP and consumes the ingest stream until the
//! shutdown token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use streamgate::redis::{Redis, RedisError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::http::{PublishTasks, router};
use crate::ingest::IngestConsumer;
use crate::input::Limits;
use crate::publisher::Publisher;
use crate::settings::{ProducerConfig, UnprotectedListener};

/// How long shutdown waits for publishes whose clients left: a publish is a few round
/// trips, each bounded by `REDIS_RESPONSE_TIMEOUT` (5 s by default).
const PUBLISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A non-loopback listener without authentication, not allowed on purpose.
    #[error(transparent)]
    Unprotected(#[from] UnprotectedListener),
    /// Redis is unreachable or refused the start-up check.
    #[error("cannot reach redis: {0}")]
    Redis(#[from] RedisError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the Redis connections and the [`Publisher`] from the configuration, checking
/// that Redis answers. Shared by `serve` and the `publish` command.
pub async fn build_publisher(config: &ProducerConfig) -> Result<Arc<Publisher>, StartupError> {
    let redis = Redis::new(
        &config.common.redis_url,
        &config.common.redis_topology,
        config.common.redis_pool_size,
        config.redis_response_timeout,
    )?;
    streamgate::redis::check_ready(&redis).await?;
    Ok(Arc::new(Publisher::new(redis, config.common.keys.clone(), config.publisher.clone())))
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The routing core.
    pub publisher: Arc<Publisher>,
    /// Limits on what a publisher may hand in.
    pub limits: Limits,
    /// Who may publish, and to which topics.
    pub auth: Arc<Authenticator>,
    /// How long a client may take to send a body.
    pub request_body_timeout: Duration,
    /// The publishes running on tasks of their own.
    pub tasks: PublishTasks,
}

/// The producer service, built and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_listener: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
    state: AppState,
    ingest: Option<IngestConsumer>,
    header_read_timeout: Duration,
}

impl StartupError {
    /// The process exit code: 2 for a configuration that is refused, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Unprotected(_) => streamgate::config::EXIT_BAD_CONFIG,
            _ => 1,
        }
    }
}

impl Application {
    /// Refuses a non-loopback `LISTEN_ADDR` without authentication (unless allowed on
    /// purpose), connects to Redis (failing with one clear error if it does not answer)
    /// and binds `LISTEN_ADDR` (port 0 picks a free port).
    pub async fn build(config: ProducerConfig) -> Result<Application, StartupError> {
        config.check_exposure()?;
        let publisher = build_publisher(&config).await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartupError::Bind { addr: config.listen_addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr: config.listen_addr, source })?;
        let (admin_listener, admin_addr) = match config.admin_listen_addr {
            None => (None, None),
            Some(addr) => {
                let bind_error = |source| StartupError::Bind { addr, source };
                let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                (Some(listener), Some(bound))
            }
        };
        let ingest = config
            .ingest
            .enabled
            .then(|| IngestConsumer::new(Arc::clone(&publisher), config.limits, config.ingest.clone()));
        let tasks =
            PublishTasks::new(&publisher, config.max_concurrent_publishes, config.publish_group_commit);
        let state = AppState {
            publisher,
            limits: config.limits,
            auth: Arc::new(Authenticator::new(&config.auth)),
            request_body_timeout: config.request_body_timeout,
            tasks,
        };
        Ok(Application {
            listener,
            local_addr,
            admin_listener,
            admin_addr,
            state,
            ingest,
            header_read_timeout: config.header_read_timeout,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's bound address (`None` with `ADMIN_LISTEN_ADDR=off`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The metrics `GET /metrics` serves.
    pub fn metrics(&self) -> &Arc<crate::metrics::ProducerMetrics> {
        self.state.publisher.metrics()
    }

    /// Serves until `shutdown` is cancelled: in-flight requests and publishes (also those
    /// whose client left) finish, and the ingest consumer finishes its batch in hand, before
    /// this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let backlog = self.ingest.as_ref().map(|consumer| {
            tokio::spawn(crate::ingest::watch_backlog(
                Arc::clone(&self.state.publisher),
                consumer.config().clone(),
                shutdown.clone(),
            ))
        });
        let ingest = self.ingest.map(|consumer| tokio::spawn(consumer.run(shutdown.clone())));
        tracing::info!(
            addr = %self.local_addr,
            admin_addr = self.admin_addr.map(|addr| addr.to_string()),
            authentication = self.state.auth.is_required(),
            "Producer listening."
        );
        let tasks = self.state.tasks.clone();
        let admin = self.admin_listener.map(|listener| {
            let router = crate::http::admin_router(Arc::clone(self.state.publisher.metrics()));
            tokio::spawn(crate::server::serve(listener, router, self.header_read_timeout, shutdown.clone()))
        });
        crate::server::serve(self.listener, router(self.state), self.header_read_timeout, shutdown.clone())
            .await;
        // Publishes whose clients left before the answer are not waited for by the server.
        tasks.wait(PUBLISH_DRAIN_TIMEOUT).await;
        shutdown.cancel();
        for task in [admin, backlog].into_iter().flatten() {
            let _ = task.await;
        }
        if let Some(ingest) = ingest
            && let Err(error) = ingest.await
        {
            tracing::error!(%error, "The ingest consumer panicked.");
        }
        Ok(())
    }
}
