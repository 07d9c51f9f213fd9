//! The delivery promise on the real deployment: `deploy/docker-compose.yml` run by Docker
//! with three gateways behind the load balancer, as scripts/test-deploy starts it. Every
//! request goes to the published ports (load balancer and producer), every fault is a
//! Docker operation: `docker kill`, a Redis container restart, `docker stop`, scaling, the
//! one-shot janitor. Each scenario prints one line — published, delivered, missing,
//! duplicates, out-of-order — and requires the last three to be zero.
//!
//! Not part of the normal suite (`test = false`): it needs the stack, and fails at once,
//! saying so, without it. scripts/test-deploy runs it with one test thread: the
//! scenarios share the stack and each leaves it with three healthy gateways.

mod stack;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stack::{Gateway, Stack};
use streamgate_tests::eventsource::{
    Publisher, Subscriber, Tally, counted, tally, topic_names, wait_connected, wait_delivered,
};

/// How long delivery may take to complete after the last publish.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How long subscribers may take to connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// The compose file's gateway replicas (scripts/test-deploy's `--scale gateway=3`).
const REPLICAS: usize = 3;
/// The gateway's `LIVENESS_TTL` (its default: the compose file does not set it), plus the
/// time for a heartbeat in flight.
const LIVENESS_EXPIRY: Duration = Duration::from_secs(20);
/// The compose file's `stop_grace_period` for the gateway: a drained gateway exits before.
const STOP_GRACE_PERIOD: Duration = Duration::from_secs(20);
/// The name the load balancer's certificate is for (scripts/test-deploy makes it).
const TLS_SERVER_NAME: &str = "localhost";
/// How long the load balancer may take to send clients to a new replica: its resolver
/// caches the service's addresses for `valid=10s` (deploy/nginx.conf).
const RESOLVE_DEADLINE: Duration = Duration::from_secs(30);

/// `n` subscribers through the load balancer (`Subscriber::start_many`).
fn subscribe_all(stack: &Stack, topics: &[String], n: usize) -> Vec<Subscriber> {
    Subscriber::start_many(&stack.lb_url, topics, n)
}

fn report(scenario: &str, tally: Tally) {
    println!("deploy {scenario}: {tally}");
    assert_eq!((tally.missing, tally.duplicates, tally.out_of_order), (0, 0, 0), "{scenario}: {tally}");
    assert!(tally.published > 0);
}

async fn finish(scenario: &str, subscribers: &[Subscriber], published: &HashMap<String, u64>) {
    wait_delivered(subscribers, published, DELIVERY_DEADLINE).await;
    report(scenario, tally(subscribers, &counted(published)));
}

/// Three healthy gateways, as every scenario starts.
async fn start(scenario: &str) -> (Stack, Vec<String>) {
    let stack = Stack::from_env();
    stack.scale_gateways(REPLICAS).await;
    (stack, topic_names(scenario, 9))
}

/// A running gateway that has subscribers of at least one of `topics`.
async fn a_gateway_with_subscribers(stack: &Stack, topics: &[String]) -> Gateway {
    for gateway in stack.gateways().await {
        for topic in topics {
            if stack.is_registered(&gateway.instance, topic).await {
                return gateway;
            }
        }
    }
    panic!("no gateway has subscribers of {topics:?}")
}

