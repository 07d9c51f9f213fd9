//! `GET /metrics` on the producer's admin listener (`ADMIN_LISTEN_ADDR`): publish requests
//! by status, events appended, duplicates, the routing fan-out, dead letters, the ingest
//! backlog and Redis timings — with no topic or publisher label.

use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use streamgate_tests::ingest::{create_group, read_as};
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;

use crate::gateway_metrics::{sample, scrape};

const WAIT: Duration = Duration::from_secs(10);

/// Leaves one entry pending in the ingest group, read by a consumer that never
/// acknowledges it (a producer that died), with the id `1000-0`: 1 s after the Unix epoch,
/// so its age by the server's clock is unmistakable.
async fn leave_one_pending(conn: &mut MultiplexedConnection, stream: &str) {
    create_group(conn, stream).await;
    let _: String = conn.xadd(stream, "1000-0", &[("topic", "t"), ("data", "stuck")]).await.unwrap();
    read_as(conn, stream, "gone", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_metrics_count_requests_appends_duplicates_fanout_dead_letters_and_the_ingest_backlog() {
    let world = TestWorld::start("producer-metrics");
    let ingest = streamgate_tests::ingest::stream_under(&world.prefix);
    let mut conn = world.conn().await;
    leave_one_pending(&mut conn, &ingest).await;
    let gateway = world.gateway(&[]).await;
    let producer = world
        .producer(&[
            ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
            ("INGEST_ENABLED", "true"),
            ("INGEST_CLAIM_IDLE", "5m"),
        ])
        .await;
    let metrics_url = producer.admin_url("/metrics");
    assert_eq!(reqwest::get(producer.url("/metrics")).await.unwrap().status(), 404, "not on LISTEN_ADDR");
    let mut subscriber = gateway.subscribe(&["t"], None).await;

    let keyed = json!({"topic": "t", "data": "one", "idempotencyKey": "k-1"});
    assert_eq!(producer.publish(&keyed).await.status(), 200);
    assert_eq!(producer.publish(&keyed).await.status(), 200, "a duplicate");
    assert_eq!(producer.post_publish("{", &[("content-type", "application/json")]).await.status(), 400);
    assert_eq!(producer.post_publish("{}", &[("content-type", "text/plain")]).await.status(), 415);
    let _: String = conn.xadd(&ingest, "*", &[("topic", "t"), ("data", "two")]).await.unwrap();
    let _: String = conn.xadd(&ingest, "*", &[("data", "no topic")]).await.unwrap();
    // The first event (the duplicate is routed again, and dropped by the gateway), then the
    // ingested one.
    subscriber.take(2, WAIT).await;

    wait_until("the ingest entries handled and the backlog read", WAIT, || async {
        let text = scrape(&metrics_url).await;
        sample(&text, "streamgate_producer_dead_letters_total") == Some(1.0)
            && sample(&text, "streamgate_producer_ingest_pending") == Some(1.0)
    })
    .await;
    let text = scrape(&metrics_url).await;
    let requests = |status: &str| {
        sample(&text, &format!(r#"streamgate_producer_publish_requests_total{{status="{status}"}}"#))
    };
    assert_eq!(requests("200"), Some(2.0), "{text}");
    assert_eq!(requests("400"), Some(1.0), "{text}");
    assert_eq!(requests("415"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "streamgate_producer_events_appended_total"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "streamgate_producer_duplicates_total"), Some(1.0), "{text}");
    // Three events routed, each to the one gateway with a subscriber.
    assert_eq!(sample(&text, "streamgate_producer_route_fanout_count"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "streamgate_producer_route_fanout_sum"), Some(3.0), "{text}");
    // The entry left pending at 1000-0 is ~56 years old by the server's clock.
    let age = sample(&text, "streamgate_producer_ingest_oldest_pending_age_seconds").unwrap();
    assert!(age > 1e9, "{text}");
    for command in ["append", "route", "liveness", "ingest_read", "ingest_ack", "ingest_pending"] {
        let series =
            format!(r#"streamgate_producer_redis_command_duration_seconds_count{{command="{command}"}}"#);
        assert!(sample(&text, &series).unwrap_or(0.0) >= 1.0, "{command}: {text}");
    }
    assert!(!text.contains("topic="), "no topic label: {text}");
    producer.shutdown().await;
}
