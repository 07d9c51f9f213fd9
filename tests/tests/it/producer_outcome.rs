//! What a publisher is told when Redis fails, and what a failure leaves behind, against a
//! real redis-server made slow with `CLIENT PAUSE <ms> WRITE` (which holds scripts too):
//!
//! - "not written" (503, `written: false`) only when the batch certainly is not in history;
//! - "unknown" (504, `written: "unknown"`) when Redis may still run the append, and then a
//!   retry with the same idempotency key finds the event once;
//! - the `producer publish` command and the ingest consumer retry with the same keys, so a
//!   slow Redis never makes them write an event twice;
//! - a client that disconnects mid-publish does not cut off the routing step.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use streamgate::topic::{InstanceId, Topic};
use streamgate_tests::producer_app::{history, producer_binary, stream_entries};
use streamgate_tests::world::TestWorld;
use tokio::io::AsyncWriteExt;

/// How long a condition may take before a test fails.
const WAIT: Duration = Duration::from_secs(15);
/// A response timeout far below [`PAUSE_MS`], so a publish during the pause times out.
const SHORT_RESPONSE_TIMEOUT: &str = "300ms";
/// How long Redis holds writes (and scripts) in these tests.
const PAUSE_MS: u64 = 2000;

fn topic(name: &str) -> Topic {
    Topic::parse(name, 256).unwrap()
}

/// Waits until `condition` holds, polling every 50 ms; fails the test after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    streamgate_tests::wait::wait_until(what, WAIT, condition).await;
}

/// `CLIENT PAUSE ms WRITE`: Redis holds every write command and script, answering them
/// when the pause ends.
async fn pause_writes(conn: &mut MultiplexedConnection, ms: u64) {
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE").query_async(conn).await.unwrap();
}

/// A number from `INFO section`, such as `blocked_clients` or a command's `calls`.
async fn info_number(conn: &mut MultiplexedConnection, section: &str, prefix: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// Waits until at least one client's command is held by the pause.
async fn wait_for_a_held_command(conn: &MultiplexedConnection) {
    wait_until("a command held by the pause", || {
        let mut conn = conn.clone();
        async move { info_number(&mut conn, "clients", "blocked_clients:").await >= 1 }
    })
    .await;
}

/// Waits until the pause is over and no command is held any more.
async fn wait_for_the_pause_to_end(conn: &MultiplexedConnection) {
    wait_until("the pause ended", || {
        let mut conn = conn.clone();
        async move { info_number(&mut conn, "clients", "blocked_clients:").await == 0 }
    })
    .await;
}

#[tokio::test]
async fn a_publish_redis_does_not_answer_is_504_unknown_and_a_keyed_retry_finds_it_once() {
    let world = TestWorld::start("outcome_unknown");
    let producer = world.producer(&[("REDIS_RESPONSE_TIMEOUT", SHORT_RESPONSE_TIMEOUT)]).await;
    let mut conn = world.conn().await;
    // Loads the append script, so the paused call runs it rather than answering NOSCRIPT.
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);
    let event = json!({"topic": "t", "data": "once", "idempotencyKey": "order-7"});

    pause_writes(&mut conn, PAUSE_MS).await;
    let during = producer.publish(&event).await;

    assert_eq!(during.status(), 504);
    assert!(during.headers().get("retry-after").is_none());
    let body: Value = during.json().await.unwrap();
    assert_eq!(body["written"], "unknown", "{body}");
    assert!(body["error"].as_str().unwrap().contains("idempotency"), "{body}");
    // Redis ran the append once the pause ended, although the producer gave up on it.
    wait_for_the_pause_to_end(&conn).await;
    wait_until("the held append ran", || {
        let (mut conn, keys) = (conn.clone(), producer.keys.clone());
        async move { history(&mut conn, &keys, "t").await.len() == 1 }
    })
    .await;
    let retry = producer.publish(&event).await;
    assert_eq!(retry.status(), 200);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["results"][0]["duplicate"], true, "{retry}");
    let entries = history(&mut conn, &producer.keys, "t").await;
    assert_eq!(entries.len(), 1, "exactly once: {entries:?}");
    assert!(retry["results"][0]["id"].as_str().unwrap().starts_with(&entries[0].id.to_string()));
}

