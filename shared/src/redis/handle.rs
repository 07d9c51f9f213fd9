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
//!   Sentinels again. A primary can also be replaced while it still answers: the Sentinels
//!   lost sight of it (a partition, a pause longer than `down-after-milliseconds`) and
//!   promoted a replica, and it keeps accepting writes until they reach it again, which
//!   may be never. Everything written to it then is lost. So the handle asks the Sentinels
//!   which primary they name at most [`PRIMARY_RECHECK`] after its last look, in the
//!   background, and moves there when it changed; blocking connections made before then
//!   report themselves stale ([`BlockingConnection::is_stale`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::pool::{Pool, observed};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

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

/// How long the Sentinel handle trusts the primary it connected to before it asks the
/// Sentinels again (in the background, on the next use). With the Sentinels'
/// `down-after-milliseconds` and election, this bounds how long writes can go to a primary
/// the Sentinels have replaced without telling it.
pub const PRIMARY_RECHECK: Duration = Duration::from_secs(1);
/// How long one Sentinel may take to answer which primary it names.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

struct SentinelState {
    /// `REDIS_URL`: user, password, database and TLS for the data nodes.
    url: String,
    /// The Sentinels' URLs (`REDIS_URL`'s TLS mode, no credentials), and the master name.
    sentinels: Vec<String>,
    master: String,
    response_timeout: Duration,
    /// The connection to the primary, with an id so that a failed command only drops the
    /// connection it failed on, not a newer one.
    current: Arc<Mutex<Option<(u64, MultiplexedConnection)>>>,
    next_id: AtomicU64,
    /// Held while a task connects, so concurrent checkouts wait for its connection.
    connecting: tokio::sync::Mutex<()>,
    /// The primary as last named by the Sentinels, under which configuration epoch, and
    /// how many times it changed: a blocking connection made under an older count talks to
    /// a replaced primary.
    primary: Mutex<Option<(Node, u64)>>,
    generation: AtomicU64,
    /// When the Sentinels were last asked, and whether a background check is running.
    checked_at: Mutex<Instant>,
    checking: AtomicBool,
}

