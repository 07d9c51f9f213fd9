//! The delivery promise at one or two gateways: live delivery, resume by header and query
//! on any gateway, several topics per connection, resets, payload safety, races.

use std::time::Duration;

use redis::AsyncCommands;
use streamgate_tests::publish::{event, publish_one, publisher};
use streamgate_tests::sse_client::connect;
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn one_topic_live_events_carry_the_published_ids() {
    let world = TestWorld::start("live");
    let gateway = world.gateway(&[]).await;
    let mut stream = gateway.subscribe(&["order:1"], None).await;
    stream.expect_silence(Duration::from_millis(300)).await; // no event is invented
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(world.publish("order:1", &format!("{{\"n\":{n}}}")).await);
    }
    world.publisher.publish(&[event("order:1", Some("status"), "paid")]).await.unwrap();
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
    let world = TestWorld::start("resume");
    let first = world.gateway(&[]).await;
    let second = world.gateway(&[]).await;
    let mut stream = first.subscribe(&["t"], None).await;
    for n in 0..3 {
        world.publish("t", &n.to_string()).await;
    }
    let seen = stream.take(3, WAIT).await;
    drop(stream);
    for n in 3..6 {
        world.publish("t", &n.to_string()).await;
    }
    let cursor = seen[2].id.clone();
    let mut by_header = second.subscribe(&["t"], Some(&cursor)).await;
    let data: Vec<String> = by_header.take(3, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["3", "4", "5"]);
    by_header.expect_silence(Duration::from_millis(300)).await;

    let query = format!("/events?topic=t&lastEventId={cursor}");
    let mut by_query = connect(&first.url(&query), None).await;
    let data: Vec<String> = by_query.take(3, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["3", "4", "5"]);
    // Live events follow the replay without a duplicate.
    world.publish("t", "6").await;
    assert_eq!(by_query.take(1, WAIT).await[0].data, "6");
    assert_eq!(by_header.take(1, WAIT).await[0].data, "6");
}

#[tokio::test]
async fn several_topics_on_one_connection_resume_each_topic_exactly() {
    let world = TestWorld::start("multi");
    let gateway = world.gateway(&[]).await;
    let url = gateway.url("/events?topic=a&topic=b");
    let mut stream = connect(&url, None).await;
    world.publish("a", "a0").await;
    world.publish("b", "b0").await;
    let seen = stream.take(2, WAIT).await;
    assert_eq!(seen.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a0", "b0"]);
    assert_eq!(seen[1].id.split(',').count(), 2, "one position per topic: {}", seen[1].id);
    drop(stream);
    world.publish("b", "b1").await;
    world.publish("a", "a1").await;
    let mut resumed = connect(&url, Some(&seen[1].id)).await;
    let mut data: Vec<String> = resumed.take(2, WAIT).await.into_iter().map(|e| e.data).collect();
    data.sort();
    assert_eq!(data, ["a1", "b1"]);
    resumed.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn payload_with_line_breaks_and_fake_fields_arrives_as_one_event() {
    let world = TestWorld::start("inject");
    let gateway = world.gateway(&[]).await;
    let mut stream = gateway.subscribe(&["t"], None).await;
    let payload = "line1\nline2\r\nline3\rline4\n\nevent: x\ndata: injected\n\nid: 1";
    world.publish("t", payload).await;
    world.publish("t", "next").await;
    let events = stream.take(2, WAIT).await;
    assert_eq!(events[0].event, "message");
    assert_eq!(events[0].data, payload.replace("\r\n", "\n").replace('\r', "\n"));
    assert_eq!(events[1].data, "next");
}

#[tokio::test]
async fn cursor_older_than_retained_history_gets_a_reset_then_the_retained_events() {
    let world = TestWorld::start("trim");
    let gateway = world.gateway(&[]).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(world.publish("t", &n.to_string()).await);
    }
    // Retention removes all but the last four events (exact trim, as a janitor would).
    let mut conn = world.conn().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(streamgate_tests::keys::history(&world.prefix, "t"))
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
        .del(&[
            streamgate_tests::keys::history(&world.prefix, "t"),
            streamgate_tests::keys::meta(&world.prefix, "t"),
        ])
        .await
        .unwrap();
    world.publish("t", "new").await;
    let mut stream = connect(&gateway.url("/events?topic=t"), Some(&ids[9])).await;
    let events = stream.take(2, WAIT).await;
    assert_eq!(events[0].event, "streamgate.reset");
    assert!(events[0].data.contains("history_lost"), "{}", events[0].data);
    assert_eq!(events[1].data, "new");
    // And the live hub of the first connection's gateway also moved to the new epoch.
    world.publish("t", "after").await;
    assert_eq!(stream.take(1, WAIT).await[0].data, "after");
}

#[tokio::test]
async fn concurrent_producers_reach_subscribers_in_history_order_without_gaps() {
    let world = TestWorld::start("concurrent");
    let gateway = world.gateway(&[]).await;
    let mut stream = gateway.subscribe(&["hot"], None).await;
    stream.expect_silence(Duration::from_millis(200)).await;
    let mut tasks = Vec::new();
    for producer in 0..4 {
        let publisher = publisher(&world.redis.url(), &world.prefix);
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
    let mut conn = world.conn().await;
    let history: redis::streams::StreamRangeReply =
        conn.xrange_all(streamgate_tests::keys::history(&world.prefix, "hot")).await.unwrap();
    let history_ids: Vec<String> = history.ids.iter().map(|e| e.id.clone()).collect();
    let received_ids: Vec<String> =
        received.iter().map(|e| e.id.split('~').next().unwrap().to_owned()).collect();
    assert_eq!(received_ids, history_ids);
    stream.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn clients_subscribing_during_a_publish_storm_see_a_gapless_suffix() {
    let world = TestWorld::start("race");
    let gateway = world.gateway(&[]).await;
    let total = 300u32;
    let url = gateway.url("/events?topic=race");
    let publisher = publisher(&world.redis.url(), &world.prefix);
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
