//! The gateway under stress and faults: slow consumers, Redis restarts, restarts under the
//! same instance id, connection storms.

use std::time::Duration;

use redis::AsyncCommands;
use streamgate_tests::gateway_app::spawn_gateway;
use streamgate_tests::keys::InstanceKey;
use streamgate_tests::publish::{publish_one, publisher};
use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::sse_client::connect;
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_slow_consumer_is_closed_and_resumes_from_its_cursor_without_loss() {
    let world = TestWorld::start("slow");
    let gateway = world.gateway(&[("QUEUE_SIZE", "16"), ("REPLAY_BATCH", "16")]).await;
    let mut slow = gateway.subscribe(&["firehose"], None).await;
    let total = 300usize;
    let padding = "x".repeat(50_000);
    for n in 0..total {
        world.publish("firehose", &format!("{n} {padding}")).await;
    }
    // The client did not read while 15 MB were published: the gateway closes it once it
    // has fallen QUEUE_SIZE events behind. It reads what was in flight, then the end.
    let mut received: Vec<(usize, String)> = Vec::new();
    while let Some(event) = slow.next_event(Duration::from_secs(5)).await {
        received.push((event.data.split(' ').next().unwrap().parse().unwrap(), event.id));
    }
    assert!(received.len() < total, "the slow client should have been cut off");
    let admin: serde_json::Value =
        reqwest::get(gateway.admin_url("/admin/connections")).await.unwrap().json().await.unwrap();
    assert!(admin["totals"]["slowClosedTotal"].as_u64().unwrap() >= 1, "{admin}");

    // Like EventSource, it reconnects with the last id it saw and misses nothing.
    let last_id = received.last().map(|(_, id)| id.clone());
    let mut resumed = gateway.subscribe(&["firehose"], last_id.as_deref()).await;
    let rest = resumed.take(total - received.len(), WAIT).await;
    let mut all: Vec<usize> = received.iter().map(|(n, _)| *n).collect();
    all.extend(rest.iter().map(|e| e.data.split(' ').next().unwrap().parse::<usize>().unwrap()));
    assert_eq!(all, (0..total).collect::<Vec<_>>());
}

