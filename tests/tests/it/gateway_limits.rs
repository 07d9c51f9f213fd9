//! The gateway's admin surface and its limits, against a real gateway on real sockets:
//! the admin listener and its token, streams and request rate per client address (with
//! `X-Forwarded-For` believed only from trusted proxies), the topic cap, the longest
//! stream lifetime, the header-read timeout (slowloris) and oversized request heads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use streamgate_tests::sse_client::{SseStream, connect, connect_with_headers};
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// A GET without `Accept: text/event-stream`: the status and `Retry-After`, without
/// reading an endless body.
async fn plain_get(url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

/// What an `EventSource` refused for a transient reason receives: a 200 whose whole body
/// sets `retry:` and comments, then ends.
async fn assert_retry_later(url: &str, headers: &[(&str, &str)]) {
    let mut request = reqwest::Client::new().get(url).header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(WAIT, response.text()).await.expect("the refusal ends").unwrap();
    assert!(body.starts_with("retry: ") && !body.contains("id:") && !body.contains("data:"), "{body:?}");
}

async fn open(url: &str, headers: &[(&str, &str)]) -> SseStream {
    let stream = connect_with_headers(url, headers).await;
    assert_eq!(stream.status, 200);
    stream
}

#[tokio::test]
async fn admin_is_served_only_on_its_own_port_behind_its_token_and_paginated() {
    let world = TestWorld::start("adminsec");
    let gateway = world.gateway(&[("ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let mut streams = Vec::new();
    for n in 0..5 {
        streams.push(open(&gateway.url(&format!("/events?topic=t{n}")), &[]).await);
    }
    assert_eq!(plain_get(&gateway.url("/admin/connections"), &[]).await.0, 404, "not on the public port");
    let admin = gateway.admin_url("/admin/connections");
    assert_eq!(plain_get(&admin, &[]).await.0, 401);
    assert_eq!(plain_get(&admin, &[("authorization", "Bearer wrong-token-0123456789")]).await.0, 401);
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let page = |query: String| {
        let url = gateway.admin_url(&format!("/admin/connections{query}"));
        let authorization = authorization.clone();
        async move {
            let response =
                reqwest::Client::new().get(url).header("authorization", authorization).send().await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let mut topics = Vec::new();
    let mut after = String::new();
    for expected in [2, 2, 1] {
        let (status, body) = page(format!("?limit=2{after}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["totals"]["open"], 5);
        let listed = body["connections"].as_array().unwrap();
        assert_eq!(listed.len(), expected, "{body}");
        topics.extend(listed.iter().map(|c| c["topics"][0].as_str().unwrap().to_owned()));
        match body["next"].as_u64() {
            Some(next) => after = format!("&after={next}"),
            None => assert_eq!(expected, 1, "only the last page has no next"),
        }
    }
    assert_eq!(topics, ["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(page("?limit=0".into()).await.0, 400);
    let (_, everything) = page(String::new()).await;
    assert_eq!(everything["connections"].as_array().unwrap().len(), 5, "the default page holds them all");

    let without = world.gateway(&[("ADMIN_LISTEN_ADDR", "off")]).await;
    assert_eq!(without.admin_port, None);
}

#[tokio::test]
async fn streams_per_address_are_capped_and_forwarded_for_counts_only_from_trusted_proxies() {
    let world = TestWorld::start("perip");
    // The default TRUSTED_PROXIES trusts loopback: the test client acts as the proxy.
    let gateway = world.gateway(&[("MAX_CONNECTIONS_PER_IP", "2")]).await;
    let url = gateway.url("/events?topic=a");
    let alice = [("x-forwarded-for", "198.51.100.7")];
    let first = open(&url, &alice).await;
    let _second = open(&url, &alice).await;
    assert_retry_later(&url, &alice).await;
    let (status, retry_after) = plain_get(&url, &alice).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    let _bob = open(&url, &[("x-forwarded-for", "198.51.100.8")]).await;
    // A client cannot escape by adding its own entry: the proxy appends the real one.
    assert_eq!(plain_get(&url, &[("x-forwarded-for", "10.9.9.9, 198.51.100.7")]).await.0, 429);
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = plain_get(&url, &alice).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a closed stream never gave its slot back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let untrusting = world.gateway(&[("MAX_CONNECTIONS_PER_IP", "2"), ("TRUSTED_PROXIES", "none")]).await;
    let url = untrusting.url("/events?topic=a");
    let _one = open(&url, &[("x-forwarded-for", "198.51.100.1")]).await;
    let _two = open(&url, &[("x-forwarded-for", "198.51.100.2")]).await;
    assert_eq!(plain_get(&url, &[("x-forwarded-for", "198.51.100.3")]).await.0, 429, "the header is ignored");
}

#[tokio::test]
async fn the_subscribe_rate_per_address_is_a_burst_then_a_steady_rate() {
    let world = TestWorld::start("rate");
    let gateway = world.gateway(&[("SUBSCRIBE_RATE_PER_IP", "0.5"), ("SUBSCRIBE_BURST_PER_IP", "2")]).await;
    let url = gateway.url("/events?topic=a");
    let carol = [("x-forwarded-for", "203.0.113.5")];
    assert_eq!(plain_get(&url, &carol).await.0, 200);
    assert_eq!(plain_get(&url, &carol).await.0, 200);
    let (status, retry_after) = plain_get(&url, &carol).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("2"), "one request every 2 s");
    assert_retry_later(&url, &carol).await;
    assert_eq!(plain_get(&url, &[("x-forwarded-for", "203.0.113.6")]).await.0, 200, "another client");
}

#[tokio::test]
async fn a_request_that_would_exceed_the_topic_cap_is_refused_retryably() {
    let world = TestWorld::start("topiccap");
    let gateway = world.gateway(&[("MAX_TOPICS", "2")]).await;
    let _a = open(&gateway.url("/events?topic=a"), &[]).await;
    let _b = open(&gateway.url("/events?topic=b"), &[]).await;
    assert_retry_later(&gateway.url("/events?topic=c"), &[]).await;
    assert_eq!(plain_get(&gateway.url("/events?topic=a&topic=c"), &[]).await, (503, Some("1".into())));
    let _more_a = open(&gateway.url("/events?topic=a&topic=b"), &[]).await;
    let admin: serde_json::Value =
        reqwest::get(gateway.admin_url("/admin/connections")).await.unwrap().json().await.unwrap();
    assert_eq!(admin["totals"]["topics"], 2, "a refused request created no hub");
}

#[tokio::test]
async fn a_stream_ends_at_its_longest_lifetime_after_an_id_only_block_and_resumes_exactly() {
    let world = TestWorld::start("lifetime");
    let gateway = world.gateway(&[("MAX_STREAM_LIFETIME", "2s")]).await;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(gateway.url("/events?topic=life"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let id = world.publish("life", "one").await;
    let mut raw = String::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.next()).await.expect("the stream ends") {
        raw.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(started.elapsed() >= Duration::from_millis(1900), "ended early: {:?}", started.elapsed());
    assert!(raw.contains("data: one"), "{raw:?}");
    assert!(raw.ends_with(&format!("id: {id}\n\n")), "the stream ends with its cursor: {raw:?}");

    world.publish("life", "two").await;
    let mut resumed = connect(&gateway.url("/events?topic=life"), Some(&id)).await;
    let data: Vec<String> = resumed.take(1, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["two"]);
    resumed.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_closed_after_the_header_read_timeout() {
    let world = TestWorld::start("slowloris");
    let gateway = world.gateway(&[("HEADER_READ_TIMEOUT", "1s")]).await;
    let port = gateway.port;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let started = Instant::now();
        let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        let mut buffer = [0u8; 512];
        for byte in request.iter().chain(std::iter::repeat(&b'a')) {
            if socket.write_all(&[*byte]).is_err() {
                return started.elapsed();
            }
            match socket.read(&mut buffer) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {} // a 408, then the close
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never closed");
        }
        unreachable!()
    })
    .await
    .unwrap();
    assert!(closed_after >= Duration::from_millis(900), "closed too early: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(3), "closed too late: {closed_after:?}");
    // Others are served meanwhile and after.
    assert_eq!(plain_get(&gateway.url("/healthz"), &[]).await.0, 200);
}

#[tokio::test]
async fn a_100_kib_header_gets_431_and_the_gateway_goes_on() {
    let world = TestWorld::start("bighead");
    let gateway = world.gateway(&[]).await;
    let port = gateway.port;
    for header in ["Last-Event-ID", "X-Padding"] {
        let status_line = tokio::task::spawn_blocking(move || {
            let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let request = format!(
                "GET /events?topic=a HTTP/1.1\r\nHost: localhost\r\n{header}: {}\r\n\r\n",
                "7".repeat(100 << 10)
            );
            // The gateway may answer and close before reading it all.
            let _ = socket.write_all(request.as_bytes());
            let mut answer = Vec::new();
            let _ = socket.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
        })
        .await
        .unwrap();
        assert_eq!(status_line, "HTTP/1.1 431 Request Header Fields Too Large", "{header}");
    }
    assert_eq!(plain_get(&gateway.url("/healthz"), &[]).await.0, 200);
}
