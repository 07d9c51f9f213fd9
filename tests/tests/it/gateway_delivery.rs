//! The delivery promise at one or two gateways: live delivery, resume by header and query
//! on any gateway, several topics per connection, resets, payload safety, races.

use std::time::Duration;

use redis::AsyncCommands;
use streamgate_tests::gateway_app::spawn_gateway;
use streamgate_tests::publish::{event, publish_one, publisher};
use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::sse_client::connect;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn one_topic_live_events_carry_the_published_ids() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("live");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let mut stream = connect(&gateway.url("/events?topic=order:1"), None).await;
    stream.expect_silence(Duration::from_millis(300)).await; // no event is invented
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(publish_one(&publisher, "order:1", &format!("{{\"n\":{n}}}")).await);
    }
    publisher.publish(&[event("order:1", Some("status"), "paid")]).await.unwrap();
    let events = stream.take(4, WAIT).await;
    for (n, received) in events[..3].iter().enumerate() {
        assert_eq!(received.event, "message");
        assert_eq!(received.data, format!("{{\"n\":{n}}}"));
        assert_eq!(received.id, ids[n]);
    }
    assert_eq!(events[3].event, "status");
    assert_eq!(events[3].data, "paid");
}

#[tokio::test]
async fn resume_with_header_or_query_parameter_on_another_gateway_has_no_gap() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("resume");
    let first = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let second = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let mut stream = connect(&first.url("/events?topic=t"), None).await;
    for n in 0..3 {
        publish_one(&publisher, "t", &n.to_string()).await;
    }
    let seen = stream.take(3, WAIT).await;
    drop(stream);
    for n in 3..6 {
        publish_one(&publisher, "t", &n.to_string()).await;
    }
    let cursor = seen[2].id.clone();
    let mut by_header = connect(&second.url("/events?topic=t"), Some(&cursor)).await;
    let data: Vec<String> = by_header.take(3, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["3", "4", "5"]);
    by_header.expect_silence(Duration::from_millis(300)).await;

    let query = format!("/events?topic=t&lastEventId={cursor}");
    let mut by_query = connect(&first.url(&query), None).await;
    let data: Vec<String> = by_query.take(3, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["3", "4", "5"]);
    // Live events follow the replay without a duplicate.
    publish_one(&publisher, "t", "6").await;
    assert_eq!(by_query.take(1, WAIT).await[0].data, "6");
    assert_eq!(by_header.take(1, WAIT).await[0].data, "6");
}

#[tokio::test]
async fn several_topics_on_one_connection_resume_each_topic_exactly() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("multi");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let url = gateway.url("/events?topic=a&topic=b");
    let mut stream = connect(&url, None).await;
    publish_one(&publisher, "a", "a0").await;
    publish_one(&publisher, "b", "b0").await;
    let seen = stream.take(2, WAIT).await;
    assert_eq!(seen.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a0", "b0"]);
    assert_eq!(seen[1].id.split(',').count(), 2, "one position per topic: {}", seen[1].id);
    drop(stream);
    publish_one(&publisher, "b", "b1").await;
    publish_one(&publisher, "a", "a1").await;
    let mut resumed = connect(&url, Some(&seen[1].id)).await;
    let mut data: Vec<String> = resumed.take(2, WAIT).await.into_iter().map(|e| e.data).collect();
    data.sort();
    assert_eq!(data, ["a1", "b1"]);
    resumed.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn payload_with_line_breaks_and_fake_fields_arrives_as_one_event() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("inject");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let mut stream = connect(&gateway.url("/events?topic=t"), None).await;
    let payload = "line1\nline2\r\nline3\rline4\n\nevent: x\ndata: injected\n\nid: 1";
    publish_one(&publisher, "t", payload).await;
    publish_one(&publisher, "t", "next").await;
    let events = stream.take(2, WAIT).await;
    assert_eq!(events[0].event, "message");
    assert_eq!(events[0].data, payload.replace("\r\n", "\n").replace('\r', "\n"));
    assert_eq!(events[1].data, "next");
}

#[tokio::test]
async fn cursor_older_than_retained_history_gets_a_reset_then_the_retained_events() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("trim");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(publish_one(&publisher, "t", &n.to_string()).await);
    }
    // Retention removes all but the last four events (exact trim, as a janitor would).
    let mut conn = redis.client().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(streamgate_tests::keys::history(&prefix, "t"))
        .arg("MAXLEN")
        .arg(4)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut stream = connect(&gateway.url("/events?topic=t"), Some(&ids[2])).await;
    let events = stream.take(5, WAIT).await;
    assert_eq!(events[0].event, "streamgate.reset");
    let notice: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(notice, serde_json::json!({"topic": "t", "reason": "trimmed"}));
    let data: Vec<&str> = events[1..].iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["6", "7", "8", "9"]);
    assert_eq!(events[4].id, ids[9]);

    // A cursor whose history is gone (deleted and created anew) gets `history_lost`.
    let _: () = conn
        .del(&[streamgate_tests::keys::history(&prefix, "t"), streamgate_tests::keys::meta(&prefix, "t")])
        .await
        .unwrap();
    publish_one(&publisher, "t", "new").await;
    let mut stream = connect(&gateway.url("/events?topic=t"), Some(&ids[9])).await;
    let events = stream.take(2, WAIT).await;
    assert_eq!(events[0].event, "streamgate.reset");
    assert!(events[0].data.contains("history_lost"), "{}", events[0].data);
    assert_eq!(events[1].data, "new");
    // And the live hub of the first connection's gateway also moved to the new epoch.
    publish_one(&publisher, "t", "after").await;
    assert_eq!(stream.take(1, WAIT).await[0].data, "after");
}

#[tokio::test]
async fn concurrent_producers_reach_subscribers_in_history_order_without_gaps() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("concurrent");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let mut stream = connect(&gateway.url("/events?topic=hot"), None).await;
    stream.expect_silence(Duration::from_millis(200)).await;
    let mut tasks = Vec::new();
    for producer in 0..4 {
        let publisher = publisher(&redis.url(), &prefix);
        tasks.push(tokio::spawn(async move {
            for n in 0..100 {
                publish_one(&publisher, "hot", &format!("{producer}-{n}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let received = stream.take(400, Duration::from_secs(30)).await;
    let mut conn = redis.client().await;
    let history: redis::streams::StreamRangeReply =
        conn.xrange_all(streamgate_tests::keys::history(&prefix, "hot")).await.unwrap();
    let history_ids: Vec<String> = history.ids.iter().map(|e| e.id.clone()).collect();
    let received_ids: Vec<String> =
        received.iter().map(|e| e.id.split('~').next().unwrap().to_owned()).collect();
    assert_eq!(received_ids, history_ids);
    stream.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn clients_subscribing_during_a_publish_storm_see_a_gapless_suffix() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("race");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let total = 300u32;
    let url = gateway.url("/events?topic=race");
    let storm = tokio::spawn(async move {
        for n in 0..total {
            publish_one(&publisher, "race", &n.to_string()).await;
        }
    });
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(&url, None).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    storm.await.unwrap();
    for mut client in clients {
        // Each client sees a contiguous run ending with the last event.
        let mut seen: Vec<u32> = Vec::new();
        while seen.last() != Some(&(total - 1)) {
            let event = client.next_event(WAIT).await.expect("events until the last one");
            seen.push(event.data.parse().unwrap());
        }
        for pair in seen.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "gap or duplicate in {seen:?}");
        }
    }
}
