//! Many SSE connections from one process, written for load: a raw HTTP/1.1 GET per
//! connection from a chosen loopback source address (so 100,000 connections do not exhaust
//! one address's ephemeral ports), chunked-body decoding and event-stream parsing without
//! per-event allocation beyond the payload line, and per-connection sequence checks.
//!
//! Every event's data is `"<topic> <seq> <scheduled-unix-ns>"` (see `publish`), so the
//! subscriber measures end-to-end latency from the time the event was *scheduled* to be
//! sent (open loop) and detects gaps, duplicates and reorders per topic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Mutex;

/// Now, in unix nanoseconds.
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

/// What one subscriber process measured.
#[derive(Debug, Default, Serialize, Deserialize, Clone)]
pub struct SubscriberReport {
    /// Connections that got a 200 and the stream's first bytes.
    pub connected: u64,
    /// Connections that failed or ended.
    pub failed: u64,
    /// Events received.
    pub events: u64,
    /// Sequence numbers skipped.
    pub gaps: u64,
    /// Sequence numbers seen again.
    pub duplicates: u64,
    /// Events that arrived after a later event of their topic (counted as a gap first,
    /// then moved here when they arrive).
    #[serde(default)]
    pub reorders: u64,
    /// Connect times (ms), as (value, count) pairs.
    pub connect_ms: Vec<(u64, u64)>,
    /// End-to-end latencies (µs), as (value, count) pairs.
    pub latency_us: Vec<(u64, u64)>,
    /// Time from the first byte of the first event to the last event, for replay (µs).
    pub last_event_at_us: u64,
}

/// Shared counters and histograms of one process.
pub struct Metrics {
    events: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    reorders: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    connect: Mutex<Histogram<u64>>,
    started: Instant,
    last_event_at_us: AtomicU64,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            events: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reorders: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new(3).expect("histogram")),
            connect: Mutex::new(Histogram::new(3).expect("histogram")),
            started: Instant::now(),
            last_event_at_us: AtomicU64::new(0),
        })
    }

    /// Connections established so far.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// The report.
    pub async fn report(&self) -> SubscriberReport {
        let pairs = |h: &Histogram<u64>| {
            h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
        };
        SubscriberReport {
            connected: self.connected(),
            failed: self.failed.load(Ordering::Relaxed),
            events: self.events(),
            gaps: self.gaps.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            reorders: self.reorders.load(Ordering::Relaxed),
            connect_ms: pairs(&*self.connect.lock().await),
            latency_us: pairs(&*self.latency.lock().await),
            last_event_at_us: self.last_event_at_us.load(Ordering::Relaxed),
        }
    }
}

/// One connection's target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub server: SocketAddr,
    /// Request path and query.
    pub path: String,
    /// Source address to bind.
    pub source: Ipv4Addr,
    /// `Last-Event-ID` to send.
    pub last_event_id: Option<String>,
}

/// A subscriber process prints why its first few connections failed (to stderr).
const REPORTED_FAILURES: u64 = 3;

/// Runs one connection until the server closes it or an error occurs. Events are checked
/// against the sequence expected per topic (events of several topics may interleave).
///
/// `permit` is held until the response headers arrived, so a caller can bound how many
/// connections are being set up at once.
pub async fn run_connection(
    target: Target,
    metrics: Arc<Metrics>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let begin = Instant::now();
    let result = connect_and_read(&target, &metrics, begin, permit).await;
    if let Err(error) = result
        && metrics.failed.fetch_add(1, Ordering::Relaxed) < REPORTED_FAILURES
    {
        eprintln!(
            "subscriber: a connection to {} failed after {:?}: {error}",
            target.server,
            begin.elapsed()
        );
    }
}

async fn connect_and_read(
    target: &Target,
    metrics: &Metrics,
    begin: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(target.source), 0))?;
    let mut stream = socket.connect(target.server).await?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        target.path, target.server
    );
    if let Some(id) = &target.last_event_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    let mut buffer = BytesMut::with_capacity(4096);
    // Headers.
    let chunked = loop {
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(head.lines().next().unwrap_or("").to_owned()));
            }
            let chunked = head.contains("transfer-encoding: chunked");
            buffer.advance(end + 4);
            break chunked;
        }
    };
    drop(permit);
    metrics.connected.fetch_add(1, Ordering::Relaxed);
    let _ = metrics.connect.lock().await.record(begin.elapsed().as_millis() as u64);

    let mut body = BytesMut::with_capacity(4096);
    let mut decoder = ChunkDecoder::default();
    let mut parser = EventParser::default();
    let mut check = SeqCheck::default();
    loop {
        if chunked {
            decoder.decode(&mut buffer, &mut body);
        } else {
            body.extend_from_slice(&buffer);
            buffer.clear();
        }
        parser.feed(&mut body, |data| check.on_event(metrics, data));
        check.flush(metrics).await;
        if stream.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
    }
}

/// Checks one stream's events against the sequence expected per topic (events of several
/// topics may interleave) and collects their latencies.
#[derive(Default)]
struct SeqCheck {
    /// Per topic: the next sequence expected, and the ones skipped so far.
    expected: std::collections::HashMap<u32, (u64, Vec<u64>)>,
    latencies: Vec<u64>,
}

