//! HTTP/2 clients for many event streams on one connection, as a browser opens them (it
//! allows only six HTTP/1.1 connections per host, so a page with more `EventSource`s than
//! that needs HTTP/2): over TLS with ALPN, or in clear text with prior knowledge (h2c).
//! Built on the `h2` crate directly, so that "one connection" holds by construction
//! rather than by a client's pooling.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use h2::client::SendRequest;
use tokio::net::TcpStream;

use crate::eventsource::Tally;
use crate::last_event_id::LastEventId;

/// One HTTP/2 connection over TLS to `address` (`host:port`), verifying the server's
/// certificate against `ca` (PEM) for the name `server_name`. Panics unless ALPN chose h2.
pub async fn connect(address: &str, server_name: &str, ca: &Path) -> SendRequest<Bytes> {
    let pem = std::fs::read(ca).unwrap_or_else(|error| panic!("cannot read {}: {error}", ca.display()));
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&pem).expect("a PEM certificate"))
        .request_alpns(&["h2"])
        .build()
        .expect("a TLS connector");
    let tcp = TcpStream::connect(address).await.expect("the HTTPS port accepts");
    let tls = tokio_native_tls::TlsConnector::from(connector)
        .connect(server_name, tcp)
        .await
        .expect("a TLS handshake with a certificate the CA signed for the name");
    let protocol = tls.get_ref().negotiated_alpn().expect("ALPN");
    assert_eq!(protocol.as_deref(), Some(&b"h2"[..]), "the load balancer speaks HTTP/2 over TLS");
    handshake(tls).await
}

/// One HTTP/2 connection in clear text to `address` (`host:port`), with prior knowledge.
pub async fn connect_cleartext(address: &str) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(address).await.expect("the port accepts");
    handshake(tcp).await
}

async fn handshake<T>(io: T) -> SendRequest<Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Every event is a DATA frame of its own, tens of bytes. h2 (0.4.20 on) closes a
    // connection with ENHANCE_YOUR_CALM ("too_many_data_frames") once its small frames
    // not yet read by the application exceed a budget, by default ~150 events' worth: a
    // reader lagging on a loaded machine then loses all fifty streams at once. A budget of
    // the whole connection window in one-byte frames is never reached.
    let window: u32 = 1 << 20;
    let (send, connection) = h2::client::Builder::new()
        .initial_connection_window_size(window)
        .data_frame_budget(window as usize * 256)
        .handshake(io)
        .await
        .expect("an HTTP/2 handshake");
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("the HTTP/2 connection ended with an error: {error}");
        }
    });
    send
}

/// One `/events` stream on a shared connection: the sequence numbers it received (data is
/// `"<topic> <seq>"`), filled in by a task of its own.
pub struct Stream {
    /// Its topic.
    pub topic: String,
    /// Sequence numbers in arrival order.
    pub seqs: Arc<Mutex<Vec<u64>>>,
    reader: tokio::task::JoinHandle<()>,
}

/// Ends `stream` from the client's side (the body is dropped: `RST_STREAM`).
pub fn close(stream: Stream) {
    stream.reader.abort();
}

/// Opens `GET /events?topic=<topic>` on `connection` to `base` (`https://host:port` or
/// `http://host:port`); returns once the stream's cursor arrived (its first `id:`, which
/// the gateway sends once the subscription is in place: every event published after that
/// is owed to it). That is in the first bytes unless Redis is slower than the gateway's
/// join wait, when the headers come first.
pub async fn open(connection: &SendRequest<Bytes>, base: &str, topic: &str) -> Stream {
    let request = http::Request::get(format!("{base}/events?topic={topic}"))
        .header("accept", "text/event-stream")
        .body(())
        .expect("a request");
    let mut connection = connection.clone().ready().await.expect("the connection takes a new stream");
    let (response, _) = connection.send_request(request, true).expect("a new stream");
    let response = response.await.expect("a response");
    assert_eq!(response.status(), 200, "GET /events?topic={topic} over HTTP/2");
    let body = response.into_body();
    let (started, has_cursor) = tokio::sync::oneshot::channel();
    let mut started = Some(started);
    let mut cursor = LastEventId::default();
    let chunks = futures_util::stream::unfold(body, |mut body| async move {
        let chunk = body.data().await?;
        if let Ok(chunk) = &chunk {
            // HTTP/2 flow control: give the window back as the data is consumed.
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Some((chunk, body))
    })
    .inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            cursor.feed(chunk);
            if cursor.get().is_some()
                && let Some(started) = started.take()
            {
                let _ = started.send(());
            }
        }
    });
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seqs);
    let reader_topic = topic.to_owned();
    let reader = tokio::spawn(async move {
        let mut events = Box::pin(chunks.eventsource());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if let Some(seq) = event.data.split(' ').nth(1).and_then(|seq| seq.parse().ok()) {
                        sink.lock().expect("seqs lock").push(seq);
                    }
                }
                Err(error) => {
                    eprintln!("stream of {reader_topic}: ended with an error: {error}");
                    break;
                }
            }
        }
    });
    match tokio::time::timeout(CURSOR_DEADLINE, has_cursor).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("GET /events?topic={topic}: the stream ended before its cursor"),
        Err(_) => panic!("GET /events?topic={topic}: no cursor within {CURSOR_DEADLINE:?}"),
    }
    Stream { topic: topic.to_owned(), seqs, reader }
}

/// How long a new stream may take to send its cursor.
const CURSOR_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until every stream received as many events as its topic had published, or
/// `deadline` passed (the tally then says what is missing).
pub async fn wait_delivered(streams: &[Stream], expected: &HashMap<String, Vec<u64>>, deadline: Duration) {
    let complete =
        || streams.iter().all(|s| s.seqs.lock().expect("seqs lock").len() >= expected[&s.topic].len());
    let until = tokio::time::Instant::now() + deadline;
    while !complete() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts, over every stream, what its topic published (`expected`, in order) against what
/// it received.
pub fn tally(streams: &[Stream], expected: &HashMap<String, Vec<u64>>) -> Tally {
    let mut tally = Tally::default();
    for stream in streams {
        let seqs = stream.seqs.lock().expect("seqs lock").clone();
        let order = &expected[&stream.topic];
        if seqs.len() < order.len() {
            // Which streams fell short, and where, for a failing test's output.
            eprintln!(
                "stream of {}: {} of {} events, first {:?}, last {:?}, reader finished: {}",
                stream.topic,
                seqs.len(),
                order.len(),
                seqs.first(),
                seqs.last(),
                stream.reader.is_finished()
            );
        }
        tally.published += order.len() as u64;
        tally.delivered += seqs.len() as u64;
        let mut seen = HashSet::new();
        let mut highest = None;
        for seq in seqs {
            if !seen.insert(seq) {
                tally.duplicates += 1;
            } else if highest.is_some_and(|h| seq < h) {
                tally.out_of_order += 1;
            }
            highest = highest.max(Some(seq));
        }
        tally.missing += order.iter().filter(|seq| !seen.contains(seq)).count() as u64;
    }
    tally
}
