//! One handle for every way of reaching Redis: [`Redis`] hands out a [`Conn`] for ordinary
//! commands and a [`BlockingConnection`] for `XREAD BLOCK`, whatever the [`Topology`].
//!
//! - **Single server**: a deadpool pool of multiplexed connections, as before.
//! - **Cluster**: one `cluster_async::ClusterConnection` (multiplexed and `Clone`, so no
//!   pool). It follows `MOVED`/`ASK`, refreshes its slot map and retries on the new owner
//!   after a failover. Redis refuses a pipeline whose keys span slots, so [`Conn`] splits
//!   such a pipeline into one pipeline per slot, sent concurrently: every node receives
//!   its share back to back on its one connection, and the answers are put back in order.
//!   Blocking reads get a cluster connection of their own without a response timeout.
//! - **Sentinel**: one multiplexed connection to the primary the Sentinels name, dropped
//!   when it fails or answers `READONLY` (a demoted primary), so the next command asks the
//!   Sentinels again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_redis::Pool;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo as _, Pipeline, RedisFuture, Value,
};

use super::topology::{Node, Topology};
use super::{CONNECT_TIMEOUT, RedisError};

/// The connections of one service component to Redis. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Single { pool: Pool, url: String },
    Cluster(Arc<ClusterState>),
    Sentinel(Arc<SentinelState>),
}

struct ClusterState {
    /// Ordinary commands: the pool's response timeout.
    client: ClusterClient,
    /// Blocking reads: no response timeout.
    blocking: ClusterClient,
    conn: tokio::sync::Mutex<Option<ClusterConnection>>,
}

struct SentinelState {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    response_timeout: Duration,
    /// The connection to the primary, with an id so that a failed command only drops the
    /// connection it failed on, not a newer one.
    current: Arc<Mutex<Option<(u64, MultiplexedConnection)>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Single { .. } => "single",
            Inner::Cluster(_) => "cluster",
            Inner::Sentinel(_) => "sentinel",
        };
        f.debug_struct("Redis").field("topology", &kind).finish_non_exhaustive()
    }
}

