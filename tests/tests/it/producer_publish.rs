//! The producer's publish paths against real Redis: HTTP `POST /publish` (results, every
//! error status with nothing written, idempotent retries), routing to live instances,
//! history retention, and the `producer publish` command line.

use std::time::{Duration, Instant};
use streamgate::stream::field;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use streamgate::cursor::{HistoryId, TopicCursor};
use streamgate::keys::Keys;
use streamgate::stream::RoutedEntry;
use streamgate::topic::{InstanceId, Topic};
use streamgate_tests::producer_app::{history, producer_binary, stream_entries};
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::parse(name, 256).unwrap()
}

/// The results of a 200 answer.
async fn results(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["results"].as_array().expect("results array").clone()
}

/// The history id and epoch of one result's `id`.
fn cursor_of(result: &Value) -> (HistoryId, String) {
    match result["id"].as_str().expect("id").parse::<TopicCursor>().expect("a topic cursor") {
        TopicCursor::At { epoch, id } => (id, epoch.as_str().to_owned()),
        TopicCursor::Start => panic!("a result id is never the start cursor"),
    }
}

/// Every key and the length of every stream: what "nothing written" compares.
async fn snapshot(conn: &mut MultiplexedConnection) -> Vec<(String, usize)> {
    let mut keys: Vec<String> = conn.keys("*").await.unwrap();
    keys.sort();
    let mut state = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await.unwrap();
        let len: usize = if kind == "stream" { conn.xlen(&key).await.unwrap() } else { 0 };
        state.push((key, len));
    }
    state
}

#[tokio::test]
async fn single_event_is_appended_and_its_id_is_what_a_subscriber_sees() {
    let world = TestWorld::start("single");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;

    let response =
        producer.publish(&json!({"topic": "order:1", "data": {"state": "paid"}, "event": "status"})).await;

    let results = results(response).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["topic"], "order:1");
    assert_eq!(results[0]["duplicate"], false);
    let (id, epoch) = cursor_of(&results[0]);
    let entries = history(&mut conn, &producer.keys, "order:1").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].prev, HistoryId::ZERO);
    assert_eq!(entries[0].name.as_deref(), Some("status"));
    assert_eq!(entries[0].data, r#"{"state":"paid"}"#);
    let meta_epoch: String =
        conn.hget(producer.keys.meta(&topic("order:1")), field::META_EPOCH).await.unwrap();
    assert_eq!(meta_epoch, epoch);
}

#[tokio::test]
async fn batch_is_appended_in_order_with_each_event_naming_its_predecessor() {
    let world = TestWorld::start("batch");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let batch: Vec<Value> = (0..6)
        .map(|n| json!({"topic": if n % 2 == 0 { "a" } else { "b" }, "data": format!("line {n}\nnext")}))
        .collect();

    let results = results(producer.publish(&Value::Array(batch)).await).await;

    assert_eq!(results.len(), 6);
    for (topic_name, indexes) in [("a", [0, 2, 4]), ("b", [1, 3, 5])] {
        let entries = history(&mut conn, &producer.keys, topic_name).await;
        assert_eq!(entries.len(), 3);
        let mut prev = HistoryId::ZERO;
        for (entry, index) in entries.iter().zip(indexes) {
            assert_eq!(results[index]["topic"], topic_name);
            assert_eq!(cursor_of(&results[index]).0, entry.id);
            assert_eq!(entry.prev, prev, "each entry names the one before it");
            assert_eq!(entry.data, format!("line {index}\nnext"), "string data is delivered as is");
            prev = entry.id;
        }
        let last: String = conn.hget(producer.keys.meta(&topic(topic_name)), field::META_LAST).await.unwrap();
        assert_eq!(last, prev.to_string());
    }
}

