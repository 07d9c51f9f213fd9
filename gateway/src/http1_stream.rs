//! Event streams on clear-text HTTP/1.1 connections, served straight from the socket.
//!
//! Most connections a gateway holds are idle `GET /events` streams over HTTP/1.1 (a TLS
//! terminating load balancer in front). Under hyper each of them keeps a read buffer, a
//! write buffer and its dispatcher's state for as long as it lives, about 12 KiB of a
//! stream's ~20 (S1 in docs/BENCHMARKS.md). Once such a request's head is parsed, nothing
//! more is read from the client but its close, and what is written is the response head
//! and then the encoded frames the topic hubs already hold as shared `Bytes`. So this
//! module reads the first request head itself (`httparse`), and when it is a plain
//! `GET /events…`, runs the same axum router on it and writes the response with `writev`
//! from the shared frames: no buffer is held between events, and every frame pending for
//! the connection goes out in one system call.
//!
//! Every other first request (and HTTP/2 with prior knowledge) goes to hyper, with the
//! bytes already read handed back first ([`Prefixed`]); so do requests this path does not
//! model: a body, `Expect`, `Upgrade`, a head hyper would refuse. A served event stream
//! ends the connection (`connection: close`): `EventSource` opens a new one for its next
//! request anyway.
//!
//! Framing: `transfer-encoding: chunked` for HTTP/1.1 (one chunk per `writev`), the
//! connection's close for HTTP/1.0; `content-length` for a body of known length (an error
//! answer).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

/// HTTP/2's connection preface: a clear-text client that starts with it speaks HTTP/2
/// with prior knowledge (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header lines a request head may have on this path; a head with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// How much is read at a time while a request head comes in.
const READ_STEP: usize = 1024;

/// Frames gathered into one `writev` at most (IOV_MAX is 1024; this keeps the slice array
/// on the stack), and the bytes at which a batch is written without waiting for more.
const MAX_BATCH_FRAMES: usize = 32;
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Bytes a client may send after its request head while its stream is served (a few
/// pipelined requests, which are not answered). Past this the connection is closed: a
/// client streaming data at a gateway would otherwise keep one of its threads reading.
const MAX_DISCARDED_BYTES: usize = 64 * 1024;

/// What a clear-text connection's first bytes are.
pub enum FirstRequest {
    /// `GET /events…` over HTTP/1.x, which this module serves (boxed: the connection's
    /// task keeps room for this value for as long as it lives).
    Events(Box<EventsRequest>),
    /// HTTP/2 with prior knowledge: the bytes read so far, for hyper.
    Http2(Bytes),
    /// Any other HTTP/1 request, or something hyper should answer: the bytes read so far.
    Http1(Bytes),
}

/// A parsed `GET /events…` request.
pub struct EventsRequest {
    request: Request<Body>,
    /// HTTP/1.0 clients get a close-delimited body rather than chunks.
    chunked: bool,
}

/// Reads until the first request head is complete and says what it is; `None` when the
/// client closes or the read fails first. The caller bounds the time it may take (the
/// header read timeout); a head that grows past `max_head` bytes goes to hyper, which
/// answers `431`.
pub async fn read_first(stream: &mut TcpStream, max_head: usize) -> Option<FirstRequest> {
    let mut read = BytesMut::with_capacity(READ_STEP);
    loop {
        if read.len() >= max_head {
            return Some(FirstRequest::Http1(read.freeze()));
        }
        if read.capacity() == read.len() {
            read.reserve(READ_STEP.min(max_head - read.len()));
        }
        match stream.read_buf(&mut read).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let preface = read.len().min(H2_PREFACE.len());
        if read[..preface] == H2_PREFACE[..preface] {
            if read.len() >= H2_PREFACE.len() {
                return Some(FirstRequest::Http2(read.freeze()));
            }
            continue;
        }
        match parse_events_head(&read) {
            Head::Partial => continue,
            Head::Events(request) => return Some(FirstRequest::Events(Box::new(request))),
            Head::Other => return Some(FirstRequest::Http1(read.freeze())),
        }
    }
}

#[expect(clippy::large_enum_variant, reason = "a short-lived value, never stored")]
enum Head {
    Partial,
    Events(EventsRequest),
    Other,
}

/// Parses a request head, taking it for this path only when it is a plain `GET /events`
/// or `GET /events?…` without a body.
fn parse_events_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    }
    let (Some("GET"), Some(path), Some(minor)) = (head.method, head.path, head.version) else {
        return Head::Other;
    };
    if !(path == "/events" || path.starts_with("/events?")) {
        return Head::Other;
    }
    let Ok(uri) = Uri::try_from(path) else { return Head::Other };
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let map = request.headers_mut();
    for header in head.headers.iter() {
        let name = header.name;
        let bodyless = name.eq_ignore_ascii_case("content-length") && header.value == b"0";
        if !bodyless
            && ["content-length", "transfer-encoding", "expect", "upgrade"]
                .iter()
                .any(|refused| name.eq_ignore_ascii_case(refused))
        {
            return Head::Other;
        }
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(header.value))
        else {
            return Head::Other;
        };
        map.append(name, value);
    }
    Head::Events(EventsRequest { request, chunked: minor == 1 })
}

