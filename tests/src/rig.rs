//! The end-to-end rig: real `gateway` and `producer` processes, a real nginx in front of
//! the gateways, and real Redis — one redis-server with AOF, a Redis Cluster or a primary
//! behind Sentinels ([`RigRedis`]) — all on 127.0.0.1, torn down on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use streamgate::redis::{Conn, Node, Redis, Topology};

use crate::binaries::workspace_binary;
use crate::redis_cluster::{MASTER_NAME, RedisCluster, RedisSentinels};
use crate::redis_server::{RedisServer, unique_prefix};

/// How many times [`Service::wait_ready_or_rebind`] starts a service again on fresh ports.
const MAX_REBINDS: usize = 3;

/// Whether a service answered `/readyz` or ended first.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    Ready,
    Exited,
}

pub use crate::host::free_port;

/// A service binary running as a child process; SIGKILLed on drop.
pub struct Service {
    /// What it is, for messages (`gateway-0`).
    pub name: String,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its admin port on 127.0.0.1, when it has one (gateways).
    pub admin_port: Option<u16>,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log_dir: tempfile::TempDir,
}

impl Service {
    /// Starts `binary args...` with `env` added to a clean configuration environment.
    ///
    /// A `gateway` gets test defaults first, which `env` may override: no admin listener
    /// (the default port 9080 would be shared by every gateway on this host) and no
    /// per-address limits (every test client comes from 127.0.0.1).
    pub fn spawn(name: &str, binary: &str, args: &[&str], port: u16, env: Vec<(String, String)>) -> Service {
        let env = if binary == "gateway" {
            let mut with_defaults: Vec<(String, String)> = [
                ("ADMIN_LISTEN_ADDR", "off"),
                ("MAX_CONNECTIONS_PER_IP", "0"),
                ("SUBSCRIBE_RATE_PER_IP", "0"),
            ]
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
            with_defaults.extend(env);
            with_defaults
        } else {
            env
        };
        let admin_port = env
            .iter()
            .rfind(|(name, _)| name == "ADMIN_LISTEN_ADDR")
            .and_then(|(_, addr)| addr.parse::<std::net::SocketAddr>().ok())
            .map(|addr| addr.port());
        let mut service = Service {
            name: name.to_owned(),
            port,
            admin_port,
            binary: workspace_binary(binary),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            child: None,
            log_dir: tempfile::tempdir().expect("log dir"),
        };
        service.start();
        service
    }