impl Redis {
    /// Prepares the connections (made lazily, on first use): `url` is the server for
    /// [`Topology::Single`], and supplies user, password, database and TLS otherwise.
    /// `pool_size` bounds the single server's pool; `response_timeout` is how long an
    /// ordinary command waits for its answer.
    pub fn new(
        url: &str,
        topology: &Topology,
        pool_size: usize,
        response_timeout: Duration,
    ) -> Result<Redis, RedisError> {
        let inner = match topology {
            Topology::Single => Inner::Single {
                pool: super::pool_with_response_timeout(url, pool_size, response_timeout)?,
                url: url.to_owned(),
            },
            Topology::Cluster { nodes } => {
                let urls = nodes.iter().map(|node| node_url(url, node)).collect::<Result<Vec<_>, _>>()?;
                let client = ClusterClient::builder(urls.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    // Redirections and retries during a failover may take longer than one
                    // answer; a caller's own deadline (a publish's) still bounds the wait.
                    .overall_response_timeout(Some(response_timeout * 4))
                    .build()?;
                let blocking = ClusterClient::builder(urls).connection_timeout(CONNECT_TIMEOUT).build()?;
                Inner::Cluster(Arc::new(ClusterState {
                    client,
                    blocking,
                    conn: tokio::sync::Mutex::new(None),
                }))
            }
            Topology::Sentinel { nodes, master } => Inner::Sentinel(Arc::new(SentinelState {
                sentinel: tokio::sync::Mutex::new(sentinel_client(url, nodes, master)?),
                response_timeout,
                current: Arc::new(Mutex::new(None)),
                next_id: AtomicU64::new(0),
            })),
        };
        Ok(Redis { inner })
    }

    /// One server at `url`, with the default response timeout.
    pub fn single(url: &str, pool_size: usize) -> Result<Redis, RedisError> {
        Redis::new(url, &Topology::Single, pool_size, super::POOLED_RESPONSE_TIMEOUT)
    }

    /// Whether this is a Redis Cluster, where keys of different slots live on different
    /// nodes.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// A connection for ordinary commands (a pool checkout on a single server).
    pub async fn get(&self) -> Result<Conn, RedisError> {
        match &self.inner {
            Inner::Single { pool, .. } => Ok(Conn::Pooled(pool.get().await?)),
            Inner::Cluster(state) => {
                let mut conn = state.conn.lock().await;
                if let Some(conn) = conn.as_ref() {
                    return Ok(Conn::Cluster(conn.clone()));
                }
                let connected = state.client.get_async_connection().await?;
                *conn = Some(connected.clone());
                Ok(Conn::Cluster(connected))
            }
            Inner::Sentinel(state) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(state.response_timeout));
                let current = |state: &SentinelState| {
                    state.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
                };
                if let Some((id, conn)) = current(state) {
                    return Ok(Conn::Sentinel(SentinelConn {
                        conn,
                        id,
                        current: Arc::clone(&state.current),
                    }));
                }
                let mut sentinel = state.sentinel.lock().await;
                // Another task may have connected while this one waited.
                if let Some((id, conn)) = current(state) {
                    return Ok(Conn::Sentinel(SentinelConn {
                        conn,
                        id,
                        current: Arc::clone(&state.current),
                    }));
                }
                let conn = sentinel.get_async_connection_with_config(&config).await?;
                let id = state.next_id.fetch_add(1, Ordering::Relaxed);
                *state.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((id, conn.clone()));
                Ok(Conn::Sentinel(SentinelConn { conn, id, current: Arc::clone(&state.current) }))
            }
        }
    }

    /// A new dedicated connection for blocking commands (`XREAD BLOCK`): no response
    /// timeout. Never share it: other commands would wait behind the block. It does not
    /// reconnect by itself; open another after an error.
    pub async fn blocking_connection(&self) -> Result<BlockingConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        match &self.inner {
            Inner::Single { url, .. } => {
                let client = redis::Client::open(url.as_str())?;
                Ok(BlockingConnection::Node(
                    client.get_multiplexed_async_connection_with_config(&config).await?,
                ))
            }
            Inner::Cluster(state) => {
                Ok(BlockingConnection::Cluster(state.blocking.get_async_connection().await?))
            }
            Inner::Sentinel(state) => {
                let mut sentinel = state.sentinel.lock().await;
                Ok(BlockingConnection::Node(sentinel.get_async_connection_with_config(&config).await?))
            }
        }
    }
}

/// `url` (credentials, database, TLS) pointed at `node`.
fn node_url(url: &str, node: &Node) -> Result<String, RedisError> {
    let invalid = || RedisError::Pool("REDIS_URL must be a redis:// or rediss:// URL with a host".to_owned());
    let mut parsed = url::Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(invalid());
    }
    let host = if node.host.contains(':') { format!("[{}]", node.host) } else { node.host.clone() };
    parsed.set_host(Some(&host)).map_err(|_| invalid())?;
    parsed.set_port(Some(node.port)).map_err(|()| invalid())?;
    Ok(parsed.to_string())
}

/// A Sentinel client for `master`, with the user, password, database and TLS of `url` for
/// the data nodes. The Sentinels are reached with the same TLS mode and no password.
fn sentinel_client(url: &str, nodes: &[Node], master: &str) -> Result<SentinelClient, RedisError> {
    let info = url.into_connection_info()?;
    let tls = match info.addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => Some(redis::TlsMode::Insecure),
        ConnectionAddr::TcpTls { .. } => Some(redis::TlsMode::Secure),
        _ => None,
    };
    let addresses = nodes.iter().map(|node| match tls {
        Some(mode) => ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: mode == redis::TlsMode::Insecure,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(node.host.clone(), node.port),
    });
    let settings = info.redis_settings();
    let mut builder = SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)?
        .set_client_to_redis_db(settings.db());
    if let Some(mode) = tls {
        builder = builder.set_client_to_redis_tls_mode(mode).set_client_to_sentinel_tls_mode(mode);
    }
    if let Some(username) = settings.username() {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    Ok(builder.build()?)
}