/// A response ready to be written: its head, with the framing this path chose, and its
/// body.
pub struct Answer {
    head: Bytes,
    body: Body,
    chunked: bool,
}

/// Answers `request` through `router`. Await it boxed: the handler's future
/// (authorization, the join) is larger than what the stream needs afterwards, and held
/// inline it would stay in the connection's task for the stream's life.
pub async fn respond(router: Router, remote: SocketAddr, request: Box<EventsRequest>) -> Answer {
    let EventsRequest { mut request, chunked } = *request;
    request.extensions_mut().insert(ConnectInfo(remote));
    let Ok(response) = router.oneshot(request).await;
    let length = response.body().size_hint().exact();
    let chunked = chunked && length.is_none();
    let head = response_head(&response, length, chunked);
    Answer { head, body: response.into_body(), chunked }
}

/// Writes `answer` on `stream`, then closes it.
pub async fn send(mut stream: TcpStream, answer: Answer) {
    let Answer { head, body, chunked } = answer;
    // Finished or not (the client left, a write failed), the connection ends here.
    let _ = write_body(&mut stream, head, body, chunked).await;
    let _ = stream.shutdown().await;
}

/// The status line and headers of `response`, with the framing this path chose.
fn response_head(response: &Response<Body>, length: Option<u64>, chunked: bool) -> Bytes {
    let status = response.status();
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    // The framing is this path's to choose: whatever the handler set is replaced.
    let framing = [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION];
    for (name, value) in response.headers().iter().filter(|(name, _)| !framing.contains(name)) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\nconnection: close\r\n");
    if let Some(length) = length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    } else if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.freeze()
}

