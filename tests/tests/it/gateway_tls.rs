//! The gateway's own TLS and HTTP/2 (`TLS_CERT_FILE`, `TLS_KEY_FILE`), for deployments with
//! only a layer-4 load balancer: many event streams on one HTTP/2 connection, over TLS
//! (ALPN) and in clear text with prior knowledge (h2c), each delivered in order; HTTP/1.1
//! still served; the per-connection stream limit; idle and silent connections closed; a
//! renewed certificate served without restart; unusable files refused at start-up.

use std::collections::HashMap;
use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use bytes::Bytes;
use gateway::{Application, GatewayConfig};
use h2::client::SendRequest;
use streamgate_tests::certificate::Certificate;
use streamgate_tests::eventsource::{Tally, counted};
use streamgate_tests::gateway_app::TestGateway;
use streamgate_tests::http2;
use streamgate_tests::publish::event;
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STREAMS: usize = 50;
const TOPICS: usize = 5;
const ROUNDS: u64 = 40;
const DELIVERY_DEADLINE: Duration = Duration::from_secs(20);

/// Opens `STREAMS` event streams over `TOPICS` topics on `connection`, publishes `ROUNDS`
/// events per topic (data `"<topic> <seq>"`) in `world` and counts what each stream received.
async fn fifty_streams(connection: &SendRequest<Bytes>, base: &str, world: &TestWorld) -> Tally {
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("h2-{i}")).collect();
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        streams.push(http2::open(connection, base, &topics[i % TOPICS]).await);
    }
    let mut published: HashMap<String, u64> = HashMap::new();
    for seq in 0..ROUNDS {
        let batch: Vec<_> =
            topics.iter().map(|topic| event(topic, None, &format!("{topic} {seq}"))).collect();
        world.publisher.publish(&batch).await.expect("publish");
        for topic in &topics {
            *published.entry(topic.clone()).or_default() += 1;
        }
    }
    let expected = counted(&published);
    http2::wait_delivered(&streams, &expected, DELIVERY_DEADLINE).await;
    http2::tally(&streams, &expected)
}

fn assert_complete(scenario: &str, tally: Tally) {
    println!("{scenario}: {tally}");
    assert_eq!(tally.published, STREAMS as u64 * ROUNDS, "{scenario}");
    assert_eq!((tally.missing, tally.duplicates, tally.out_of_order), (0, 0, 0), "{scenario}: {tally}");
}

