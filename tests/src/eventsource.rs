//! Browser-like subscribers and an exact check of what they received.
//!
//! A [`Subscriber`] behaves like `EventSource`: it reconnects after the stream ends or
//! fails (after a short retry delay) and sends its `lastEventId` as `Last-Event-ID`,
//! tracked from the raw bytes by the browser's rules ([`LastEventId`]), so an `id:`-only
//! block moves it too.
//! Every event's data is `"<topic> <seq>"`, so the check per topic is exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::last_event_id::LastEventId;

/// What one subscriber received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Sequence numbers per topic, in arrival order.
    pub seqs: HashMap<String, Vec<u64>>,
    /// Reset notices: (topic, reason).
    pub resets: Vec<(String, String)>,
    /// Per topic, how many of its events had arrived when each `history_lost` reset did.
    pub history_lost_at: HashMap<String, Vec<usize>>,
    /// The last `id:` seen.
    pub last_id: Option<String>,
}

/// `n` topic names, `{prefix}-0` to `{prefix}-{n-1}`.
pub fn topic_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// One browser-like subscriber.
pub struct Subscriber {
    /// Its topics.
    pub topics: Vec<String>,
    received: Arc<Mutex<Received>>,
    connected: Arc<AtomicBool>,
    /// Streams opened (1 + reconnects).
    pub connects: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Subscriber {
    /// Starts subscribing to `topics` at `base` (e.g. nginx's URL), optionally from a cursor.
    pub fn start(base: &str, topics: &[&str], cursor: Option<String>) -> Subscriber {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let query: Vec<String> = topics.iter().map(|t| format!("topic={}", urlencode(t))).collect();
        let url = format!("{base}/events?{}", query.join("&"));
        let received = Arc::new(Mutex::new(Received { last_id: cursor, ..Received::default() }));
        let connected = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(run(
            url,
            Arc::clone(&received),
            Arc::clone(&connected),
            Arc::clone(&connects),
            stop.clone(),
        ));
        Subscriber { topics, received, connected, connects, stop }
    }

    /// `n` subscribers at `base`, spread round robin over `topics`; every fifth one listens
    /// to three topics (its own and the next two), so multi-topic streams are in the mix.
    pub fn start_many(base: &str, topics: &[String], n: usize) -> Vec<Subscriber> {
        (0..n)
            .map(|i| {
                let mine: Vec<&str> = if i % 5 == 0 {
                    (0..3).map(|k| topics[(i + k) % topics.len()].as_str()).collect()
                } else {
                    vec![topics[i % topics.len()].as_str()]
                };
                Subscriber::start(base, &mine, None)
            })
            .collect()
    }

    /// Whether a stream is open now and has its cursor (its first `id:`, which the gateway
    /// sends once it is subscribed; with `Last-Event-ID`, the one it resumes from): a
    /// stream owes its subscriber every event published after that, not after the
    /// response headers (when Redis is slower than the gateway's join wait, the headers
    /// come first and the cursor once the subscription is in place).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// A copy of what it received so far.
    pub fn received(&self) -> Received {
        self.received.lock().expect("received lock").clone()
    }

    /// Events received on `topic`.
    pub fn count(&self, topic: &str) -> usize {
        self.received.lock().expect("received lock").seqs.get(topic).map_or(0, Vec::len)
    }

    /// Stops it (closes the stream).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `text` as a URL query value.
pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn run(
    url: String,
    received: Arc<Mutex<Received>>,
    connected: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().expect("client");
    loop {
        let last_id = received.lock().expect("received lock").last_id.clone();
        let mut request = client.get(&url).header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::select! {
            response = request.send() => response,
            _ = stop.cancelled() => return,
        };
        if let Ok(response) = response
            && response.status() == 200
        {
            connects.fetch_add(1, Ordering::Relaxed);
            let tracker = Arc::new(Mutex::new(LastEventId::starting_at(last_id)));
            let tap = Arc::clone(&tracker);
            let started = Arc::clone(&connected);
            let bytes = response.bytes_stream().inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    let mut tracker = tap.lock().expect("id tracker lock");
                    tracker.feed(chunk);
                    // The stream has started once it has a cursor: every event published
                    // after that is owed to it.
                    if tracker.get().is_some() {
                        started.store(true, Ordering::Release);
                    }
                }
            });
            let mut events = bytes.eventsource();
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = stop.cancelled() => { connected.store(false, Ordering::Release); return; }
                };
                let Some(Ok(event)) = event else { break };
                let mut received = received.lock().expect("received lock");
                received.last_id = tracker.lock().expect("id tracker lock").get();
                if event.event == "streamgate.reset" {
                    let notice: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
                    let topic = notice["topic"].as_str().unwrap_or_default().to_owned();
                    let reason = notice["reason"].as_str().unwrap_or_default().to_owned();
                    if reason == "history_lost" {
                        let arrived = received.seqs.get(&topic).map_or(0, Vec::len);
                        received.history_lost_at.entry(topic.clone()).or_default().push(arrived);
                    }
                    received.resets.push((topic, reason));
                    continue;
                }
                if let Some((topic, seq)) = event.data.split_once(' ')
                    && let Ok(seq) = seq.split(' ').next().unwrap_or_default().parse()
                {
                    received.seqs.entry(topic.to_owned()).or_default().push(seq);
                }
            }
            received.lock().expect("received lock").last_id = tracker.lock().expect("id tracker lock").get();
            connected.store(false, Ordering::Release);
        }
        // EventSource's retry delay (the gateways in the rig send `retry: 250`).
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Publishes over the producers' HTTP API: batches of events whose data is
/// `"<topic> <seq>"`, each with an idempotency key, retried (on another producer) until
/// accepted, so a failure never loses or duplicates an event.
pub struct Publisher {
    producers: Vec<String>,
    next: usize,
    /// Events published per topic (next sequence number).
    pub published: HashMap<String, u64>,
    client: reqwest::Client,
    /// Answers other than 200 that were retried.
    pub retries: u64,
    padding: String,
    token: Option<String>,
}

