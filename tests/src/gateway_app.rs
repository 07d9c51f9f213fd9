//! Starting a real gateway in-process on port 0 against a test Redis.

use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use gateway::{Application, GatewayConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running gateway.
pub struct TestGateway {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its admin listener's port on 127.0.0.1 (`None` with `ADMIN_LISTEN_ADDR=off`).
    pub admin_port: Option<u16>,
    /// Its instance id.
    pub instance: String,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a gateway on 127.0.0.1:0 (admin listener on another free port) with
/// `KEY_PREFIX=prefix` and the given overrides. Every test client comes from 127.0.0.1, so
/// the per-address limits are off unless a test sets them.
pub async fn spawn_gateway(redis_url: &str, prefix: &str, overrides: &[(&str, &str)]) -> TestGateway {
    let mut settings = vec![
        ("REDIS_URL", redis_url),
        ("KEY_PREFIX", prefix),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("MAX_CONNECTIONS_PER_IP", "0"),
        ("SUBSCRIBE_RATE_PER_IP", "0"),
    ];
    settings.extend_from_slice(overrides);
    let config = GatewayConfig::with_overrides(&settings).expect("test gateway configuration");
    let instance = config.instance_id.to_string();
    let application = Application::build(config).await.expect("gateway starts");
    let port = application.port();
    let admin_port = application.admin_port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(application.run_until_stopped(stop.clone()));
    TestGateway { port, admin_port, instance, stop, task: Some(task) }
}

impl TestGateway {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:ADMIN_PORT{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port.expect("the admin listener is on"))
    }

    /// Graceful shutdown (as on SIGTERM), waiting for it to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("gateway stops within 20 s")
                .expect("gateway task")
                .expect("gateway serve");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
