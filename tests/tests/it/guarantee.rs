//! The delivery guarantee against the faults that used to break it silently: a history
//! emptied by retention, a stream that ends before its first event, a history whose tail
//! Redis lost while the new server's clock is behind, multi-topic cursors in another
//! order, Redis losing only its latest membership writes, an event appended but never
//! routed, and a full gateway. Each scenario names the promise it checks; each failed on
//! the code before the fix (see docs/DELIVERY.md).

use std::time::Duration;
use streamgate::stream::field;

use redis::AsyncCommands;
use streamgate::cursor::{Epoch, HistoryId, TopicCursor};
use streamgate::keys::Keys;
use streamgate::stream::{HistoryEntry, RoutedEntry};
use streamgate::topic::{InstanceId, Topic};
use streamgate_tests::eventsource::{Publisher, Subscriber, counted, tally, wait_connected, wait_delivered};
use streamgate_tests::redis_server::RedisServer;
use streamgate_tests::rig::{Rig, RigOptions};
use streamgate_tests::sse_client::{SseStream, connect};
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::parse(name, 256).unwrap()
}

async fn next_data(stream: &mut SseStream) -> (String, String, String) {
    let event = stream.next_event(WAIT).await.expect("an event within the deadline");
    (event.event, event.data, event.id)
}

