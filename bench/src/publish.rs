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
    /// How late the load generator itself handed events to their sending lanes, after
    /// their scheduled time (µs, median and 99th percentile): the part of every latency
    /// that is the load tool's, the same for both systems.
    pub dispatch_lag_p50_us: u64,
    /// See `dispatch_lag_p50_us`.
    pub dispatch_lag_p99_us: u64,
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
    topic_name: impl Fn(usize) -> String + Send + 'static,
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
    // The schedule is kept by a thread of its own that sleeps until each event is due
    // (`thread::sleep` wakes within tens of microseconds). A timer of the runtime would wake
    // on its 1 ms ticks, and every event would wait up to two of them before it is sent:
    // that wait is counted in the latency (it is measured from the scheduled time), and it
    // was ~1 ms of every median, for both systems alike.
    let pacer = tokio::task::spawn_blocking(move || {
        let mut per_topic = vec![0u64; topics];
        let mut dispatch_lag_us = Vec::with_capacity((rate * duration.as_secs_f64()) as usize);
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
                dispatch_lag_us.push(unix_ns().saturating_sub(scheduled) / 1_000);
            }
            next = due;
            let next_due = Duration::from_secs_f64(next as f64 / rate);
            if let Some(wait) = next_due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        (per_topic, dispatch_lag_us, start)
    });
    let (per_topic, mut dispatch_lag_us, start) = pacer.await.expect("the pacing thread");
    dispatch_lag_us.sort_unstable();
    let quantile = |q: f64| {
        dispatch_lag_us
            .get(((dispatch_lag_us.len() as f64 * q) as usize).min(dispatch_lag_us.len().saturating_sub(1)))
    };
    let (dispatch_lag_p50_us, dispatch_lag_p99_us) =
        (quantile(0.5).copied().unwrap_or(0), quantile(0.99).copied().unwrap_or(0));
    let lag_ms = (start.elapsed().as_secs_f64() * 1000.0 - duration.as_secs_f64() * 1000.0).max(0.0) as u64;
    for lane in lanes {
        let _ = lane.await;
    }
    let report = PublishReport {
        published: published.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        lag_ms,
        dispatch_lag_p50_us,
        dispatch_lag_p99_us,
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
