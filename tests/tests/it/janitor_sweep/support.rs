//! Helpers of the janitor tests: the Redis a scenario runs against (one server or the
//! Redis Cluster), running the real `janitor` and `gateway` binaries, fabricating the state
//! dead gateways leave, dumping every key under a prefix, waiting with a deadline.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use janitor::{JanitorConfig, Sweeper};
use redis::AsyncCommands;
use redis::Value as RedisValue;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture};
use serde_json::Value;
use streamgate::keys::Keys;
use streamgate::redis::{Conn, Node, POOLED_RESPONSE_TIMEOUT, Redis, Topology};
use streamgate::topic::{InstanceId, Topic};
use streamgate_tests::binaries::workspace_binary;
use streamgate_tests::redis_cluster::RedisCluster;
use streamgate_tests::redis_server::RedisServer;

/// How long a condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long one janitor run may take: a sweep of a test's keys takes milliseconds, the
/// rest is process start-up on a busy machine.
const JANITOR_TIMEOUT: Duration = Duration::from_secs(30);

/// The Redis a scenario runs against: one `redis-server`, or the harness's Redis Cluster
/// (three masters, three replicas) that every service reaches through
/// `REDIS_CLUSTER_NODES`, so a scenario's keys spread over every master.
pub struct Target {
    url: String,
    cluster_nodes: Option<String>,
}

impl Target {
    /// One server.
    pub fn single(server: &RedisServer) -> Target {
        Target { url: server.url(), cluster_nodes: None }
    }

    /// The cluster, seeded with every node.
    pub fn cluster(cluster: &RedisCluster) -> Target {
        Target { url: cluster.nodes[0].url(), cluster_nodes: Some(cluster.seeds()) }
    }

    /// `REDIS_URL` (on the cluster: a node's, for its credentials only).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The topology settings a service needs besides `REDIS_URL` (`REDIS_CLUSTER_NODES` on
    /// the cluster, nothing otherwise), followed by `extra`.
    pub fn settings<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut settings = Vec::new();
        if let Some(nodes) = &self.cluster_nodes {
            settings.push(("REDIS_CLUSTER_NODES", nodes.as_str()));
        }
        settings.extend_from_slice(extra);
        settings
    }

    /// The services' own Redis handle on this target.
    pub fn handle(&self) -> Redis {
        let topology = match &self.cluster_nodes {
            Some(nodes) => Topology::Cluster { nodes: Node::parse_list(nodes).expect("seed list") },
            None => Topology::Single,
        };
        Redis::new(&self.url, &topology, 4, POOLED_RESPONSE_TIMEOUT).expect("redis handle")
    }

    /// A connection for the test's own reads and writes.
    pub async fn conn(&self) -> TestConn {
        if self.cluster_nodes.is_none() {
            let client = redis::Client::open(self.url.as_str()).expect("redis url");
            return TestConn::Single(client.get_multiplexed_async_connection().await.expect("connect"));
        }
        TestConn::Cluster(self.handle().get().await.expect("cluster connection"))
    }

    /// A publisher in this process, on this target.
    pub fn publisher(&self, prefix: &str) -> producer::publisher::Publisher {
        streamgate_tests::publish::publisher_on(self.handle(), prefix)
    }
}

/// The test's connection: to the one server, or to the cluster (commands routed by slot,
/// `KEYS` asked of every master, pipelines split by slot).
pub enum TestConn {
    /// One server.
    Single(MultiplexedConnection),
    /// The cluster.
    Cluster(Conn),
}

impl Clone for TestConn {
    fn clone(&self) -> TestConn {
        match self {
            TestConn::Single(conn) => TestConn::Single(conn.clone()),
            TestConn::Cluster(conn) => TestConn::Cluster(conn.clone_cluster().expect("a cluster connection")),
        }
    }
}

impl ConnectionLike for TestConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, RedisValue> {
        match self {
            TestConn::Single(conn) => conn.req_packed_command(cmd),
            TestConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<RedisValue>> {
        match self {
            TestConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            TestConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            TestConn::Single(conn) => conn.get_db(),
            TestConn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Waits until `condition` holds, polling every 50 ms; fails the test after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    streamgate_tests::wait::wait_until(what, WAIT, condition).await;
}

/// The key schema under `prefix`.
pub fn keys(prefix: &str) -> Keys {
    Keys::new(prefix).expect("test prefix")
}

/// A topic.
pub fn topic(name: &str) -> Topic {
    Topic::parse(name, 256).expect("topic")
}

/// An instance id.
pub fn instance(id: &str) -> InstanceId {
    InstanceId::parse(id).expect("instance id")
}

pub use streamgate_tests::host::free_port;

/// Redis' clock, in unix ms.
pub async fn server_time_ms(conn: &mut (impl ConnectionLike + Send)) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    seconds * 1000 + micros / 1000
}

/// The millisecond part of a cursor or stream id (`1732350000000-0~epoch`).
pub fn id_ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).expect("a stream id")
}

/// Writes what a gateway that died without deregistering leaves: its topic record, its
/// subscriber count in each topic's group hash, its instance stream and its index entry
/// (score 1, a heartbeat long ago) — and no liveness key.
pub async fn fabricate_dead_instance(
    conn: &mut (impl ConnectionLike + Send),
    keys: &Keys,
    id: &str,
    topics: &[&str],
) {
    let dead = instance(id);
    let mut pipe = redis::pipe();
    for name in topics {
        pipe.hset(keys.group(&topic(name)), id, 1).ignore();
        pipe.sadd(keys.instance_topics(&dead), *name).ignore();
    }
    pipe.cmd("XADD").arg(keys.instance_stream(&dead)).arg("*").arg("t").arg("x").ignore();
    pipe.zadd(keys.instances(), id, 1).ignore();
    pipe.query_async::<()>(conn).await.expect("fabricate a dead instance");
}