/// A gateway in `world` serving TLS with `certificate`.
async fn tls_gateway(world: &TestWorld, certificate: &Certificate, extra: &[(&str, &str)]) -> TestGateway {
    let mut overrides = vec![
        ("TLS_CERT_FILE", certificate.cert.to_str().unwrap()),
        ("TLS_KEY_FILE", certificate.key.to_str().unwrap()),
    ];
    overrides.extend_from_slice(extra);
    world.gateway(&overrides).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tls_connection_carries_fifty_event_streams_over_http2_each_in_order() {
    let world = TestWorld::start("tls-h2");
    let dir = tempfile::tempdir().unwrap();
    let certificate = Certificate::self_signed(dir.path(), "gateway");
    let gateway = tls_gateway(&world, &certificate, &[]).await;

    // `connect` fails unless ALPN chose h2 and the certificate verifies for the name.
    let address = format!("127.0.0.1:{}", gateway.port);
    let connection = http2::connect(&address, "localhost", &certificate.cert).await;
    let base = format!("https://localhost:{}", gateway.port);
    let tally = fifty_streams(&connection, &base, &world).await;
    assert_complete("one TLS connection, HTTP/2, 50 streams", tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cleartext_http2_connection_with_prior_knowledge_carries_fifty_event_streams() {
    let world = TestWorld::start("h2c");
    let gateway = world.gateway(&[]).await;

    let connection = http2::connect_cleartext(&format!("127.0.0.1:{}", gateway.port)).await;
    let tally = fifty_streams(&connection, &gateway.url(""), &world).await;
    assert_complete("one h2c connection, 50 streams", tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_events_that_are_ready_at_once_share_data_frames() {
    let world = TestWorld::start("h2-coalesce");
    let gateway = world.gateway(&[]).await;
    let cursor = world.publish("burst", "0").await;
    let events: Vec<_> = (1..200).map(|n| event("burst", None, &n.to_string())).collect();
    world.publisher.publish(&events).await.unwrap();

    // A client resuming 199 events behind: the replay's events are ready together.
    let connection = http2::connect_cleartext(&format!("127.0.0.1:{}", gateway.port)).await;
    let request = http::Request::get(gateway.url("/events?topic=burst"))
        .header("accept", "text/event-stream")
        .header("last-event-id", cursor.as_str())
        .body(())
        .unwrap();
    let mut sender = connection.ready().await.unwrap();
    let (response, _) = sender.send_request(request, true).unwrap();
    let mut body = response.await.unwrap().into_body();
    let (mut frames, mut text) = (0, String::new());
    let complete = |text: &str| text.contains("\ndata: 199\n");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !complete(&text) {
            let frame = body.data().await.expect("the stream goes on").unwrap();
            let _ = body.flow_control().release_capacity(frame.len());
            frames += 1;
            text.push_str(std::str::from_utf8(&frame).unwrap());
        }
    })
    .await
    .expect("the replay within 10 s");
    let data: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("data: ")).collect();
    let expected: Vec<String> = (1..200).map(|n| n.to_string()).collect();
    assert_eq!(data, expected, "every missed event once, in order");
    println!("h2 coalescing: 199 replayed events in {frames} DATA frames");
    assert!(frames <= 20, "the replay's events shared frames: {frames} frames for 199 events");
}

/// `GET /readyz` over TLS offering only `http/1.1` by ALPN: the status line.
async fn readyz_over_http1(port: u16, ca: &Certificate) -> String {
    let pem = std::fs::read(&ca.cert).unwrap();
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&pem).unwrap())
        .request_alpns(&["http/1.1"])
        .build()
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls =
        tokio_native_tls::TlsConnector::from(connector).connect("localhost", tcp).await.expect("handshake");
    tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn http1_is_still_served_over_tls_and_plain_http_is_not_answered_on_the_tls_port() {
    let world = TestWorld::start("tls-h1");
    let dir = tempfile::tempdir().unwrap();
    let certificate = Certificate::self_signed(dir.path(), "gateway");
    let gateway = tls_gateway(&world, &certificate, &[]).await;

    assert_eq!(readyz_over_http1(gateway.port, &certificate).await, "HTTP/1.1 200 OK");
    // Clear text on the TLS port is a failed handshake, never a response.
    let plain = reqwest::get(gateway.url("/readyz")).await;
    assert!(plain.is_err(), "a clear-text request on the TLS port got {plain:?}");
}

#[tokio::test]
async fn an_http2_connection_gets_at_most_its_stream_limit_at_once() {
    let world = TestWorld::start("h2-limit");
    let gateway = world.gateway(&[("HTTP2_MAX_CONCURRENT_STREAMS", "3")]).await;
    let connection = http2::connect_cleartext(&format!("127.0.0.1:{}", gateway.port)).await;
    let base = gateway.url("");

    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(http2::open(&connection, &base, &format!("limit-{i}")).await);
    }
    // The server's SETTINGS say 3: a fourth stream waits for one of them to end.
    let fourth =
        tokio::time::timeout(Duration::from_millis(500), http2::open(&connection, &base, "limit-3")).await;
    assert!(fourth.is_err(), "a fourth stream opened beside three with HTTP2_MAX_CONCURRENT_STREAMS=3");
    http2::close(streams.pop().unwrap());
    tokio::time::timeout(Duration::from_secs(10), http2::open(&connection, &base, "limit-3"))
        .await
        .expect("the fourth stream opens once one of the three ended");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_not_one_with_a_stream_open() {
    let world = TestWorld::start("h2-idle");
    let gateway = world.gateway(&[("HEADER_READ_TIMEOUT", "1s")]).await;
    let address = format!("127.0.0.1:{}", gateway.port);

    // No stream: closed (GOAWAY) within a few header read timeouts.
    let idle = http2::connect_cleartext(&address).await;
    wait_until("the idle HTTP/2 connection is closed", Duration::from_secs(10), || {
        let idle = idle.clone();
        async move { idle.ready().await.is_err() }
    })
    .await;

    // An open event stream keeps its connection: it still delivers after 3 s.
    let busy = http2::connect_cleartext(&address).await;
    let stream = http2::open(&busy, &gateway.url(""), "kept").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    world.publish("kept", "kept 0").await;
    wait_until("the stream on a busy connection receives", Duration::from_secs(10), || {
        let received = stream.seqs.lock().unwrap().clone();
        async move { received == [0] }
    })
    .await;
}

/// Whether a connection that sends nothing is closed by the server within `within`.
async fn closed_when_silent(port: u16, within: Duration) -> bool {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buffer = [0u8; 64];
    matches!(tokio::time::timeout(within, tcp.read(&mut buffer)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout_with_and_without_tls() {
    let world = TestWorld::start("silent");
    let dir = tempfile::tempdir().unwrap();
    let certificate = Certificate::self_signed(dir.path(), "gateway");
    let plain = world.gateway(&[("HEADER_READ_TIMEOUT", "1s")]).await;
    let tls = tls_gateway(&world, &certificate, &[("HEADER_READ_TIMEOUT", "1s")]).await;
    assert!(closed_when_silent(plain.port, Duration::from_secs(10)).await, "clear text");
    assert!(closed_when_silent(tls.port, Duration::from_secs(10)).await, "TLS handshake never started");
}

/// The certificate a TLS handshake with `port` presents (DER), trusting `ca`.
async fn presented_certificate(port: u16, ca: &Certificate) -> Option<Vec<u8>> {
    let pem = std::fs::read(&ca.cert).unwrap();
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_native_tls::TlsConnector::from(connector).connect("localhost", tcp).await.ok()?;
    tls.get_ref().peer_certificate().ok().flatten().map(|certificate| certificate.to_der().unwrap())
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let world = TestWorld::start("tls-reload");
    let dir = tempfile::tempdir().unwrap();
    let served = Certificate::self_signed(dir.path(), "served");
    let gateway = tls_gateway(&world, &served, &[("TLS_RELOAD_INTERVAL", "1s")]).await;
    let first = presented_certificate(gateway.port, &served).await.expect("the first certificate verifies");
    let original = Certificate { cert: dir.path().join("original.crt"), key: served.key.clone() };
    std::fs::copy(&served.cert, &original.cert).unwrap();

    // A renewal written as a broken pair (the new certificate, the old key): ignored.
    let renewed = Certificate::self_signed_ec_sec1(dir.path(), "renewed");
    std::fs::copy(&renewed.cert, &served.cert).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        presented_certificate(gateway.port, &original).await,
        Some(first.clone()),
        "a mismatched pair is not served"
    );

    // The key follows (an EC key in SEC1 form): the new pair is served, no restart.
    std::fs::copy(&renewed.key, &served.key).unwrap();
    wait_until("the renewed certificate is presented", Duration::from_secs(15), || async {
        presented_certificate(gateway.port, &renewed).await.is_some_and(|der| der != first)
    })
    .await;
}

#[tokio::test]
async fn unusable_tls_settings_stop_the_gateway_with_the_reason() {
    let world = TestWorld::start("tls-bad");
    let dir = tempfile::tempdir().unwrap();
    let good = Certificate::self_signed(dir.path(), "good");
    let other = Certificate::self_signed(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");

    // One without the other: a configuration error naming both.
    let error = GatewayConfig::with_overrides(&[("TLS_CERT_FILE", good.cert.to_str().unwrap())]).unwrap_err();
    assert!(error.to_string().contains("TLS_KEY_FILE"), "{error}");

    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let cases = [
        (path(&missing), path(&good.key), "missing.pem"),
        (path(&garbage), path(&good.key), "no PEM certificate"),
        (path(&good.cert), path(&garbage), "no usable PEM private key"),
        (path(&good.cert), path(&other.key), "does not go with"),
    ];
    for (cert, key, expected) in cases {
        let config = GatewayConfig::with_overrides(&[
            ("REDIS_URL", &world.redis.url()),
            ("KEY_PREFIX", &world.prefix),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("ADMIN_LISTEN_ADDR", "off"),
            ("TLS_CERT_FILE", &cert),
            ("TLS_KEY_FILE", &key),
        ])
        .unwrap();
        let error = match Application::build(config).await {
            Ok(_) => panic!("the gateway started with TLS_CERT_FILE={cert} TLS_KEY_FILE={key}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("cannot serve TLS") && error.contains(expected), "{expected}: {error}");
        // Refused before it claimed anything in Redis.
        let mut connection = world.conn().await;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", world.prefix)).query_async(&mut connection).await.unwrap();
        assert!(keys.is_empty(), "{expected}: wrote {keys:?}");
    }
}
