//! The event stream on the wire, as a raw HTTP/1 client sees it: the gateway serves
//! `GET /events` over clear-text HTTP/1.1 from the socket (`gateway/src/http1_stream.rs`)
//! and hands every other request to hyper. These scenarios try to break that split: a head
//! that arrives in pieces, an HTTP/1.0 client, a client that leaves while its stream is
//! idle, bytes after the head, and the requests the lean path does not model, on the same
//! port.

use std::time::Duration;

use streamgate_tests::gateway_app::TestGateway;
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gateway_metrics::{sample, scrape};

const OPEN: &str = "streamgate_gateway_connections_open";

/// A raw connection and everything it has received so far.
struct Raw {
    socket: TcpStream,
    seen: Vec<u8>,
}

async fn raw(gateway: &TestGateway) -> Raw {
    let socket = TcpStream::connect(("127.0.0.1", gateway.port)).await.expect("connect");
    Raw { socket, seen: Vec::new() }
}

impl Raw {
    async fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.expect("write");
    }

    /// Reads until `done` holds for everything received so far, the connection closes,
    /// or 20 s pass; returns everything received and whether it closed.
    async fn read_until(&mut self, done: impl Fn(&str) -> bool) -> (String, bool) {
        let mut buffer = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if done(&text) {
                return (text, false);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.socket.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (text, true),
                Ok(Ok(n)) => self.seen.extend_from_slice(&buffer[..n]),
                Err(_) => panic!("nothing decisive in 20 s; got {text:?}"),
            }
        }
    }

    /// Reads until the stream has its cursor.
    async fn until_cursor(&mut self) {
        let (text, closed) = self.read_until(|text| text.contains("\nid: ")).await;
        assert!(!closed, "the stream is open: {text:?}");
    }
}

