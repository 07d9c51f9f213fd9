//! Group commit (`producer/src/group.rs`): concurrent `POST /publish` requests share one
//! append script call, and each still gets its own result and outcome, against a real
//! redis-server:
//!
//! - many concurrent single-event requests over several topics and two publishers, some
//!   repeating an idempotency key, each get a distinct, correct id in history order, and
//!   keys stay apart per publisher;
//! - a group Redis does not answer is 504 `"unknown"` for every request in it, and keyed
//!   retries find each event once; a group Redis refuses before running is 503 `false` for
//!   every request, with nothing written;
//! - a group refused for one request's topic (a key of the wrong type) fails that request
//!   only.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use streamgate_tests::producer_app::{TestProducer, history};
use streamgate_tests::world::TestWorld;

/// How long a condition may take before a test fails.
const WAIT: Duration = Duration::from_secs(15);
/// Concurrent requests in the many-requests test.
const N_REQUESTS: usize = 500;
/// Topics they are spread over.
const N_TOPICS: usize = 5;

/// `POST /publish` of one event with a publisher's token.
async fn publish_with_token(producer: &TestProducer, event: &Value, token: &str) -> (u16, Value) {
    let authorization = format!("Bearer {token}");
    let response = producer
        .post_publish(
            event.to_string(),
            &[("content-type", "application/json"), ("authorization", &authorization)],
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /publish` of an event the future owns.
async fn publish_owned(producer: &TestProducer, event: Value) -> reqwest::Response {
    producer.publish(&event).await
}

/// Append script calls Redis has taken so far (run or refused), from `INFO commandstats`.
async fn script_calls(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    let number = |line: &str, name: &str| -> u64 {
        line.split(&[':', ','][..])
            .find_map(|part| part.strip_prefix(name))
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    };
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .map(|line| number(line, "calls=") + number(line, "rejected_calls="))
        .sum()
}

/// Waits until at least one client's command is held by a `CLIENT PAUSE`.
async fn wait_for_a_held_command(conn: &MultiplexedConnection) {
    streamgate_tests::wait::wait_until("a command held by the pause", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO").arg("clients").query_async(&mut conn).await.unwrap();
            info.lines().any(|line| line.strip_prefix("blocked_clients:").is_some_and(|n| n.trim() != "0"))
        }
    })
    .await;
}

/// Request `i` of the many-requests test: (topic, publisher token, idempotency key). The
/// first 200 come in pairs with the same key on the same topic, 100 by each publisher, so
/// each key is used twice by publisher A and twice by publisher B.
fn request_shape(i: usize) -> (String, &'static str, Option<String>) {
    let token = if i < 100 || (i >= 200 && i.is_multiple_of(2)) { "token-a" } else { "token-b" };
    if i < 200 {
        let pair = (i % 100) / 2;
        (format!("t{}", pair % N_TOPICS), token, Some(format!("k{pair}")))
    } else {
        (format!("t{}", i % N_TOPICS), token, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_single_event_publishes_each_get_their_own_result_in_history_order() {
    let world = TestWorld::start("group_many");
    let producer =
        world.producer(&[("PUBLISH_TOKEN", "token-a,token-b"), ("MAX_CONCURRENT_PUBLISHES", "1000")]).await;
    let mut conn = world.conn().await;
    let calls_before = script_calls(&mut conn).await;

    let requests = (0..N_REQUESTS).map(|i| {
        let (topic, token, key) = request_shape(i);
        let mut event = json!({"topic": topic, "data": format!("event-{i}")});
        if let Some(key) = key {
            event["idempotencyKey"] = json!(key);
        }
        let producer = &producer;
        async move { publish_with_token(producer, &event, token).await }
    });
    let responses = futures_util::future::join_all(requests).await;

    let script_calls = script_calls(&mut conn).await - calls_before;
    assert!(script_calls < N_REQUESTS as u64, "requests shared script calls: {script_calls}");
    // Each topic's history, by id: (data, position).
    let mut by_id: HashMap<String, (String, usize)> = HashMap::new();
    let mut n_entries = 0;
    for t in 0..N_TOPICS {
        let entries = history(&mut conn, &producer.keys, &format!("t{t}")).await;
        n_entries += entries.len();
        for (position, entry) in entries.into_iter().enumerate() {
            by_id.insert(format!("{}:{}", t, entry.id), (entry.data, position));
        }
    }
    assert_eq!(n_entries, N_REQUESTS - 100, "one entry per unkeyed request and per (publisher, key)");
    let mut first_of_key: HashMap<(&str, String), String> = HashMap::new();
    let mut fresh_ids = std::collections::HashSet::new();
    for (i, (status, body)) in responses.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {body}");
        let (topic, token, key) = request_shape(i);
        let result = &body["results"][0];
        assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(result["topic"], topic.as_str(), "{body}");
        let cursor = result["id"].as_str().unwrap();
        let id = cursor.split('~').next().unwrap();
        let (data, _) = &by_id[&format!("{}:{id}", &topic[1..])];
        let duplicate = result["duplicate"].as_bool().unwrap();
        if !duplicate {
            assert_eq!(data, &format!("event-{i}"), "request {i} got the id of its own event");
            assert!(fresh_ids.insert(cursor.to_owned()), "request {i}: id {cursor} given twice");
        }
        if let Some(key) = key {
            let original = first_of_key.entry((token, key)).or_insert_with(|| cursor.to_owned());
            assert_eq!(original, cursor, "request {i}: the same key of the same publisher, the same id");
        } else {
            assert!(!duplicate, "request {i} has no key: {body}");
        }
    }
    assert_eq!(fresh_ids.len(), N_REQUESTS - 100, "one fresh result per history entry");
    assert_eq!(first_of_key.len(), 100, "publisher B's keys are apart from publisher A's");
    let distinct: std::collections::HashSet<&String> = first_of_key.values().collect();
    assert_eq!(distinct.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_redis_does_not_answer_is_504_for_each_request_and_retries_find_each_once() {
    let world = TestWorld::start("group_unknown");
    let producer = world.producer(&[("REDIS_RESPONSE_TIMEOUT", "300ms")]).await;
    let mut conn = world.conn().await;
    // Loads the append script, so the paused calls run it rather than answering NOSCRIPT.
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);
    let event = |i: usize| json!({"topic": format!("t{}", i % 3), "data": format!("e{i}"), "idempotencyKey": format!("k{i}")});

    let () = redis::cmd("CLIENT").arg("PAUSE").arg(2000).arg("WRITE").query_async(&mut conn).await.unwrap();
    let held = publish_owned(&producer, event(0));
    let queued = async {
        // The first request's script is held; the others queue behind it and form a group.
        wait_for_a_held_command(&conn).await;
        futures_util::future::join_all((1..20).map(|i| publish_owned(&producer, event(i)))).await
    };
    let (held, queued) = tokio::join!(held, queued);

    for response in std::iter::once(held).chain(queued) {
        assert_eq!(response.status(), 504);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["written"], "unknown", "{body}");
    }
    // Once the pause is over, every held script that Redis kept has run (one whose
    // connection was closed meanwhile never will): keyed retries find each event once.
    streamgate_tests::wait::wait_until("the pause ended", WAIT, || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO").arg("clients").query_async(&mut conn).await.unwrap();
            info.lines().any(|line| line.strip_prefix("blocked_clients:").is_some_and(|n| n.trim() == "0"))
        }
    })
    .await;
    let retries = futures_util::future::join_all((0..20).map(|i| publish_owned(&producer, event(i)))).await;
    for response in retries {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    }
    for t in 0..3 {
        let data: Vec<String> =
            history(&mut conn, &producer.keys, &format!("t{t}")).await.into_iter().map(|e| e.data).collect();
        let expected: Vec<String> = (0..20).filter(|i| i % 3 == t).map(|i| format!("e{i}")).collect();
        let mut sorted = data.clone();
        sorted.sort_by_key(|data| data[1..].parse::<usize>().unwrap());
        assert_eq!(sorted, expected, "each event once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_redis_refuses_before_running_is_503_for_each_request_and_nothing_is_written() {
    let world = TestWorld::start("group_not_written");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);
    let event = |i: usize| json!({"topic": format!("t{}", i % 3), "data": format!("e{i}")});

    let calls_before = script_calls(&mut conn).await;
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("WRITE").query_async(&mut conn).await.unwrap();
    let held = publish_owned(&producer, event(0));
    let queued = async {
        wait_for_a_held_command(&conn).await;
        // Out of memory once the pause ends: Redis refuses the scripts at their first write.
        let mut config = conn.clone();
        let () =
            redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async(&mut config).await.unwrap();
        futures_util::future::join_all((1..20).map(|i| publish_owned(&producer, event(i)))).await
    };
    let (held, queued) = tokio::join!(held, queued);
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async(&mut conn).await.unwrap();

    for response in std::iter::once(held).chain(queued) {
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["written"], false, "{body}");
    }
    let script_calls = script_calls(&mut conn).await - calls_before;
    assert!(script_calls < 20, "the queued requests were sent as groups: {script_calls} script calls");
    for t in 0..3 {
        assert!(history(&mut conn, &producer.keys, &format!("t{t}")).await.is_empty(), "nothing written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_refused_for_one_requests_topic_fails_that_request_only() {
    let world = TestWorld::start("group_refused");
    let producer = world.producer(&[]).await;
    let mut conn = world.conn().await;
    assert_eq!(producer.publish(&json!({"topic": "warm-up", "data": "x"})).await.status(), 200);
    // Topic "bad"'s history key holds a string: the script refuses any batch with it.
    let bad = producer.keys.history(&streamgate::topic::Topic::parse("bad", 256).unwrap());
    let () = redis::cmd("SET").arg(&bad).arg("not a stream").query_async(&mut conn).await.unwrap();
    let topic_of = |i: usize| if i == 7 { "bad".to_owned() } else { format!("t{}", i % 3) };

    let () = redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("WRITE").query_async(&mut conn).await.unwrap();
    let held = publish_owned(&producer, json!({"topic": "t0", "data": "e0"}));
    let queued = async {
        wait_for_a_held_command(&conn).await;
        let requests =
            (1..20).map(|i| publish_owned(&producer, json!({"topic": topic_of(i), "data": format!("e{i}")})));
        futures_util::future::join_all(requests).await
    };
    let (held, queued) = tokio::join!(held, queued);

    assert_eq!(held.status(), 200);
    for (i, response) in (1..20).zip(queued) {
        let expected = if i == 7 { 500 } else { 200 };
        assert_eq!(response.status(), expected, "request {i}");
    }
    let mut n = 0;
    for t in 0..3 {
        n += history(&mut conn, &producer.keys, &format!("t{t}")).await.len();
    }
    assert_eq!(n, 19, "every request but the refused one is in history");
}
