//! Traces across processes: a published event — from `POST /publish` or the ingest stream —
//! yields linked producer and gateway spans at a real OTLP/gRPC collector (in clear text and
//! over TLS), the trace context travelling in the routed entry's `tp`; an unsampled
//! publish, or a producer without an OTLP endpoint, writes no `tp`.
//!
//! The services run as binaries: telemetry is process-global.

use std::time::Duration;

use serde_json::json;
use streamgate::stream::field;
use streamgate::topic::InstanceId;
use streamgate_tests::certificate::Certificate;
use streamgate_tests::otlp_collector::{Collector, ReceivedSpan};
use streamgate_tests::producer_app::{field as entry_field, stream_entries, test_settings};
use streamgate_tests::rig::{Service, free_port};
use streamgate_tests::sse_client::connect;
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(20);
const INSTANCE: &str = "gw-traces";

/// Export settings: `endpoint` (none when empty), sampling `ratio`, spans sent within
/// 100 ms of ending (the batch processor's default waits 5 s).
fn otel_env(endpoint: &str, ratio: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("OTEL_TRACES_SAMPLER_ARG".to_owned(), ratio.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    if !endpoint.is_empty() {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.to_owned()));
    }
    env
}

fn spawn_gateway(world: &TestWorld, otel: Vec<(String, String)>) -> Service {
    let port = free_port();
    let mut env = vec![
        ("REDIS_URL".to_owned(), world.redis.url()),
        ("KEY_PREFIX".to_owned(), world.prefix.clone()),
        ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("INSTANCE_ID".to_owned(), INSTANCE.to_owned()),
    ];
    env.extend(otel);
    Service::spawn("gateway", "gateway", &[], port, env)
}

fn spawn_producer(name: &str, world: &TestWorld, otel: Vec<(String, String)>) -> Service {
    let port = free_port();
    let mut env = test_settings(&world.redis.url(), &world.prefix);
    env.push(("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")));
    env.extend(otel);
    Service::spawn(name, "producer", &["serve"], port, env)
}

async fn publish(producer: &Service, topic: &str, data: &str) {
    streamgate_tests::publish::over_http(&producer.url(""), None, &json!({"topic": topic, "data": data}))
        .await;
}

/// The routed entries of the test gateway's instance stream: (data, `tp`).
async fn routed(world: &TestWorld) -> Vec<(String, Option<String>)> {
    let stream = world.keys.instance_stream(&InstanceId::parse(INSTANCE).unwrap());
    stream_entries(&mut world.conn().await, &stream)
        .await
        .iter()
        .map(|entry| {
            (entry_field(entry, field::DATA).unwrap_or_default(), entry_field(entry, field::TRACE_PARENT))
        })
        .collect()
}

fn only(spans: Vec<ReceivedSpan>, what: &str) -> ReceivedSpan {
    assert_eq!(spans.len(), 1, "one {what} span: {spans:#?}");
    spans.into_iter().next().unwrap()
}

