//! `GET /metrics` on the gateway's admin listener: Prometheus text that follows what
//! happens — streams opened and closed, events delivered and replayed, resets by reason,
//! hubs, subscriptions, publish-to-deliver latency, gap fills, Redis timings — with no
//! topic or client label.

use std::time::Duration;

use streamgate::topic::Topic;
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;

/// The value of the sample named exactly `series` (with its labels), if exposed.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

pub async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_streams_deliveries_replays_and_resets() {
    let world = TestWorld::start("metrics");
    let gateway = world.gateway(&[]).await;
    let metrics_url = gateway.admin_url("/metrics");
    assert_eq!(reqwest::get(gateway.url("/metrics")).await.unwrap().status(), 404, "not on the public port");

    let mut stream = gateway.subscribe(&["a"], None).await;
    let first = world.publish("a", "one").await;
    world.publish("a", "two").await;
    stream.take(2, Duration::from_secs(10)).await;
    // A client resuming from the first event replays the second; one with a cursor from
    // another epoch gets a reset.
    let mut resumed = gateway.subscribe(&["a"], Some(&first)).await;
    resumed.take(1, Duration::from_secs(10)).await;
    let mut lost = gateway.subscribe(&["a"], Some("1-0~gone")).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_observed_once_per_event_per_hub_and_gaps_subscriptions_and_redis_are_counted() {
    let world = TestWorld::start("metrics-latency");
    // No reconciliation round but the first (at start): the unrouted event below must be
    // found by the gap the next routed event reveals, not by a round.
    let gateway = world.gateway(&[("RECONCILE_INTERVAL", "1m")]).await;
    let metrics_url = gateway.admin_url("/metrics");

    // Two subscribers of `a` (one also of `b`): three subscriptions, two hubs.
    let mut only_a = gateway.subscribe(&["a"], None).await;
    let mut a_and_b = gateway.subscribe(&["a", "b"], None).await;
    for data in ["one", "two", "three"] {
        world.publish("a", data).await;
    }
    only_a.take(3, Duration::from_secs(10)).await;
    a_and_b.take(3, Duration::from_secs(10)).await;
    let count = "streamgate_gateway_publish_to_deliver_seconds_count";
    wait_until("three latencies observed", Duration::from_secs(10), || async {
        sample(&scrape(&metrics_url).await, count) == Some(3.0)
    })
    .await;

    // An event in history that was never routed, then one that is: its predecessor is not
    // the hub's position, so the hub fills the gap from history.
    world.append_unrouted(&Topic::parse("a", 256).unwrap(), None, "unrouted").await;
    world.publish("a", "after the gap").await;
    let gap = only_a.take(2, Duration::from_secs(10)).await;
    assert_eq!(
        gap.iter().map(|event| event.data.as_str()).collect::<Vec<_>>(),
        ["unrouted", "after the gap"]
    );

    let text = scrape(&metrics_url).await;
    // Once per event per hub — not per subscriber, and not for what a gap fill delivered.
    assert_eq!(sample(&text, count), Some(3.0), "{text}");
    assert!(sample(&text, "streamgate_gateway_publish_to_deliver_seconds_sum").unwrap() >= 0.0, "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_hub_gap_fills_total"), Some(1.0), "{text}");
    assert!(sample(&text, "streamgate_gateway_reconciliations_total").unwrap() >= 1.0, "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_subscriptions"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_hubs"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "streamgate_gateway_instance_stream_lag_seconds"), Some(0.0), "{text}");
    assert!(sample(&text, "streamgate_gateway_membership_flush_topics_count").unwrap() >= 1.0, "{text}");
    for command in ["history_read", "membership_flush"] {
        let series =
            format!(r#"streamgate_gateway_redis_command_duration_seconds_count{{command="{command}"}}"#);
        assert!(sample(&text, &series).unwrap_or(0.0) >= 1.0, "{command}: {text}");
    }
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("streamgate_gateway_redis_command_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 6, "one series per command, from the start: {text}");
    assert!(errors.iter().all(|line| line.ends_with(" 0")), "no Redis error: {text}");

    drop((only_a, a_and_b));
    wait_until("subscriptions counted as gone", Duration::from_secs(10), || async {
        sample(&scrape(&metrics_url).await, "streamgate_gateway_subscriptions") == Some(0.0)
    })
    .await;
}