/// Every key under `prefix` with its type and full content, to compare states. (`KEYS`,
/// which a cluster connection asks of every master, where a `SCAN` would cover one node.)
pub async fn dump(conn: &mut (impl ConnectionLike + Send + Sync), prefix: &str) -> BTreeMap<String, String> {
    let names: Vec<String> = conn.keys(format!("{prefix}:*")).await.expect("KEYS");
    let mut dump = BTreeMap::new();
    for name in names {
        let kind: String = redis::cmd("TYPE").arg(&name).query_async(conn).await.expect("TYPE");
        let content = match kind.as_str() {
            "string" => format!("{:?}", conn.get::<_, RedisValue>(&name).await.expect("GET")),
            "hash" => {
                format!("{:?}", conn.hgetall::<_, BTreeMap<String, String>>(&name).await.expect("HGETALL"))
            }
            "set" => {
                let mut members: Vec<String> = conn.smembers(&name).await.expect("SMEMBERS");
                members.sort();
                format!("{members:?}")
            }
            "zset" => {
                format!("{:?}", conn.zrange_withscores::<_, RedisValue>(&name, 0, -1).await.expect("ZRANGE"))
            }
            "list" => format!("{:?}", conn.lrange::<_, RedisValue>(&name, 0, -1).await.expect("LRANGE")),
            "stream" => {
                let entries: RedisValue = redis::cmd("XRANGE")
                    .arg(&name)
                    .arg("-")
                    .arg("+")
                    .query_async(conn)
                    .await
                    .expect("XRANGE");
                format!("{entries:?}")
            }
            other => format!("<{other}>"),
        };
        dump.insert(name, format!("{kind} {content}"));
    }
    dump
}

/// A sweeper in this process on `target`, as the binary would build it from `settings`.
pub fn sweeper(target: &Target, prefix: &str, settings: &[(&str, &str)]) -> Sweeper {
    let mut all = vec![("REDIS_URL", target.url()), ("KEY_PREFIX", prefix)];
    all.extend(target.settings(settings));
    let config = JanitorConfig::with_overrides(&all).expect("janitor configuration");
    let pool =
        Redis::new(&config.common.redis_url, &config.common.redis_topology, 2, POOLED_RESPONSE_TIMEOUT)
            .expect("redis");
    Sweeper::new(pool, config.common.keys, config.sweep)
}

/// The outcome of one run of the `janitor` binary.
#[derive(Debug)]
pub struct JanitorRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr (its logs).
    pub stderr: String,
}

impl JanitorRun {
    /// The run's JSON report, asserting it exited 0 and printed exactly one line.
    pub fn report(&self) -> Value {
        assert_eq!(self.code, Some(0), "janitor failed: {self:#?}");
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "expected one JSON line on stdout: {self:#?}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

/// A `janitor` command against `redis_url` under `prefix` with `settings` in its
/// environment (the test's own configuration file and log filter left out).
pub fn janitor_command(redis_url: &str, prefix: &str, settings: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(workspace_binary("janitor"));
    command
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env_remove("RUST_LOG")
        .env("REDIS_URL", redis_url)
        .env("KEY_PREFIX", prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in settings {
        command.env(name, value);
    }
    command
}

/// Runs the `janitor` binary once with `args` and waits for it.
pub async fn run_janitor(
    redis_url: &str,
    prefix: &str,
    args: &[&str],
    settings: &[(&str, &str)],
) -> JanitorRun {
    let mut command = janitor_command(redis_url, prefix, settings);
    command.args(args);
    let output = tokio::time::timeout(JANITOR_TIMEOUT, command.output())
        .await
        .expect("janitor finishes in time")
        .expect("run the janitor binary");
    JanitorRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A report's counts, without what differs from run to run (duration, the dry-run flag,
/// and keys examined, which a real sweep lowers by deleting keys before the SCAN meets them).
pub fn counts(report: &Value) -> BTreeMap<String, Value> {
    let object = report.as_object().expect("a JSON object");
    object
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "duration_ms" | "dry_run" | "keys_examined"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A `gateway` process, killed (SIGKILL) when dropped.
pub struct GatewayProcess {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl GatewayProcess {
    /// Starts the `gateway` binary on `target` on a free port with `INSTANCE_ID=instance`
    /// and a 3 s liveness TTL (the shortest allowed), and waits until it is ready.
    pub async fn start(target: &Target, prefix: &str, instance: &str) -> GatewayProcess {
        let port = free_port();
        let mut command = std::process::Command::new(workspace_binary("gateway"));
        command.envs(target.settings(&[]));
        command
            .env_remove(streamgate::config::CONFIG_FILE_ENV)
            .env("REDIS_URL", target.url())
            .env("KEY_PREFIX", prefix)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_LISTEN_ADDR", "off")
            .env("INSTANCE_ID", instance)
            .env("LIVENESS_TTL", "3s")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        let gateway = GatewayProcess { child: command.spawn().expect("spawn the gateway binary"), port };
        let ready = gateway.url("/readyz");
        wait_until("gateway process ready", || async {
            reqwest::get(&ready).await.is_ok_and(|response| response.status().is_success())
        })
        .await;
        gateway
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL, like a crash: no deregistration.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
