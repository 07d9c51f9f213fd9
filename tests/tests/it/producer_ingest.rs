//! The producer's ingest stream consumer against real Redis: publishing and acknowledging,
//! re-delivery without duplicates, dead letters, and two producer processes of which one is
//! killed mid-batch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamInfoConsumersReply;
use streamgate::topic::Topic;
use streamgate_tests::ingest::{GROUP, create_group, read_as};
use streamgate_tests::producer_app::{
    ProducerProcess, field, history, producer_binary, stream_entries, test_settings,
};
use streamgate_tests::publish::event;
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(10);

async fn xadd(conn: &mut MultiplexedConnection, stream: &str, fields: &[(&str, &str)]) -> String {
    conn.xadd(stream, "*", fields).await.unwrap()
}

/// Entries delivered to the group and not yet acknowledged.
async fn pending_count(conn: &mut MultiplexedConnection, stream: &str) -> i64 {
    let reply: redis::Value = redis::cmd("XPENDING").arg(stream).arg(GROUP).query_async(conn).await.unwrap();
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(count)) => *count,
            other => panic!("unexpected XPENDING count {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// Waits until the ingest stream is empty (every entry acknowledged and deleted).
async fn wait_until_drained(conn: &mut MultiplexedConnection, stream: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let len: usize = conn.xlen(stream).await.unwrap();
        if len == 0 && pending_count(conn, stream).await == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{len} ingest entries left after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ingest_entries_are_published_in_order_then_acknowledged_and_deleted() {
    let world = TestWorld::start("ingest");
    let stream = streamgate_tests::ingest::stream_under(&world.prefix);
    let mut conn = world.conn().await;
    // Entries added before any producer ran are not skipped.
    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "0")]).await;
    let producer = world.producer(&[("INGEST_ENABLED", "true")]).await;

    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "1"), ("event", "status")]).await;
    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "2"), ("idempotencyKey", "up-2")]).await;
    wait_until_drained(&mut conn, &stream, WAIT).await;

    let entries = history(&mut conn, &producer.keys, "t").await;
    let data: Vec<&str> = entries.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["0", "1", "2"]);
    assert_eq!(entries[1].name.as_deref(), Some("status"));
    producer.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_or_resent_ingest_entry_is_not_published_twice() {
    let world = TestWorld::start("ingest_redeliver");
    let stream = streamgate_tests::ingest::stream_under(&world.prefix);
    let mut conn = world.conn().await;
    // A producer that crashed after publishing two entries and before acknowledging them.
    create_group(&mut conn, &stream).await;
    let keyless = xadd(&mut conn, &stream, &[("topic", "t"), ("data", "keyless")]).await;
    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "keyed"), ("idempotencyKey", "up-1")]).await;
    read_as(&mut conn, &stream, "crashed", 10).await;
    let crashed = &world.publisher;
    let mut first = event("t", None, "keyless");
    first.idempotency_key = Some(format!("ingest:{keyless}"));
    let mut second = event("t", None, "keyed");
    second.idempotency_key = Some("up-1".to_owned());
    crashed.publish(&[first, second]).await.unwrap();

    let producer = world.producer(&[("INGEST_ENABLED", "true"), ("INGEST_CLAIM_IDLE", "200ms")]).await;
    wait_until_drained(&mut conn, &stream, WAIT).await;
    // The upstream sends the keyed event once more, as a new entry.
    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "keyed"), ("idempotencyKey", "up-1")]).await;
    wait_until_drained(&mut conn, &stream, WAIT).await;

    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["keyless", "keyed"]);
}

#[tokio::test]
async fn malformed_ingest_entries_are_dead_lettered_with_a_reason_and_the_rest_goes_on() {
    let world = TestWorld::start("ingest_dead");
    let stream = streamgate_tests::ingest::stream_under(&world.prefix);
    let dead_letter = streamgate_tests::ingest::dead_letter_under(&world.prefix);
    let producer = world.producer(&[("INGEST_ENABLED", "true")]).await;
    let mut conn = world.conn().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("data", "x")], "missing field topic"),
        (&[("topic", "t")], "missing field data"),
        (&[("topic", ""), ("data", "x")], "topic must not be empty"),
        (&[("topic", "t"), ("data", "x"), ("event", "a\nb")], "event name"),
        (&[("topic", "t"), ("data", "x"), ("colour", "red")], "unknown field \"colour\""),
    ];
    let mut expected = HashMap::new();
    for (fields, reason) in cases {
        let id = xadd(&mut conn, &stream, fields).await;
        expected.insert(id, (*fields, *reason));
    }
    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "valid")]).await;

    wait_until_drained(&mut conn, &stream, WAIT).await;

    let letters = stream_entries(&mut conn, &dead_letter).await;
    assert_eq!(letters.len(), cases.len());
    for letter in &letters {
        let source_id = field(letter, "source_id").expect("source_id");
        let (fields, reason) = expected[&source_id];
        let written = field(letter, "reason").expect("reason");
        assert!(written.contains(reason), "{written:?} should mention {reason:?}");
        for (name, value) in fields {
            assert_eq!(field(letter, name).as_deref(), Some(*value), "original field {name} is kept");
        }
    }
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["valid"]);
}

