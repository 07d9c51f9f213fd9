//! `GET /admin/cluster` against two real gateways and a real Redis: every live gateway from
//! its own summary, the top topics by subscribers, the ingest consumer group's lag and the
//! dead letters; a gateway that stops leaves the view, a dead one waiting for the janitor
//! is counted apart, and the janitor takes the summaries for what they are.

use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use janitor::{JanitorConfig, Sweeper};
use redis::AsyncCommands;
use serde_json::Value;
use streamgate_tests::gateway_app::{TestGateway, spawn_gateway};
use streamgate_tests::ingest;
use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::sse_client::{SseStream, connect};
use streamgate_tests::wait::wait_until;

const WAIT: Duration = Duration::from_secs(15);

async fn cluster(gateway: &TestGateway) -> Value {
    let response = reqwest::get(gateway.admin_url("/admin/cluster")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn open(gateway: &TestGateway, topic: &str) -> SseStream {
    let stream = connect(&gateway.url(&format!("/events?topic={topic}")), None).await;
    assert_eq!(stream.status, 200);
    stream
}

fn listed_instances(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["instance"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn top(view: &Value) -> Vec<(String, u64, u64)> {
    view["topTopics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["subscribers"].as_u64().unwrap(),
                t["gateways"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_cluster_view_shows_live_gateways_top_topics_and_ingest_lag() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("admincluster");
    // A short liveness TTL: summaries are rewritten every second.
    let a = spawn_gateway(&redis.url(), &prefix, &[("INSTANCE_ID", "gw-a"), ("LIVENESS_TTL", "3s")]).await;
    let b = spawn_gateway(&redis.url(), &prefix, &[("INSTANCE_ID", "gw-b"), ("LIVENESS_TTL", "3s")]).await;

    let view = cluster(&a).await;
    assert_eq!(listed_instances(&view), ["gw-a", "gw-b"]);
    let a_entry =
        view["gateways"].as_array().unwrap().iter().find(|g| g["instance"] == "gw-a").unwrap().clone();
    assert_eq!(a_entry["alive"], true);
    assert_eq!(a_entry["self"], true);
    assert_eq!(a_entry["listenAddr"], format!("127.0.0.1:{}", a.port));
    assert_eq!(a_entry["adminAddr"], format!("127.0.0.1:{}", a.admin_port.unwrap()));
    assert_eq!(a_entry["version"], env!("CARGO_PKG_VERSION"));
    assert!(a_entry["livenessTtlMs"].as_u64().unwrap() <= 3000);
    let b_entry =
        view["gateways"].as_array().unwrap().iter().find(|g| g["instance"] == "gw-b").unwrap().clone();
    assert_eq!(b_entry["self"], false);
    assert_eq!(view["deadInIndex"], 0);
    assert_eq!(top(&view), Vec::new());
    assert_eq!(view["ingest"]["groupExists"], false);
    assert_eq!(view["ingest"]["deadLetters"], 0);

    let _hot = [open(&a, "hot").await, open(&a, "hot").await, open(&b, "hot").await];
    let _cold = open(&b, "cold").await;
    wait_until("hot on both gateways, cold on one", WAIT, || async {
        top(&cluster(&b).await) == [("hot".to_owned(), 3, 2), ("cold".to_owned(), 1, 1)]
    })
    .await;
    wait_until("the summaries count every connection", WAIT, || async {
        let view = cluster(&b).await;
        let per_gateway: Vec<u64> =
            view["gateways"].as_array().unwrap().iter().map(|g| g["connections"].as_u64().unwrap()).collect();
        view["totals"]["connections"] == 4 && per_gateway.iter().all(|n| *n == 2)
    })
    .await;

    // The ingest stream: three entries, two read by a consumer and not acknowledged.
    let mut conn = redis.client().await;
    ingest::create_group(&mut conn, ingest::STREAM).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id: String =
            conn.xadd(ingest::STREAM, "*", &[("topic", "t"), ("data", &n.to_string())]).await.unwrap();
        ids.push(id);
    }
    ingest::read_as(&mut conn, ingest::STREAM, "producer-1", 2).await;
    for n in 0..2 {
        let _: String =
            conn.xadd(ingest::DEAD_LETTER, "*", &[("reason", "bad"), ("n", &n.to_string())]).await.unwrap();
    }
    let ingest = cluster(&a).await["ingest"].clone();
    assert_eq!(ingest["groupExists"], true, "{ingest}");
    assert_eq!(ingest["length"], 3);
    assert_eq!(ingest["pending"], 2);
    assert_eq!(ingest["lag"], 1, "one entry not yet delivered to the group");
    assert_eq!(ingest["consumers"], 1);
    assert_eq!(ingest["oldestPending"]["id"], ids[0].as_str());
    assert_eq!(ingest["oldestPending"]["consumer"], "producer-1");
    assert_eq!(ingest["oldestPending"]["deliveries"], 1);
    assert!(ingest["oldestPending"]["ageMs"].as_u64().unwrap() < 60_000, "{ingest}");
    assert_eq!(ingest["deadLetters"], 2);

    // A dead gateway the janitor has not swept: in the index, no liveness, no summary.
    let _: () = conn.zadd(format!("{prefix}:instances"), "gw-dead", 1).await.unwrap();
    let view = cluster(&a).await;
    assert_eq!(listed_instances(&view), ["gw-a", "gw-b"]);
    assert_eq!(view["deadInIndex"], 1);

    // The summaries expire with their gateway, and the janitor's scan knows their name.
    for instance in ["gw-a", "gw-b"] {
        let ttl: i64 = conn.pttl(format!("{prefix}:i:{{{instance}}}:summary")).await.unwrap();
        assert!(ttl > 0 && ttl <= 3000, "{instance}: {ttl}");
    }
    let config = JanitorConfig::with_overrides(&[
        ("REDIS_URL", redis.url().as_str()),
        ("KEY_PREFIX", prefix.as_str()),
    ])
    .unwrap();
    let sweeper = Sweeper::new(
        streamgate::redis::Redis::single(&redis.url(), 2).unwrap(),
        config.common.keys,
        config.sweep,
    );
    let report = sweeper.sweep(true).await.unwrap();
    assert_eq!(report.malformed_keys_skipped, 0, "{report:?}");

    // A gateway that stops deletes its summary with its other keys: it leaves the view at once.
    b.shutdown().await;
    let view = cluster(&a).await;
    assert_eq!(listed_instances(&view), ["gw-a"]);
    assert_eq!(top(&view), [("hot".to_owned(), 2, 1)]);
    let summary: Option<String> = conn.get(format!("{prefix}:i:{{gw-b}}:summary")).await.unwrap();
    assert_eq!(summary, None);
}
