//! The single server's pool hands out connections without a round trip of its own while
//! they are in use, and never hands out one it knows is gone: a connection whose command
//! found the server gone is replaced, and one that sat idle while Redis restarted is
//! checked (deadpool-redis' `PING`) and replaced before a caller sees its error.

use std::time::Duration;

use redis::AsyncCommands as _;
use streamgate::redis::{POOLED_RESPONSE_TIMEOUT, Redis, Topology};
use streamgate_tests::redis_server::RedisServer;

/// Calls of `command` the server has answered, from `INFO commandstats`.
async fn calls(redis: &RedisServer, command: &str) -> u64 {
    let mut conn = redis.client().await;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

fn handle(redis: &RedisServer) -> Redis {
    Redis::new(&redis.url(), &Topology::Single, 2, POOLED_RESPONSE_TIMEOUT).unwrap()
}

#[tokio::test]
async fn busy_connections_are_handed_out_without_a_ping() {
    let redis = RedisServer::start();
    let handle = handle(&redis);
    // The harness pinged the server to see it start.
    let pings_before = calls(&redis, "ping").await;
    for n in 0..200 {
        let mut conn = handle.get().await.unwrap();
        let _: () = conn.set("counter", n).await.unwrap();
    }
    // deadpool-redis alone sent `UNWATCH` + `PING` before every one of the 200 commands.
    assert_eq!(calls(&redis, "ping").await - pings_before, 0, "a checkout cost a round trip");
    assert_eq!(calls(&redis, "set").await, 200);
}

#[tokio::test]
async fn a_connection_that_found_the_server_gone_is_replaced() {
    let mut redis = RedisServer::start();
    let handle = handle(&redis);
    let mut conn = handle.get().await.unwrap();
    let _: () = conn.set("k", 1).await.unwrap();
    drop(conn);
    // Within the time a busy connection is trusted: no PING would catch this.
    redis.restart();
    let mut conn = handle.get().await.unwrap();
    let first: redis::RedisResult<()> = conn.set("k", 2).await;
    drop(conn);
    if let Err(error) = &first {
        assert!(streamgate::redis::connection_failed(error), "{error}");
    }
    // Whatever the first command met, the next checkout works.
    let mut conn = handle.get().await.unwrap();
    let _: () = conn.set("k", 3).await.expect("the failed connection was replaced");
}

#[tokio::test]
async fn an_idle_connection_is_checked_before_it_is_handed_out_again() {
    let mut redis = RedisServer::start();
    let handle = handle(&redis);
    let mut conn = handle.get().await.unwrap();
    let _: () = conn.set("k", 1).await.unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.restart();
    // Idle longer than a connection is trusted: the checkout pings it, finds it gone and
    // makes a new one, so this caller never sees the restart.
    let mut conn = handle.get().await.unwrap();
    let _: () = conn.set("k", 2).await.expect("an idle connection is checked first");
}
