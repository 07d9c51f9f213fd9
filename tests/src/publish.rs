//! Publishing in tests: the producer's routing core in-process, or `POST /publish` to a
//! producer process.

use std::time::Duration;

use producer::publisher::{Publish, Published, Publisher, PublisherConfig};
use streamgate::event::Event;
use streamgate::keys::Keys;
use streamgate::topic::{EventName, Topic};

/// A publisher against `redis_url` under `prefix`, with default retention.
pub fn publisher(redis_url: &str, prefix: &str) -> Publisher {
    publisher_on(streamgate::redis::Redis::single(redis_url, 4).expect("redis"), prefix)
}

/// A publisher on `pool` (any topology) under `prefix`, configured as [`publisher`].
pub fn publisher_on(pool: streamgate::redis::Redis, prefix: &str) -> Publisher {
    let config = PublisherConfig {
        history_max_len: Some(10_000),
        history_max_age: None,
        dedup_window: Duration::from_secs(600),
        instance_stream_max_len: 100_000,
        liveness_cache: Duration::ZERO,
    };
    Publisher::new(pool, Keys::new(prefix).expect("prefix"), config)
}

/// An event for `topic` with `data` and an optional name.
pub fn event(topic: &str, name: Option<&str>, data: &str) -> Publish {
    Publish {
        event: Event {
            topic: Topic::parse(topic, 256).expect("topic"),
            name: name.map(|n| EventName::parse(n).expect("event name")),
            data: data.to_owned(),
        },
        idempotency_key: None,
    }
}

/// Publishes one event and returns its cursor text.
pub async fn publish_one(publisher: &Publisher, topic: &str, data: &str) -> String {
    let results: Vec<Published> = publisher.publish(&[event(topic, None, data)]).await.expect("publish");
    results[0].cursor.to_string()
}

/// `POST /publish` of `body` (one event or a batch) to the producer at `base_url`
/// (`http://host:port`), with `token` as the bearer token if any. Panics unless it answers
/// 200; returns the answer's JSON.
pub async fn over_http(base_url: &str, token: Option<&str>, body: &serde_json::Value) -> serde_json::Value {
    let mut request = reqwest::Client::new().post(format!("{base_url}/publish")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("POST {base_url}/publish: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST {base_url}/publish: {text}");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("POST {base_url}/publish answered no JSON ({e}): {text}"))
}
