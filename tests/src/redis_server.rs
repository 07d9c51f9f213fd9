//! A real `redis-server` child process for integration tests.
//!
//! [`RedisServer`] starts the binary found in `REDIS_SERVER_BIN` or on `PATH` on a free
//! loopback port, in a temporary directory of its own, and waits until it answers. Tests
//! can stop it, crash it (SIGKILL) and restart it on the same port and directory, which
//! is how Redis restarts with and without persistence are exercised. The process is
//! killed when the handle is dropped, also when a test panics.
//!
//! Several tests may share one server and keep out of each other's way by putting every
//! key under their own [`unique_prefix`].
//!
//! Process management is blocking (`std::process`): starting or restarting blocks the
//! calling thread until Redis answers (at most [`READY_TIMEOUT`]). Only [`RedisServer::client`]
//! is async.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tempfile::TempDir;

/// How long a start or restart may take before the harness gives up. Loading a large AOF
/// is the slow case; an empty server answers within a few milliseconds.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful stop may take before the process is killed instead.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness and exit are checked while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Timeout of each connect, read and write of the readiness probe, so that a probe
/// against a port nobody answers on cannot outlive the deadline by much.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Fresh ports tried on a start. The port is found free and released before Redis binds
/// it, so another process (another test's server, a service on port 0) can take it in
/// between; then Redis exits with "Address already in use" and we pick another.
const MAX_PORT_ATTEMPTS: usize = 5;

/// Environment variable naming the `redis-server` binary, when it is not on `PATH`.
pub const REDIS_SERVER_BIN_ENV: &str = "REDIS_SERVER_BIN";

/// Name of the file in the server's directory that receives Redis' stdout and stderr.
const LOG_FILE_NAME: &str = "redis.log";

/// Lines of the log printed when a test panics while the server is alive.
const LOG_LINES_ON_PANIC: usize = 40;

/// Returns a key prefix unique to one test run, e.g. `t-resume_on_restart-3f9c0a7e12b4d6f8`,
/// so tests sharing one server never touch each other's keys.
///
/// Characters of `test_name` other than ASCII letters, digits, `-` and `_` become `-`:
/// the prefix never contains `{` or `}` (Redis hash tags) or `:` (key separators).
pub fn unique_prefix(test_name: &str) -> String {
    let name: String = test_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    format!("t-{name}-{:016x}", fastrand::u64(..))
}

/// Options for a [`RedisServer`]; made by [`RedisServer::builder`], finished by
/// [`RedisServerBuilder::start`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    append_only: bool,
    extra_config: Vec<(String, String)>,
    auth: Option<(String, String)>,
    cluster: bool,
}

impl RedisServerBuilder {
    /// Starts the server as a Redis Cluster node (`cluster-enabled yes`, a 1 s node
    /// timeout so failovers are quick), on a port whose cluster bus port (+10000) is free
    /// too. [`crate::redis_cluster::RedisCluster`] joins such nodes into a cluster.
    pub fn cluster_node(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Turns AOF persistence on (`appendonly yes`, `appendfsync always`), so every
    /// acknowledged write survives [`RedisServer::kill`] + [`RedisServer::restart`].
    /// Off by default: then a restart starts from an empty data set.
    pub fn append_only(mut self, enabled: bool) -> Self {
        self.append_only = enabled;
        self
    }

    /// Passes one more configuration directive on the command line, as
    /// `--NAME VALUE` (e.g. `config("maxmemory-policy", "allkeys-lru")`). Applied after
    /// the defaults, so it can override them.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_config.push((name.into(), value.into()));
        self
    }