/// Publishes one event to a subscriber of a gateway, both services exporting to
/// `collector` (with `extra` settings) and sampling every publish, and checks the trace:
/// `publish` → `append` and `route` on the producer, `deliver` on the gateway as a child of
/// `route`, whose `traceparent` is the routed entry's `tp`.
async fn a_published_event_is_one_trace_across_producer_and_gateway(
    collector: &Collector,
    extra: &[(&str, &str)],
) {
    let world = TestWorld::start("traces");
    let mut otel = otel_env(&collector.endpoint(), "1");
    otel.extend(extra.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
    let gateway = spawn_gateway(&world, otel.clone());
    let producer = spawn_producer("producer", &world, otel);
    gateway.wait_ready().await;
    producer.wait_ready().await;
    let mut subscriber = connect(&gateway.url("/events?topic=traced"), None).await;

    publish(&producer, "traced", "hello").await;
    let events = subscriber.take(1, WAIT).await;
    assert_eq!(events[0].data, "hello");

    wait_until("the producer's and the gateway's spans at the collector", WAIT, || async {
        !collector.named("producer", "route").is_empty() && !collector.named("gateway", "deliver").is_empty()
    })
    .await;
    let publish = only(collector.named("producer", "publish"), "publish");
    let append = only(collector.named("producer", "append"), "append");
    let route = only(collector.named("producer", "route"), "route");
    let deliver = only(collector.named("gateway", "deliver"), "deliver");
    assert!(publish.parent_span_id.is_empty(), "publish is the root: {publish:#?}");
    for child in [&append, &route] {
        assert_eq!(child.trace_id, publish.trace_id, "{child:#?}");
        assert_eq!(child.parent_span_id, publish.span_id, "{child:#?}");
    }
    assert_eq!(deliver.trace_id, route.trace_id, "one trace: {deliver:#?}");
    assert_eq!(deliver.parent_span_id, route.span_id, "deliver is a child of route: {deliver:#?}");
    assert_eq!(deliver.attribute("topic"), Some("traced"), "{deliver:#?}");
    assert_eq!(deliver.attribute("path"), Some("direct"), "{deliver:#?}");
    assert_eq!(deliver.attribute("subscribers"), Some("1"), "{deliver:#?}");
    assert_eq!(deliver.attribute("sent"), Some("1"), "{deliver:#?}");
    let sent: Vec<_> = deliver.events.iter().filter(|(name, _)| name == "sent").collect();
    assert_eq!(sent.len(), 1, "one hand-over event per subscriber: {deliver:#?}");
    assert_eq!(route.attribute("n_routed"), Some("1"), "{route:#?}");

    assert_eq!(routed(&world).await, vec![("hello".to_owned(), Some(route.traceparent()))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_yields_linked_producer_and_gateway_spans() {
    let collector = Collector::start().await;
    a_published_event_is_one_trace_across_producer_and_gateway(&collector, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_verified_with_otel_exporter_otlp_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (certificate, ca) = Certificate::issued_by_own_ca(dir.path(), "collector");
    let collector = Collector::start_tls(&certificate).await;
    assert!(collector.endpoint().starts_with("https://"));
    a_published_event_is_one_trace_across_producer_and_gateway(
        &collector,
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_publishes_and_producers_without_an_endpoint_write_no_traceparent() {
    let world = TestWorld::start("traces-unsampled");
    let collector = Collector::start().await;
    let gateway = spawn_gateway(&world, Vec::new());
    let unsampled = spawn_producer("unsampled", &world, otel_env(&collector.endpoint(), "0"));
    let no_endpoint = spawn_producer("no-endpoint", &world, otel_env("", "1"));
    let sampled = spawn_producer("sampled", &world, otel_env(&collector.endpoint(), "1"));
    gateway.wait_ready().await;
    for producer in [&unsampled, &no_endpoint, &sampled] {
        producer.wait_ready().await;
    }
    let mut subscriber = connect(&gateway.url("/events?topic=t"), None).await;

    publish(&unsampled, "t", "ratio 0").await;
    publish(&no_endpoint, "t", "no endpoint").await;
    publish(&sampled, "t", "ratio 1").await;
    subscriber.take(3, WAIT).await;

    let entries = routed(&world).await;
    let data: Vec<&str> = entries.iter().map(|(data, _)| data.as_str()).collect();
    assert_eq!(data, ["ratio 0", "no endpoint", "ratio 1"]);
    assert_eq!(entries[0].1, None, "ratio 0: {entries:?}");
    assert_eq!(entries[1].1, None, "no endpoint: {entries:?}");
    let traceparent = entries[2].1.as_deref().expect("the sampled publish carries its trace");
    assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"), "{traceparent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_event_is_one_trace_from_the_ingest_read_to_the_gateway() {
    let world = TestWorld::start("traces-ingest");
    let collector = Collector::start().await;
    let otel = otel_env(&collector.endpoint(), "1");
    let gateway = spawn_gateway(&world, otel.clone());
    let mut producer_env = otel;
    producer_env.push(("INGEST_ENABLED".to_owned(), "true".to_owned()));
    let producer = spawn_producer("producer", &world, producer_env);
    gateway.wait_ready().await;
    producer.wait_ready().await;
    let mut subscriber = connect(&gateway.url("/events?topic=ingested"), None).await;

    let mut conn = world.conn().await;
    let _: String = redis::AsyncCommands::xadd(
        &mut conn,
        streamgate_tests::ingest::stream_under(&world.prefix),
        "*",
        &[("topic", "ingested"), ("data", "from upstream")],
    )
    .await
    .unwrap();
    assert_eq!(subscriber.take(1, WAIT).await[0].data, "from upstream");

    wait_until("the gateway's deliver span at the collector", WAIT, || async {
        !collector.named("gateway", "deliver").is_empty()
    })
    .await;
    let ingest = only(collector.named("producer", "ingest"), "ingest");
    let publish = only(collector.named("producer", "publish"), "publish");
    let route = only(collector.named("producer", "route"), "route");
    let deliver = only(collector.named("gateway", "deliver"), "deliver");
    assert!(ingest.parent_span_id.is_empty(), "ingest is the root: {ingest:#?}");
    assert_eq!((&publish.trace_id, &publish.parent_span_id), (&ingest.trace_id, &ingest.span_id));
    assert_eq!((&route.trace_id, &route.parent_span_id), (&ingest.trace_id, &publish.span_id));
    assert_eq!((&deliver.trace_id, &deliver.parent_span_id), (&ingest.trace_id, &route.span_id));
}
