//! Hostile input against real processes: one address opening 10,000 streams over its cap,
//! requests for many topics against the hub cap, and invalid UTF-8 in every field a client
//! controls. Each gets its documented answer, and the gateway's memory stays bounded.
//! (Slow headers, trickled bodies and oversized headers: `gateway_limits` and
//! `producer_security`.)

use std::time::Duration;

use streamgate_tests::host::rss_kib;
use streamgate_tests::rig::{Service, free_port};
use streamgate_tests::world::TestWorld;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one raw `GET /events` saw in its first bytes.
enum Answer {
    /// A stream: kept open by the caller.
    Stream(TcpStream),
    /// A `200` that only says `retry:` and ends.
    RetryLater,
    /// Anything else (status line and first bytes).
    Other(String),
}

async fn open_stream(port: u16, path: &str) -> Answer {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let read = tokio::time::timeout(left, socket.read(&mut buffer)).await;
        let text = String::from_utf8_lossy(&seen).into_owned();
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                // The end: a refusal that kept the browser retrying, or something else.
                return if text.starts_with("HTTP/1.1 200")
                    && text.contains("retry: ")
                    && !text.contains("streamgate instance")
                {
                    Answer::RetryLater
                } else {
                    Answer::Other(text)
                };
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&seen);
        if text.contains("streamgate instance") {
            return Answer::Stream(socket);
        }
        if text.contains("\r\n0\r\n\r\n") {
            return if text.contains("retry: ") {
                Answer::RetryLater
            } else {
                Answer::Other(text.into_owned())
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_from_one_address_over_its_cap_are_told_to_retry_and_memory_stays_bounded() {
    let world = TestWorld::start("flood-one-address");
    let port = free_port();
    let env = vec![
        ("REDIS_URL".to_owned(), world.redis.url()),
        ("KEY_PREFIX".to_owned(), world.prefix.clone()),
        ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("MAX_CONNECTIONS_PER_IP".to_owned(), "1000".to_owned()),
        ("SUBSCRIBE_RATE_PER_IP".to_owned(), "0".to_owned()),
    ];
    let gateway = Service::spawn("gateway-flood", "gateway", &[], port, env);
    gateway.wait_ready().await;
    let baseline = rss_kib(gateway.pid());

    let mut streams = Vec::new();
    let (mut refused, mut other) = (0, Vec::new());
    // 100 requests in flight at a time; the accepted streams stay open.
    for round in 0..100 {
        let batch: Vec<_> = (0..100)
            .map(|i| {
                let path = format!("/events?topic=flood-{}", (round * 100 + i) % 50);
                tokio::spawn(async move { open_stream(port, &path).await })
            })
            .collect();
        for request in batch {
            match request.await.unwrap() {
                Answer::Stream(socket) => streams.push(socket),
                Answer::RetryLater => refused += 1,
                Answer::Other(text) => other.push(text),
            }
        }
    }
    let loaded = rss_kib(gateway.pid());
    println!(
        "hostile flood: {} streams, {refused} told to retry, {} other; RSS {} -> {} MiB",
        streams.len(),
        other.len(),
        baseline / 1024,
        loaded / 1024
    );
    assert!(other.is_empty(), "unexpected answers: {:?}", &other[..other.len().min(3)]);
    assert_eq!(streams.len(), 1000, "the cap admits exactly MAX_CONNECTIONS_PER_IP streams");
    assert_eq!(refused, 9000);
    // 1,000 idle streams and 9,000 refusals: well under 64 MiB above the idle baseline.
    assert!(loaded < baseline + 64 * 1024, "RSS {baseline} KiB -> {loaded} KiB");
    // A slot freed is a slot the next request gets.
    drop(streams.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(open_stream(port, "/events?topic=flood-0").await, Answer::Stream(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_asking_for_32_topics_each_stop_at_the_hub_cap() {
    let world = TestWorld::start("hub-cap");
    let gateway = world.gateway(&[("MAX_TOPICS", "100")]).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for connection in 0..10 {
        let topics: Vec<String> = (0..32).map(|t| format!("topic=c{connection}-t{t}")).collect();
        match open_stream(gateway.port, &format!("/events?{}", topics.join("&"))).await {
            Answer::Stream(socket) => accepted.push(socket),
            Answer::RetryLater => refused += 1,
            Answer::Other(text) => panic!("unexpected answer: {text}"),
        }
    }
    assert_eq!(accepted.len(), 3, "3 × 32 = 96 hubs fit under 100, a fourth request would not");
    assert_eq!(refused, 7);
    let admin: serde_json::Value =
        reqwest::get(gateway.admin_url("/admin/connections")).await.unwrap().json().await.unwrap();
    assert_eq!(admin["totals"]["topics"], 96, "a refused request created no hub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_every_field_gets_its_documented_answer() {
    let world = TestWorld::start("utf8");
    let gateway = world
        .gateway(&[
            ("SUBSCRIBE_AUTH", "jwt"),
            ("JWT_SECRET", "a-test-secret-of-at-least-32-bytes!!"),
            ("PUBLIC_TOPIC_PREFIXES", "pub"),
        ])
        .await;
    let producer = world.producer(&[]).await;
    let http = reqwest::Client::new();
    let json_error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert!(body["error"].is_string(), "{body}");
        (status, body["error"].as_str().unwrap().to_owned())
    };

    // Gateway: the query string, Last-Event-ID, the cookie and the bearer token.
    for query in ["topic=%FF", "topic=pub&lastEventId=%C3%28", "topic=pub&%80=x"] {
        let response = http.get(gateway.url(&format!("/events?{query}"))).send().await.unwrap();
        let (status, error) = json_error(response).await;
        assert_eq!((status, error.contains("UTF-8")), (400, true), "{query}: {error}");
    }
    let bad = reqwest::header::HeaderValue::from_bytes(b"5-0~ab\xff").unwrap();
    let response =
        http.get(gateway.url("/events?topic=pub")).header("last-event-id", bad).send().await.unwrap();
    assert_eq!(json_error(response).await.0, 400);
    let bad_cookie = reqwest::header::HeaderValue::from_bytes(b"streamgate_token=\xff\xfe").unwrap();
    let response =
        http.get(gateway.url("/events?topic=private")).header("cookie", bad_cookie).send().await.unwrap();
    assert_eq!(json_error(response).await.0, 401);
    let bad_bearer = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
    let response = http
        .get(gateway.url("/events?topic=private"))
        .header("authorization", bad_bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(response).await.0, 401);

    // Producer: a body that is not UTF-8, a lone surrogate, and the idempotency key.
    let not_utf8: &[u8] = b"{\"topic\":\"t\",\"data\":\"\xff\"}";
    let surrogate: &[u8] = br#"{"topic":"t","data":"\ud800"}"#;
    let bad_key: &[u8] = b"{\"topic\":\"t\",\"data\":\"x\",\"idempotencyKey\":\"\xc3\"}";
    for body in [not_utf8, surrogate, bad_key] {
        let response = producer.post_publish(body.to_vec(), &[("content-type", "application/json")]).await;
        let (status, error) = json_error(response).await;
        assert_eq!(status, 400, "{}: {error}", String::from_utf8_lossy(body));
    }
    // Nothing of it was written.
    let mut conn = world.conn().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(world.keys.history_pattern()).query_async(&mut conn).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
