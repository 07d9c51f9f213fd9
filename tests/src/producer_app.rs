//! The producer under test: in-process on port 0 ([`spawn_producer`]), or as the real
//! binary ([`producer_binary`]) for tests that need a process to kill or a command line.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use producer::settings::ProducerConfig;
use producer::startup::Application;
use streamgate::keys::Keys;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A producer running in this process.
pub struct TestProducer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its admin listener's port (`GET /metrics`), when `ADMIN_LISTEN_ADDR` is set.
    pub admin_port: Option<u16>,
    /// Its key schema.
    pub keys: Keys,
    /// Its configuration.
    pub config: ProducerConfig,
    http: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The settings every test producer gets, before the test's own: its Redis and prefix,
/// port 0, and an ingest stream under the prefix, off unless a test turns it on.
pub fn test_settings(redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("REDIS_URL", redis_url.to_owned()),
        ("KEY_PREFIX", prefix.to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("INGEST_ENABLED", "false".to_owned()),
        ("INGEST_STREAM", crate::ingest::stream_under(prefix)),
        ("INGEST_DEAD_LETTER", crate::ingest::dead_letter_under(prefix)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Starts a producer on 127.0.0.1:0 against `redis_url` under `prefix`, with the
/// [`test_settings`] and then `overrides`.
pub async fn spawn_producer(redis_url: &str, prefix: &str, overrides: &[(&str, &str)]) -> TestProducer {
    let defaults = test_settings(redis_url, prefix);
    let mut settings: Vec<(&str, &str)> = defaults.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    settings.extend_from_slice(overrides);
    let config = ProducerConfig::with_overrides(&settings).expect("test producer configuration");
    let application = Application::build(config.clone()).await.expect("producer starts");
    let port = application.port();
    let admin_port = application.admin_addr().map(|addr| addr.port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(application.run_until_stopped(stop.clone()));
    TestProducer {
        port,
        admin_port,
        keys: config.common.keys.clone(),
        config,
        http: reqwest::Client::new(),
        stop,
        task: Some(task),
    }
}

impl TestProducer {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:ADMIN_PORT{path}`; panics without an admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port.expect("ADMIN_LISTEN_ADDR is set"))
    }

    /// `POST /publish` with a JSON body.
    pub async fn publish(&self, body: &serde_json::Value) -> reqwest::Response {
        self.post_publish(body.to_string(), &[("content-type", "application/json")]).await
    }

    /// `POST /publish` with a raw body and the given headers.
    pub async fn post_publish(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url("/publish")).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST /publish")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// Graceful shutdown (as on SIGTERM), waiting for it to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("producer stops within 20 s")
                .expect("producer task")
                .expect("producer serve");
        }
    }
}

impl Drop for TestProducer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The path of the real `producer` binary (see [`crate::binaries::workspace_binary`]).
pub fn producer_binary() -> PathBuf {
    crate::binaries::workspace_binary("producer")
}

/// A `producer serve` child process, killed (SIGKILL) when dropped.
pub struct ProducerProcess {
    child: std::process::Child,
}

impl ProducerProcess {
    /// Starts `producer serve` with exactly `settings` as its configuration environment
    /// (the test's own environment is inherited, minus any configuration file) and
    /// `HOSTNAME=hostname`, which makes its ingest consumer's name start with `hostname-`.
    /// Its logs go to stderr when `TEST_LOG` is set.
    pub fn spawn(binary: &std::path::Path, settings: &[(String, String)], hostname: &str) -> ProducerProcess {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env_remove(streamgate::config::CONFIG_FILE_ENV)
            .env("HOSTNAME", hostname)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stderr(std::process::Stdio::null());
        }
        for (name, value) in settings {
            command.env(name, value);
        }
        ProducerProcess { child: command.spawn().expect("spawn the producer binary") }
    }

    /// Kills the process with SIGKILL, like a crash, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProducerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every entry of a stream, oldest first.
pub async fn stream_entries(
    conn: &mut (impl redis::aio::ConnectionLike + Send),
    key: &str,
) -> Vec<redis::streams::StreamId> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(conn).await.expect("XRANGE");
    reply.ids
}

/// A topic's history, decoded, oldest first.
pub async fn history(
    conn: &mut (impl redis::aio::ConnectionLike + Send),
    keys: &Keys,
    topic: &str,
) -> Vec<streamgate::stream::HistoryEntry> {
    let topic = streamgate::topic::Topic::parse(topic, usize::MAX).expect("topic");
    stream_entries(conn, &keys.history(&topic))
        .await
        .iter()
        .map(|entry| streamgate::stream::HistoryEntry::decode(entry).expect("well-formed history entry"))
        .collect()
}

/// A stream entry's field as text.
pub fn field(entry: &redis::streams::StreamId, name: &str) -> Option<String> {
    match entry.map.get(name)? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}
