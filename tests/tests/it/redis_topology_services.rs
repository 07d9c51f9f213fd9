//! The real `gateway`, `producer` and `janitor` binaries against a real Redis Cluster (three
//! masters, three replicas) and a real primary with replicas behind three Sentinels:
//! publish → deliver, replay with `Last-Event-ID`, a killed gateway swept by the janitor;
//! then the guarantee under failovers (a master `SIGKILL`ed, `CLUSTER FAILOVER`, a slot
//! migrated during traffic, the Sentinels' primary killed). Each failover scenario prints
//! `published= delivered= missing= duplicates= out_of_order=` and fails unless the last
//! three are zero, or a reset was announced exactly where the failover lost history.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use streamgate::redis::{Conn, Node, Redis, Topology};
use streamgate_tests::binaries::sweep_once;
use streamgate_tests::eventsource::{Publisher, Subscriber, Tally, tally, wait_connected, wait_delivered};
use streamgate_tests::keys::InstanceKey;
use streamgate_tests::keys::history;
use streamgate_tests::redis_cluster::{MASTER_NAME, RedisCluster, RedisSentinels};
use streamgate_tests::rig::{Service, free_port};
use streamgate_tests::sse_client::connect;

const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "streamgate";
/// Short, so a killed gateway is dead for the janitor soon and heartbeats (a third of it)
/// notice a failover within a second.
const LIVENESS_TTL: &str = "3s";
/// The topics of the failover scenarios, spread over the cluster's slots.
const TOPICS: [&str; 6] = ["busy-0", "busy-1", "busy-2", "busy-3", "busy-4", "busy-5"];
/// Rounds of one event per topic in a failover scenario, and the pause between rounds.
const ROUNDS: u64 = 150;
const ROUND_PAUSE: Duration = Duration::from_millis(15);

fn pairs(list: &[(&str, String)]) -> Vec<(String, String)> {
    list.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect()
}

fn cluster_env(cluster: &RedisCluster) -> Vec<(String, String)> {
    pairs(&[("REDIS_CLUSTER_NODES", cluster.seeds())])
}

fn sentinel_env(set_up: &RedisSentinels) -> Vec<(String, String)> {
    pairs(&[
        ("REDIS_SENTINEL_NODES", set_up.sentinel_nodes()),
        ("REDIS_SENTINEL_MASTER", MASTER_NAME.to_owned()),
    ])
}

/// The services' own connection handle, for the test's reads.
fn admin(env: &[(String, String)]) -> Redis {
    let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let topology = match (get("REDIS_CLUSTER_NODES"), get("REDIS_SENTINEL_NODES")) {
        (Some(nodes), _) => Topology::Cluster { nodes: Node::parse_list(nodes).unwrap() },
        (None, Some(nodes)) => {
            Topology::Sentinel { nodes: Node::parse_list(nodes).unwrap(), master: MASTER_NAME.to_owned() }
        }
        (None, None) => Topology::Single,
    };
    Redis::new("redis://127.0.0.1:6379", &topology, 2, Duration::from_secs(5)).unwrap()
}