#[tokio::test]
async fn clients_stay_connected_through_a_redis_restart_and_miss_nothing() {
    let mut world = TestWorld::on("outage", RedisServer::builder().append_only(true).start());
    let gateway = world.gateway(&[("HEARTBEAT_INTERVAL", "1s")]).await;
    let mut before = gateway.subscribe(&["t"], None).await;
    for n in 0..5 {
        world.publish("t", &n.to_string()).await;
    }
    assert_eq!(before.take(5, WAIT).await.len(), 5);

    world.redis.stop();
    // A new connection during the outage is held open (200), never refused with a 5xx.
    let mut during =
        tokio::time::timeout(Duration::from_secs(10), gateway.subscribe(&["t"], None)).await.unwrap();
    assert_eq!(during.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.redis.restart();

    // The publisher's pool reconnects on its own; retry until it does.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut published = 5;
    while published < 10 {
        let event = streamgate_tests::publish::event("t", None, &published.to_string());
        match world.publisher.publish(&[event]).await {
            Ok(_) => published += 1,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("publishing after the restart: {error}"),
        }
    }
    let data: Vec<String> = before.take(5, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["5", "6", "7", "8", "9"]);
    let data: Vec<String> = during.take(5, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["5", "6", "7", "8", "9"]);
    before.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_restart_under_the_same_instance_id_resets_the_earlier_lifes_state() {
    let world = TestWorld::start("stale");
    let prefix = &world.prefix;
    let mut conn = world.conn().await;
    let instance = "gw-stateful-0";
    // What a SIGKILLed earlier life left behind.
    let _: () = conn.hset(streamgate_tests::keys::group(prefix, "old"), instance, 7).await.unwrap();
    let _: () = conn
        .sadd(streamgate_tests::keys::instance(prefix, instance, InstanceKey::Topics), "old")
        .await
        .unwrap();
    let _: String = conn
        .xadd(streamgate_tests::keys::instance(prefix, instance, InstanceKey::Stream), "*", &[("t", "old")])
        .await
        .unwrap();
    let gateway = world.gateway(&[("INSTANCE_ID", instance)]).await;
    assert!(!conn.exists::<_, bool>(streamgate_tests::keys::group(prefix, "old")).await.unwrap());
    assert!(
        !conn
            .exists::<_, bool>(streamgate_tests::keys::instance(prefix, instance, InstanceKey::Topics))
            .await
            .unwrap()
    );
    assert!(
        !conn
            .exists::<_, bool>(streamgate_tests::keys::instance(prefix, instance, InstanceKey::Stream))
            .await
            .unwrap()
    );
    assert!(
        conn.exists::<_, bool>(streamgate_tests::keys::instance(prefix, instance, InstanceKey::Alive))
            .await
            .unwrap()
    );
    assert_eq!(gateway.instance, instance);
}

#[tokio::test]
async fn a_connection_storm_registers_membership_in_few_round_trips() {
    let world = TestWorld::start("storm");
    let gateway = world.gateway(&[]).await;
    let mut conn = world.conn().await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.unwrap();
    let n = 400;
    let url = gateway.url("/events?topic=storm");
    let connects = (0..n).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { connect(&url, None).await })
    });
    let streams: Vec<_> = futures_util::future::join_all(connects).await;
    assert_eq!(streams.len(), n);
    let group = streamgate_tests::keys::group(&world.prefix, "storm");
    // Only the first subscriber of a topic waits for its membership; the count of the
    // others follows in the next flushes.
    let deadline = tokio::time::Instant::now() + WAIT;
    while conn.hget::<_, _, Option<i64>>(&group, &gateway.instance).await.unwrap() != Some(n as i64) {
        assert!(tokio::time::Instant::now() < deadline, "membership count never reached {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    let membership_writes = calls(&stats, "hincrby") + calls(&stats, "hset");
    assert!(membership_writes < n as u64 / 4, "{membership_writes} membership writes for {n} connections");
}

fn calls(stats: &str, command: &str) -> u64 {
    stats
        .lines()
        .find(|line| line.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|line| line.split("calls=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_redis_restart_that_lost_the_data_is_announced_and_delivery_goes_on() {
    let mut world = TestWorld::start("wiped"); // no persistence: a restart loses everything
    let gateway = world.gateway(&[("HEARTBEAT_INTERVAL", "1s"), ("LIVENESS_TTL", "3s")]).await;
    let mut stream = gateway.subscribe(&["t"], None).await;
    world.publish("t", "before").await;
    assert_eq!(stream.take(1, WAIT).await[0].data, "before");

    world.redis.restart();
    // The gateway notices, registers again (its liveness key is gone) and tells the client
    // that the history it was reading no longer exists.
    let reset = stream.take(1, WAIT).await;
    assert_eq!(reset[0].event, "streamgate.reset");
    assert!(reset[0].data.contains("history_lost"), "{}", reset[0].data);
    // Once registered again, new events flow, in a new epoch.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut conn = world.conn().await;
    let group = streamgate_tests::keys::group(&world.prefix, "t");
    while !conn.exists::<_, bool>(&group).await.unwrap_or(false) {
        assert!(tokio::time::Instant::now() < deadline, "membership was not registered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut id = None;
    while id.is_none() {
        match world.publisher.publish(&[streamgate_tests::publish::event("t", None, "after")]).await {
            Ok(results) => id = Some(results[0].cursor.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let after = stream.take(1, WAIT).await;
    assert_eq!(after[0].data, "after");
    assert_eq!(Some(after[0].id.clone()), id);
}

#[tokio::test]
async fn a_tls_redis_url_works_for_every_connection() {
    // A redis-server speaking only TLS, with a self-signed certificate made here.
    let dir = tempfile::tempdir().unwrap();
    let streamgate_tests::certificate::Certificate { cert, key } =
        streamgate_tests::certificate::Certificate::self_signed(dir.path(), "redis");
    let port = streamgate_tests::rig::free_port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--tls-auth-clients", "no", "--dir"])
        .arg(dir.path())
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    // The certificate is self-signed, so verification is off for this test (`#insecure`);
    // in production the server's certificate chain is verified against the system roots.
    let url = format!("rediss://127.0.0.1:{port}/#insecure");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "TLS redis did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let prefix = unique_prefix("tls");
    let gateway = spawn_gateway(&url, &prefix, &[]).await;
    let publisher = publisher(&url, &prefix);
    let mut stream = connect(&gateway.url("/events?topic=secure"), None).await;
    let id = publish_one(&publisher, "secure", "over tls").await;
    let event = stream.take(1, WAIT).await;
    assert_eq!((event[0].data.as_str(), event[0].id.as_str()), ("over tls", id.as_str()));
    let _ = server.kill();
    let _ = server.wait();
}