impl Publisher {
    /// A publisher over the given producer base URLs.
    pub fn new(producers: Vec<String>) -> Publisher {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        Publisher {
            producers,
            next: 0,
            published: HashMap::new(),
            client,
            retries: 0,
            padding: String::new(),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every publish.
    pub fn with_token(mut self, token: &str) -> Publisher {
        self.token = Some(token.to_owned());
        self
    }

    /// Pads every event's data with `bytes` bytes after the sequence number.
    pub fn with_padding(mut self, bytes: usize) -> Publisher {
        self.padding = format!(" {}", "x".repeat(bytes));
        self
    }

    /// Publishes one event on each of `topics` as one batch.
    pub async fn publish_round(&mut self, topics: &[&str]) {
        let batch: Vec<serde_json::Value> = topics
            .iter()
            .map(|topic| {
                let seq = self.published.get(*topic).copied().unwrap_or(0);
                serde_json::json!({
                    "topic": topic,
                    "data": format!("{topic} {seq}{}", self.padding),
                    "idempotencyKey": format!("{topic}-{seq}"),
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("{}/publish", self.producers[self.next % self.producers.len()]);
            self.next += 1;
            let mut request = self.client.post(&url).json(&batch);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) if response.status() == 200 => break,
                _ => {
                    self.retries += 1;
                    assert!(tokio::time::Instant::now() < deadline, "publishing failed for 60 s");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        for topic in topics {
            *self.published.entry((*topic).to_owned()).or_default() += 1;
        }
    }
}

/// The outcome of a scenario.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Events published (per subscriber-topic pair expected).
    pub published: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Expected but never delivered.
    pub missing: u64,
    /// Delivered more than once.
    pub duplicates: u64,
    /// Delivered after a later event of the same topic.
    pub out_of_order: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published={} delivered={} missing={} duplicates={} out_of_order={}",
            self.published, self.delivered, self.missing, self.duplicates, self.out_of_order
        )
    }
}

/// The expected sequence per topic when one publisher numbered its events `0..n`.
pub fn counted(published: &HashMap<String, u64>) -> HashMap<String, Vec<u64>> {
    published.iter().map(|(topic, n)| (topic.clone(), (0..*n).collect())).collect()
}

/// The expected sequence per topic as the topic's history holds it (for events whose order
/// no single publisher decided, such as entries consumed from the ingest stream by two
/// producers): the `<seq>` of each history entry's data `"<topic> <seq>"`, in history order.
pub async fn history_order(redis: &mut impl redis::AsyncCommands, history_key: &str) -> Vec<u64> {
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(redis, history_key).await.expect("read history");
    reply
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("d"))
        .filter_map(|data| data.split(' ').nth(1).and_then(|seq| seq.parse().ok()))
        .collect()
}

/// Checks that every subscriber got exactly the `expected` sequence of each of its topics:
/// every element once, in that order.
pub fn tally(subscribers: &[Subscriber], expected: &HashMap<String, Vec<u64>>) -> Tally {
    let mut tally = Tally::default();
    for subscriber in subscribers {
        let received = subscriber.received();
        for topic in &subscriber.topics {
            let order = expected.get(topic).cloned().unwrap_or_default();
            let position: HashMap<u64, usize> = order.iter().enumerate().map(|(i, seq)| (*seq, i)).collect();
            let seqs = received.seqs.get(topic).cloned().unwrap_or_default();
            let lost_at = received.history_lost_at.get(topic).cloned().unwrap_or_default();
            tally.published += order.len() as u64;
            tally.delivered += seqs.len() as u64;
            // Where each event was first received. An event received again is a duplicate,
            // unless a `history_lost` reset came in between: the first copy was in history
            // that a failover took, and the one history now holds (a publish retried on
            // the new primary) is delivered after the reset told the app to start over.
            let mut seen: HashMap<u64, usize> = HashMap::new();
            let mut highest: Option<usize> = None;
            for (index, seq) in seqs.iter().enumerate() {
                if let Some(first) = seen.insert(*seq, index) {
                    if !lost_at.iter().any(|at| first < *at && *at <= index) {
                        tally.duplicates += 1;
                    }
                    continue;
                }
                // An event not in the expected sequence counts as out of order.
                let at = position.get(seq).copied();
                if at.is_none() || highest.is_some_and(|h| at.is_some_and(|a| a < h)) {
                    tally.out_of_order += 1;
                }
                highest = highest.max(at);
            }
            tally.missing += order.iter().filter(|s| !seen.contains_key(s)).count() as u64;
        }
    }
    tally
}

/// Waits until every subscriber has received everything published on its topics (or
/// `deadline` passes).
pub async fn wait_delivered(
    subscribers: &[Subscriber],
    published: &HashMap<String, u64>,
    deadline: Duration,
) {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let done = subscribers
            .iter()
            .all(|s| s.topics.iter().all(|t| s.count(t) as u64 >= published.get(t).copied().unwrap_or(0)));
        if done || tokio::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every subscriber has a stream open.
pub async fn wait_connected(subscribers: &[Subscriber], deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    while !subscribers.iter().all(Subscriber::is_connected) {
        assert!(tokio::time::Instant::now() < until, "subscribers did not connect in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