/// A connection for ordinary commands. Implements [`ConnectionLike`], so commands,
/// pipelines and scripts run on it as on any redis-rs connection.
pub enum Conn {
    /// A pool checkout (single server).
    Pooled(deadpool_redis::Connection),
    /// The shared cluster connection.
    Cluster(ClusterConnection),
    /// The connection to the primary the Sentinels named.
    Sentinel(SentinelConn),
}

/// The Sentinel-found primary's connection; forgets it when it fails.
pub struct SentinelConn {
    conn: MultiplexedConnection,
    id: u64,
    current: Arc<Mutex<Option<(u64, MultiplexedConnection)>>>,
}

impl SentinelConn {
    /// After an error that says the connection is gone or no longer to the primary, drops
    /// it so the next checkout asks the Sentinels.
    fn observe<T>(&self, result: &redis::RedisResult<T>) {
        let Err(error) = result else { return };
        let demoted = error.code() == Some("READONLY");
        if demoted || error.is_connection_dropped() || error.is_unrecoverable_error() || error.is_io_error() {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|(id, _)| *id == self.id) {
                *current = None;
            }
        }
    }
}

impl Conn {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Another handle on the same cluster connection, for concurrent requests; `None`
    /// elsewhere (a pooled connection is one checkout).
    pub fn clone_cluster(&self) -> Option<Conn> {
        match self {
            Conn::Cluster(conn) => Some(Conn::Cluster(conn.clone())),
            _ => None,
        }
    }

    /// The primaries holding the keyspace: every cluster master, or `None` for the one
    /// server (or Sentinel primary) this connection talks to.
    pub async fn masters(&mut self) -> Result<Option<Vec<Node>>, RedisError> {
        if !self.is_cluster() {
            return Ok(None);
        }
        let slots = self.cluster_slots().await?;
        let mut masters: Vec<Node> = slots.into_iter().map(|(_, _, node, _)| node).collect();
        masters.sort();
        masters.dedup();
        Ok(Some(masters))
    }

    /// Runs `cmd` on `node` (a cluster master from [`Conn::masters`]), or where it routes
    /// when `node` is `None`.
    pub async fn query_on(&mut self, node: Option<&Node>, cmd: &Cmd) -> Result<Value, RedisError> {
        match (self, node) {
            (Conn::Cluster(conn), Some(node)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                Ok(conn.route_command(cmd.clone(), routing).await?)
            }
            (conn, _) => Ok(conn.req_packed_command(cmd).await?),
        }
    }

    /// Which master serves which slots, as a comparable text: it changes with every
    /// failover and resharding. `None` outside a cluster.
    pub async fn topology_fingerprint(&mut self) -> Result<Option<String>, RedisError> {
        if !self.is_cluster() {
            return Ok(None);
        }
        let mut slots = self.cluster_slots().await?;
        slots.sort();
        Ok(Some(
            slots
                .iter()
                .map(|(start, end, _, id)| format!("{start}-{end}:{id}"))
                .collect::<Vec<_>>()
                .join(","),
        ))
    }