async fn epoch_of(conn: &mut redis::aio::MultiplexedConnection, keys: &Keys, topic: &Topic) -> Epoch {
    let epoch: String = conn.hget(keys.meta(topic), field::META_EPOCH).await.unwrap();
    Epoch::parse(&epoch).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_behind_a_history_emptied_by_retention_gets_a_trimmed_reset_first() {
    let world = TestWorld::start("emptied");
    let gateway = world.gateway(&[]).await;
    let url = gateway.url("/events?topic=quiet");
    // Another subscriber stays, so the topic is not idle: retention trims it, it is not
    // deleted.
    let _other = connect(&url, None).await;
    let mut client = connect(&url, None).await;
    for n in 0..3 {
        world.publish("quiet", &format!("e{n}")).await;
    }
    let mut cursor = String::new();
    for _ in 0..3 {
        cursor = next_data(&mut client).await.2;
    }
    drop(client);
    world.publish("quiet", "missed while away").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    streamgate_tests::binaries::sweep_once([
        ("REDIS_URL", world.redis.url().as_str()),
        ("KEY_PREFIX", world.prefix.as_str()),
        ("HISTORY_MAX_AGE", "1s"),
    ]);
    let mut conn = world.redis.client().await;
    let held: u64 = conn.xlen(world.keys.history(&topic("quiet"))).await.unwrap();
    assert_eq!(held, 0, "retention emptied the history");

    let mut resumed = connect(&url, Some(&cursor)).await;
    let (name, data, _) = next_data(&mut resumed).await;
    assert_eq!(name, "streamgate.reset", "the first thing a resuming client gets: {data}");
    assert!(data.contains("\"trimmed\""), "{data}");
    world.publish("quiet", "next").await;
    assert_eq!(next_data(&mut resumed).await.1, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_before_its_first_event_resumes_without_missing_what_came_meanwhile() {
    let mut rig = Rig::start("firstbytes", RigOptions::default()).await;
    let topics: Vec<String> = (0..12).map(|n| format!("quiet-{n}")).collect();
    // Every third subscriber listens to three topics: the cursor block is per lane.
    let subscribers: Vec<Subscriber> = (0..12)
        .map(|n| {
            let mine: Vec<&str> = if n % 3 == 0 {
                (0..3).map(|k| topics[(n + k) % topics.len()].as_str()).collect()
            } else {
                vec![topics[n].as_str()]
            };
            Subscriber::start(&rig.nginx.url(""), &mine, None)
        })
        .collect();
    wait_connected(&subscribers, Duration::from_secs(20)).await;
    // The quiet topics have seen no event: each stream holds only its first bytes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.gateways[0].kill();
    rig.gateways[1].terminate(Duration::from_secs(10));
    // Published while the cut-off clients wait out their retry delay.
    let mut publisher = Publisher::new(rig.producers.iter().map(|p| p.url("")).collect());
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    publisher.publish_round(&names).await;
    publisher.publish_round(&names).await;
    wait_delivered(&subscribers, &publisher.published, Duration::from_secs(20)).await;
    let result = tally(&subscribers, &counted(&publisher.published));
    println!("guarantee first-bytes cursor: {result}");
    assert_eq!((result.missing, result.duplicates, result.out_of_order), (0, 0, 0), "{result}");
    let reconnected: u64 =
        subscribers.iter().map(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert!(reconnected > subscribers.len() as u64, "some streams were cut and resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_behind_a_lost_tail_are_delivered_after_a_reset_not_taken_for_duplicates() {
    let world = TestWorld::start("clockbehind");
    let gateway = world.gateway(&[]).await;
    let mut client = connect(&gateway.url("/events?topic=t"), None).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(world.publish("t", &format!("e{n}")).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for n in 0..5 {
        assert_eq!(next_data(&mut client).await.1, format!("e{n}"));
    }
    let id = |n: usize| ids[n].parse::<TopicCursor>().unwrap();
    let TopicCursor::At { id: e2, .. } = id(2) else { unreachable!() };
    let TopicCursor::At { id: e3, .. } = id(3) else { unreachable!() };
    let TopicCursor::At { id: e4, .. } = id(4) else { unreachable!() };

    // Redis loses e3 and e4 (an older snapshot, a lagging replica), and the new server's
    // clock is behind: its next event gets an id between e3 and e4.
    let t = topic("t");
    let mut conn = world.redis.client().await;
    let _: () = conn.xdel(world.keys.history(&t), &[e3.to_string(), e4.to_string()]).await.unwrap();
    let _: () = redis::cmd("XSETID")
        .arg(world.keys.history(&t))
        .arg(e2.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn.hset(world.keys.meta(&t), field::META_LAST, e2.to_string()).await.unwrap();
    let behind = HistoryId { ms: e3.ms, seq: e3.seq + 1 };
    assert!(e2 < behind && behind < e4);
    let entry = world.append_unrouted(&t, Some(behind), "after the loss").await;
    let epoch = epoch_of(&mut conn, &world.keys, &t).await;
    let instance = InstanceId::parse(gateway.instance.as_str()).unwrap();
    let _: String = conn
        .xadd(
            world.keys.instance_stream(&instance),
            "*",
            &RoutedEntry::fields("t", &entry, &epoch, None, None),
        )
        .await
        .unwrap();

    let (name, data, _) = next_data(&mut client).await;
    assert_eq!(name, "streamgate.reset", "{data}");
    assert!(data.contains("history_lost"), "{data}");
    assert_eq!(next_data(&mut client).await.1, "after the loss", "the new event is not dropped as seen");
    world.publish("t", "later").await;
    assert_eq!(next_data(&mut client).await.1, "later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_topic_cursors_resume_each_topic_whatever_the_order_and_set_of_topics() {
    let world = TestWorld::start("lanes");
    let gateway = world.gateway(&[]).await;
    let mut client = connect(&gateway.url("/events?topic=a&topic=b"), None).await;
    world.publish("a", "a0").await;
    world.publish("b", "b0").await;
    assert_eq!(next_data(&mut client).await.1, "a0");
    let cursor = next_data(&mut client).await.2;
    drop(client);
    world.publish("a", "a1").await;
    world.publish("b", "b1").await;

    // The same topics in the other order.
    let mut swapped = connect(&gateway.url("/events?topic=b&topic=a"), Some(&cursor)).await;
    let mut got: Vec<String> = Vec::new();
    for _ in 0..2 {
        let (name, data, _) = next_data(&mut swapped).await;
        assert_eq!(name, "message", "no reset for a cursor in another order: {data}");
        got.push(data);
    }
    got.sort();
    assert_eq!(got, ["a1", "b1"]);
    swapped.expect_silence(Duration::from_millis(300)).await;

    // A topic dropped and one added: the kept lane resumes, the new topic starts live.
    world.publish("c", "c0 before").await;
    let mut changed = connect(&gateway.url("/events?topic=c&topic=b"), Some(&cursor)).await;
    assert_eq!(next_data(&mut changed).await.1, "b1");
    world.publish("c", "c1").await;
    assert_eq!(next_data(&mut changed).await.1, "c1");

    // `0` for several topics: everything held of each.
    let mut all = connect(&gateway.url("/events?topic=a&topic=b&lastEventId=0"), None).await;
    let mut got: Vec<String> = Vec::new();
    for _ in 0..4 {
        got.push(next_data(&mut all).await.1);
    }
    got.sort();
    assert_eq!(got, ["a0", "a1", "b0", "b1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_lost_with_recent_writes_are_written_again_within_the_liveness_ttl() {
    // DEBUG RELOAD NOSAVE puts Redis back to its last snapshot without closing a single
    // connection: the gateway sees no outage, only data that went back in time.
    let redis = RedisServer::builder().config("enable-debug-command", "local").start();
    let world = TestWorld::on("snapshot", redis);
    let gateway = world.gateway(&[("LIVENESS_TTL", "3s")]).await;
    let mut conn = world.redis.client().await;
    let _early = connect(&gateway.url("/events?topic=early"), None).await;
    let group = |name: &str| world.keys.group(&topic(name));
    let field = gateway.instance.clone();
    let registered = |conn: &mut redis::aio::MultiplexedConnection, key: String| {
        let mut conn = conn.clone();
        let field = field.clone();
        async move { conn.hexists::<_, _, bool>(key, field).await.unwrap() }
    };
    wait_until("early registered", WAIT, || registered(&mut conn, group("early"))).await;
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();

    let mut late = connect(&gateway.url("/events?topic=late"), None).await;
    wait_until("late registered", WAIT, || registered(&mut conn, group("late"))).await;
    let _: () = redis::cmd("DEBUG").arg("RELOAD").arg("NOSAVE").query_async(&mut conn).await.unwrap();
    assert!(!registered(&mut conn, group("late")).await, "the reload lost the late membership");

    // Within one heartbeat (a third of the TTL) plus a round trip; allow the whole TTL.
    wait_until("the lost membership written again", Duration::from_secs(3), || {
        registered(&mut conn, group("late"))
    })
    .await;
    world.publish("late", "routed again").await;
    assert_eq!(next_data(&mut late).await.1, "routed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_appended_but_never_routed_reaches_a_quiet_topic_within_two_reconcile_intervals() {
    let world = TestWorld::start("unrouted");
    let gateway = world.gateway(&[("RECONCILE_INTERVAL", "200ms")]).await;
    let mut client = connect(&gateway.url("/events?topic=quiet"), None).await;
    world.publish("quiet", "routed").await;
    assert_eq!(next_data(&mut client).await.1, "routed");
    world.append_unrouted(&topic("quiet"), None, "never routed").await;
    let started = tokio::time::Instant::now();
    let event = client.next_event(Duration::from_secs(5)).await.expect("the unrouted event arrives");
    assert_eq!(event.data, "never routed");
    println!("guarantee unrouted event delivered after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_keeps_an_event_source_retrying_and_answers_others_503() {
    let world = TestWorld::start("full");
    let gateway = world.gateway(&[("MAX_CONNECTIONS", "1"), ("RETRY_INTERVAL", "200ms")]).await;
    let first = connect(&gateway.url("/events?topic=t"), None).await;
    assert_eq!(first.status, 200);

    let http = reqwest::Client::new();
    let refused =
        http.get(gateway.url("/events?topic=t")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(refused.status(), 200, "an EventSource never retries a non-200 answer");
    let body = tokio::time::timeout(WAIT, refused.text()).await.expect("the refusal ends at once").unwrap();
    assert!(body.starts_with("retry: "), "{body}");
    assert!(body.contains("connection limit"), "{body}");
    assert!(!body.contains("id:"), "the client keeps its own Last-Event-ID: {body}");
    let plain = http.get(gateway.url("/events?topic=t")).send().await.unwrap();
    assert_eq!(plain.status(), 503);

    // A browser-like client keeps retrying and gets in once a slot frees.
    let waiting = Subscriber::start(&gateway.url(""), &["t"], None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(first);
    let until = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    while waiting.count("t") == 0 {
        assert!(tokio::time::Instant::now() < until, "the retrying client never got in");
        world.publish("t", &format!("t {n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waiting.connects.load(std::sync::atomic::Ordering::Relaxed) > 1, "it was refused first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_recreated_during_a_long_replay_is_announced_once_and_nothing_repeats() {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;

    let world = TestWorld::start("flushall");
    let gateway =
        world.gateway(&[("REPLAY_BATCH", "20"), ("QUEUE_SIZE", "64"), ("LIVENESS_TTL", "3s")]).await;
    let publisher = &world.publisher;
    // 40 MB of history: far more than the socket buffers between the gateway and a client
    // that stops reading, so the replay is stalled half-way.
    let pad = "x".repeat(8 * 1024);
    let old_events = 5000;
    for first in (0..old_events).step_by(100) {
        let batch: Vec<_> = (first..first + 100)
            .map(|n| streamgate_tests::publish::event("long", None, &format!("old {n} {pad}")))
            .collect();
        publisher.publish(&batch).await.unwrap();
    }
    let response = reqwest::Client::new()
        .get(gateway.url("/events?topic=long&lastEventId=0"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut head = Vec::new();
    let mut read = 0;
    while read < 256 * 1024 {
        let chunk = body.next().await.unwrap().unwrap();
        read += chunk.len();
        head.push(Ok::<_, reqwest::Error>(chunk));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The history is wiped (FLUSHALL) and a new one with five events takes its place while
    // the replay is stalled, in one atomic step, so the replay's next read sees either the
    // old history or the new one, never an empty one.
    let mut conn = world.redis.client().await;
    let t = topic("long");
    let mut switch = redis::pipe();
    switch.atomic().cmd("FLUSHALL").ignore();
    let mut prev = HistoryId::ZERO;
    let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for k in 0..5u64 {
        let entry = HistoryEntry {
            id: HistoryId { ms: base, seq: k + 1 },
            prev,
            name: None,
            data: format!("new {k}"),
        };
        switch.xadd(world.keys.history(&t), entry.id.to_string(), &entry.fields()).ignore();
        prev = entry.id;
    }
    switch
        .hset_multiple(
            world.keys.meta(&t),
            &[(field::META_EPOCH, "recreated"), (field::META_LAST, prev.to_string().as_str())],
        )
        .ignore();
    let () = switch.query_async(&mut conn).await.unwrap();
    let mut events = futures_util::stream::iter(head).chain(body).eventsource();
    let mut old = Vec::new();
    let mut new = Vec::new();
    let mut order = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    // Until the new history arrived, then 3 s more (a membership rewrite and the hub's
    // catch-up take about one heartbeat): nothing may come twice.
    let mut quiet_until = None;
    loop {
        let deadline = quiet_until.unwrap_or(until);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(event) = tokio::time::timeout(left, events.next()).await else {
            assert!(quiet_until.is_some(), "the new history never arrived: old={} new={new:?}", old.len());
            break;
        };
        let event = event.unwrap().unwrap();
        if event.event == "streamgate.reset" {
            order.push(format!("reset {}", event.data));
            continue;
        }
        let mut words = event.data.split(' ');
        let (kind, n) = (words.next().unwrap(), words.next().unwrap().parse::<u64>().unwrap());
        order.push(format!("{kind} {n}"));
        if kind == "old" {
            old.push(n);
        } else {
            new.push(n);
            if new.len() == 5 && quiet_until.is_none() {
                quiet_until = Some(tokio::time::Instant::now() + Duration::from_secs(3));
            }
        }
    }
    let resets: Vec<&String> = order.iter().filter(|e| e.starts_with("reset")).collect();
    println!("guarantee flushall mid-replay: old={} new={new:?} resets={resets:?}", old.len());
    let tail: Vec<&String> = order.iter().skip(old.len()).collect();
    assert_eq!(resets.len(), 1, "one reset: {tail:?}");
    assert!(resets[0].contains("history_lost"), "{resets:?}");
    assert!(tail[0].starts_with("reset"), "the reset comes first, then the new history: {tail:?}");
    assert!(old.len() < old_events as usize, "the wipe came mid-replay");
    assert_eq!(old, (0..old.len() as u64).collect::<Vec<_>>(), "old events in order, none twice");
    assert_eq!(new, [0, 1, 2, 3, 4], "{tail:?}");
}

#[tokio::test]
async fn settings_that_defeat_each_other_stop_the_gateway_with_one_line() {
    let output = std::process::Command::new(streamgate_tests::binaries::workspace_binary("gateway"))
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env("QUEUE_SIZE", "100")
        .env("REPLAY_BATCH", "500")
        .output()
        .expect("run the gateway");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("QUEUE_SIZE=100 and REPLAY_BATCH=500 conflict"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_history_read_is_bounded_by_bytes_as_well_as_by_count() {
    use gateway::history::{ReadLimit, read_after};

    let world = TestWorld::start("readbytes");
    let big = "x".repeat(16 * 1024);
    for n in 0..20 {
        world.publish("big", &format!("{n} {big}")).await;
    }
    world.publish("big", &"y".repeat(200 * 1024)).await;
    let pool = streamgate::redis::Redis::single(&world.redis.url(), 2).unwrap();
    let t = topic("big");
    let limit = ReadLimit { count: 500, bytes: 64 * 1024 };
    let read = read_after(&pool, &world.keys, &t, HistoryId::ZERO, limit).await.unwrap();
    assert_eq!(read.entries.len(), 3, "three 16 KiB events fit in 64 KiB, a fourth does not");
    assert!(read.truncated);
    // An event larger than the budget still comes, alone: a read always makes progress.
    let last_small =
        read_after(&pool, &world.keys, &t, HistoryId::ZERO, ReadLimit { count: 20, bytes: 1 << 30 })
            .await
            .unwrap()
            .entries
            .last()
            .unwrap()
            .id;
    let read = read_after(&pool, &world.keys, &t, last_small, limit).await.unwrap();
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].data.len(), 200 * 1024);
    assert!(!read.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_flood_on_a_busy_pool_never_lets_a_healthy_gateway_expire() {
    use futures_util::StreamExt;

    let world = TestWorld::start("flood");
    // One pooled connection, and 150 clients replaying a 2 MB history at once: every read
    // waits for all the reads queued before it, for seconds.
    let gateway = world.gateway(&[("REDIS_POOL_SIZE", "1"), ("LIVENESS_TTL", "3s")]).await;
    let publisher = &world.publisher;
    let pad = "x".repeat(10 * 1024);
    let mut cursors = Vec::new();
    for first in (0..200).step_by(50) {
        let batch: Vec<_> = (first..first + 50)
            .map(|n| streamgate_tests::publish::event("heavy", None, &format!("{n} {pad}")))
            .collect();
        let published = publisher.publish(&batch).await.unwrap();
        cursors.extend(published.into_iter().map(|event| event.cursor.to_string()));
    }
    let instance = InstanceId::parse(gateway.instance.as_str()).unwrap();
    let alive = world.keys.instance_alive(&instance);
    let mut conn = world.redis.client().await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut clients = Vec::new();
    // Each from its own position (the first 150 events' cursors, so up to 2 MB each):
    // clients resuming from one position would share their reads.
    for cursor in &cursors[..150] {
        let request = http
            .get(gateway.url("/events?topic=heavy"))
            .header("accept", "text/event-stream")
            .header("last-event-id", cursor.as_str());
        clients.push(tokio::spawn(async move {
            let Ok(response) = request.send().await else { return 0 };
            let mut body = response.bytes_stream();
            let mut read = 0;
            while read < 2_000_000 {
                match body.next().await {
                    Some(Ok(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            read
        }));
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut checks = 0;
    while tokio::time::Instant::now() < until {
        assert!(
            conn.exists::<_, bool>(&alive).await.unwrap(),
            "the liveness key lapsed after {checks} checks"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut done = 0;
    for client in clients {
        if !client.is_finished() {
            client.abort();
        } else if client.await.unwrap() >= 2_000_000 {
            done += 1;
        }
    }
    println!("guarantee replay flood: {done} of 150 clients replayed 2 MB in 8 s, liveness held throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_a_topic_from_one_position_at_once_share_its_history_reads() {
    let world = TestWorld::start("shared-replay");
    // One read at a time, so the storm's reads queue behind the first.
    let gateway = world.gateway(&[("REPLAY_CONCURRENCY", "1")]).await;
    let cursor = world.publish("storm", "0").await;
    for n in 1..50 {
        world.publish("storm", &n.to_string()).await;
    }
    // Redis held still while the storm arrives, so every client has joined the topic and
    // asked for its read before the first read is answered.
    let mut conn = world.redis.client().await;
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("ALL").query_async(&mut conn).await.unwrap();
    let url = gateway.url("/events?topic=storm");
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let (url, cursor) = (url.clone(), cursor.clone());
            tokio::spawn(async move {
                let mut stream = connect(&url, Some(&cursor)).await;
                let events = stream.take(49, WAIT).await;
                events.into_iter().map(|event| event.data).collect::<Vec<_>>()
            })
        })
        .collect();
    let expected: Vec<String> = (1..50).map(|n| n.to_string()).collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), expected, "every client gets what it missed, once and in order");
    }

    let text = crate::gateway_metrics::scrape(&gateway.admin_url("/metrics")).await;
    let sample = |series: &str| crate::gateway_metrics::sample(&text, series).unwrap_or(0.0);
    let reads = sample(r#"streamgate_gateway_redis_command_duration_seconds_count{command="history_read"}"#);
    let shared = sample("streamgate_gateway_replay_reads_shared_total");
    println!("guarantee shared replay reads: 40 clients, {reads} history reads, {shared} joined");
    // The first client's read is sent at once; those behind it join the next one (the
    // hub's own reads count as history reads too).
    assert!(shared >= 30.0, "the clients behind the first read joined one: {shared} of 40");
    assert!(reads <= 5.0, "a read per position, not per client: {reads} reads");
}

/// Raw bytes of an SSE body as they arrive, and the `lastEventId` they set.
struct RawStream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    cursor: streamgate_tests::last_event_id::LastEventId,
    seen: String,
}

impl RawStream {
    /// Reads for `window`, or until the stream has a cursor when `until_cursor`.
    async fn read(&mut self, window: Duration, until_cursor: bool) {
        use futures_util::StreamExt;
        let until = tokio::time::Instant::now() + window;
        while !(until_cursor && self.cursor.get().is_some()) {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    self.cursor.feed(&chunk);
                    self.seen.push_str(&String::from_utf8_lossy(&chunk));
                }
                Ok(_) => panic!("the stream ended: {:?}", self.seen),
                Err(_) => return,
            }
        }
    }

    /// The data of every event so far.
    fn data(&self) -> Vec<String> {
        self.seen
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.trim_start().to_owned())
            .collect()
    }
}

/// Redis slower than the gateway's join wait (2 s): the response starts anyway, with
/// heartbeats but no cursor, since the gateway cannot yet say where the stream starts. The
/// cursor comes once the subscription is in place, and the stream owes its client every
/// event published after it. (A client that took the headers for the start could miss
/// what was published in between: the cursor, not the headers, marks the start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_waits_for_redis_starts_at_the_cursor_it_sends_once_subscribed() {
    use futures_util::StreamExt;
    let world = TestWorld::start("slowjoin");
    let gateway = world.gateway(&[("HEARTBEAT_INTERVAL", "1s")]).await;
    world.redis.pause();
    let response = reqwest::Client::new()
        .get(gateway.url("/events?topic=slow-join"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("the gateway answers while Redis is paused");
    assert_eq!(response.status(), 200);
    let mut stream = RawStream {
        body: response.bytes_stream().boxed(),
        cursor: streamgate_tests::last_event_id::LastEventId::default(),
        seen: String::new(),
    };
    stream.read(Duration::from_millis(1500), false).await;
    assert_eq!(stream.cursor.get(), None, "no cursor while Redis cannot be asked: {:?}", stream.seen);
    world.redis.resume();
    stream.read(WAIT, true).await;
    assert!(stream.cursor.get().is_some(), "the cursor once Redis answers: {:?}", stream.seen);

    let expected: Vec<String> = (0..20).map(|n| format!("slow-join {n}")).collect();
    for data in &expected {
        world.publish("slow-join", data).await;
    }
    let until = tokio::time::Instant::now() + WAIT;
    while stream.data().len() < expected.len() && tokio::time::Instant::now() < until {
        stream.read(Duration::from_millis(100), false).await;
    }
    assert_eq!(stream.data(), expected, "every event published after the cursor, in order");
}