#[tokio::test]
async fn redis_refusing_before_running_is_503_not_written_and_nothing_is_written() {
    let mut world = TestWorld::start("outcome_not_written");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    assert_eq!(producer.publish(&json!({"topic": "t", "data": "before"})).await.status(), 200);

    // Out of memory: Redis refuses the script at its first write.
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async(&mut conn).await.unwrap();
    let oom = producer.publish(&json!([{"topic": "t", "data": "a"}, {"topic": "u", "data": "b"}])).await;
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async(&mut conn).await.unwrap();
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["before"], "nothing of the refused batch");
    assert!(history(&mut conn, &producer.keys, "u").await.is_empty());
    // Stopped: no connection can be had.
    world.redis.stop();
    let stopped = producer.publish(&json!({"topic": "t", "data": "stopped"})).await;

    for (what, response) in [("oom", oom), ("stopped", stopped)] {
        assert_eq!(response.status(), 503, "{what}");
        assert_eq!(response.headers()["retry-after"], "1", "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["written"], false, "{what}: {body}");
        assert!(body["error"].is_string(), "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishing_through_a_pause_retries_and_leaves_exactly_one_entry() {
    let binary = tokio::task::spawn_blocking(producer_binary).await.unwrap();
    let world = TestWorld::start("outcome_cli");
    let mut conn = world.conn().await;

    pause_writes(&mut conn, PAUSE_MS).await;
    let output = tokio::process::Command::new(&binary)
        .args(["publish", "--topic", "cli", "--data", "through the pause"])
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env("REDIS_URL", world.redis.url())
        .env("KEY_PREFIX", &world.prefix)
        .env("REDIS_RESPONSE_TIMEOUT", SHORT_RESPONSE_TIMEOUT)
        .output();
    let output = tokio::time::timeout(WAIT * 2, output).await.expect("the cli finishes").unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "it met the pause and retried: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["duplicate"], false, "its own earlier attempt is no duplicate: {stdout}");
    let entries = history(&mut conn, &world.keys, "cli").await;
    assert_eq!(entries.len(), 1, "exactly once: {entries:?}");
    assert!(lines[0]["id"].as_str().unwrap().starts_with(&entries[0].id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_retrying_longer_than_the_dedup_window() {
    let binary = tokio::task::spawn_blocking(producer_binary).await.unwrap();
    let world = TestWorld::start("outcome_cli_window");

    let output = tokio::process::Command::new(&binary)
        .args(["publish", "--topic", "t", "--data", "x", "--retry-for", "2m"])
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env("REDIS_URL", world.redis.url())
        .env("KEY_PREFIX", &world.prefix)
        .env("DEDUP_WINDOW", "1m")
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--retry-for") && stderr.contains("DEDUP_WINDOW"), "{stderr}");
}

/// Redis pauses writes right after the entry is added: the consumer's next read (a script
/// that delivers entries, so a write) or its append waits past `REDIS_RESPONSE_TIMEOUT`,
/// and its outcome is unknown to the consumer. Redis runs it once the pause ends; the
/// consumer reads its own pending entries again and retries with the same idempotency key.
#[tokio::test]
async fn an_ingest_entry_whose_read_or_publish_outcome_was_unknown_is_in_history_once() {
    let world = TestWorld::start("outcome_ingest");
    let producer = world
        .producer(&[("INGEST_ENABLED", "true"), ("REDIS_RESPONSE_TIMEOUT", SHORT_RESPONSE_TIMEOUT)])
        .await;
    let mut conn = world.conn().await;
    let stream = producer.config.ingest.stream.clone();
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);
    let reads_before = info_number(&mut conn, "commandstats", "cmdstat_xreadgroup:calls=").await;
    wait_until("the consumer polls the ingest stream", || {
        let mut conn = conn.clone();
        async move { info_number(&mut conn, "commandstats", "cmdstat_xreadgroup:calls=").await > reads_before }
    })
    .await;

    // One round trip: the entry, then the pause that holds the consumer's next write.
    let () = redis::pipe()
        .cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("topic")
        .arg("t")
        .arg("data")
        .arg("no key of its own")
        .ignore()
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(PAUSE_MS)
        .arg("WRITE")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    wait_for_a_held_command(&conn).await;

    wait_until("the entry is acknowledged", || {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move { conn.xlen::<_, usize>(&stream).await.unwrap() == 0 }
    })
    .await;
    let entries = history(&mut conn, &producer.keys, "t").await;
    assert_eq!(entries.len(), 1, "exactly once: {entries:?}");
    assert_eq!(entries[0].data, "no key of its own");
}

#[tokio::test]
async fn a_client_leaving_mid_publish_does_not_stop_the_event_reaching_live_gateways() {
    let world = TestWorld::start("outcome_detached");
    let producer = world.producer(&[]).await;
    let keys = producer.keys.clone();
    let mut conn = world.conn().await;
    let gateway = InstanceId::parse("gw-live").unwrap();
    let () = conn.hset(keys.group(&topic("quiet")), gateway.as_str(), 1).await.unwrap();
    let () = conn.set_ex(keys.instance_alive(&gateway), "1", 60).await.unwrap();
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);

    pause_writes(&mut conn, PAUSE_MS).await;
    let body = json!({"topic": "quiet", "data": "the only event"}).to_string();
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", producer.port)).await.unwrap();
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    wait_for_a_held_command(&conn).await;
    // The client gives up before the answer.
    drop(client);

    wait_for_the_pause_to_end(&conn).await;
    let instance_stream = keys.instance_stream(&gateway);
    wait_until("the event reached the live gateway's stream", || {
        let (mut conn, instance_stream) = (conn.clone(), instance_stream.clone());
        async move { stream_entries(&mut conn, &instance_stream).await.len() == 1 }
    })
    .await;
    assert_eq!(history(&mut conn, &keys, "quiet").await.len(), 1);
}

#[tokio::test]
async fn publishes_beyond_max_concurrent_publishes_are_refused_503_and_not_written() {
    let world = TestWorld::start("outcome_busy");
    let producer = world.producer(&[("MAX_CONCURRENT_PUBLISHES", "1")]).await;
    let mut conn = world.conn().await;
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);

    pause_writes(&mut conn, PAUSE_MS).await;
    let (first_event, second_event) =
        (json!({"topic": "t", "data": "first"}), json!({"topic": "t", "data": "second"}));
    let (first, second) = tokio::join!(producer.publish(&first_event), async {
        wait_for_a_held_command(&conn).await;
        producer.publish(&second_event).await
    });

    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["written"], false, "{body}");
    assert_eq!(first.status(), 200, "the first ran to completion once the pause ended");
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["first"]);
}