    /// `CLUSTER SLOTS`: (first slot, last slot, master, master's node id) per range.
    async fn cluster_slots(&mut self) -> Result<Vec<(i64, i64, Node, String)>, RedisError> {
        let reply = self.req_packed_command(&redis::cmd("CLUSTER").arg("SLOTS").clone()).await?;
        let unexpected = || RedisError::Pool("unexpected CLUSTER SLOTS reply".to_owned());
        let Value::Array(ranges) = reply else { return Err(unexpected()) };
        let mut slots = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else { return Err(unexpected()) };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(unexpected());
            };
            let text = |value: Option<&Value>| match value {
                Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
                Some(Value::SimpleString(text)) => Some(text.clone()),
                _ => None,
            };
            let (Some(host), Some(Value::Int(port))) = (text(master.first()), master.get(1)) else {
                return Err(unexpected());
            };
            let id = text(master.get(2)).unwrap_or_default();
            let port = u16::try_from(*port).map_err(|_| unexpected())?;
            slots.push((*start, *end, Node::new(host, port), id));
        }
        Ok(slots)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            Conn::Sentinel(conn) => Box::pin(async move {
                let result = conn.conn.req_packed_command(cmd).await;
                conn.observe(&result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pooled(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => {
                if pipeline.is_transaction() {
                    return conn.req_packed_commands(pipeline, offset, count);
                }
                Box::pin(split_by_slot(conn.clone(), pipeline))
            }
            Conn::Sentinel(conn) => Box::pin(async move {
                let result = conn.conn.req_packed_commands(pipeline, offset, count).await;
                conn.observe(&result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
            Conn::Sentinel(conn) => conn.conn.get_db(),
        }
    }
}

/// Runs a pipeline whose keys may span slots: one pipeline per slot (commands without a
/// key go together to any node), all at once, answers put back in the pipeline's order.
/// A pipeline of one slot goes as it is.
async fn split_by_slot(conn: ClusterConnection, pipeline: &Pipeline) -> redis::RedisResult<Vec<Value>> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Option<Slot>, usize> = HashMap::new();
    for (position, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = first_key(cmd).map(Slot::for_key);
        let group = *index.entry(slot).or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(position);
    }
    let n_commands = pipeline.cmd_iter().count();
    if groups.len() <= 1 {
        let mut conn = conn;
        return conn.req_packed_commands(pipeline, 0, n_commands).await;
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let requests = groups.iter().map(|(_, positions)| {
        let mut part = redis::pipe();
        for position in positions {
            part.add_command(commands[*position].clone());
        }
        let mut conn = conn.clone();
        let n = positions.len();
        async move { conn.req_packed_commands(&part, 0, n).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut values = vec![Value::Nil; n_commands];
    for ((_, positions), answer) in groups.iter().zip(answers) {
        for (position, value) in positions.iter().zip(answer?) {
            values[*position] = value;
        }
    }
    Ok(values)
}

/// The key a command is routed by, for the commands Streamgate sends: the first key of a
/// script, the first stream of `XREAD`/`XREADGROUP`, no key for server commands, else the
/// first argument.
fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let n_keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (n_keys > 0).then(|| args.get(3).map(|key| key.to_vec())).flatten()
        }
        b"XREAD" | b"XREADGROUP" => {
            let streams = args.iter().position(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(streams + 1).map(|key| key.to_vec())
        }
        b"PING" | b"TIME" | b"INFO" | b"SCAN" | b"SCRIPT" | b"CLUSTER" | b"ROLE" | b"WAIT" | b"MULTI"
        | b"EXEC" => None,
        _ => args.get(1).map(|key| key.to_vec()),
    }
}

/// A dedicated connection for blocking reads.
pub enum BlockingConnection {
    /// To one server (or the Sentinels' primary).
    Node(MultiplexedConnection),
    /// A cluster connection of its own, which follows the stream's slot to its master.
    Cluster(ClusterConnection),
}

impl ConnectionLike for BlockingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            BlockingConnection::Node(conn) => conn.req_packed_command(cmd),
            BlockingConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            BlockingConnection::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            BlockingConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            BlockingConnection::Node(conn) => conn.get_db(),
            BlockingConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_routed_by_their_first_key() {
        let key = |cmd: &Cmd| first_key(cmd).map(|k| String::from_utf8(k).unwrap());
        assert_eq!(key(redis::cmd("XADD").arg("s{a}").arg("*").arg("f").arg("v")), Some("s{a}".to_owned()));
        assert_eq!(key(redis::cmd("EVALSHA").arg("abc").arg(2).arg("k1").arg("k2")), Some("k1".to_owned()));
        assert_eq!(key(redis::cmd("EVAL").arg("return 1").arg(0)), None);
        assert_eq!(
            key(redis::cmd("XREAD").arg("BLOCK").arg(10).arg("STREAMS").arg("s").arg("0")),
            Some("s".to_owned())
        );
        assert_eq!(key(redis::cmd("PING").arg("x")), None);
    }

    #[test]
    fn node_urls_keep_credentials_database_and_tls() {
        let url = node_url("rediss://gw:secret@ignored:6379/0", &Node::new("10.0.0.7", 7001)).unwrap();
        assert_eq!(url, "rediss://gw:secret@10.0.0.7:7001/0");
        assert!(node_url("redis+unix:///tmp/r.sock", &Node::new("a", 1)).is_err());
    }
}
