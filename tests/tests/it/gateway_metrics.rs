//! `GET /metrics` on the gateway's admin listener: Prometheus text that follows what
//! happens — streams opened and closed, events delivered and replayed, resets by reason,
//! hubs — with no topic or client label.

use std::time::Duration;

use streamgate_tests::gateway_app::spawn_gateway;
use streamgate_tests::publish::{publish_one, publisher};
use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::sse_client::connect;

/// The value of the sample named exactly `series` (with its labels), if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_streams_deliveries_replays_and_resets() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("metrics");
    let gateway = spawn_gateway(&redis.url(), &prefix, &[]).await;
    let publisher = publisher(&redis.url(), &prefix);
    let metrics_url = gateway.admin_url("/metrics");
    assert_eq!(reqwest::get(gateway.url("/metrics")).await.unwrap().status(), 404, "not on the public port");

    let mut stream = connect(&gateway.url("/events?topic=a"), None).await;
    let first = publish_one(&publisher, "a", "one").await;
    publish_one(&publisher, "a", "two").await;
    stream.take(2, Duration::from_secs(10)).await;
    // A client resuming from the first event replays the second; one with a cursor from
    // another epoch gets a reset.
    let mut resumed = connect(&gateway.url("/events?topic=a"), Some(&first)).await;
    resumed.take(1, Duration::from_secs(10)).await;
    let mut lost = connect(&gateway.url("/events?topic=a"), Some("1-0~gone")).await;
    lost.take(3, Duration::from_secs(10)).await; // the reset, then both events

    let text = scrape(&metrics_url).await;
    assert_eq!(sample(&text, "streamgate_gateway_connections_open"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_connections_opened_total"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_hubs"), Some(1.0), "{text}");
    // Two live events; one replayed to the resumed client, and the whole history (two)
    // after the reset of the other.
    assert!(sample(&text, "streamgate_gateway_events_delivered_total").unwrap() >= 6.0, "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_events_replayed_total"), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, r#"streamgate_gateway_resets_total{reason="history_lost"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("topic="), "no topic label: {text}");

    drop((stream, resumed, lost));
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&metrics_url).await;
        if sample(&text, "streamgate_gateway_connections_open") == Some(0.0) {
            assert_eq!(
                sample(&text, r#"streamgate_gateway_connections_closed_total{reason="client_gone"}"#),
                Some(3.0),
                "{text}"
            );
            assert_eq!(sample(&text, "streamgate_gateway_hubs"), Some(0.0), "{text}");
            break;
        }
        assert!(tokio::time::Instant::now() < until, "streams never counted as closed: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
