//! Real multi-node Redis set-ups for tests: a Redis Cluster of three masters and three
//! replicas ([`RedisCluster`]), and a primary with two replicas watched by three Sentinels
//! ([`RedisSentinels`]). Every process is a real `redis-server` on a free loopback port,
//! killed when the handle is dropped. Failovers are quick: a 1 s node timeout in the
//! cluster, `down-after-milliseconds 1000` for the Sentinels.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::redis_server::RedisServer;

/// How long a cluster or a Sentinel set-up may take to form, or to fail over.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);

fn query(server: &RedisServer, command: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut connection = server.redis_client().get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut connection)
}

fn text(server: &RedisServer, command: &[&str]) -> String {
    match query(server, command) {
        Ok(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        Ok(other) => format!("{other:?}"),
        Err(error) => format!("error: {error}"),
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + FORM_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {FORM_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_replicas_in_sync(servers: &[RedisServer]) {
    wait_until("every replica is in sync with its master", || {
        servers.iter().filter(|s| query(s, &["PING"]).is_ok()).all(|server| {
            let info = text(server, &["INFO", "replication"]);
            !info.contains("role:slave") || info.contains("master_link_status:up")
        })
    });
}

/// Three masters and three replicas, slots spread evenly by `redis-cli --cluster create`.
pub struct RedisCluster {
    /// Every node, masters first as created (roles change with failovers).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, joins them into a cluster and waits until it serves every slot
    /// and every master has its replica.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::builder().cluster_node().start()).collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        crate::host::create_cluster(&addresses, 1);
        let cluster = RedisCluster { nodes };
        cluster.wait_healthy();
        cluster
    }

    /// The seed list for `REDIS_CLUSTER_NODES`: every node's `host:port`.
    pub fn seeds(&self) -> String {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect::<Vec<_>>().join(",")
    }

    /// Waits until every running node reports `cluster_state:ok` and sees three masters
    /// with a replica each.
    pub fn wait_healthy(&self) {
        wait_until("the cluster serves every slot with a replica per master", || {
            self.nodes.iter().filter(|n| query(n, &["PING"]).is_ok()).all(|node| {
                let info = text(node, &["CLUSTER", "INFO"]);
                let nodes = text(node, &["CLUSTER", "NODES"]);
                let live = |role: &str| {
                    nodes
                        .lines()
                        .filter(|l| l.contains(role) && !l.contains("fail") && !l.contains("noaddr"))
                        .count()
                };
                info.contains("cluster_state:ok") && live("master") == 3 && live("slave") >= 2
            })
        });
    }

    /// Waits until every running replica has finished its initial sync with its master
    /// (`master_link_status:up`): before that, a failover promotes a replica without data.
    pub fn wait_replicas_in_sync(&self) {
        wait_replicas_in_sync(&self.nodes);
    }

    /// Waits until a node other than `from` serves `key` as master (a failover), then until
    /// the cluster is healthy again; returns the new master's index.
    pub fn wait_master_moved(&self, key: &str, from: usize) -> usize {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let now = loop {
            let now = self.serving_master(key).unwrap_or(from);
            if now != from {
                break now;
            }
            if Instant::now() > deadline {
                let views: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| query(n, &["PING"]).is_ok())
                    .map(|n| format!("{}: {}", n.port(), text(n, &["CLUSTER", "NODES"])))
                    .collect();
                panic!(
                    "no replica took over the dead master's slots within {FORM_TIMEOUT:?}:\n{}",
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.wait_healthy();
        now
    }

    /// The index in [`RedisCluster::nodes`] of the node that serves `key` as master now.
    pub fn master_of(&self, key: &str) -> usize {
        self.serving_master(key).expect("some master serves every slot")
    }

    /// The master serving `key`, if one does (none during a failover).
    fn serving_master(&self, key: &str) -> Option<usize> {
        let slot = self
            .nodes
            .iter()
            .find_map(|node| match query(node, &["CLUSTER", "KEYSLOT", key]) {
                Ok(redis::Value::Int(slot)) => u16::try_from(slot).ok(),
                _ => None,
            })
            .expect("a node answers CLUSTER KEYSLOT");
        let view = self
            .nodes
            .iter()
            .filter(|node| query(node, &["PING"]).is_ok())
            .map(|node| text(node, &["CLUSTER", "NODES"]))
            .find(|view| !view.starts_with("error"))
            .expect("a node answers CLUSTER NODES");
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>`
        let port = view
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| {
                fields.len() > 8
                    && fields[2].contains("master")
                    && !fields[2].contains("fail")
                    && fields[8..].iter().any(|range| match range.split_once('-') {
                        Some((a, b)) => {
                            a.parse::<u16>().is_ok_and(|a| a <= slot)
                                && b.parse::<u16>().is_ok_and(|b| slot <= b)
                        }
                        None => range.parse::<u16>() == Ok(slot),
                    })
            })
            .and_then(|fields| fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse::<u16>().ok()))?;
        self.nodes.iter().position(|node| node.port() == port)
    }
}

/// One `redis-server --sentinel` process.
pub struct Sentinel {
    /// Its port.
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl Sentinel {
    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self._dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary, two replicas and three Sentinels watching them as `mymaster` (quorum 2).
pub struct RedisSentinels {
    /// The data nodes, the first the primary at start.
    pub servers: Vec<RedisServer>,
    /// The Sentinels.
    pub sentinels: Vec<Sentinel>,
}

/// The master name the Sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

impl RedisSentinels {
    /// Starts the primary, its replicas and the Sentinels, and waits until every Sentinel
    /// knows both replicas.
    pub fn start() -> RedisSentinels {
        let servers: Vec<RedisServer> =
            (0..3).map(|_| RedisServer::builder().append_only(true).start()).collect();
        let master_port = servers[0].port().to_string();
        for replica in &servers[1..] {
            query(replica, &["REPLICAOF", "127.0.0.1", &master_port]).expect("REPLICAOF");
        }
        let sentinels: Vec<Sentinel> = (0..3).map(|_| start_sentinel(servers[0].port())).collect();
        let set_up = RedisSentinels { servers, sentinels };
        wait_until("every Sentinel sees the primary with two replicas", || {
            set_up.sentinels.iter().all(|sentinel| {
                let replicas = sentinel_query(sentinel.port, &["SENTINEL", "REPLICAS", MASTER_NAME]);
                matches!(replicas, Ok(redis::Value::Array(ref list)) if list.len() == 2)
            })
        });
        set_up
    }

    /// Waits until both replicas have finished their initial sync with the primary.
    pub fn wait_replicas_in_sync(&self) {
        wait_replicas_in_sync(&self.servers);
    }

    /// `host:port,…` of the Sentinels, for `REDIS_SENTINEL_NODES`.
    pub fn sentinel_nodes(&self) -> String {
        self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",")
    }

    /// The port of the primary as the Sentinels report it now.
    pub fn master_port(&self) -> Option<u16> {
        let reply =
            sentinel_query(self.sentinels[0].port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        let (_, port): (String, u16) = redis::FromRedisValue::from_redis_value(reply.ok()?).ok()?;
        Some(port)
    }

    /// Waits until the Sentinels report a primary other than the one on `old_port`.
    /// Panics with the Sentinels' logs after `FORM_TIMEOUT`.
    pub fn wait_failover_from(&self, old_port: u16) -> u16 {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let new_port = self.master_port().unwrap_or(old_port);
            if new_port != old_port {
                return new_port;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .sentinels
                    .iter()
                    .map(|sentinel| format!("--- Sentinel {} ---\n{}", sentinel.port, sentinel.log()))
                    .collect();
                panic!("the Sentinels promoted no replica within {FORM_TIMEOUT:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sentinel_query(port: u16, command: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut connection)
}

fn start_sentinel(master_port: u16) -> Sentinel {
    let dir = tempfile::Builder::new().prefix("streamgate-sentinel-").tempdir().expect("sentinel dir");
    for _ in 0..5 {
        let port = crate::host::free_port();
        let config = dir.path().join("sentinel.conf");
        fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let log = fs::File::create(dir.path().join("sentinel.log")).expect("sentinel log");
        let mut child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start redis-server --sentinel");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sentinel_query(port, &["PING"]).is_ok() {
                return Sentinel { port, child, _dir: dir };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // the port was taken: try another
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no Sentinel could start");
}