#[tokio::test]
async fn an_entry_redis_refuses_is_dead_lettered_without_holding_back_the_batch() {
    let world = TestWorld::start("ingest_refused");
    let stream = streamgate_tests::ingest::stream_under(&world.prefix);
    let mut conn = world.conn().await;
    let broken = world.keys.history(&Topic::parse("broken", 256).unwrap());
    let () = conn.set(&broken, "not a stream").await.unwrap();
    // Both are in the stream before the producer starts, so its first read returns both.
    xadd(&mut conn, &stream, &[("topic", "broken"), ("data", "x")]).await;
    xadd(&mut conn, &stream, &[("topic", "fine"), ("data", "y")]).await;
    let producer = world.producer(&[("INGEST_ENABLED", "true")]).await;

    wait_until_drained(&mut conn, &stream, WAIT).await;

    let letters =
        stream_entries(&mut conn, &streamgate_tests::ingest::dead_letter_under(&world.prefix)).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(field(&letters[0], "topic").as_deref(), Some("broken"));
    assert!(field(&letters[0], "reason").unwrap().starts_with("publish failed"));
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "fine").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["y"]);
}

/// The ingest consumers of the group and their pending counts.
async fn consumers(conn: &mut MultiplexedConnection, stream: &str) -> Vec<(String, usize)> {
    let reply: Result<StreamInfoConsumersReply, _> = conn.xinfo_consumers(stream, GROUP).await;
    match reply {
        Ok(reply) => reply.consumers.into_iter().map(|c| (c.name, c.pending)).collect(),
        // The group does not exist until the first producer created it.
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_with_one_killed_mid_batch_publish_every_entry_exactly_once() {
    const ENTRIES: usize = 20_000;
    const TOPICS: usize = 5;
    let binary = tokio::task::spawn_blocking(producer_binary).await.unwrap();
    let world = TestWorld::start("ingest_kill");
    let stream = streamgate_tests::ingest::stream_under(&world.prefix);
    let mut conn = world.conn().await;
    let mut pipe = redis::pipe();
    for seq in 0..ENTRIES {
        pipe.cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("topic")
            .arg(format!("t{}", seq % TOPICS))
            .arg("data")
            .arg(seq)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let mut settings = test_settings(&world.redis.url(), &world.prefix);
    settings.push(("INGEST_ENABLED".into(), "true".into()));
    settings.push(("INGEST_CLAIM_IDLE".into(), "1s".into()));

    let mut doomed = ProducerProcess::spawn(&binary, &settings, "producer-a");
    let _survivor = ProducerProcess::spawn(&binary, &settings, "producer-b");
    // Kill the first producer while it holds a batch it has not acknowledged, once the
    // second one is consuming too.
    let deadline = Instant::now() + WAIT;
    let pending_at_kill = loop {
        let consumers = consumers(&mut conn, &stream).await;
        let survivor_up = consumers.iter().any(|(name, _)| name.starts_with("producer-b-"));
        let doomed_pending = consumers.iter().find(|(name, _)| name.starts_with("producer-a-")).map(|c| c.1);
        if survivor_up && doomed_pending.is_some_and(|pending| pending > 0) {
            doomed.kill();
            let after = consumers_after_kill(&mut conn, &stream).await;
            break after;
        }
        assert!(Instant::now() < deadline, "the producers never both consumed: {consumers:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(pending_at_kill > 0, "the killed producer left no pending entries behind");

    wait_until_drained(&mut conn, &stream, Duration::from_secs(60)).await;

    let mut seen = Vec::with_capacity(ENTRIES);
    for topic in 0..TOPICS {
        let name = format!("t{topic}");
        for entry in history(&mut conn, &world.keys, &name).await {
            seen.push(entry.data.parse::<usize>().unwrap());
        }
    }
    seen.sort_unstable();
    let duplicates = seen.windows(2).filter(|pair| pair[0] == pair[1]).count();
    assert_eq!(duplicates, 0, "entries published twice");
    assert_eq!(seen, (0..ENTRIES).collect::<Vec<_>>(), "every entry published exactly once");
}

/// The killed producer's pending count, read right after the kill.
async fn consumers_after_kill(conn: &mut MultiplexedConnection, stream: &str) -> usize {
    consumers(conn, stream)
        .await
        .into_iter()
        .find(|(name, _)| name.starts_with("producer-a-"))
        .map_or(0, |(_, pending)| pending)
}

#[tokio::test]
async fn consumers_of_producers_that_are_gone_are_removed_once_nothing_is_pending() {
    let world = TestWorld::start("ingest_prune");
    let stream = streamgate_tests::ingest::stream_under(&world.prefix);
    let mut conn = world.conn().await;
    // Two earlier producers: one left nothing pending, the other died holding an entry.
    create_group(&mut conn, &stream).await;
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg(GROUP)
        .arg("gone-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    xadd(&mut conn, &stream, &[("topic", "t"), ("data", "held by gone-2")]).await;
    read_as(&mut conn, &stream, "gone-2", 1).await;

    let producer = world.producer(&[("INGEST_ENABLED", "true"), ("INGEST_CLAIM_IDLE", "200ms")]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let reply: StreamInfoConsumersReply = conn.xinfo_consumers(&stream, GROUP).await.unwrap();
        let names: Vec<String> = reply.consumers.iter().map(|c| c.name.clone()).collect();
        if !names.iter().any(|n| n.starts_with("gone-")) {
            assert_eq!(names.len(), 1, "only the running producer's consumer is left: {names:?}");
            break;
        }
        assert!(Instant::now() < deadline, "stale consumers were not removed: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The entry gone-2 held was claimed and published before its consumer was removed.
    let entries = history(&mut conn, &producer.keys, "t").await;
    assert_eq!(entries.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["held by gone-2"]);
    producer.shutdown().await;
}
