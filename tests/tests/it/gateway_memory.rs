//! A gateway's memory stays bounded by what its subscribers have not read yet: once every
//! subscriber has caught up, the per-topic rings hold nothing and the process's resident
//! memory returns close to where it was before the traffic.
//!
//! Measured on a real gateway process (`VmRSS` in `/proc/<pid>/status`) with 1,000 topics,
//! each sent `QUEUE_SIZE` events of 16 KiB (250 MiB in all) and each read by one subscriber
//! that keeps its stream open. A ring that kept its last `QUEUE_SIZE` deliveries for the
//! topic's whole life would hold all 250 MiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use streamgate_tests::publish::event;
use streamgate_tests::rig::{Service, free_port};
use streamgate_tests::sse_client::connect;
use streamgate_tests::world::TestWorld;
use tokio::task::JoinSet;

const TOPICS: usize = 1000;
/// The smallest `QUEUE_SIZE` allowed, so that the test moves little data.
const QUEUE_SIZE: usize = 16;
const EVENT_BYTES: usize = 16 * 1024;
/// What the gateway may keep above its baseline once everything is read: allocator caches
/// and buffers that grew with the traffic, under 10% of the 250 MiB that went through.
/// Measured: 0 MiB with jemalloc (41 → 47 → 41), 9–12 MiB with mimalloc; glibc's malloc kept
/// 43–67 MiB (docs/BENCHMARKS.md).
const ALLOWANCE_KIB: u64 = 24 * 1024;
/// How long the memory may take to come back after the last subscriber caught up.
const SETTLE: Duration = Duration::from_secs(10);
const DELIVERY_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_near_its_baseline_once_every_subscriber_has_caught_up() {
    let world = TestWorld::start("memory");
    let port = free_port();
    let env = vec![
        ("REDIS_URL".to_owned(), world.redis.url()),
        ("KEY_PREFIX".to_owned(), world.prefix.clone()),
        ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("QUEUE_SIZE".to_owned(), QUEUE_SIZE.to_string()),
        ("REPLAY_BATCH".to_owned(), QUEUE_SIZE.to_string()),
    ];
    let gateway = Service::spawn("gateway", "gateway", &[], port, env);
    gateway.wait_ready().await;
    let started = gateway.rss_kib();

    // Arrange: one subscriber per topic, each connected (its membership in Redis) before
    // anything is published, and each keeping its stream (so its topic's hub) open.
    let received: Arc<Vec<AtomicUsize>> = Arc::new((0..TOPICS).map(|_| AtomicUsize::new(0)).collect());
    let connected = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let mut subscribers = JoinSet::new();
    for topic in 0..TOPICS {
        let url = gateway.url(&format!("/events?topic=m{topic}"));
        let (received, connected, ended) =
            (Arc::clone(&received), Arc::clone(&connected), Arc::clone(&ended));
        subscribers.spawn(async move {
            let mut stream = connect(&url, None).await;
            connected.fetch_add(1, Ordering::AcqRel);
            while let Some(event) = stream.next_event(Duration::from_secs(3600)).await {
                if event.event == "message" {
                    received[topic].fetch_add(1, Ordering::AcqRel);
                }
            }
            ended.fetch_add(1, Ordering::AcqRel);
        });
    }
    wait_until("every subscriber connected", Duration::from_secs(60), || {
        connected.load(Ordering::Acquire) == TOPICS
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = gateway.rss_kib();

    // Act: QUEUE_SIZE events of EVENT_BYTES on every topic, the peak sampled meanwhile.
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_peak(gateway.pid(), Arc::clone(&peak), Arc::clone(&sampling)));
    let padding = "x".repeat(EVENT_BYTES);
    for topic in 0..TOPICS {
        let name = format!("m{topic}");
        let batch: Vec<_> = (0..QUEUE_SIZE).map(|n| event(&name, None, &format!("{n} {padding}"))).collect();
        world.publisher.publish(&batch).await.expect("publish");
    }
    wait_until("every subscriber read its topic's events", DELIVERY_DEADLINE, || {
        received.iter().all(|count| count.load(Ordering::Acquire) == QUEUE_SIZE)
    })
    .await;
    sampling.store(false, Ordering::Release);
    sampler.await.expect("sampler");
    let peak = peak.load(Ordering::Acquire);

    // Assert: the memory comes back within the allowance, while every stream stays open.
    let bound = baseline + ALLOWANCE_KIB;
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut after = gateway.rss_kib();
    while after > bound && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = gateway.rss_kib();
    }
    println!(
        "gateway memory: {TOPICS} topics x {QUEUE_SIZE} events x {} KiB: started {} MiB, baseline {} MiB, \
         peak {} MiB, after catch-up {} MiB (bound {} MiB)",
        EVENT_BYTES / 1024,
        started / 1024,
        baseline / 1024,
        peak / 1024,
        after / 1024,
        bound / 1024
    );
    assert_eq!(ended.load(Ordering::Acquire), 0, "a subscriber's stream ended early");
    subscribers.abort_all();
    assert!(
        after <= bound,
        "gateway RSS stayed at {after} KiB after every subscriber caught up (baseline {baseline} KiB, \
         peak {peak} KiB, bound {bound} KiB)"
    );
}

async fn sample_peak(pid: u32, peak: Arc<AtomicU64>, sampling: Arc<AtomicBool>) {
    while sampling.load(Ordering::Acquire) {
        peak.fetch_max(streamgate_tests::host::rss_kib(pid), Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