fn connects(subscribers: &[Subscriber]) -> u64 {
    subscribers.iter().map(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_1_steady_state_through_the_load_balancer() {
    let (stack, _) = start("steady").await;
    let topics = topic_names("steady", 20);
    let subscribers = subscribe_all(&stack, &topics, 60);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let (first, second) = names.split_at(10);
    let mut publisher_a = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    let mut publisher_b = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    let a = async {
        for _ in 0..100 {
            publisher_a.publish_round(first).await;
        }
    };
    let b = async {
        for _ in 0..100 {
            publisher_b.publish_round(second).await;
        }
    };
    tokio::join!(a, b);
    let mut published = publisher_a.published.clone();
    published.extend(publisher_b.published.clone());
    finish("1 steady state", &subscribers, &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_2_docker_kill_of_a_gateway_then_the_one_shot_janitor_removes_its_state() {
    let (stack, topics) = start("kill").await;
    // The janitor as cron runs it (the stack started with `--scale janitor=0`): without the
    // looping one, which would otherwise sweep the dead gateway first.
    stack.compose(&["stop", "janitor"]).await;
    let subscribers = subscribe_all(&stack, &topics, 30);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let victim = a_gateway_with_subscribers(&stack, &topics).await;
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    for round in 0..150 {
        if round == 50 {
            stack.docker(&["kill", &victim.container]).await;
        }
        publisher.publish_round(&names).await;
    }
    finish("2 docker kill of a gateway", &subscribers, &publisher.published).await;

    // Its liveness expires: producers stop routing to it.
    let alive = stack.keys.instance_alive(&victim.instance);
    let deadline = Instant::now() + LIVENESS_EXPIRY;
    while stack.exists(&alive).await {
        assert!(Instant::now() < deadline, "the killed gateway's liveness never expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stream = stack.keys.instance_stream(&victim.instance);
    let length = |output: String| output.trim().parse::<u64>().expect("XLEN answers a number");
    let before = length(stack.redis(&["XLEN", &stream]).await);
    publisher.publish_round(&names).await;
    assert_eq!(before, length(stack.redis(&["XLEN", &stream]).await), "a producer still routes to it");

    // One sweep in a container of its own, as cron would run it.
    let output = stack.compose(&["--profile", "cron", "run", "--rm", "-T", "janitor-once"]).await;
    let line = output.lines().last().expect("the janitor prints one JSON line");
    let sweep: serde_json::Value = serde_json::from_str(line).expect("one JSON line");
    assert!(sweep["dead_instances"].as_u64() >= Some(1), "{sweep}");
    for topic in &topics {
        assert!(
            !stack.is_registered(&victim.instance, topic).await,
            "{} still in {topic}",
            victim.instance.as_ref()
        );
    }
    assert!(!stack.exists(&stream).await, "the killed gateway's stream is still there");
    let live = stack.gateways().await;
    let mut still_registered = false;
    for gateway in &live {
        for topic in &topics {
            still_registered |= stack.is_registered(&gateway.instance, topic).await;
        }
    }
    assert!(still_registered, "the live gateways lost their memberships");
    println!("deploy 2 janitor-once: removed the killed gateway's state: {sweep}");
    stack.compose(&["start", "janitor"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_3_redis_container_restart_keeps_clients_connected() {
    let (stack, topics) = start("redis").await;
    let topics = &topics[..6];
    let subscribers = subscribe_all(&stack, topics, 20);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let before = connects(&subscribers);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    for _ in 0..50 {
        publisher.publish_round(&names).await;
    }
    // SIGTERM (Redis writes its AOF and exits), then the same container on the same volume.
    stack.compose(&["restart", "redis"]).await;
    for _ in 0..50 {
        publisher.publish_round(&names).await;
    }
    finish("3 Redis restart", &subscribers, &publisher.published).await;
    assert_eq!(before, connects(&subscribers), "the gateways keep their clients through a Redis restart");
    println!("deploy 3 Redis restart: {} publish attempts retried while Redis was down", publisher.retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_4_docker_stop_drains_a_gateway() {
    let (stack, topics) = start("stop").await;
    let subscribers = subscribe_all(&stack, &topics, 30);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let victim = a_gateway_with_subscribers(&stack, &topics).await;
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    let mut drain = Duration::ZERO;
    for round in 0..150 {
        if round == 50 {
            // What `docker compose stop` does to each container: SIGTERM (the image's
            // STOPSIGNAL), SIGKILL after the service's stop_grace_period.
            let started = Instant::now();
            stack.docker(&["stop", &victim.container]).await;
            drain = started.elapsed();
            let state =
                stack.docker(&["inspect", "--format", "{{.State.ExitCode}}", &victim.container]).await;
            assert_eq!(state.trim(), "0", "the gateway exits cleanly on SIGTERM");
            assert!(drain < STOP_GRACE_PERIOD, "the gateway was killed after the grace period ({drain:?})");
            // Its memberships are gone at once, not after a liveness timeout.
            for topic in &topics {
                assert!(!stack.is_registered(&victim.instance, topic).await, "still registered in {topic}");
            }
            assert!(!stack.exists(&stack.keys.instance_alive(&victim.instance)).await);
        }
        publisher.publish_round(&names).await;
    }
    finish("4 docker stop of a gateway (SIGTERM drain)", &subscribers, &publisher.published).await;
    println!("deploy 4 docker stop: the gateway drained and exited 0 in {drain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_5_scale_down_to_two_gateways_and_back_up() {
    let (stack, topics) = start("scale").await;
    let subscribers = subscribe_all(&stack, &topics, 30);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    for round in 0..150 {
        if round == 50 {
            stack.scale_gateways(REPLICAS - 1).await;
        }
        if round == 100 {
            stack.scale_gateways(REPLICAS).await;
            stack.wait_until_the_load_balancer_reaches_every_gateway(RESOLVE_DEADLINE).await;
        }
        publisher.publish_round(&names).await;
    }
    finish("5 scale 3 -> 2 -> 3 gateways", &subscribers, &publisher.published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_6_one_http2_connection_over_tls_carries_fifty_event_streams_in_order() {
    let (stack, topics) = start("http2").await;
    let topics = &topics[..5];
    let connection =
        streamgate_tests::http2::connect(&stack.tls_address, TLS_SERVER_NAME, &stack.tls_ca).await;
    let base = format!("https://{TLS_SERVER_NAME}:{}", stack.tls_address.rsplit(':').next().unwrap());
    let mut streams = Vec::new();
    for i in 0..50 {
        streams.push(streamgate_tests::http2::open(&connection, &base, &topics[i % topics.len()]).await);
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    for _ in 0..100 {
        publisher.publish_round(&names).await;
    }
    let expected = counted(&publisher.published);
    streamgate_tests::http2::wait_delivered(&streams, &expected, DELIVERY_DEADLINE).await;
    let tally = streamgate_tests::http2::tally(&streams, &expected);
    report("6 one HTTP/2 connection over TLS, 50 streams", tally);
}

// --- The Redis Cluster deployment (deploy/docker-compose.cluster.yml) ---------------------

/// The cluster stack's Redis nodes (compose services).
const CLUSTER_NODES: [&str; 6] = ["redis-1", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6"];
/// The cluster stack's gateway replicas (scripts/test-deploy's `--scale gateway=2`).
const CLUSTER_REPLICAS: usize = 2;
/// How long a coordinated failover may take to show in `ROLE`.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

/// Two healthy gateways on the cluster stack, and topics named after the scenario.
async fn start_cluster(scenario: &str) -> (Stack, Vec<String>) {
    let stack = Stack::from_env();
    stack.scale_gateways(CLUSTER_REPLICAS).await;
    (stack, topic_names(scenario, 12))
}

/// The cluster nodes that are replicas now.
async fn replicas(stack: &Stack) -> Vec<&'static str> {
    let mut replicas = Vec::new();
    for node in CLUSTER_NODES {
        if stack.redis_on(node, &["ROLE"]).await.lines().next() == Some("slave") {
            replicas.push(node);
        }
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_1_steady_state_on_a_redis_cluster() {
    let (stack, topics) = start_cluster("cluster-steady").await;
    let info = stack.redis_on("redis-1", &["CLUSTER", "INFO"]).await;
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_size:3"), "{info}");
    let subscribers = subscribe_all(&stack, &topics, 36);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    for _ in 0..100 {
        publisher.publish_round(&names).await;
    }
    finish("cluster 1 steady state on three masters", &subscribers, &publisher.published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_2_every_master_fails_over_mid_stream() {
    let (stack, topics) = start_cluster("cluster-failover").await;
    let subscribers = subscribe_all(&stack, &topics, 36);
    wait_connected(&subscribers, CONNECT_DEADLINE).await;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut publisher = Publisher::new(vec![stack.producer_url.clone()]).with_token(&stack.publish_token);
    for _ in 0..40 {
        publisher.publish_round(&names).await;
    }
    // `CLUSTER FAILOVER` on every replica: each master hands its slots over once its
    // replica has caught up, while publishing goes on.
    let promoted = replicas(&stack).await;
    assert_eq!(promoted.len(), 3, "three replicas before the failover");
    for node in &promoted {
        assert_eq!(stack.redis_on(node, &["CLUSTER", "FAILOVER"]).await.trim(), "OK");
    }
    for _ in 0..40 {
        publisher.publish_round(&names).await;
    }
    let deadline = Instant::now() + FAILOVER_DEADLINE;
    loop {
        let now = replicas(&stack).await;
        if now.iter().all(|node| !promoted.contains(node)) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas {now:?} after the failover of {promoted:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..40 {
        publisher.publish_round(&names).await;
    }
    finish("cluster 2 every master failed over mid-stream", &subscribers, &publisher.published).await;
}