impl SeqCheck {
    fn on_event(&mut self, metrics: &Metrics, data: &[u8]) {
        let mut fields = data.split(|b| *b == b' ');
        let (Some(topic), Some(seq), Some(sched)) = (fields.next(), fields.next(), fields.next()) else {
            return;
        };
        let (Some(topic), Some(seq), Some(sched)) = (parse_u64(topic), parse_u64(seq), parse_u64(sched))
        else {
            return;
        };
        metrics.events.fetch_add(1, Ordering::Relaxed);
        let (next, skipped) = self.expected.entry(topic as u32).or_insert((seq, Vec::new()));
        if seq == *next {
            *next = seq + 1;
        } else if seq > *next {
            metrics.gaps.fetch_add(seq - *next, Ordering::Relaxed);
            // Remember what was skipped (boundedly) to tell a late event from a repeat.
            if skipped.len() < MAX_TRACKED_GAPS {
                skipped.extend(*next..seq.min(*next + MAX_TRACKED_GAPS as u64));
            }
            *next = seq + 1;
        } else if let Some(at) = skipped.iter().position(|s| *s == seq) {
            skipped.swap_remove(at);
            metrics.gaps.fetch_sub(1, Ordering::Relaxed);
            metrics.reorders.fetch_add(1, Ordering::Relaxed);
        } else {
            metrics.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        self.latencies.push(unix_ns().saturating_sub(sched) / 1000);
    }

    async fn flush(&mut self, metrics: &Metrics) {
        if self.latencies.is_empty() {
            return;
        }
        let mut histogram = metrics.latency.lock().await;
        for latency in self.latencies.drain(..) {
            let _ = histogram.record(latency.max(1));
        }
        metrics.last_event_at_us.fetch_max(metrics.started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// Runs one HTTP/2 connection in clear text (prior knowledge) to `server` carrying one
/// event stream per path, until the server closes it. `permit` is held until every
/// stream's response headers arrived.
pub async fn run_h2_connection(
    server: SocketAddr,
    source: Ipv4Addr,
    paths: Vec<String>,
    metrics: Arc<Metrics>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let begin = Instant::now();
    let streams = paths.len() as u64;
    if let Err(error) = h2_connect_and_read(server, source, paths, &metrics, begin, permit).await {
        log_failure(&error);
        metrics.failed.fetch_add(streams, Ordering::Relaxed);
    }
}

fn log_failure(error: &dyn std::fmt::Display) {
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("h2 connection failed: {error}");
    }
}

async fn h2_connect_and_read(
    server: SocketAddr,
    source: Ipv4Addr,
    paths: Vec<String>,
    metrics: &Arc<Metrics>,
    begin: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(server).await?;
    let (send, connection) = h2::client::handshake(stream).await?;
    let driver = tokio::spawn(connection);
    let mut readers = Vec::with_capacity(paths.len());
    for path in paths {
        let request = http::Request::get(format!("http://{server}{path}"))
            .header("accept", "text/event-stream")
            .body(())?;
        let mut ready = send.clone().ready().await?;
        let (response, _) = ready.send_request(request, true)?;
        let response = response.await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        metrics.connected.fetch_add(1, Ordering::Relaxed);
        let _ = metrics.connect.lock().await.record(begin.elapsed().as_millis() as u64);
        let metrics = Arc::clone(metrics);
        let mut body = response.into_body();
        readers.push(tokio::spawn(async move {
            let mut text = BytesMut::with_capacity(1024);
            let mut parser = EventParser::default();
            let mut check = SeqCheck::default();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                text.extend_from_slice(&chunk);
                parser.feed(&mut text, |data| check.on_event(&metrics, data));
                check.flush(&metrics).await;
            }
        }));
    }
    drop(permit);
    for reader in readers {
        let _ = reader.await;
    }
    driver.abort();
    Ok(())
}

/// Skipped sequence numbers remembered per topic and connection.
const MAX_TRACKED_GAPS: usize = 10_000;

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Default)]
struct ChunkDecoder {
    /// Bytes left in the current chunk (plus its CRLF handled separately).
    remaining: usize,
    /// Whether the CRLF after a chunk is still to be skipped.
    trailer: bool,
}

impl ChunkDecoder {
    fn decode(&mut self, input: &mut BytesMut, output: &mut BytesMut) {
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(input.len());
                output.extend_from_slice(&input[..take]);
                input.advance(take);
                self.remaining -= take;
                if self.remaining > 0 {
                    return;
                }
                self.trailer = true;
            }
            if self.trailer {
                if input.len() < 2 {
                    return;
                }
                input.advance(2);
                self.trailer = false;
            }
            let Some(end) = find(input, b"\r\n") else { return };
            let size = std::str::from_utf8(&input[..end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
                .unwrap_or(0);
            input.advance(end + 2);
            if size == 0 {
                return;
            }
            self.remaining = size;
        }
    }
}

/// Parses `text/event-stream` lines; calls back with each event's data (first data line).
#[derive(Default)]
struct EventParser {
    data: Vec<u8>,
}

impl EventParser {
    fn feed(&mut self, body: &mut BytesMut, mut on_event: impl FnMut(&[u8])) {
        while let Some(end) = body.iter().position(|b| *b == b'\n') {
            let line = &body[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    on_event(&self.data);
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                self.data.clear();
                self.data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            }
            body.advance(end + 1);
        }
    }
}

/// The `n`th loopback source address, cycling over 127.0.0.2 ..= 127.0.0.254 and
/// 127.0.1.x, so each gets at most a few thousand connections.
pub fn source_address(n: usize) -> Ipv4Addr {
    let index = n / 2000;
    Ipv4Addr::new(127, 0, 1 + (index / 250) as u8, 2 + (index % 250) as u8)
}

/// Merges (value, count) pairs into a histogram.
pub fn merge(into: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for (value, count) in pairs {
        let _ = into.record_n((*value).max(1), *count);
    }
}

/// Waits until `metrics` counts `n` connections or `deadline` passes.
pub async fn wait_connected(metrics: &Metrics, n: u64, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while metrics.connected() + metrics.failed.load(Ordering::Relaxed) < n {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