/// A connection, retried through a failover.
async fn conn(redis: &Redis) -> Conn {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match redis.get().await {
            Ok(conn) => return conn,
            Err(error) => assert!(tokio::time::Instant::now() < deadline, "no Redis connection: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn_gateway(env: &[(String, String)], instance: &str) -> Service {
    let port = free_port();
    let mut env = env.to_vec();
    env.extend(pairs(&[
        ("INSTANCE_ID", instance.to_owned()),
        ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("LIVENESS_TTL", LIVENESS_TTL.to_owned()),
        ("HEARTBEAT_INTERVAL", "1s".to_owned()),
        ("RETRY_INTERVAL", "250ms".to_owned()),
    ]));
    Service::spawn(instance, "gateway", &[], port, env)
}

fn spawn_producer(env: &[(String, String)], name: &str) -> Service {
    let port = free_port();
    let mut env = env.to_vec();
    env.extend(pairs(&[("LISTEN_ADDR", format!("127.0.0.1:{port}"))]));
    Service::spawn(name, "producer", &["serve"], port, env)
}

async fn exists(redis: &Redis, key: &str) -> bool {
    let mut conn = conn(redis).await;
    redis::cmd("EXISTS").arg(key).query_async(&mut conn).await.unwrap_or(true)
}

/// Publish → deliver on several topics (slots), replay from a cursor on another gateway,
/// and the janitor sweeping a killed gateway, all through `env`'s topology.
async fn publish_deliver_replay_and_sweep(env: Vec<(String, String)>) {
    let redis = admin(&env);
    let first = spawn_gateway(&env, "gw-topo-1");
    let mut second = spawn_gateway(&env, "gw-topo-2");
    let producer = spawn_producer(&env, "producer");
    for service in [&first, &second, &producer] {
        service.wait_ready().await;
    }
    let topics = ["alpha", "beta", "gamma", "delta"];
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let mut live = connect(&first.url(&format!("/events?{}", query.join("&"))), None).await;
    let mut on_second = connect(&second.url("/events?topic=alpha"), None).await;
    for round in 0..3 {
        let batch: Vec<Value> = topics
            .iter()
            .map(|t| json!({"topic": t, "data": format!("{t} {round}"), "idempotencyKey": format!("{t}-{round}")}))
            .collect();
        streamgate_tests::publish::over_http(&producer.url(""), None, &Value::Array(batch)).await;
    }
    let events = live.take(12, WAIT).await;
    let mut per_topic: HashMap<String, Vec<String>> = HashMap::new();
    for event in &events {
        let topic = event.data.split(' ').next().unwrap().to_owned();
        per_topic.entry(topic).or_default().push(event.data.clone());
    }
    for topic in topics {
        let want: Vec<String> = (0..3).map(|round| format!("{topic} {round}")).collect();
        assert_eq!(per_topic.get(topic), Some(&want), "{events:?}\n{}", first.log());
    }
    let on_second = on_second.take(3, WAIT).await;
    assert_eq!(on_second.len(), 3, "{}", second.log());

    // A client resuming from its cursor of "alpha 0" on the other gateway gets the rest.
    let cursor = on_second[0].id.clone();
    let mut resumed = connect(&second.url("/events?topic=alpha"), Some(&cursor)).await;
    let replayed: Vec<String> = resumed.take(2, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(replayed, ["alpha 1", "alpha 2"]);
    drop(resumed);

    // A killed gateway is swept by the janitor: its keys live on other nodes than the
    // topics' groups, and the keyspace pass SCANs every master.
    second.kill();
    let alive = streamgate_tests::keys::instance(PREFIX, "gw-topo-2", InstanceKey::Alive);
    let deadline = tokio::time::Instant::now() + WAIT;
    while exists(&redis, &alive).await {
        assert!(tokio::time::Instant::now() < deadline, "{alive} still exists");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut sweep_env = env.clone();
    sweep_env
        .extend([("FULL_SCAN".to_owned(), "true".to_owned()), ("SCAN_COUNT".to_owned(), "2".to_owned())]);
    let report = sweep_once(sweep_env);
    assert_eq!(report["dead_instances"], 1, "{report}");
    assert_eq!(report["malformed_keys_skipped"], 0, "{report}");
    assert!(report["budget_exhausted"] == false, "{report}");
    assert!(
        !exists(&redis, &streamgate_tests::keys::instance(PREFIX, "gw-topo-2", InstanceKey::Stream)).await,
        "the dead gateway's stream is gone"
    );
    let mut conn = conn(&redis).await;
    let members: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(streamgate_tests::keys::group(PREFIX, "alpha"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!members.contains_key("gw-topo-2") && members.contains_key("gw-topo-1"), "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_publish_deliver_replay_and_sweep_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    publish_deliver_replay_and_sweep(cluster_env(&cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_publish_deliver_replay_and_sweep_behind_sentinels() {
    let set_up = RedisSentinels::start();
    publish_deliver_replay_and_sweep(sentinel_env(&set_up)).await;
}

/// The sequence numbers a topic's history holds, in history order.
async fn history_seqs(redis: &Redis, topic: &str) -> Vec<u64> {
    streamgate_tests::eventsource::history_order(&mut conn(redis).await, &history(PREFIX, topic)).await
}

/// How long a lost tail may take to be announced: reconciliation runs every
/// `RECONCILE_INTERVAL` (1 s by default) and reads each idle hub's meta; a few rounds of
/// margin for a loaded machine.
const LOSS_ANNOUNCED_WITHIN: Duration = Duration::from_secs(10);

/// Two gateways, two producers, subscribers on both; `disrupt` runs once a third of the
/// rounds are published, while publishing goes on (callers wait for the replicas' initial
/// sync first: a replica promoted before it would hold nothing). Returns the tally against
/// what the histories hold, after checking that events the failover lost were announced.
/// What a failover scenario saw: the usual tally, when the disruption was over, and when
/// each round whose events the failover took from history was published.
struct Outcome {
    result: Tally,
    disrupted_at: Instant,
    lost_rounds_published_at: Vec<Instant>,
}

/// Publishes `ROUNDS` rounds (and for at least `publish_after` once `disrupt` returned) to
/// two gateways' subscribers through two producers, runs `disrupt` a third of the way in,
/// and checks the guarantee.
async fn guarantee_through(
    name: &str,
    env: Vec<(String, String)>,
    publish_after: Duration,
    disrupt: impl FnOnce(),
) -> Outcome {
    let redis = admin(&env);
    let gateways = [spawn_gateway(&env, "gw-fo-1"), spawn_gateway(&env, "gw-fo-2")];
    let producers = [spawn_producer(&env, "producer-1"), spawn_producer(&env, "producer-2")];
    for service in gateways.iter().chain(&producers) {
        service.wait_ready().await;
    }
    let mut subscribers = Vec::new();
    for (n, topic) in TOPICS.iter().enumerate() {
        for gateway in &gateways {
            subscribers.push(Subscriber::start(&gateway.url(""), &[topic], None));
        }
        let other = TOPICS[(n + 1) % TOPICS.len()];
        subscribers.push(Subscriber::start(&gateways[n % 2].url(""), &[topic, other], None));
    }
    wait_connected(&subscribers, WAIT).await;
    // Memberships reach Redis within a flush; give the first ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let progress = Arc::new(AtomicU64::new(0));
    let publish_until = Arc::new(Mutex::new(None::<Instant>));
    let publishing = {
        let progress = Arc::clone(&progress);
        let publish_until = Arc::clone(&publish_until);
        let urls: Vec<String> = producers.iter().map(|p| p.url("")).collect();
        tokio::spawn(async move {
            let mut publisher = Publisher::new(urls);
            let mut started = Vec::new();
            let mut round = 0;
            loop {
                let until = *publish_until.lock().unwrap();
                if round >= ROUNDS && until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
                started.push(Instant::now());
                publisher.publish_round(&TOPICS).await;
                round += 1;
                progress.store(round, Ordering::Release);
                tokio::time::sleep(ROUND_PAUSE).await;
            }
            (publisher, started)
        })
    };
    while progress.load(Ordering::Acquire) < ROUNDS / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(disrupt);
    let disrupted_at = Instant::now();
    *publish_until.lock().unwrap() = Some(disrupted_at + publish_after);
    let (publisher, started) = publishing.await.unwrap();
    wait_delivered(&subscribers, &publisher.published, Duration::from_secs(30)).await;

    let mut expected = HashMap::new();
    let mut lost: HashMap<String, HashSet<u64>> = HashMap::new();
    for topic in TOPICS {
        let held = history_seqs(&redis, topic).await;
        let published = publisher.published.get(topic).copied().unwrap_or(0);
        let gone: HashSet<u64> = (0..published).filter(|seq| !held.contains(seq)).collect();
        if !gone.is_empty() {
            lost.insert(topic.to_owned(), gone);
        }
        expected.insert(topic.to_owned(), held);
    }
    let result = tally(&subscribers, &expected);
    println!("{name}: {result} lost_in_failover={:?} publish_retries={}", lost, publisher.retries);
    // An event the failover took from history may have reached a subscriber before: it is
    // then counted out of order here, and must be followed by a reset. When the loss is the
    // tail of a topic (nothing published after it), the hub learns of it from its periodic
    // reconciliation (every RECONCILE_INTERVAL, 1 s; docs/DELIVERY.md): allow that bound.
    let owes_reset = |subscriber: &Subscriber| {
        let received = subscriber.received();
        subscriber.topics.iter().any(|topic| {
            let Some(gone) = lost.get(topic) else { return false };
            let saw_lost = received.seqs.get(topic).is_some_and(|seqs| seqs.iter().any(|s| gone.contains(s)));
            saw_lost && !received.resets.iter().any(|(t, reason)| t == topic && reason == "history_lost")
        })
    };
    let deadline = tokio::time::Instant::now() + LOSS_ANNOUNCED_WITHIN;
    while subscribers.iter().any(owes_reset) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for subscriber in &subscribers {
        let received = subscriber.received();
        for topic in &subscriber.topics {
            let Some(gone) = lost.get(topic) else { continue };
            let saw_lost = received.seqs.get(topic).is_some_and(|seqs| seqs.iter().any(|s| gone.contains(s)));
            if saw_lost {
                assert!(
                    received.resets.iter().any(|(t, reason)| t == topic && reason == "history_lost"),
                    "{topic}: events lost with the failover were delivered without a reset"
                );
            }
        }
    }
    assert_eq!((result.missing, result.duplicates), (0, 0), "{name}: {result}");
    if lost.is_empty() {
        assert_eq!(result.out_of_order, 0, "{name}: {result}");
    }
    // A topic's sequence numbers count its events from 0, one per round.
    let mut lost_rounds: Vec<u64> = lost.values().flatten().copied().collect();
    lost_rounds.sort_unstable();
    lost_rounds.dedup();
    let lost_rounds_published_at =
        lost_rounds.iter().filter_map(|round| started.get(*round as usize).copied()).collect();
    Outcome { result, disrupted_at, lost_rounds_published_at }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_mid_stream_fails_over_without_loss_or_repeat() {
    let mut cluster = RedisCluster::start();
    cluster.wait_replicas_in_sync();
    let env = cluster_env(&cluster);
    let key = history(PREFIX, TOPICS[0]);
    guarantee_through("cluster master SIGKILL", env, Duration::ZERO, || {
        let master = cluster.master_of(&key);
        cluster.nodes[master].kill();
        cluster.wait_master_moved(&key, master);
    })
    .await;
}

/// The node that replicates `master`.
fn replica_of(cluster: &RedisCluster, master: usize) -> usize {
    let master_port = cluster.nodes[master].port();
    (0..cluster.nodes.len())
        .find(|&n| {
            let client = cluster.nodes[n].redis_client();
            let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else { return false };
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).unwrap_or_default();
            matches!((role.first(), role.get(2)), (Some(redis::Value::BulkString(r)), Some(redis::Value::Int(p)))
                if r == b"slave" && *p == i64::from(master_port))
        })
        .expect("every master has a replica")
}

fn node_query(cluster: &RedisCluster, node: usize, args: &[&str]) -> redis::Value {
    let mut conn =
        cluster.nodes[node].redis_client().get_connection_with_timeout(Duration::from_secs(2)).unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).unwrap_or_else(|error| panic!("{args:?}: {error}"))
}

fn node_text(cluster: &RedisCluster, node: usize, args: &[&str]) -> String {
    redis::from_redis_value(node_query(cluster, node, args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_of_a_replica_mid_stream_loses_and_repeats_nothing() {
    let cluster = RedisCluster::start();
    cluster.wait_replicas_in_sync();
    let env = cluster_env(&cluster);
    let key = history(PREFIX, TOPICS[0]);
    guarantee_through("CLUSTER FAILOVER", env, Duration::ZERO, || {
        let master = cluster.master_of(&key);
        let replica = replica_of(&cluster, master);
        node_text(&cluster, replica, &["CLUSTER", "FAILOVER"]);
        cluster.wait_master_moved(&key, master);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_topics_slot_migrated_during_traffic_loses_and_repeats_nothing() {
    let cluster = RedisCluster::start();
    cluster.wait_replicas_in_sync();
    let env = cluster_env(&cluster);
    let key = history(PREFIX, TOPICS[0]);
    guarantee_through("slot migration", env, Duration::ZERO, || {
        let source = cluster.master_of(&key);
        let target = (0..cluster.nodes.len())
            .find(|&n| n != source && is_master(&cluster, n))
            .expect("another master");
        let slot = match node_query(&cluster, source, &["CLUSTER", "KEYSLOT", &key]) {
            redis::Value::Int(slot) => slot.to_string(),
            other => panic!("{other:?}"),
        };
        let source_id = node_text(&cluster, source, &["CLUSTER", "MYID"]);
        let target_id = node_text(&cluster, target, &["CLUSTER", "MYID"]);
        node_query(&cluster, target, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]);
        node_query(&cluster, source, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]);
        let target_port = cluster.nodes[target].port().to_string();
        loop {
            let keys: Vec<String> = redis::from_redis_value(node_query(
                &cluster,
                source,
                &["CLUSTER", "GETKEYSINSLOT", &slot, "10"],
            ))
            .unwrap();
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &target_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            node_query(&cluster, source, &migrate);
            // Traffic goes on between batches: clients meet ASK redirections meanwhile.
            std::thread::sleep(Duration::from_millis(50));
        }
        for node in [target, source] {
            node_query(&cluster, node, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
        }
        for node in 0..cluster.nodes.len() {
            if is_master(&cluster, node) && node != source && node != target {
                node_query(&cluster, node, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
            }
        }
        assert_eq!(cluster.master_of(&key), target);
    })
    .await;
}

fn is_master(cluster: &RedisCluster, node: usize) -> bool {
    match node_query(cluster, node, &["ROLE"]) {
        redis::Value::Array(role) => {
            matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_mid_stream_loses_and_repeats_nothing() {
    let mut set_up = RedisSentinels::start();
    set_up.wait_replicas_in_sync();
    let env = sentinel_env(&set_up);
    guarantee_through("sentinel failover", env, Duration::ZERO, || {
        let old = set_up.master_port().expect("a primary");
        let primary = set_up.servers.iter().position(|s| s.port() == old).expect("one of ours");
        set_up.servers[primary].kill();
        set_up.wait_failover_from(old);
    })
    .await;
}

/// The primary stalls (`SIGSTOP`: a frozen VM, a long fork, swapping) longer than the
/// Sentinels' `down-after-milliseconds`: they promote a replica, and when the old primary
/// resumes it still believes it is the primary and accepts writes until the Sentinels
/// demote it (8 s or more later; never, were it partitioned from them). Whatever is written
/// there is lost. Every service must leave it on its own: the Redis handle asks the
/// Sentinels again every `PRIMARY_RECHECK` (1 s). So only events published shortly after
/// the promotion may be lost, each announced by a reset; none published after that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_stalled_past_its_replacement_is_left_for_the_one_the_sentinels_promote() {
    /// The handle's recheck (1 s) plus a round's publish and a loaded machine's delays.
    const MOVED_WITHIN: Duration = Duration::from_secs(4);
    let set_up = RedisSentinels::start();
    set_up.wait_replicas_in_sync();
    let env = sentinel_env(&set_up);
    let outcome = guarantee_through("sentinel primary stalled", env, MOVED_WITHIN * 2, || {
        let old = set_up.master_port().expect("a primary");
        let primary = set_up.servers.iter().position(|s| s.port() == old).expect("one of ours");
        set_up.servers[primary].pause();
        set_up.wait_failover_from(old);
        set_up.servers[primary].resume();
    })
    .await;
    let late: Vec<Duration> = outcome
        .lost_rounds_published_at
        .iter()
        .filter(|at| **at > outcome.disrupted_at + MOVED_WITHIN)
        .map(|at| at.duration_since(outcome.disrupted_at))
        .collect();
    assert!(
        late.is_empty(),
        "events published {late:?} after the promotion went to the replaced primary and were lost ({})",
        outcome.result
    );
}
