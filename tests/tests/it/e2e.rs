//! End-to-end proof of the delivery promise under faults: three gateway
//! processes behind a real nginx, two producer processes, Redis with AOF
//! (`appendfsync always`), browser-like subscribers. Each scenario prints one line —
//! published, delivered, missing, duplicates, out-of-order — and requires the last three
//! to be zero.
//!
//! The scenarios that do not depend on the Redis topology are functions of it
//! ([`RigRedis`]) and also run on a Redis Cluster (`e2e_cluster_*`) and on a primary
//! behind Sentinels (`e2e_sentinel_*`), with fewer rounds but the fault still mid-stream.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use streamgate_tests::eventsource::{
    Publisher, Subscriber, Tally, counted, history_order, tally, topic_names, wait_connected, wait_delivered,
};
use streamgate_tests::keys::InstanceKey;
use streamgate_tests::rig::{Rig, RigOptions, RigRedis};

const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
/// Rounds of the gateway-kill and graceful-shutdown scenarios on a single server; the
/// topology variants run a third of them (and half the steady state's, and 150 of the
/// ingest scenario's 400), because a cluster or a Sentinel set-up takes seconds to start
/// and the suite runs these one at a time. The fault comes after the same fraction of the
/// rounds either way.
const ROUNDS: u64 = 150;
const TOPOLOGY_ROUNDS: u64 = 50;

/// `n` subscribers through nginx (`Subscriber::start_many`).
fn subscribe_all(rig: &Rig, topics: &[String], n: usize) -> Vec<Subscriber> {
    Subscriber::start_many(&rig.nginx.url(""), topics, n)
}

fn publisher(rig: &Rig) -> Publisher {
    Publisher::new(rig.producers.iter().map(|p| p.url("")).collect())
}

fn report(scenario: &str, tally: Tally) {
    println!("e2e {scenario}: {tally}");
    assert_eq!((tally.missing, tally.duplicates, tally.out_of_order), (0, 0, 0), "{scenario}: {tally}");
    assert!(tally.published > 0);
}