    /// The user and password the harness itself connects as (readiness probes,
    /// [`RedisServer::url`], [`RedisServer::client`]), for a server whose default user
    /// cannot run `PING` and `INFO` (`requirepass`, an `aclfile`).
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` cannot be found (run `scripts/test`, which installs it), or
    /// does not answer within [`READY_TIMEOUT`]; the message includes its log.
    pub fn start(self) -> RedisServer {
        let binary = find_redis_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("streamgate-redis-")
            .tempdir()
            .expect("cannot create a temporary directory for redis-server");
        let mut server = RedisServer { binary, options: self, port: 0, dir, child: None };
        for attempt in 1..=MAX_PORT_ATTEMPTS {
            server.port = if server.options.cluster { free_cluster_port() } else { free_loopback_port() };
            match server.launch() {
                Ok(()) => return server,
                Err(LaunchError::PortInUse) if attempt < MAX_PORT_ATTEMPTS => continue,
                Err(error) => panic!(
                    "redis-server did not start on port {}: {error}\n--- {} ---\n{}",
                    server.port,
                    server.log_path().display(),
                    server.log()
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }
}

/// A `redis-server` child process on `127.0.0.1` and a free port, with its own
/// temporary directory (data files and log). Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    options: RedisServerBuilder,
    port: u16,
    /// Dropped after the child is killed (see `Drop`), so Redis never writes into a
    /// deleted directory.
    dir: TempDir,
    /// `None` once stopped or killed.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with the default options (no persistence) and waits until it
    /// answers. Panics like [`RedisServerBuilder::start`].
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options for a server that differs from the default, e.g.
    /// `RedisServer::builder().append_only(true).start()`.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The TCP port the server listens on (on `127.0.0.1`); it stays the same across
    /// restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, `redis://127.0.0.1:PORT` (`redis://USER:PASSWORD@...` with
    /// [`RedisServerBuilder::auth`]).
    pub fn url(&self) -> String {
        match &self.options.auth {
            Some((user, password)) => self.url_as(user, password),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The connection URL for another user: `redis://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The server's working directory (RDB/AOF files and the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file that receives the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE_NAME)
    }

    /// The whole log so far (empty if it cannot be read), for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is alive (not stopped, killed or exited by itself).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// A `redis::Client` for this server, for connections with a configuration of
    /// their own (e.g. no response timeout for blocking reads).
    pub fn redis_client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a redis:// URL built from a port is valid")
    }

    /// A new multiplexed connection to the server.
    ///
    /// # Panics
    /// When the server cannot be reached (e.g. it is stopped).
    pub async fn client(&self) -> MultiplexedConnection {
        self.redis_client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.url()))
    }

    /// Stops the server gracefully with `SHUTDOWN NOSAVE` (no RDB snapshot; the AOF, if
    /// on, is already on disk) and waits for it to exit; kills it if it has not exited
    /// within a few seconds. Does nothing when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut connection) = self.redis_client().get_connection_with_timeout(PROBE_TIMEOUT) {
            let _ = connection.set_read_timeout(Some(PROBE_TIMEOUT));
            // The server closes the connection instead of replying, so the result is an
            // error even when the shutdown works; the exit below is what counts.
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut connection);
        }
        if wait_for_exit(&mut child, STOP_TIMEOUT).is_none() {
            kill_and_reap(&mut child);
        }
    }

    /// Kills the server with SIGKILL, like a crash, and waits for it to exit. Does
    /// nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Pauses the server (`SIGSTOP`): it keeps its connections but answers nothing, as a
    /// frozen VM or a long stall would, until [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a paused server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} redis-server");
    }

    /// Starts the server again on the same port and directory, so with
    /// [`RedisServerBuilder::append_only`] the data is reloaded from the AOF. Stops it
    /// gracefully first if it is still running; call [`RedisServer::kill`] first to
    /// restart after a crash instead.
    ///
    /// # Panics
    /// When it does not answer within [`READY_TIMEOUT`] (e.g. another process took the
    /// port meanwhile); the message includes the log.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(error) = self.launch() {
            panic!(
                "redis-server did not restart on port {}: {error}\n--- {} ---\n{}",
                self.port,
                self.log_path().display(),
                self.log()
            );
        }
    }

    /// Spawns the process on `self.port` and waits until it answers as itself.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let log_path = self.log_path();
        let log = File::options().create(true).append(true).open(&log_path).map_err(LaunchError::Spawn)?;
        let log_start = log.metadata().map_err(LaunchError::Spawn)?.len();
        let stderr = log.try_clone().map_err(LaunchError::Spawn)?;

        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(LaunchError::Spawn)?;
        self.child = Some(child);

        let result = self.wait_until_ready();
        if result.is_err() {
            self.kill();
        }
        match result {
            Err(LaunchError::Exited(_)) if log_since(&log_path, log_start).contains(ADDRESS_IN_USE) => {
                Err(LaunchError::PortInUse)
            }
            other => other,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"]);
        if self.options.append_only {
            command.args(["--appendonly", "yes"]).args(["--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if self.options.cluster {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "1000"])
                // Fail over whatever the replica's data age: a just-formed cluster's
                // replicas otherwise refuse ("disconnected from master for too long").
                .args(["--cluster-replica-validity-factor", "0"]);
        }
        for (name, value) in &self.options.extra_config {
            command.arg(format!("--{name}")).arg(value);
        }
        command
    }

    /// Polls until the server on our port answers PING and reports our child's pid
    /// (another process may be listening on the port if ours failed to bind it), the
    /// child exits, or the deadline passes.
    fn wait_until_ready(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("wait_until_ready is called with a spawned child");
            if let Some(status) = child.try_wait().map_err(LaunchError::Spawn)? {
                self.child = None;
                return Err(LaunchError::Exited(status));
            }
            let pid = child.id();
            if self.answers_as(pid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::TimedOut);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server on our port answers PING (not `-LOADING`) and is process `pid`.
    fn answers_as(&self, pid: u32) -> bool {
        let probe = || -> redis::RedisResult<bool> {
            let mut connection = self.redis_client().get_connection_with_timeout(PROBE_TIMEOUT)?;
            connection.set_read_timeout(Some(PROBE_TIMEOUT))?;
            connection.set_write_timeout(Some(PROBE_TIMEOUT))?;
            let _pong: String = redis::cmd("PING").query(&mut connection)?;
            let info: String = redis::cmd("INFO").arg("server").query(&mut connection)?;
            Ok(process_id_in_info(&info) == Some(pid))
        };
        probe().unwrap_or(false)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            print_log_tail(&self.log_path(), self.port);
        }
        self.kill();
    }
}

/// What Redis logs when it cannot bind its port.
const ADDRESS_IN_USE: &str = "Address already in use";

/// Why one launch failed.
#[derive(Debug)]
enum LaunchError {
    Spawn(io::Error),
    PortInUse,
    Exited(ExitStatus),
    TimedOut,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(error) => write!(f, "cannot spawn it: {error}"),
            Self::PortInUse => write!(f, "the port is in use by another process"),
            Self::Exited(status) => write!(f, "it exited with {status}"),
            Self::TimedOut => write!(f, "it did not answer within {READY_TIMEOUT:?}"),
        }
    }
}

/// `REDIS_SERVER_BIN`, else the first `redis-server` on `PATH`.
fn find_redis_server_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os(REDIS_SERVER_BIN_ENV).filter(|value| !value.is_empty()) {
        return PathBuf::from(binary);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH (nor in {REDIS_SERVER_BIN_ENV}): \
                 run scripts/test, which installs it"
            )
        })
}

/// A loopback port that was free a moment ago (bound to port 0, read back, released).
fn free_loopback_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a loopback port to find a free one")
        .port()
}

/// A free loopback port below 55536 whose cluster bus port (the port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_loopback_port();
        if port < 55536 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return port;
        }
    }
}

fn process_id_in_info(info: &str) -> Option<u32> {
    info.lines().find_map(|line| line.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
}

/// Waits up to `timeout` for the child to exit; `None` if it is still running.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) | Err(_) => return None,
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    // Fails only if the process was already reaped; waiting is then immediate too.
    let _ = child.kill();
    let _ = child.wait();
}

/// The log written after byte `offset` (what one launch wrote).
fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// The temporary directory, log included, is deleted with the server, so a failing test
/// shows the end of the log in its output.
fn print_log_tail(path: &Path, port: u16) {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_LINES_ON_PANIC)..];
    eprintln!("--- last {} lines of the redis-server log (port {port}) ---\n{}", tail.len(), tail.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefix_keeps_the_name_and_replaces_hash_tags_and_separators() {
        let prefix = unique_prefix("resume{a}:b c");

        assert!(prefix.starts_with("t-resume-a--b-c-"), "{prefix}");
    }

    #[test]
    fn unique_prefixes_of_the_same_name_differ() {
        assert_ne!(unique_prefix("same"), unique_prefix("same"));
    }

    #[test]
    fn process_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:6379\r\n";

        assert_eq!(process_id_in_info(info), Some(4242));
        assert_eq!(process_id_in_info("# Server\r\n"), None);
    }
}