/// The head and the de-chunked body of an HTTP/1.1 response.
fn dechunk(response: &str) -> (String, String) {
    let (head, mut rest) = response.split_once("\r\n\r\n").expect("a complete head");
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hexadecimal chunk size");
        if size == 0 {
            assert_eq!(after, "\r\n", "nothing after the last chunk");
            return (head.to_owned(), body);
        }
        body.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n", "a chunk ends with CRLF");
        rest = &after[size + 2..];
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn data_lines(body: &str) -> Vec<&str> {
    body.lines().filter_map(|line| line.strip_prefix("data: ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_in_pieces_gets_a_chunked_stream_that_carries_every_event_and_ends_cleanly() {
    let world = TestWorld::start("wire-chunked");
    let gateway = world.gateway(&[("MAX_STREAM_LIFETIME", "3s")]).await;
    let mut socket = raw(&gateway).await;
    let head = "GET /events?topic=wire HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\n\r\n";
    for piece in [&head[..7], &head[7..30], &head[30..]] {
        socket.send(piece.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    socket.until_cursor().await;
    for n in 0..50 {
        world.publish("wire", &format!("event {n}")).await;
    }

    let (response, closed) = socket.read_until(|_| false).await;
    assert!(closed, "the stream ends at its lifetime");
    let (head, body) = dechunk(&response);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&head, "connection"), Some("close"));
    assert_eq!(header(&head, "x-streamgate-instance"), Some(gateway.instance.as_str()));
    assert!(header(&head, "date").is_some_and(|date| date.ends_with(" GMT")), "{head}");
    let expected: Vec<String> = (0..50).map(|n| format!("event {n}")).collect();
    assert_eq!(data_lines(&body), expected, "every event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_a_body_that_ends_with_the_connection() {
    let world = TestWorld::start("wire-http10");
    let gateway = world.gateway(&[("MAX_STREAM_LIFETIME", "2s")]).await;
    let mut socket = raw(&gateway).await;
    socket.send(b"GET /events?topic=old HTTP/1.0\r\nHost: gateway\r\n\r\n").await;
    socket.until_cursor().await;
    world.publish("old", "one").await;

    let (response, closed) = socket.read_until(|_| false).await;
    assert!(closed);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(head, "transfer-encoding"), None, "no chunks for HTTP/1.0: {head}");
    assert_eq!(header(head, "content-length"), None);
    assert!(body.starts_with("retry: "), "{body}");
    assert_eq!(data_lines(body), ["one"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_an_idle_stream_is_let_go_before_any_heartbeat() {
    let world = TestWorld::start("wire-leave");
    let gateway = world.gateway(&[("HEARTBEAT_INTERVAL", "5m")]).await;
    let metrics = gateway.admin_url("/metrics");
    let mut socket = raw(&gateway).await;
    socket.send(b"GET /events?topic=idle HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    socket.until_cursor().await;
    assert_eq!(sample(&scrape(&metrics).await, OPEN), Some(1.0));

    drop(socket);
    wait_until("the stream ends with its client", Duration::from_secs(5), || async {
        sample(&scrape(&metrics).await, OPEN) == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_head_do_not_disturb_the_stream() {
    let world = TestWorld::start("wire-extra");
    let gateway = world.gateway(&[]).await;
    let mut socket = raw(&gateway).await;
    socket
        .send(b"GET /events?topic=x HTTP/1.1\r\nHost: gateway\r\n\r\nGET /healthz HTTP/1.1\r\n\r\njunk")
        .await;
    socket.until_cursor().await;
    socket.send(b"more junk\r\n\r\n").await;
    world.publish("x", "still here").await;
    let (text, closed) = socket.read_until(|text| text.contains("data: still here\n")).await;
    assert!(!closed, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_after_its_head_is_closed() {
    let world = TestWorld::start("wire-flood");
    let gateway = world.gateway(&[]).await;
    let mut socket = raw(&gateway).await;
    socket.send(b"GET /events?topic=flood HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    socket.until_cursor().await;
    // Far more than a few pipelined requests; the gateway stops reading and closes.
    let junk = vec![b'x'; 16 * 1024];
    let mut closed_while_writing = false;
    for _ in 0..64 {
        if socket.socket.write_all(&junk).await.is_err() {
            closed_while_writing = true;
            break;
        }
    }
    let closed = closed_while_writing || socket.read_until(|_| false).await.1;
    assert!(closed, "the connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_stream_path_does_not_model_are_answered_on_the_same_port() {
    let world = TestWorld::start("wire-other");
    let gateway = world.gateway(&[]).await;

    // Keep-alive: a short request first, then an event stream on the same connection.
    let mut socket = raw(&gateway).await;
    socket.send(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    let (text, closed) = socket.read_until(|text| text.contains("\"ok\"")).await;
    assert!(!closed && text.starts_with("HTTP/1.1 200"), "{text}");
    socket.send(b"GET /events?topic=k HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    socket.until_cursor().await;
    world.publish("k", "kept alive").await;
    socket.read_until(|text| text.contains("data: kept alive\n")).await;

    // A body on the request, and a HEAD: hyper answers them.
    let mut socket = raw(&gateway).await;
    socket.send(b"GET /events?topic=b HTTP/1.1\r\nHost: gateway\r\nContent-Length: 3\r\n\r\nabc").await;
    let (text, _) = socket.read_until(|text| text.contains("\nid: ")).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut socket = raw(&gateway).await;
    socket.send(b"HEAD /events?topic=h HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n").await;
    let (text, _) = socket.read_until(|text| text.contains("\r\n\r\n")).await;
    assert!(text.starts_with("HTTP/1.1 "), "{text}");

    // A bad request on the stream path: its JSON error, then the close.
    let mut socket = raw(&gateway).await;
    socket.send(b"GET /events HTTP/1.1\r\nHost: gateway\r\n\r\n").await;
    let (response, closed) = socket.read_until(|_| false).await;
    assert!(closed);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert_eq!(header(head, "content-length").map(str::to_owned), Some(body.len().to_string()));
    let lengths =
        head.lines().filter(|line| line.to_ascii_lowercase().starts_with("content-length:")).count();
    assert_eq!(lengths, 1, "one content-length: {head}");
    let error: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
    assert!(error["error"].as_str().is_some_and(|message| message.contains("no topic")), "{error}");
}
