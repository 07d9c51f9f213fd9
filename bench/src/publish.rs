//! Open-loop publishers: event `k` is *scheduled* at `start + k / rate`, and its payload
//! carries that scheduled time, so a publisher that falls behind cannot hide queueing —
//! the delay shows up in the subscribers' latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sse::unix_ns;

/// Which system's publish API to use.
#[derive(Debug, Clone)]
pub enum Api {
    /// Streamgate: `POST {base}/publish`: one JSON event object per request, or a JSON
    /// array (batches) when the run allows batching.
    Streamgate {
        /// Producer base URLs (round robin).
        producers: Vec<String>,
    },
    /// Nchan: `POST {base}/pub?id=<channel>` with the raw payload, one per request.
    Nchan {
        /// nginx base URL.
        base: String,
    },
}

/// What a publishing run did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PublishReport {
    /// Events accepted.
    pub published: u64,
    /// Requests that failed.
    pub errors: u64,
    /// How far behind schedule the publisher was at the end (ms).
    pub lag_ms: u64,
}

/// The payload of event `seq` on topic number `topic`, scheduled at `scheduled_ns`.
pub fn payload(topic: usize, seq: u64, scheduled_ns: u64) -> String {
    format!("{topic} {seq} {scheduled_ns}")
}

/// Publishes `rate` events per second for `duration`, round robin over `topics` topic
/// numbers named by `topic_name`. Topics are spread over sending lanes; each lane sends its
/// events in order, at most `max_batch` per request (1: one event per HTTP request, the
/// shape every side-by-side comparison uses; Nchan is always sent one per request), so
/// per-topic order is the publish order. Returns the per-topic counts too.
pub async fn open_loop(
    api: Api,
    topics: usize,
    topic_name: impl Fn(usize) -> String,
    rate: f64,
    duration: Duration,
    max_batch: usize,
) -> (PublishReport, Vec<u64>) {
    let max_batch = max_batch.max(1);
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
    let published = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let n_lanes = topics.clamp(1, LANES);
    let mut lanes = Vec::with_capacity(n_lanes);
    let mut senders = Vec::with_capacity(n_lanes);
    for lane in 0..n_lanes {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        senders.push(sender);
        let (client, api, published, errors) =
            (client.clone(), api.clone(), Arc::clone(&published), Arc::clone(&errors));
        lanes.push(tokio::spawn(async move {
            let mut batch_number = lane;
            while let Some(first) = receiver.recv().await {
                let mut events = vec![first];
                while events.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(event) => events.push(event),
                        Err(_) => break,
                    }
                }
                if send(&client, &api, batch_number, &events).await {
                    published.fetch_add(events.len() as u64, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                batch_number += n_lanes;
            }
        }));
    }
    let mut per_topic = vec![0u64; topics];
    let start = Instant::now();
    let start_ns = unix_ns();
    let total = (rate * duration.as_secs_f64()) as u64;
    let mut next = 0u64;
    while next < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        for k in next..due {
            let topic = (k as usize) % topics;
            let scheduled = start_ns + (k as f64 / rate * 1e9) as u64;
            let event = (topic_name(topic), payload(topic, per_topic[topic], scheduled));
            per_topic[topic] += 1;
            let _ = senders[topic % n_lanes].send(event);
        }
        next = due;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let lag_ms = (start.elapsed().as_secs_f64() * 1000.0 - duration.as_secs_f64() * 1000.0).max(0.0) as u64;
    drop(senders);
    for lane in lanes {
        let _ = lane.await;
    }
    let report = PublishReport {
        published: published.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        lag_ms,
    };
    (report, per_topic)
}

/// Concurrent sending lanes (each sends its topics' events in order).
const LANES: usize = 64;
/// One event per HTTP request: the shape both systems get in side-by-side rows.
pub const SINGLE: usize = 1;

/// Sends one batch (Streamgate) or its events one by one (Nchan). Events of one topic in a
/// batch keep their order; Nchan requests go out in order per batch.
pub async fn send(
    client: &reqwest::Client,
    api: &Api,
    batch_number: usize,
    events: &[(String, String)],
) -> bool {
    match api {
        Api::Streamgate { producers } => {
            let url = format!("{}/publish", producers[batch_number % producers.len()]);
            let body = match events {
                [(topic, data)] => serde_json::json!({"topic": topic, "data": data}),
                _ => events
                    .iter()
                    .map(|(topic, data)| serde_json::json!({"topic": topic, "data": data}))
                    .collect(),
            };
            matches!(client.post(url).json(&body).send().await, Ok(r) if r.status().is_success())
        }
        Api::Nchan { base } => {
            let mut ok = true;
            for (topic, data) in events {
                let url = format!("{base}/pub?id={topic}");
                ok &= matches!(client.post(url).body(data.clone()).send().await, Ok(r) if r.status().is_success());
            }
            ok
        }
    }
}