    fn start(&mut self) {
        let mut command = Command::new(&self.binary);
        command.args(&self.args).env_remove(streamgate::config::CONFIG_FILE_ENV).stdin(Stdio::null());
        command.stdout(Stdio::null());
        // Logs go to a file the test can read (and print, with TEST_LOG set, on failure).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open service log");
        command.stderr(log);
        command.env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info,tower_http=warn".into()));
        for (name, value) in &self.env {
            command.env(name, value);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.name)));
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:ADMIN_PORT{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port.expect("an admin listener"))
    }

    /// Where its stderr (logs) goes.
    pub fn log_path(&self) -> PathBuf {
        self.log_dir.path().join(format!("{}.log", self.name))
    }

    /// Its logs so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until `GET /readyz` answers 200. Panics with the service's log when it exits
    /// first or is not ready within 20 s.
    pub async fn wait_ready(&self) {
        if self.ready_or_exited().await == Readiness::Exited {
            panic!("{} exited before it was ready; its log:\n{}", self.name, self.log());
        }
    }

    /// Like [`Service::wait_ready`], but a service that exited because one of its ports was
    /// taken is started again on fresh ones: [`free_port`] gives a port that was free a
    /// moment ago, and another test's process may bind it before this one does.
    pub async fn wait_ready_or_rebind(&mut self) {
        for _ in 0..MAX_REBINDS {
            if self.ready_or_exited().await == Readiness::Ready {
                return;
            }
            let log = self.log();
            if !log.contains("Address already in use") {
                panic!("{} exited before it was ready; its log:\n{log}", self.name);
            }
            self.port = free_port();
            let listen = format!("127.0.0.1:{}", self.port);
            self.set_env("LISTEN_ADDR", listen);
            if self.admin_port.is_some() {
                let admin = free_port();
                self.admin_port = Some(admin);
                self.set_env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{admin}"));
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            }
            self.start();
        }
        panic!("{} found its ports taken {MAX_REBINDS} times; its log:\n{}", self.name, self.log());
    }

    fn set_env(&mut self, name: &str, value: String) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value));
    }

    async fn ready_or_exited(&self) -> Readiness {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // A port held by another process may accept and never answer.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return Readiness::Ready;
            }
            if self.exited() {
                return Readiness::Exited;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready within 20 s; its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process has ended (a zombie not yet reaped counts).
    fn exited(&self) -> bool {
        self.child.as_ref().is_none_or(|child| crate::host::has_exited(child.id()))
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (at most `within`). Returns whether it exited.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        crate::host::rss_kib(self.pid())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real nginx load-balancing `/events` and the rest over the gateways, with the SSE-safe
/// settings a deployment uses.
pub struct Nginx {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The nginx binary (Debian's nginx-light puts it in /usr/sbin).
fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx is not installed: run scripts/test, which installs it");
}

impl Nginx {
    /// Starts nginx on a free port in front of `upstreams`, cutting upstream reads idle
    /// for `read_timeout` (an nginx duration such as `2s`).
    pub async fn start(upstreams: &[u16], read_timeout: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let config = format!(
            r#"daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream gateways {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Last-Event-ID $http_last_event_id;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout {read_timeout};
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"#,
            dir = dir.path().display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "nginx did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Nginx { port, child, _dir: dir }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its workers too; SIGKILL would orphan them, still
        // holding the port.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Redis set-up a rig runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RigRedis {
    /// One redis-server with AOF (`appendfsync always`).
    #[default]
    Single,
    /// A Redis Cluster of three masters and three replicas (`REDIS_CLUSTER_NODES`).
    Cluster,
    /// A primary with two replicas behind three Sentinels (`REDIS_SENTINEL_NODES`).
    Sentinel,
}

/// The running Redis processes of a rig.
pub enum RigBackend {
    /// See [`RigRedis::Single`].
    Single(RedisServer),
    /// See [`RigRedis::Cluster`].
    Cluster(RedisCluster),
    /// See [`RigRedis::Sentinel`].
    Sentinel(RedisSentinels),
}

impl RigBackend {
    fn start(redis: RigRedis) -> RigBackend {
        match redis {
            RigRedis::Single => RigBackend::Single(RedisServer::builder().append_only(true).start()),
            RigRedis::Cluster => RigBackend::Cluster(RedisCluster::start()),
            RigRedis::Sentinel => RigBackend::Sentinel(RedisSentinels::start()),
        }
    }

    /// The settings that point a service (gateway, producer, janitor) at this Redis.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            RigBackend::Single(server) => vec![("REDIS_URL".to_owned(), server.url())],
            RigBackend::Cluster(cluster) => vec![("REDIS_CLUSTER_NODES".to_owned(), cluster.seeds())],
            RigBackend::Sentinel(set_up) => vec![
                ("REDIS_SENTINEL_NODES".to_owned(), set_up.sentinel_nodes()),
                ("REDIS_SENTINEL_MASTER".to_owned(), MASTER_NAME.to_owned()),
            ],
        }
    }

    /// The services' own connection handle, for the test's reads and writes.
    fn handle(&self) -> Redis {
        let (url, topology) = match self {
            RigBackend::Single(server) => (server.url(), Topology::Single),
            RigBackend::Cluster(cluster) => (
                "redis://127.0.0.1".to_owned(),
                Topology::Cluster { nodes: Node::parse_list(&cluster.seeds()).expect("cluster seeds") },
            ),
            RigBackend::Sentinel(set_up) => (
                "redis://127.0.0.1".to_owned(),
                Topology::Sentinel {
                    nodes: Node::parse_list(&set_up.sentinel_nodes()).expect("sentinel nodes"),
                    master: MASTER_NAME.to_owned(),
                },
            ),
        };
        Redis::new(&url, &topology, 2, Duration::from_secs(5)).expect("a Redis handle")
    }
}

/// Options of a rig.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// The Redis set-up.
    pub redis: RigRedis,
    /// Gateway processes.
    pub gateways: usize,
    /// Producer processes.
    pub producers: usize,
    /// nginx `proxy_read_timeout`.
    pub proxy_read_timeout: &'static str,
    /// Extra gateway settings.
    pub gateway_env: Vec<(&'static str, &'static str)>,
    /// Extra producer settings.
    pub producer_env: Vec<(&'static str, &'static str)>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            redis: RigRedis::Single,
            gateways: 3,
            producers: 2,
            proxy_read_timeout: "2s",
            gateway_env: Vec::new(),
            producer_env: Vec::new(),
        }
    }
}

