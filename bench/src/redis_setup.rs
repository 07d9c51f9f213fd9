//! The Redis of a benchmark run: one private `redis-server`, or a Redis Cluster of three
//! masters (no replicas, so its CPU compares with the one server's) formed the way the
//! test harness forms one: `redis-server --cluster-enabled yes` on free ports, then
//! `redis-cli --cluster create`. Processes are part of the system under test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host;
use crate::procs::{Proc, free_port};

/// Masters of the benchmark's Redis Cluster.
pub const CLUSTER_MASTERS: usize = 3;
/// How long a node may take to accept connections, or the cluster to serve every slot.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which Redis a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    /// One `redis-server`.
    Single,
    /// A Redis Cluster of [`CLUSTER_MASTERS`] masters.
    Cluster,
}

/// The running Redis of a run.
pub struct RedisSetup {
    nodes: Vec<Proc>,
    /// `REDIS_URL` (on a cluster, its first node's, for the services' credentials only).
    pub url: String,
    /// `REDIS_CLUSTER_NODES`, on a cluster.
    cluster_nodes: Option<String>,
}

impl RedisSetup {
    /// Starts `kind` with its files and logs in `dir`.
    pub async fn start(kind: RedisKind, dir: &Path) -> RedisSetup {
        match kind {
            RedisKind::Single => {
                let (node, port) = start_node("redis", dir, &[]).await;
                RedisSetup {
                    nodes: vec![node],
                    url: format!("redis://127.0.0.1:{port}"),
                    cluster_nodes: None,
                }
            }
            RedisKind::Cluster => start_cluster(dir).await,
        }
    }

    /// The Redis settings of every service: `REDIS_URL`, and `REDIS_CLUSTER_NODES` on a
    /// cluster.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("REDIS_URL", self.url.clone())];
        if let Some(nodes) = &self.cluster_nodes {
            env.push(("REDIS_CLUSTER_NODES", nodes.clone()));
        }
        env
    }

    /// Whether this is the Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster_nodes.is_some()
    }

    /// Resident memory of every node, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.nodes.iter().map(Proc::rss_kib).sum()
    }

    /// CPU seconds so far of every node.
    pub fn cpu_seconds(&self) -> f64 {
        self.nodes.iter().map(Proc::cpu_seconds).sum()
    }
}

/// Starts one `redis-server` without persistence and with `noeviction`, plus `extra`
/// arguments, and waits until it accepts connections.
async fn start_node(name: &str, dir: &Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let (port_text, dir_text) = (port.to_string(), node_dir.display().to_string());
    let mut args = vec![
        "--port",
        &port_text,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir_text,
        "--maxmemory-policy",
        "noeviction",
    ];
    args.extend_from_slice(extra);
    let node = Proc::spawn(name, Path::new("redis-server"), &args, &[], dir);
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{name} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (node, port)
}

async fn start_cluster(dir: &Path) -> RedisSetup {
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for index in 0..CLUSTER_MASTERS {
        // `cluster-config-file` is relative to each node's own `--dir`.
        let extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
        let (node, port) = start_node(&format!("redis-{index}"), dir, &extra).await;
        nodes.push(node);
        addresses.push(format!("127.0.0.1:{port}"));
    }
    host::create_cluster(&addresses, 0);
    let deadline = Instant::now() + START_TIMEOUT;
    for address in &addresses {
        let (_, port) = address.split_once(':').expect("host:port");
        loop {
            let info = Command::new("redis-cli").args(["-p", port, "cluster", "info"]).output();
            if info.is_ok_and(|info| String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")) {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster does not serve every slot (node {address})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    RedisSetup { nodes, url: format!("redis://{}", addresses[0]), cluster_nodes: Some(addresses.join(",")) }
}

/// Zeroes a single Redis' command statistics (`CONFIG RESETSTAT`), so that
/// [`command_breakdown`] afterwards covers only what ran since.
pub async fn reset_command_stats(conn: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(conn).await.expect("CONFIG RESETSTAT");
}

/// Redis' own time per event by command, from `INFO commandstats`, the `top` costliest
/// first: "xadd 3.8 µs (3.00 calls)", "evalsha 26.3 µs (a call per 50 events)". A script's entry includes the commands it ran, which
/// also appear on their own (their calls from inside scripts are counted too), so the
/// figures of one row do not add up to Redis' CPU: they say where its time goes.
pub async fn command_breakdown(
    conn: &mut redis::aio::MultiplexedConnection,
    events: u64,
    top: usize,
) -> String {
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("INFO commandstats");
    let mut rows: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<u64> {
                stats.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            };
            Some((name.to_owned(), field("calls")?, field("usec")?))
        })
        .collect();
    rows.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    let events = events.max(1) as f64;
    rows.iter()
        .take(top)
        .map(|(name, calls, usec)| {
            let per_event = *calls as f64 / events;
            let calls = if per_event >= 0.1 {
                format!("{per_event:.2} calls")
            } else {
                format!("a call per {:.0} events", 1.0 / per_event.max(1e-9))
            };
            format!("{name} {:.1} µs ({calls})", *usec as f64 / events)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