impl SentinelState {
    /// Asks every Sentinel at once which primary it names, and believes the one named under
    /// the newest configuration epoch (every failover increments it). The first Sentinel
    /// that answers is not enough: one that has not heard of a failover yet names the old
    /// primary as soon as it answers again, and the old primary, not told either, says
    /// `ROLE` master.
    async fn ask_sentinels(&self) -> Result<(Node, u64), RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(SENTINEL_TIMEOUT));
        let asks = self.sentinels.iter().map(|sentinel| {
            let config = config.clone();
            async move {
                let client = redis::Client::open(sentinel.as_str())?;
                let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                let fields: HashMap<String, String> =
                    redis::cmd("SENTINEL").arg("MASTER").arg(&self.master).query_async(&mut conn).await?;
                Ok::<_, RedisError>(fields)
            }
        });
        let mut best: Option<(Node, u64)> = None;
        let mut last_error = None;
        for answer in futures_util::future::join_all(asks).await {
            let fields = match answer {
                Ok(fields) => fields,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            let flags = fields.get("flags").map_or("", String::as_str);
            // Mid-failover the leader already counts the new epoch but still names the old
            // primary: skip it, the others name the new one once it is done.
            let unsure =
                |flag: &str| matches!(flag, "s_down" | "o_down" | "disconnected" | "failover_in_progress");
            if flags.split(',').any(unsure) {
                continue;
            }
            let (Some(ip), Some(Ok(port))) = (fields.get("ip"), fields.get("port").map(|p| p.parse::<u16>()))
            else {
                continue;
            };
            let epoch = fields.get("config-epoch").and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
            if best.as_ref().is_none_or(|(_, newest)| epoch > *newest) {
                best = Some((Node::new(ip.clone(), port), epoch));
            }
        }
        best.ok_or_else(|| {
            last_error.unwrap_or_else(|| {
                RedisError::Pool(format!("no Sentinel names a reachable primary for '{}'", self.master))
            })
        })
    }

    /// Records the primary the Sentinels named; a new one makes older blocking
    /// connections stale and drops the ordinary connection to the old one. An answer under
    /// an older epoch than the one recorded is ignored.
    fn note_primary(&self, node: &Node, epoch: u64) -> bool {
        *self.checked_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let mut primary = self.primary.lock().unwrap_or_else(PoisonError::into_inner);
        match primary.as_ref() {
            Some((known, known_epoch)) if known == node || epoch < *known_epoch => return known == node,
            _ => {}
        }
        if let Some((old, _)) = primary.replace((node.clone(), epoch)) {
            tracing::warn!(old = %old, new = %node, epoch, "The Sentinels name another primary; moving to it.");
            *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Asks the Sentinels for the primary in a background task when the last look is older
    /// than [`PRIMARY_RECHECK`] and no check is running.
    fn recheck_if_due(self: &Arc<Self>) {
        let due = self.checked_at.lock().unwrap_or_else(PoisonError::into_inner).elapsed() >= PRIMARY_RECHECK;
        if !due || self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = Arc::clone(self);
        tokio::spawn(async move {
            match state.ask_sentinels().await {
                Ok((node, epoch)) => {
                    state.note_primary(&node, epoch);
                }
                Err(error) => {
                    // Keep the primary that answers; look again after the interval.
                    tracing::debug!(%error, "The Sentinels could not be asked for the primary.");
                    *state.checked_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                }
            }
            state.checking.store(false, Ordering::Release);
        });
    }

    /// A new connection to the primary the Sentinels name now (checked with `ROLE`), and
    /// the generation it belongs to.
    async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> Result<(MultiplexedConnection, u64), RedisError> {
        let (node, epoch) = self.ask_sentinels().await?;
        let client = redis::Client::open(node_url(&self.url, &node)?.as_str())?;
        let mut conn = client.get_multiplexed_async_connection_with_config(config).await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        if !matches!(role.first(), Some(Value::BulkString(role)) if role == b"master") {
            return Err(RedisError::Pool(format!(
                "{node}, named primary by the Sentinels, is not a primary yet"
            )));
        }
        if !self.note_primary(&node, epoch) {
            return Err(RedisError::Pool(format!("{node} was named primary under an older epoch")));
        }
        let generation = self.generation.load(Ordering::Acquire);
        Ok((conn, generation))
    }
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
                url: url.to_owned(),
                sentinels: nodes.iter().map(|node| sentinel_url(url, node)).collect::<Result<_, _>>()?,
                master: master.clone(),
                response_timeout,
                current: Arc::new(Mutex::new(None)),
                next_id: AtomicU64::new(0),
                connecting: tokio::sync::Mutex::new(()),
                primary: Mutex::new(None),
                generation: AtomicU64::new(0),
                checked_at: Mutex::new(Instant::now()),
                checking: AtomicBool::new(false),
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
                    state.recheck_if_due();
                    return Ok(Conn::Sentinel(SentinelConn {
                        conn,
                        id,
                        current: Arc::clone(&state.current),
                    }));
                }
                // One task connects; the others wait for it.
                let _connecting = state.connecting.lock().await;
                if let Some((id, conn)) = current(state) {
                    return Ok(Conn::Sentinel(SentinelConn {
                        conn,
                        id,
                        current: Arc::clone(&state.current),
                    }));
                }
                let (conn, _) = state.connect(&config).await?;
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
                let (conn, generation) = state.connect(&config).await?;
                Ok(BlockingConnection::Sentinel(SentinelBlocking {
                    conn,
                    generation,
                    state: Arc::clone(state),
                }))
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

/// A Sentinel's URL: `url`'s scheme and TLS options (`#insecure`) at `node`, without its
/// user, password or database (Sentinels are reached without a password).
fn sentinel_url(url: &str, node: &Node) -> Result<String, RedisError> {
    let mut parsed =
        url::Url::parse(&node_url(url, node)?).map_err(|error| RedisError::Pool(error.to_string()))?;
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_path("");
    Ok(parsed.to_string())
}

/// A connection for ordinary commands. Implements [`ConnectionLike`], so commands,
/// pipelines and scripts run on it as on any redis-rs connection.
pub enum Conn {
    /// A pool checkout (single server).
    Pooled(deadpool::managed::Object<super::pool::Manager>),
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

/// After an error that says the Sentinel-found connection `id` is gone or no longer to
/// the primary, forgets it (in `current`) so the next checkout asks the Sentinels.
fn forget_on_failure<T>(
    id: u64,
    current: &Mutex<Option<(u64, MultiplexedConnection)>>,
    result: &redis::RedisResult<T>,
) {
    let Err(error) = result else { return };
    let demoted = error.code() == Some("READONLY");
    if demoted || error.is_connection_dropped() || error.is_unrecoverable_error() || error.is_io_error() {
        let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(held, _)| *held == id) {
            *current = None;
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
            Conn::Sentinel(SentinelConn { conn, id, current }) => {
                Box::pin(observed(conn.req_packed_command(cmd), |result| {
                    forget_on_failure(*id, current, result)
                }))
            }
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
            Conn::Sentinel(SentinelConn { conn, id, current }) => {
                Box::pin(observed(conn.req_packed_commands(pipeline, offset, count), |result| {
                    forget_on_failure(*id, current, result)
                }))
            }
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
    /// To one server.
    Node(MultiplexedConnection),
    /// A cluster connection of its own, which follows the stream's slot to its master.
    Cluster(ClusterConnection),
    /// To the primary the Sentinels named when it was made.
    Sentinel(SentinelBlocking),
}

/// A blocking connection to the primary the Sentinels named when it was made.
pub struct SentinelBlocking {
    conn: MultiplexedConnection,
    /// The handle's primary generation then.
    generation: u64,
    state: Arc<SentinelState>,
}

impl BlockingConnection {
    /// Whether the Sentinels have named another primary since this connection was made:
    /// its reads come from a primary that no longer receives the writes. Also starts the
    /// handle's periodic look at the Sentinels when it is due. Always `false` for a single
    /// server or a cluster.
    pub fn is_stale(&self) -> bool {
        match self {
            BlockingConnection::Sentinel(blocking) => {
                blocking.state.recheck_if_due();
                blocking.state.generation.load(Ordering::Acquire) != blocking.generation
            }
            _ => false,
        }
    }
}

impl ConnectionLike for BlockingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            BlockingConnection::Node(conn) | BlockingConnection::Sentinel(SentinelBlocking { conn, .. }) => {
                conn.req_packed_command(cmd)
            }
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
            BlockingConnection::Node(conn) | BlockingConnection::Sentinel(SentinelBlocking { conn, .. }) => {
                conn.req_packed_commands(pipeline, offset, count)
            }
            BlockingConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            BlockingConnection::Node(conn) | BlockingConnection::Sentinel(SentinelBlocking { conn, .. }) => {
                conn.get_db()
            }
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

    #[test]
    fn sentinel_urls_keep_tls_and_drop_credentials_and_database() {
        let node = Node::new("10.0.0.5", 26379);
        assert_eq!(
            sentinel_url("rediss://gw:secret@ignored:6379/2#insecure", &node).unwrap(),
            "rediss://10.0.0.5:26379#insecure"
        );
        assert_eq!(sentinel_url("redis://:secret@ignored/0", &node).unwrap(), "redis://10.0.0.5:26379");
    }
}