async fn finish(scenario: &str, subscribers: &[Subscriber], published: &HashMap<String, u64>) {
    wait_delivered(subscribers, published, DELIVERY_DEADLINE).await;
    report(scenario, tally(subscribers, &counted(published)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_1_steady_state_many_clients_many_topics_two_producers() {
    steady_state(RigRedis::Single, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cluster_1_steady_state_many_clients_many_topics_two_producers() {
    steady_state(RigRedis::Cluster, TOPOLOGY_ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sentinel_1_steady_state_many_clients_many_topics_two_producers() {
    steady_state(RigRedis::Sentinel, TOPOLOGY_ROUNDS).await;
}

async fn steady_state(redis: RigRedis, rounds: u64) {
    let rig = Rig::start("e2e1", RigOptions { redis, ..RigOptions::default() }).await;
    let topics = topic_names("topic", 20);
    let subscribers = subscribe_all(&rig, &topics, 60);
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    // Two publishers at once, on the same topics, through both producers.
    let (first, second) = names.split_at(10);
    let mut publisher_a = publisher(&rig);
    let mut publisher_b = publisher(&rig);
    let a = async {
        for _ in 0..rounds {
            publisher_a.publish_round(first).await;
        }
    };
    let b = async {
        for _ in 0..rounds {
            publisher_b.publish_round(second).await;
        }
    };
    tokio::join!(a, b);
    let mut published = publisher_a.published.clone();
    published.extend(publisher_b.published.clone());
    finish(&format!("1 steady state ({redis:?})"), &subscribers, &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_2_sigkill_a_gateway_mid_stream() {
    sigkill_a_gateway_mid_stream(RigRedis::Single, ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cluster_2_sigkill_a_gateway_mid_stream() {
    sigkill_a_gateway_mid_stream(RigRedis::Cluster, TOPOLOGY_ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sentinel_2_sigkill_a_gateway_mid_stream() {
    sigkill_a_gateway_mid_stream(RigRedis::Sentinel, TOPOLOGY_ROUNDS).await;
}

async fn sigkill_a_gateway_mid_stream(redis: RigRedis, rounds: u64) {
    let mut rig = Rig::start("e2e2", RigOptions { redis, ..RigOptions::default() }).await;
    let topics = topic_names("topic", 9);
    let subscribers = subscribe_all(&rig, &topics, 30);
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = publisher(&rig);
    for round in 0..rounds {
        if round == rounds / 3 {
            rig.gateways[0].kill();
        }
        publisher.publish_round(&names).await;
    }
    finish(&format!("2 gateway SIGKILL ({redis:?})"), &subscribers, &publisher.published).await;
    // The dead instance's liveness expires (LIVENESS_TTL=3s): producers stop routing to it.
    let mut conn = rig.conn().await;
    let alive = streamgate_tests::keys::instance(&rig.prefix, "gw-0", InstanceKey::Alive);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while conn.exists::<_, bool>(&alive).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "liveness of the killed gateway never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = streamgate_tests::keys::instance(&rig.prefix, "gw-0", InstanceKey::Stream);
    let before: u64 = conn.xlen(&stream).await.unwrap();
    publisher.publish_round(&names).await;
    let after: u64 = conn.xlen(&stream).await.unwrap();
    assert_eq!(before, after, "a producer still routes to the dead gateway");

    // A janitor sweep removes the dead instance's memberships and stream; the live
    // gateways keep theirs.
    let mut env = rig.backend.env();
    env.push(("KEY_PREFIX".to_owned(), rig.prefix.clone()));
    let report = streamgate_tests::binaries::sweep_once(env);
    assert_eq!(report["dead_instances"], 1, "{report}");
    for topic in &topics {
        let group: HashMap<String, i64> =
            conn.hgetall(streamgate_tests::keys::group(&rig.prefix, topic)).await.unwrap();
        assert!(!group.contains_key("gw-0"), "gw-0 still in {topic}: {group:?}");
        assert!(group.contains_key("gw-1") || group.contains_key("gw-2"), "live gateways lost {topic}");
    }
    assert!(!conn.exists::<_, bool>(&stream).await.unwrap(), "the dead gateway's stream is still there");
    println!("e2e 2 janitor ({redis:?}): {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_3_redis_restart_mid_stream() {
    let mut rig = Rig::start("e2e3", RigOptions::default()).await;
    let topics = topic_names("topic", 6);
    let subscribers = subscribe_all(&rig, &topics, 20);
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    let connects_before: u64 =
        subscribers.iter().map(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed)).sum();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = publisher(&rig);
    for _ in 0..50 {
        publisher.publish_round(&names).await;
    }
    rig.redis_mut().stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.redis_mut().restart();
    for _ in 0..50 {
        publisher.publish_round(&names).await;
    }
    finish("3 Redis restart", &subscribers, &publisher.published).await;
    let connects_after: u64 =
        subscribers.iter().map(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(
        connects_before, connects_after,
        "gateways must keep clients connected through a Redis restart"
    );
    // Each component logs the outage once and the recovery once, not once per retry.
    for service in rig.gateways.iter().chain(rig.producers.iter()) {
        let log = service.log();
        let outages = log.matches("Redis unavailable").count();
        let recoveries = log.matches("Redis available again").count();
        let components = log
            .lines()
            .filter(|l| l.contains("Redis unavailable"))
            .map(component)
            .collect::<std::collections::HashSet<_>>();
        assert!(outages >= 1, "{} did not log the outage:\n{log}", service.name);
        assert_eq!(
            outages,
            components.len(),
            "{} logged an outage more than once per component:\n{log}",
            service.name
        );
        assert!(recoveries <= outages, "{}:\n{log}", service.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_4_producer_sigkill_mid_batch_on_the_ingest_stream() {
    producer_sigkill_mid_batch_on_the_ingest_stream(RigRedis::Single, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cluster_4_producer_sigkill_mid_batch_on_the_ingest_stream() {
    producer_sigkill_mid_batch_on_the_ingest_stream(RigRedis::Cluster, 150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sentinel_4_producer_sigkill_mid_batch_on_the_ingest_stream() {
    producer_sigkill_mid_batch_on_the_ingest_stream(RigRedis::Sentinel, 150).await;
}

async fn producer_sigkill_mid_batch_on_the_ingest_stream(redis: RigRedis, rounds: u64) {
    let mut rig = Rig::start(
        "e2e4",
        RigOptions { redis, producer_env: vec![("INGEST_BATCH", "50")], ..RigOptions::default() },
    )
    .await;
    let topics = topic_names("topic", 5);
    let subscribers = subscribe_all(&rig, &topics, 15);
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    let mut conn = rig.conn().await;
    let ingest = streamgate_tests::ingest::stream_under(&rig.prefix);
    let mut published: HashMap<String, u64> = HashMap::new();
    for round in 0..rounds {
        let mut pipe = redis::pipe();
        for topic in &topics {
            pipe.xadd(&ingest, "*", &[("topic", topic.as_str()), ("data", &format!("{topic} {round}"))])
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
        if round == rounds * 3 / 8 {
            rig.producers[0].kill();
        }
    }
    for topic in &topics {
        published.insert(topic.clone(), rounds);
    }
    wait_delivered(&subscribers, &published, DELIVERY_DEADLINE).await;
    // Two producers consume the ingest stream concurrently, so the history's order (the
    // order promised to subscribers) need not be the ingest order: check against it.
    let mut expected = HashMap::new();
    for topic in &topics {
        let order = history_order(&mut conn, &streamgate_tests::keys::history(&rig.prefix, topic)).await;
        assert_eq!(order.len() as u64, rounds, "every ingest entry is in {topic}'s history exactly once");
        expected.insert(topic.clone(), order);
    }
    report(&format!("4 producer SIGKILL on ingest ({redis:?})"), tally(&subscribers, &expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_5_quiet_streams_behind_a_proxy_with_a_short_read_timeout() {
    let rig = Rig::start("e2e5", RigOptions { proxy_read_timeout: "2s", ..RigOptions::default() }).await;
    let topics = topic_names("topic", 3);
    let subscribers = subscribe_all(&rig, &topics, 9);
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let connects: u64 =
        subscribers.iter().map(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(connects, subscribers.len() as u64, "a quiet stream was cut by the proxy");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = publisher(&rig);
    publisher.publish_round(&names).await;
    finish("5 quiet streams", &subscribers, &publisher.published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_7_old_cursor_gets_a_reset_then_the_retained_events() {
    old_cursor_gets_a_reset_then_the_retained_events(RigRedis::Single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cluster_7_old_cursor_gets_a_reset_then_the_retained_events() {
    old_cursor_gets_a_reset_then_the_retained_events(RigRedis::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sentinel_7_old_cursor_gets_a_reset_then_the_retained_events() {
    old_cursor_gets_a_reset_then_the_retained_events(RigRedis::Sentinel).await;
}

async fn old_cursor_gets_a_reset_then_the_retained_events(redis: RigRedis) {
    let rig = Rig::start(
        "e2e7",
        RigOptions { redis, producer_env: vec![("HISTORY_MAX_LEN", "100")], ..RigOptions::default() },
    )
    .await;
    let mut publisher = publisher(&rig);
    publisher.publish_round(&["t"]).await;
    let early = Subscriber::start(&rig.nginx.url(""), &["t"], Some("0".into()));
    wait_delivered(std::slice::from_ref(&early), &publisher.published, DELIVERY_DEADLINE).await;
    let cursor = early.received().last_id.expect("a cursor");
    early.stop();
    for _ in 0..1000 {
        publisher.publish_round(&["t"]).await;
    }
    let late = Subscriber::start(&rig.nginx.url(""), &["t"], Some(cursor));
    let mut conn = rig.conn().await;
    let retained: u64 = conn.xlen(streamgate_tests::keys::history(&rig.prefix, "t")).await.unwrap();
    assert!(retained < 1000, "retention should have trimmed the history ({retained} left)");
    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    while late.count("t") < retained as usize {
        assert!(tokio::time::Instant::now() < deadline, "retained events not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = late.received();
    assert_eq!(received.resets, vec![("t".to_owned(), "trimmed".to_owned())]);
    let seqs = &received.seqs["t"];
    let first = seqs[0];
    assert!(first > 1, "delivery resumes at the oldest retained event, not the cursor");
    assert_eq!(seqs, &(first..1001).collect::<Vec<u64>>(), "retained events in order, once");
    println!(
        "e2e 7 reset ({redis:?}): published=1001 delivered={} missing=0 duplicates=0 out_of_order=0 (reset, then {} retained)",
        seqs.len(),
        seqs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_8_graceful_shutdown_during_traffic() {
    graceful_shutdown_during_traffic(RigRedis::Single, ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cluster_8_graceful_shutdown_during_traffic() {
    graceful_shutdown_during_traffic(RigRedis::Cluster, TOPOLOGY_ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sentinel_8_graceful_shutdown_during_traffic() {
    graceful_shutdown_during_traffic(RigRedis::Sentinel, TOPOLOGY_ROUNDS).await;
}

async fn graceful_shutdown_during_traffic(redis: RigRedis, rounds: u64) {
    let mut rig = Rig::start("e2e8", RigOptions { redis, ..RigOptions::default() }).await;
    let topics = topic_names("topic", 9);
    let subscribers = subscribe_all(&rig, &topics, 30);
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = publisher(&rig);
    let mut conn = rig.conn().await;
    for round in 0..rounds {
        if round == rounds / 3 {
            assert!(rig.gateways[1].terminate(Duration::from_secs(5)), "gateway exits within its drain time");
            // Its memberships are gone at once, not after a liveness timeout.
            for topic in &topics {
                let field: Option<i64> =
                    conn.hget(streamgate_tests::keys::group(&rig.prefix, topic), "gw-1").await.unwrap();
                assert_eq!(field, None, "gw-1 still registered in {topic}");
            }
            assert!(
                !conn
                    .exists::<_, bool>(streamgate_tests::keys::instance(
                        &rig.prefix,
                        "gw-1",
                        InstanceKey::Alive
                    ))
                    .await
                    .unwrap()
            );
        }
        publisher.publish_round(&names).await;
    }
    finish(&format!("8 graceful shutdown ({redis:?})"), &subscribers, &publisher.published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_6_a_client_that_stops_reading_is_closed_and_resumes_without_loss() {
    a_client_that_stops_reading_is_closed_and_resumes_without_loss(RigRedis::Single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_cluster_6_a_client_that_stops_reading_is_closed_and_resumes_without_loss() {
    a_client_that_stops_reading_is_closed_and_resumes_without_loss(RigRedis::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sentinel_6_a_client_that_stops_reading_is_closed_and_resumes_without_loss() {
    a_client_that_stops_reading_is_closed_and_resumes_without_loss(RigRedis::Sentinel).await;
}

async fn a_client_that_stops_reading_is_closed_and_resumes_without_loss(redis: RigRedis) {
    let rig = Rig::start(
        "e2e6",
        RigOptions {
            redis,
            gateway_env: vec![("QUEUE_SIZE", "64"), ("REPLAY_BATCH", "64")],
            ..RigOptions::default()
        },
    )
    .await;
    let reader = Subscriber::start(&rig.nginx.url(""), &["big"], None);
    // A client that connects and then does not read at all.
    let mut stalled = streamgate_tests::sse_client::connect(&rig.nginx.url("/events?topic=big"), None).await;
    wait_connected(std::slice::from_ref(&reader), Duration::from_secs(20)).await;
    let rss_before: u64 = rig.gateways.iter().map(|g| g.rss_kib()).sum();
    let mut publisher = publisher(&rig).with_padding(20_000);
    for _ in 0..1000 {
        publisher.publish_round(&["big"]).await;
    }
    let rss_after: u64 = rig.gateways.iter().map(|g| g.rss_kib()).sum();
    // 20 MB went through; what the gateways hold stays bounded by their queues.
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 48, "gateway memory grew by {growth_mib} MiB while a client stalled");

    // The stalled client now reads what was in flight, then finds its stream closed...
    let mut seqs: Vec<u64> = Vec::new();
    let mut last_id = None;
    while let Some(event) = stalled.next_event(Duration::from_secs(3)).await {
        seqs.push(event.data.split(' ').nth(1).unwrap().parse().unwrap());
        last_id = Some(event.id);
    }
    assert!(seqs.len() < 1000, "the stalled client was not closed");
    // ...and reconnects with its cursor, like EventSource, missing nothing.
    let resumed = Subscriber::start(&rig.nginx.url(""), &["big"], last_id);
    let rest = 1000 - seqs.len();
    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    while resumed.count("big") < rest {
        assert!(tokio::time::Instant::now() < deadline, "the resumed client did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seqs.extend(resumed.received().seqs["big"].iter().copied());
    assert_eq!(seqs, (0..1000).collect::<Vec<u64>>());
    wait_delivered(std::slice::from_ref(&reader), &publisher.published, DELIVERY_DEADLINE).await;
    report(
        &format!("6 slow client ({redis:?})"),
        tally(std::slice::from_ref(&reader), &counted(&publisher.published)),
    );
    println!(
        "e2e 6 slow client ({redis:?}): gateway RSS growth {growth_mib} MiB; stalled client closed after {} events",
        1000 - rest
    );
}

/// The `component=...` field of a log line.
fn component(line: &str) -> String {
    line.split("component=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("").to_owned()
}
