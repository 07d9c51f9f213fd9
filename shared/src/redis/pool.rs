//! The single server's connection pool: deadpool-redis' connections, checked out without a
//! Redis round trip when they are in use.
//!
//! deadpool-redis checks every connection it hands out with `UNWATCH` + `PING`: one more
//! round trip before every checkout's commands, scripts and pipelines. On the publish path
//! that was a third round trip per request next to the append script and the routing
//! pipeline (strace of a publish), about a tenth of the producer's and Redis' CPU per
//! request, and it stood before both of a new topic's joins on a gateway
//! (docs/BENCHMARKS.md, session 7). Here a connection that failed is dropped
//! instead (the next checkout makes a new one), and only a connection idle for more than
//! [`TRUSTED_FOR`] is checked with deadpool-redis' own `PING` first: one that sat in the
//! pool while Redis restarted is replaced before a caller sees its error.
//!
//! What the `PING` also told a caller: when Redis is gone, that nothing was sent. A
//! publish answers 503 "not written" on that, and 504 "outcome unknown" when a command
//! was sent and no answer came. A connection whose server closed it has a stopped driver
//! task in redis-rs, and a command on it fails at once, before anything is written: the
//! first poll of its future is already an error. That error is reported as a refused
//! connection ([`never_sent`]), which callers treat as "not run"; an error after the first
//! poll is reported as it is.

use std::task::Poll;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How long after its last checkout a connection is handed out again without a `PING`.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// Makes connections with deadpool-redis' manager, and checks them as above.
pub struct Manager {
    inner: deadpool_redis::Manager,
}

impl Manager {
    pub fn new(inner: deadpool_redis::Manager) -> Manager {
        Manager { inner }
    }
}

/// The single server's pool.
pub type Pool = managed::Pool<Manager>;

/// A pooled connection, and whether a command on it failed in a way that says the
/// connection itself is gone.
pub struct Pooled {
    conn: MultiplexedConnection,
    failed: bool,
}

/// Runs `request`, then shows its result to `observe`: how a connection wrapper learns
/// from what its commands met (the pool's and the Sentinel handle's).
pub(super) async fn observed<T>(
    request: impl std::future::Future<Output = redis::RedisResult<T>>,
    observe: impl FnOnce(&redis::RedisResult<T>),
) -> redis::RedisResult<T> {
    let result = request.await;
    observe(&result);
    result
}

/// Remembers in `failed` an error that leaves the connection unusable, so that it is not
/// handed out again.
fn note_failure<T>(failed: &mut bool, result: &redis::RedisResult<T>) {
    if let Err(error) = result
        && connection_failed(error)
    {
        *failed = true;
    }
}

/// Whether `error` says the connection itself is gone (closed, refused, broken, timed out),
/// rather than that one command failed on a working connection.
pub fn connection_failed(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Pooled, redis::RedisError> {
        let conn = self.inner.create().await?;
        Ok(Pooled { conn, failed: false })
    }

    async fn recycle(&self, conn: &mut Pooled, metrics: &Metrics) -> RecycleResult<redis::RedisError> {
        if conn.failed {
            return Err(RecycleError::message("a command on it found the connection gone"));
        }
        if metrics.last_used() <= TRUSTED_FOR {
            return Ok(());
        }
        self.inner.recycle(&mut conn.conn, metrics).await
    }
}

/// Runs `request`, telling a failure at its first poll (nothing was sent: the connection
/// was closed already) from one after it.
async fn sent_or_not<T>(request: RedisFuture<'_, T>) -> redis::RedisResult<T> {
    let mut request = request;
    let mut first = true;
    std::future::poll_fn(|cx| {
        let poll = request.as_mut().poll(cx);
        let was_first = std::mem::replace(&mut first, false);
        match poll {
            Poll::Ready(Err(error)) if was_first && connection_failed(&error) => {
                Poll::Ready(Err(never_sent(&error)))
            }
            other => other,
        }
    })
    .await
}

/// The error for a command that was never sent because its connection was closed: a
/// refused connection, so that callers count it as not run.
pub fn never_sent(error: &redis::RedisError) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!("the connection was closed before the command was sent: {error}"),
    ))
}

impl ConnectionLike for Pooled {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Pooled { conn, failed } = self;
        Box::pin(observed(sent_or_not(conn.req_packed_command(cmd)), |result| note_failure(failed, result)))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Pooled { conn, failed } = self;
        let request = sent_or_not(conn.req_packed_commands(pipeline, offset, count));
        Box::pin(observed(request, |result| note_failure(failed, result)))
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