#[tokio::test]
async fn malformed_events_are_rejected_with_400_and_their_index_and_nothing_is_written() {
    let world = TestWorld::start("bad_request");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    results(producer.publish(&json!({"topic": "t", "data": "existing"})).await).await;
    let before = snapshot(&mut conn).await;
    let cases: &[(&str, Option<u64>)] = &[
        (r#"[{"topic":"t","data":1},{"topic":"","data":1}]"#, Some(1)),
        (r#"[{"topic":"t","data":1},{"topic":"t","data":1,"event":"a\nb"}]"#, Some(1)),
        (r#"[{"topic":"t","data":1},{"topic":"t","data":1},{"topic":"t"}]"#, Some(2)),
        (r#"{"topic":"t","data":1,"colour":"red"}"#, Some(0)),
        (r#"{"topic":7,"data":1}"#, Some(0)),
        (r#"{"topic":"t","data":1,"idempotencyKey":""}"#, Some(0)),
        (r#"{"topic":"t","data":1,"event":"streamgate.reset"}"#, Some(0)),
        (r#"{"topic":"t","data":"#, None),
        ("42", None),
    ];

    for (body, index) in cases {
        let response = producer.post_publish(*body, &[("content-type", "application/json")]).await;

        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}: {answer}");
        assert_eq!(answer.get("index").and_then(Value::as_u64), *index, "{body}: {answer}");
    }
    assert_eq!(snapshot(&mut conn).await, before);
}

#[tokio::test]
async fn over_the_size_limits_is_rejected_with_413_and_nothing_is_written() {
    let world = TestWorld::start("too_large");
    let overrides = [("MAX_EVENT_BYTES", "100"), ("MAX_REQUEST_BYTES", "4KiB"), ("MAX_BATCH_EVENTS", "3")];
    let producer = world.producer(&overrides).await;
    let mut conn = world.conn().await;
    results(producer.publish(&json!({"topic": "t", "data": "x".repeat(100)})).await).await;
    let before = snapshot(&mut conn).await;

    let big_event = producer
        .publish(&json!([{"topic": "t", "data": "ok"}, {"topic": "t", "data": "x".repeat(101)}]))
        .await;
    let big_batch = producer.publish(&Value::Array(vec![json!({"topic": "t", "data": 1}); 4])).await;
    let big_body = producer.publish(&json!({"topic": "t", "data": "x".repeat(5000)})).await;

    assert_eq!(big_event.status(), 413);
    assert_eq!(big_event.json::<Value>().await.unwrap()["index"], 1);
    for response in [big_batch, big_body] {
        assert_eq!(response.status(), 413);
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].is_string() && answer.get("index").is_none(), "{answer}");
    }
    assert_eq!(snapshot(&mut conn).await, before);
}

#[tokio::test]
async fn another_content_type_is_rejected_with_415_and_nothing_is_written() {
    let world = TestWorld::start("media_type");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let body = r#"{"topic":"t","data":1}"#;

    let plain = producer.post_publish(body, &[("content-type", "text/plain")]).await;
    let missing = producer.post_publish(body, &[]).await;
    let with_charset =
        producer.post_publish(body, &[("content-type", "application/json; charset=utf-8")]).await;

    assert_eq!(plain.status(), 415);
    assert!(plain.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(missing.status(), 415);
    assert_eq!(with_charset.status(), 200);
    assert_eq!(history(&mut conn, &producer.keys, "t").await.len(), 1);
}

#[tokio::test]
async fn a_configured_token_is_required_with_401_and_nothing_is_written() {
    let world = TestWorld::start("token");
    let producer = world.producer(&[("PUBLISH_TOKEN", "s3cret")]).await;
    let mut conn = world.conn().await;
    let body = r#"{"topic":"t","data":1}"#;
    let json = ("content-type", "application/json");

    let missing = producer.post_publish(body, &[json]).await;
    let wrong = producer.post_publish(body, &[json, ("authorization", "Bearer s3cre")]).await;
    let before = snapshot(&mut conn).await;
    let right = producer.post_publish(body, &[json, ("authorization", "Bearer s3cret")]).await;

    for response in [missing, wrong] {
        assert_eq!(response.status(), 401);
        assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    }
    assert!(before.is_empty(), "nothing written before the authorized publish: {before:?}");
    assert_eq!(right.status(), 200);
}

#[tokio::test]
async fn redis_down_answers_503_with_retry_after_and_publishing_resumes_when_it_is_back() {
    let mut world = TestWorld::start("redis_down");
    let producer = world.producer(&[]).await;
    results(producer.publish(&json!({"topic": "t", "data": "before"})).await).await;

    world.redis.stop();
    let response = producer.publish(&json!({"topic": "t", "data": "during"})).await;
    let ready = producer.get("/readyz").await;

    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(ready.status(), 503);
    assert_eq!(producer.get("/healthz").await.status(), 200);

    // Without persistence the restarted Redis is empty: "during" was never written.
    world.redis.restart();
    let deadline = Instant::now() + WAIT;
    loop {
        let response = producer.publish(&json!({"topic": "t", "data": "after"})).await;
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not resume: {}", response.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = world.conn().await;
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["after"]);
    assert_eq!(producer.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn a_retried_batch_with_idempotency_keys_returns_the_original_ids_and_writes_nothing_new() {
    let world = TestWorld::start("idempotent");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let batch = json!([
        {"topic": "t", "data": "one", "idempotencyKey": "up-1"},
        {"topic": "t", "data": "two", "idempotencyKey": "up-2"},
    ]);

    let first = results(producer.publish(&batch).await).await;
    let retry = results(producer.publish(&batch).await).await;
    let same_key_other_topic =
        results(producer.publish(&json!({"topic": "u", "data": "one", "idempotencyKey": "up-1"})).await)
            .await;

    for (original, repeated) in first.iter().zip(&retry) {
        assert_eq!(original["duplicate"], false);
        assert_eq!(repeated["duplicate"], true);
        assert_eq!(repeated["id"], original["id"]);
    }
    assert_eq!(same_key_other_topic[0]["duplicate"], false, "keys are per topic");
    assert_eq!(history(&mut conn, &producer.keys, "t").await.len(), 2);
}

/// Registers `instance` in `topic`'s group with `count` subscribers, alive or not.
async fn register(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    topic_name: &str,
    instance: &str,
    count: i64,
    alive: bool,
) {
    let () = conn.hset(keys.group(&topic(topic_name)), instance, count).await.unwrap();
    if alive {
        let id = InstanceId::parse(instance).unwrap();
        let () = conn.set_ex(keys.instance_alive(&id), "1", 60).await.unwrap();
    }
}

async fn routed(conn: &mut MultiplexedConnection, keys: &Keys, instance: &str) -> Vec<RoutedEntry> {
    let stream = keys.instance_stream(&InstanceId::parse(instance).unwrap());
    stream_entries(conn, &stream).await.iter().map(|e| RoutedEntry::decode(e).unwrap()).collect()
}

#[tokio::test]
async fn routing_reaches_only_live_instances_with_subscribers() {
    let world = TestWorld::start("routing");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let keys = producer.keys.clone();
    register(&mut conn, &keys, "order:1", "gw-live", 2, true).await;
    register(&mut conn, &keys, "order:1", "gw-idle", 0, true).await;
    register(&mut conn, &keys, "order:1", "gw-dead", 1, false).await;
    register(&mut conn, &keys, "order:1", "not an id", 1, false).await;
    register(&mut conn, &keys, "other", "gw-other", 1, true).await;

    let batch = json!([
        {"topic": "order:1", "data": "first", "event": "status"},
        {"topic": "order:1", "data": {"n": 2}},
    ]);
    let results = results(producer.publish(&batch).await).await;

    let entries = routed(&mut conn, &keys, "gw-live").await;
    assert_eq!(entries.len(), 2);
    let (first_id, epoch) = cursor_of(&results[0]);
    assert_eq!(entries[0].topic, "order:1");
    assert_eq!(entries[0].entry.id, first_id);
    assert_eq!(entries[0].entry.prev, HistoryId::ZERO);
    assert_eq!(entries[0].entry.name.as_deref(), Some("status"));
    assert_eq!(entries[0].entry.data, "first");
    assert_eq!(entries[0].epoch.as_str(), epoch);
    assert_eq!(entries[1].entry.id, cursor_of(&results[1]).0);
    assert_eq!(entries[1].entry.prev, first_id, "a routed entry names its predecessor");
    assert_eq!(entries[1].entry.data, r#"{"n":2}"#);
    for silent in ["gw-idle", "gw-dead", "gw-other"] {
        assert!(routed(&mut conn, &keys, silent).await.is_empty(), "{silent} got an event");
    }
    let indexed: Option<f64> = conn.zscore(keys.topics(), "order:1").await.unwrap();
    assert!(indexed.is_some(), "the topic index names the topic");
}

#[tokio::test]
async fn a_duplicate_is_routed_again_with_the_original_event() {
    let world = TestWorld::start("reroute");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let keys = producer.keys.clone();
    // The first publish reaches nobody, as if its producer had crashed before routing.
    let first =
        results(producer.publish(&json!({"topic": "t", "data": "original", "idempotencyKey": "k"})).await)
            .await;
    register(&mut conn, &keys, "t", "gw-1", 1, true).await;

    let retry =
        results(producer.publish(&json!({"topic": "t", "data": "retried", "idempotencyKey": "k"})).await)
            .await;

    assert_eq!(retry[0]["duplicate"], true);
    assert_eq!(retry[0]["id"], first[0]["id"]);
    let entries = routed(&mut conn, &keys, "gw-1").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.id, cursor_of(&first[0]).0);
    assert_eq!(entries[0].entry.data, "original");
    assert_eq!(history(&mut conn, &keys, "t").await.len(), 1);
}

#[tokio::test]
async fn history_is_trimmed_by_length() {
    let world = TestWorld::start("trim_len");
    let producer = world.producer(&[("HISTORY_MAX_LEN", "50")]).await;
    let mut conn = world.conn().await;

    for round in 0..10 {
        let batch: Vec<Value> = (0..100).map(|n| json!({"topic": "t", "data": round * 100 + n})).collect();
        results(producer.publish(&Value::Array(batch)).await).await;
    }

    // Trimming is approximate (whole stream nodes of up to 100 entries).
    let entries = history(&mut conn, &producer.keys, "t").await;
    assert!((50..=150).contains(&entries.len()), "history holds {} entries", entries.len());
    assert_eq!(entries.last().unwrap().data, "999");
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev, pair[0].id, "the chain is intact after trimming");
    }
}

#[tokio::test]
async fn history_is_trimmed_by_age() {
    let world = TestWorld::start("trim_age");
    let producer = world.producer(&[("HISTORY_MAX_AGE", "1s"), ("DEDUP_WINDOW", "1s")]).await;
    let mut conn = world.conn().await;
    // Large events fill a stream node each, so approximate trimming is close to exact.
    let old: Vec<Value> =
        (0..5).map(|n| json!({"topic": "t", "data": format!("{n}{}", "x".repeat(3000))})).collect();
    let old_ids: Vec<HistoryId> =
        results(producer.publish(&Value::Array(old)).await).await.iter().map(|r| cursor_of(r).0).collect();

    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let newest = results(
            producer.publish(&json!({"topic": "t", "data": format!("new{}", "x".repeat(3000))})).await,
        )
        .await;
        let entries = history(&mut conn, &producer.keys, "t").await;
        assert_eq!(entries.last().map(|e| e.id), Some(cursor_of(&newest[0]).0), "the newest event is kept");
        if entries.iter().all(|entry| !old_ids.contains(&entry.id)) {
            break;
        }
        assert!(Instant::now() < deadline, "events older than 1 s were not trimmed: {} left", entries.len());
    }
}

#[tokio::test]
async fn a_history_created_anew_gets_a_new_epoch_and_starts_a_new_chain() {
    let world = TestWorld::start("new_epoch");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let first = results(producer.publish(&json!({"topic": "t", "data": "old"})).await).await;
    // As retention or a Redis data loss would leave it: the meta hash outlives the history.
    let () = conn.del(producer.keys.history(&topic("t"))).await.unwrap();

    let second = results(producer.publish(&json!({"topic": "t", "data": "new"})).await).await;

    let (_, old_epoch) = cursor_of(&first[0]);
    let (new_id, new_epoch) = cursor_of(&second[0]);
    assert_ne!(new_epoch, old_epoch);
    let entries = history(&mut conn, &producer.keys, "t").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, new_id);
    assert_eq!(entries[0].prev, HistoryId::ZERO);
}

#[tokio::test]
async fn a_lost_meta_hash_starts_a_new_epoch_whose_chain_goes_on_from_the_history() {
    let world = TestWorld::start("lost_meta");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    // The other partial loss: the history survives, its meta hash (epoch, last) does not,
    // wholly or only its `last`.
    for lost in [None, Some(field::META_LAST)] {
        let before = results(producer.publish(&json!({"topic": "t", "data": "before"})).await).await;
        match lost {
            None => {
                let () = conn.del(producer.keys.meta(&topic("t"))).await.unwrap();
            }
            Some(field) => {
                let () = conn.hdel(producer.keys.meta(&topic("t")), field).await.unwrap();
            }
        }

        let after = results(producer.publish(&json!({"topic": "t", "data": "after"})).await).await;

        let (before_id, before_epoch) = cursor_of(&before[0]);
        let (after_id, after_epoch) = cursor_of(&after[0]);
        assert_ne!(after_epoch, before_epoch, "lost {lost:?}: a cursor into the old epoch is told");
        let entries = history(&mut conn, &producer.keys, "t").await;
        let newest = entries.last().unwrap();
        assert_eq!(newest.id, after_id);
        assert_eq!(newest.prev, before_id, "lost {lost:?}: the chain goes on from what the history holds");
        let epoch: String = conn.hget(producer.keys.meta(&topic("t")), field::META_EPOCH).await.unwrap();
        let last: String = conn.hget(producer.keys.meta(&topic("t")), field::META_LAST).await.unwrap();
        assert_eq!(
            (epoch, last),
            (after_epoch, after_id.to_string()),
            "lost {lost:?}: the meta hash is whole again"
        );
    }
}

#[tokio::test]
async fn a_batch_redis_refuses_is_answered_500_and_none_of_it_is_written() {
    let world = TestWorld::start("refused");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    // Each key an event touches, holding the wrong type (as a hostile operator or another
    // application sharing the database would leave it): the history, the meta hash, the
    // group hash, the idempotency record.
    let broken = topic("broken");
    let wrong_keys = [
        (producer.keys.history(&broken), false),
        (producer.keys.meta(&broken), false),
        (producer.keys.group(&broken), false),
        (producer.keys.idempotency(&broken, None, "up-1"), true),
    ];
    for (wrong_key, holds_a_string) in wrong_keys {
        if holds_a_string {
            let () = conn.hset(&wrong_key, "not", "a string").await.unwrap();
        } else {
            let () = conn.set(&wrong_key, "not a stream or a hash").await.unwrap();
        }
        let before = snapshot(&mut conn).await;

        let response = producer
            .publish(&json!([
                {"topic": "fine", "data": 1},
                {"topic": "broken", "data": 2, "idempotencyKey": "up-1"},
                {"topic": "fine", "data": 3},
            ]))
            .await;

        assert_eq!(response.status(), 500, "{wrong_key}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "internal error");
        assert_eq!(
            snapshot(&mut conn).await,
            before,
            "{wrong_key}: the events before and after the refused one are not written either"
        );
        let () = conn.del(&wrong_key).await.unwrap();
    }
}

#[tokio::test]
async fn events_of_one_batch_see_each_others_appends_and_idempotency_records() {
    let world = TestWorld::start("in_batch");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    let _ = results(producer.publish(&json!({"topic": "t", "data": "before"})).await).await;
    // The meta hash outlives its history (retention, data loss): the batch's first event
    // starts a new epoch, and the ones after it must continue that chain, not start more.
    let () = conn.del(producer.keys.history(&topic("t"))).await.unwrap();

    let got = results(
        producer
            .publish(&json!([
                {"topic": "t", "data": "a", "idempotencyKey": "k"},
                {"topic": "t", "data": "b"},
                {"topic": "t", "data": "a again", "idempotencyKey": "k"},
                {"topic": "t", "data": "c"},
            ]))
            .await,
    )
    .await;

    let cursors: Vec<(HistoryId, String)> = got.iter().map(cursor_of).collect();
    assert_eq!(
        got.iter().map(|r| r["duplicate"].as_bool().unwrap()).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    assert_eq!(
        got[2]["id"], got[0]["id"],
        "the repeated key within the batch is the first event's duplicate"
    );
    assert!(
        cursors.iter().all(|(_, epoch)| *epoch == cursors[0].1),
        "one new epoch for the whole batch: {cursors:?}"
    );
    let entries = history(&mut conn, &producer.keys, "t").await;
    assert_eq!(entries.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(entries[0].prev, HistoryId::ZERO);
    assert_eq!(entries[1].prev, entries[0].id);
    assert_eq!(entries[2].prev, entries[1].id);
    assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [cursors[0].0, cursors[1].0, cursors[3].0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_publishes_an_event_a_gateway_delivers() {
    let binary = tokio::task::spawn_blocking(producer_binary).await.unwrap();
    let world = TestWorld::start("cli");
    let gateway = world.gateway(&[]).await;
    let mut stream = gateway.subscribe(&["cli:1"], None).await;
    stream.expect_silence(Duration::from_millis(300)).await;

    let output = tokio::process::Command::new(&binary)
        .args(["publish", "--topic", "cli:1", "--data", "hello\nfrom the cli", "--event", "greeting"])
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env("REDIS_URL", world.redis.url())
        .env("KEY_PREFIX", &world.prefix)
        .output()
        .await
        .unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["topic"], "cli:1");
    assert_eq!(lines[0]["duplicate"], false);
    let events = stream.take(1, WAIT).await;
    assert_eq!(events[0].event, "greeting");
    assert_eq!(events[0].data, "hello\nfrom the cli");
    assert_eq!(events[0].id, lines[0]["id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_publishes_a_counted_series_and_rejects_bad_input_with_exit_code_2() {
    let binary = tokio::task::spawn_blocking(producer_binary).await.unwrap();
    let world = TestWorld::start("cli_count");
    let run = |args: &[&str]| {
        tokio::process::Command::new(&binary)
            .args(args)
            .env_remove(streamgate::config::CONFIG_FILE_ENV)
            .env("REDIS_URL", world.redis.url())
            .env("KEY_PREFIX", &world.prefix)
            .output()
    };

    let series = run(&["publish", "--topic", "t", "--data", "tick", "--count", "3", "--interval-ms", "10"])
        .await
        .unwrap();
    let bad_topic = run(&["publish", "--topic", "", "--data", "x"]).await.unwrap();
    let bad_setting =
        run(&["--set", "HISTORY_MAX_LEN=many", "publish", "--topic", "t", "--data", "x"]).await.unwrap();

    assert!(series.status.success());
    assert_eq!(String::from_utf8(series.stdout).unwrap().lines().count(), 3);
    let mut conn = world.conn().await;
    assert_eq!(history(&mut conn, &world.keys, "t").await.len(), 3);
    for rejected in [bad_topic, bad_setting] {
        assert_eq!(rejected.status.code(), Some(2));
        let stderr = String::from_utf8(rejected.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}
