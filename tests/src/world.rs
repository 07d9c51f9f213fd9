//! One test's world: a Redis server of its own, a key prefix, the key schema under it and a
//! publisher, with gateways started in it and streams opened on them. Tests then read as
//! arrange (`TestWorld::start`, `world.gateway`), act (`world.publish`, `gateway.subscribe`)
//! and assert.

use producer::publisher::Publisher;
use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;
use streamgate::cursor::HistoryId;
use streamgate::keys::Keys;
use streamgate::stream::{HistoryEntry, field};
use streamgate::topic::Topic;

use crate::eventsource::urlencode;
use crate::gateway_app::{TestGateway, spawn_gateway};
use crate::producer_app::{TestProducer, spawn_producer};
use crate::publish::{publish_one, publisher};
use crate::redis_server::{RedisServer, unique_prefix};
use crate::sse_client::{SseStream, connect};

/// A Redis server, a prefix of its own and a publisher under it.
pub struct TestWorld {
    /// The server, stopped when the world is dropped.
    pub redis: RedisServer,
    /// Every key of this world starts with it.
    pub prefix: String,
    /// The key schema under `prefix`.
    pub keys: Keys,
    /// The producer's routing core, in-process.
    pub publisher: Publisher,
}

impl TestWorld {
    /// Starts a Redis server; `name` starts the prefix, so keys say which test wrote them.
    pub fn start(name: &str) -> TestWorld {
        TestWorld::on(name, RedisServer::start())
    }

    /// A world on a Redis server started with options of the test's own.
    pub fn on(name: &str, redis: RedisServer) -> TestWorld {
        let prefix = unique_prefix(name);
        let keys = Keys::new(&prefix).expect("a valid prefix");
        let publisher = publisher(&redis.url(), &prefix);
        TestWorld { redis, prefix, keys, publisher }
    }

    /// A gateway in this world, with the given settings over the defaults.
    pub async fn gateway(&self, settings: &[(&str, &str)]) -> TestGateway {
        spawn_gateway(&self.redis.url(), &self.prefix, settings).await
    }

    /// A producer in this world (in-process, on a free port), with the given settings over
    /// the defaults.
    pub async fn producer(&self, settings: &[(&str, &str)]) -> TestProducer {
        spawn_producer(&self.redis.url(), &self.prefix, settings).await
    }

    /// A connection to this world's Redis.
    pub async fn conn(&self) -> MultiplexedConnection {
        self.redis.client().await
    }

    /// Publishes one event with `data` on `topic`; returns its cursor.
    pub async fn publish(&self, topic: &str, data: &str) -> String {
        publish_one(&self.publisher, topic, data).await
    }

    /// Appends an event to `topic`'s history exactly as the producer's script does (with
    /// its predecessor and the meta's `last`), with the id `id` or Redis' own, but routes
    /// it nowhere: a producer that died between its two steps, or a route that failed
    /// after the publish was answered.
    pub async fn append_unrouted(&self, topic: &Topic, id: Option<HistoryId>, data: &str) -> HistoryEntry {
        let mut conn = self.conn().await;
        let prev: String = conn.hget(self.keys.meta(topic), field::META_LAST).await.unwrap();
        let mut entry =
            HistoryEntry { id: HistoryId::ZERO, prev: prev.parse().unwrap(), name: None, data: data.into() };
        let id_arg = id.map_or_else(|| "*".to_owned(), |id| id.to_string());
        let added: String = conn.xadd(self.keys.history(topic), id_arg, &entry.fields()).await.unwrap();
        entry.id = added.parse().unwrap();
        let _: () = conn.hset(self.keys.meta(topic), field::META_LAST, &added).await.unwrap();
        entry
    }
}

impl TestGateway {
    /// Opens `GET /events` for `topics` (in this order), resuming from `cursor` when given
    /// (`Last-Event-ID`); returns once the stream has its cursor.
    pub async fn subscribe(&self, topics: &[&str], cursor: Option<&str>) -> SseStream {
        let query: Vec<String> = topics.iter().map(|topic| format!("topic={}", urlencode(topic))).collect();
        connect(&self.url(&format!("/events?{}", query.join("&"))), cursor).await
    }
}