/// Writes the head and then the body's frames as they come, every frame that is ready
/// at once in one `writev`, until the body ends or the client closes. A client's close
/// is noticed while the stream is idle (a read of zero bytes), so its stream ends then,
/// not at the next heartbeat's failed write.
async fn write_body(stream: &mut TcpStream, head: Bytes, mut body: Body, chunked: bool) -> io::Result<()> {
    let mut batch = Batch::starting_with(head, chunked);
    let mut ended = false;
    let mut discarded = 0;
    loop {
        // Everything the body has ready now joins the batch.
        while !ended && !batch.full() {
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => batch.push(frame.into_data().unwrap_or_default()),
                Some(Some(Err(_)) | None) => ended = true,
                None => break,
            }
        }
        if !batch.is_empty() {
            batch.write(stream).await?;
        }
        if ended {
            if chunked {
                stream.write_all(b"0\r\n\r\n").await?;
            }
            return Ok(());
        }
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => batch.push(frame.into_data().unwrap_or_default()),
                Some(Err(_)) | None => ended = true,
            },
            readable = stream.readable() => {
                readable?;
                // Nothing more is expected from the client: discard what it sends (up to
                // a bound), and end at its close.
                let mut discard = [0u8; 256];
                match stream.try_read(&mut discard) {
                    Ok(0) => return Ok(()),
                    Ok(read) => {
                        discarded += read;
                        if discarded > MAX_DISCARDED_BYTES {
                            return Err(io::Error::other("the client kept sending after its request"));
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

/// Frames waiting for one `writev`: in chunked framing, all of them as one chunk.
struct Batch {
    /// The response head (first batch only), then the frames.
    parts: Vec<Bytes>,
    /// Parts before the frames: the head, until it is written.
    leading: usize,
    chunked: bool,
    /// Bytes of frames in `parts`.
    data_bytes: usize,
}

impl Batch {
    fn starting_with(head: Bytes, chunked: bool) -> Batch {
        Batch { parts: vec![head], leading: 1, chunked, data_bytes: 0 }
    }

    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.data_bytes += data.len();
            self.parts.push(data);
        }
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn full(&self) -> bool {
        self.parts.len() >= MAX_BATCH_FRAMES || self.data_bytes >= MAX_BATCH_BYTES
    }

    /// Writes every part (the frames framed as one chunk) and empties the batch.
    async fn write(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.chunked && self.data_bytes > 0 {
            self.parts.insert(self.leading, Bytes::from(format!("{:x}\r\n", self.data_bytes)));
            self.parts.push(Bytes::from_static(b"\r\n"));
        }
        let result = write_all_vectored(stream, &self.parts).await;
        self.parts.clear();
        self.leading = 0;
        self.data_bytes = 0;
        result
    }
}

/// Writes every buffer of `parts`, in order, in as few `writev` calls as the socket takes.
async fn write_all_vectored(stream: &mut TcpStream, parts: &[Bytes]) -> io::Result<()> {
    // The first part not fully written, and how much of it was.
    let (mut index, mut offset) = (0, 0);
    std::future::poll_fn(|cx| {
        loop {
            while index < parts.len() && offset == parts[index].len() {
                index += 1;
                offset = 0;
            }
            if index == parts.len() {
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); MAX_BATCH_FRAMES + 3];
            let count = (parts.len() - index).min(slices.len());
            for (at, slice) in slices[..count].iter_mut().enumerate() {
                let part = &parts[index + at];
                *slice = IoSlice::new(if at == 0 { &part[offset..] } else { part });
            }
            let mut written = match Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            while written > 0 {
                let step = written.min(parts[index].len() - offset);
                offset += step;
                written -= step;
                if offset == parts[index].len() {
                    index += 1;
                    offset = 0;
                }
            }
        }
    })
    .await
}

/// An IO whose first reads return bytes already read from it: a connection's first bytes,
/// read here to decide its path, handed to hyper.
pub struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    /// `io`, whose reads start with `prefix`.
    pub fn new(prefix: Bytes, io: T) -> Prefixed<T> {
        Prefixed { prefix, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takes_this_path(head: &str) -> bool {
        matches!(parse_events_head(head.as_bytes()), Head::Events(_))
    }

    #[test]
    fn only_a_plain_get_of_the_event_path_is_served_from_the_socket() {
        let events = [
            "GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /events HTTP/1.0\r\n\r\n",
            "GET /events?topic=a HTTP/1.1\r\nContent-Length: 0\r\nLast-Event-ID: 1-0~e\r\n\r\n",
        ];
        for head in events {
            assert!(takes_this_path(head), "{head:?}");
        }
        let others = [
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /eventsource HTTP/1.1\r\n\r\n",
            "HEAD /events?topic=a HTTP/1.1\r\n\r\n",
            "POST /events?topic=a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "GET /events?topic=a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /events?topic=a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /events?topic=a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /events?topic=a HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET http://host/events?topic=a HTTP/1.1\r\n\r\n",
            "GET /events?topic=a HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ];
        for head in others {
            assert!(matches!(parse_events_head(head.as_bytes()), Head::Other), "{head:?}");
        }
        assert!(matches!(parse_events_head(b"GET /events?topic=a HTTP/1.1\r\nHost"), Head::Partial));
        let many: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: y\r\n")).collect();
        let crowded = format!("GET /events?topic=a HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse_events_head(crowded.as_bytes()), Head::Other), "hyper takes many headers");
    }

    #[test]
    fn the_request_keeps_its_target_version_and_every_header() {
        let head =
            "GET /events?topic=a&topic=b HTTP/1.0\r\nAccept: text/event-stream\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let Head::Events(events) = parse_events_head(head.as_bytes()) else { panic!("served here") };
        assert!(!events.chunked);
        let request = events.request;
        assert_eq!(request.uri().path(), "/events");
        assert_eq!(request.uri().query(), Some("topic=a&topic=b"));
        assert_eq!(request.version(), Version::HTTP_10);
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[tokio::test]
    async fn prefixed_reads_return_the_bytes_read_before_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = Prefixed::new(Bytes::from_static(b"hello"), server);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_socket_takes_arrives_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let parts: Vec<Bytes> =
            (0..40u8).map(|n| Bytes::from(vec![b'a' + n % 26; 50_000 + usize::from(n)])).collect();
        let expected: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.unwrap();
            got == expected
        });
        write_all_vectored(&mut server, &parts).await.unwrap();
        assert!(reader.await.unwrap(), "the bytes arrive as written");
    }
}
