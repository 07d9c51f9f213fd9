//! The `RedisServer` harness itself: the other tests rely on it starting a real, isolated
//! redis-server, restarting it with or without its data, and cleaning up after itself.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use streamgate_tests::redis_server::{RedisServer, unique_prefix};

#[tokio::test]
async fn server_starts_on_a_free_port_and_answers_ping() {
    let server = RedisServer::start();

    let mut client = server.client().await;
    let pong: String = redis::cmd("PING").query_async(&mut client).await.unwrap();

    assert_eq!(pong, "PONG");
    assert_ne!(server.port(), 6379, "must not collide with a system redis");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
}

#[tokio::test]
async fn default_server_persists_nothing_and_aof_server_syncs_every_write() {
    let default = RedisServer::start();
    let aof = RedisServer::builder().append_only(true).start();

    let default_config = config(&default, &["save", "appendonly"]).await;
    let aof_config = config(&aof, &["appendonly", "appendfsync"]).await;

    assert_eq!(default_config, ["", "no"]);
    assert_eq!(aof_config, ["yes", "always"]);
}

#[tokio::test]
async fn two_servers_at_once_get_different_ports_and_separate_data() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let key = format!("{}:only-in-first", unique_prefix("two_servers"));

    let () = first.client().await.set(&key, "1").await.unwrap();
    let in_second: Option<String> = second.client().await.get(&key).await.unwrap();

    assert_ne!(first.port(), second.port());
    assert_eq!(in_second, None);
}

#[tokio::test]
async fn restart_with_append_only_keeps_a_key_written_before_a_crash() {
    let mut server = RedisServer::builder().append_only(true).start();
    let key = format!("{}:greeting", unique_prefix("restart_aof"));
    let () = server.client().await.set(&key, "hello").await.unwrap();
    let port = server.port();

    server.kill();
    server.restart();
    let value: Option<String> = server.client().await.get(&key).await.unwrap();

    assert_eq!(value.as_deref(), Some("hello"), "log:\n{}", server.log());
    assert_eq!(server.port(), port);
}

#[tokio::test]
async fn restart_without_persistence_starts_empty() {
    let mut server = RedisServer::start();
    let key = format!("{}:greeting", unique_prefix("restart_empty"));
    let () = server.client().await.set(&key, "hello").await.unwrap();

    server.restart();
    let value: Option<String> = server.client().await.get(&key).await.unwrap();

    assert_eq!(value, None);
}

#[test]
#[should_panic(expected = "the port is in use by another process")]
fn restart_fails_loudly_when_another_process_took_the_port() {
    let mut server = RedisServer::start();
    server.kill();
    let _squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, server.port())).unwrap();

    server.restart();
}

#[test]
fn dropping_the_server_stops_the_process() {
    let server = RedisServer::start();
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
    assert!(TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok());

    drop(server);

    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "port {} still accepts connections 10 s after the drop",
            address.port()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The values of the configuration parameters `names`, in that order.
async fn config(server: &RedisServer, names: &[&str]) -> Vec<String> {
    let mut client = server.client().await;
    let mut values = Vec::new();
    for name in names {
        let (_, value): (String, String) =
            redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut client).await.unwrap();
        values.push(value);
    }
    values
}