/// Redis ([`RigRedis`]), gateways, producers and nginx.
pub struct Rig {
    /// The Redis processes.
    pub backend: RigBackend,
    /// A connection handle on them, of the services' own kind.
    pub handle: Redis,
    /// Key prefix of this rig.
    pub prefix: String,
    /// Gateway processes (instance ids `gw-0`, `gw-1`, ...).
    pub gateways: Vec<Service>,
    /// Producer processes.
    pub producers: Vec<Service>,
    /// The load balancer.
    pub nginx: Nginx,
}

impl Rig {
    /// Starts everything and waits until every service is ready.
    pub async fn start(name: &str, options: RigOptions) -> Rig {
        let backend = RigBackend::start(options.redis);

        let handle = backend.handle();
        let prefix = unique_prefix(name);
        let redis_env = backend.env();
        let common = |port: u16| {
            let mut env = redis_env.clone();
            env.push(("KEY_PREFIX".to_owned(), prefix.clone()));
            env.push(("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")));
            env
        };
        let mut gateways = Vec::new();
        for index in 0..options.gateways {
            let port = free_port();
            let mut env = common(port);
            env.push(("INSTANCE_ID".into(), format!("gw-{index}")));
            env.push(("ADMIN_LISTEN_ADDR".into(), format!("127.0.0.1:{}", free_port())));
            for (name, value) in [
                ("HEARTBEAT_INTERVAL", "1s"),
                ("RETRY_INTERVAL", "250ms"),
                ("LIVENESS_TTL", "3s"),
                ("DRAIN_TIMEOUT", "2s"),
                // The browser tests open the demo page through nginx.
                ("DEMO_PAGE", "true"),
            ]
            .iter()
            .chain(options.gateway_env.iter())
            {
                env.push(((*name).into(), (*value).into()));
            }
            gateways.push(Service::spawn(&format!("gateway-{index}"), "gateway", &[], port, env));
        }
        let mut producers = Vec::new();
        for index in 0..options.producers {
            let port = free_port();
            let mut env = common(port);
            for (name, value) in [
                ("INGEST_STREAM", crate::ingest::stream_under(&prefix)),
                ("INGEST_DEAD_LETTER", crate::ingest::dead_letter_under(&prefix)),
                ("INGEST_CLAIM_IDLE", "1s".into()),
                ("LIVENESS_CACHE", "0s".into()),
            ] {
                env.push((name.into(), value));
            }
            for (name, value) in &options.producer_env {
                env.push(((*name).into(), (*value).into()));
            }
            env.push(("HOSTNAME".into(), format!("producer-{index}")));
            producers.push(Service::spawn(&format!("producer-{index}"), "producer", &["serve"], port, env));
        }
        for service in gateways.iter_mut().chain(producers.iter_mut()) {
            service.wait_ready_or_rebind().await;
        }

        let upstreams: Vec<u16> = gateways.iter().map(|g| g.port).collect();
        let nginx = Nginx::start(&upstreams, options.proxy_read_timeout).await;
        Rig { backend, handle, prefix, gateways, producers, nginx }
    }

    /// The single redis-server; panics on a cluster or Sentinel rig.
    pub fn redis(&self) -> &RedisServer {
        match &self.backend {
            RigBackend::Single(server) => server,
            _ => panic!("this rig runs on a Redis Cluster or Sentinels, not one server"),
        }
    }

    /// The single redis-server, to stop or restart it; panics on a cluster or Sentinel rig.
    pub fn redis_mut(&mut self) -> &mut RedisServer {
        match &mut self.backend {
            RigBackend::Single(server) => server,
            _ => panic!("this rig runs on a Redis Cluster or Sentinels, not one server"),
        }
    }

    /// A connection on whatever Redis the rig runs (cluster-aware, Sentinel-aware).
    pub async fn conn(&self) -> Conn {
        self.handle.get().await.expect("a Redis connection")
    }

    /// Open SSE connections over every live gateway, from their `/admin/connections`.
    pub async fn open_connections(&self) -> u64 {
        let mut total = 0;
        for gateway in &self.gateways {
            if let Ok(response) = reqwest::get(gateway.admin_url("/admin/connections")).await
                && let Ok(body) = response.json::<serde_json::Value>().await
            {
                total += body["totals"]["open"].as_u64().unwrap_or(0);
            }
        }
        total
    }
}
