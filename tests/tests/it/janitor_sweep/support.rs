//! Helpers of the janitor tests: running the real `janitor` and `gateway` binaries,
//! fabricating the state dead gateways leave, dumping every key under a prefix, waiting
//! with a deadline.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use janitor::{JanitorConfig, Sweeper};
use redis::AsyncCommands;
use redis::Value as RedisValue;
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use streamgate::keys::Keys;
use streamgate::topic::{InstanceId, Topic};
use streamgate_tests::binaries::workspace_binary;

/// How long a condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long one janitor run may take: a sweep of a test's keys takes milliseconds, the
/// rest is process start-up on a busy machine.
const JANITOR_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A free loopback port (bound to port 0, read back, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Redis' clock, in unix ms.
pub async fn server_time_ms(conn: &mut MultiplexedConnection) -> u64 {
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
    conn: &mut MultiplexedConnection,
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

/// Every key under `prefix` with its type and full content, to compare states.
pub async fn dump(conn: &mut MultiplexedConnection, prefix: &str) -> BTreeMap<String, String> {
    let mut names: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        names.extend(page);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
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

/// A sweeper in this process, as the binary would build it from `settings`.
pub fn sweeper(redis_url: &str, prefix: &str, settings: &[(&str, &str)]) -> Sweeper {
    let mut all = vec![("REDIS_URL", redis_url), ("KEY_PREFIX", prefix)];
    all.extend_from_slice(settings);
    let config = JanitorConfig::with_overrides(&all).expect("janitor configuration");
    let pool = streamgate::redis::Redis::single(redis_url, 2).expect("redis");
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
    /// Starts the `gateway` binary on a free port with `INSTANCE_ID=instance` and a 3 s
    /// liveness TTL (the shortest allowed), and waits until it is ready.
    pub async fn start(redis_url: &str, prefix: &str, instance: &str) -> GatewayProcess {
        let port = free_port();
        let mut command = std::process::Command::new(workspace_binary("gateway"));
        command
            .env_remove(streamgate::config::CONFIG_FILE_ENV)
            .env("REDIS_URL", redis_url)
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
