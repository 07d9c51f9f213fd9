//! Every Redis key name Streamgate uses. No other module writes a key name literally.
//!
//! All keys start with a configurable prefix (`KEY_PREFIX`, default `streamgate`). Keys
//! that one atomic script touches share a Redis Cluster hash tag: per topic `{D}`, where
//! `D` is [`topic_digest`] (16 hex digits of the topic name's SHA-1), per instance
//! `{<instance>}`, so a move to Redis Cluster needs no redesign.
//!
//! Why a digest and not the topic itself: a topic may contain `{` and `}`, and Redis takes
//! the first `{...}` of a key as its hash tag, so `{a{b}c}` would be tagged `a{b`, and
//! keys of one topic could land on different slots. The digest is hex, so it never holds
//! a brace; the readable topic follows it (`P:h:{D}:T`), after the tag, where braces are
//! harmless, and [`Keys::topic_key_of`] reads it back (checking that it matches `D`).
//! Instance ids cannot contain braces ([`InstanceId`]), so they are their own tag.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:h:{D}:T` | stream | topic T's history (fields `d` data, `p` previous id, `n` event name) |
//! | `P:m:{D}:T` | hash | topic T's meta: `epoch`, `last` (id of the newest event) |
//! | `P:g:{D}:T` | hash | topic T's group: instance id → number of local subscribers |
//! | `P:k:{D}:<sha1>` | string | idempotency record (value: the cursor of the original event); the SHA-1 covers topic, publisher scope and key |
//! | `P:i:{I}:s` | stream | instance I's routed events |
//! | `P:i:{I}:alive` | string | instance I's liveness, with a TTL |
//! | `P:i:{I}:topics` | set | the topics instance I has registered in |
//! | `P:i:{I}:sweep` | string | a janitor's claim while it removes dead instance I |
//! | `P:i:{I}:summary` | string | instance I's summary for `/admin/cluster` (JSON, TTL `LIVENESS_TTL`) |
//! | `P:instances` | sorted set | known instances by last heartbeat (unix ms) |
//! | `P:topics` | sorted set | topics by last publish (unix ms) |
//! | `P:janitor:scan` | string | where the janitor's next full pass resumes its SCAN |
//!
//! The ingest stream is named separately (`INGEST_STREAM`, default `streamgate:ingest`).

use crate::topic::{InstanceId, Topic};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "streamgate";

/// Hex digits of a topic's digest: 8 bytes of SHA-1. Two topics sharing a digest would
/// only share a hash slot (the full name is in every key), so 64 bits are plenty.
pub const TOPIC_DIGEST_LEN: usize = 16;

/// The hash tag of a topic's keys: the first 8 bytes of SHA-1 of its name, as 16 lower-case
/// hex digits.
pub fn topic_digest(topic: &str) -> String {
    let digest = sha1_smol::Sha1::from(topic.as_bytes()).digest().bytes();
    digest[..TOPIC_DIGEST_LEN / 2].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A key's type, as Redis's `TYPE` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisType {
    /// `none`: no such key.
    Missing,
    /// `string`.
    String,
    /// `hash`.
    Hash,
    /// `set`.
    Set,
    /// `zset`.
    SortedSet,
    /// `stream`.
    Stream,
    /// Any other (`list`, a module's type, ...), as named.
    Other(String),
}

impl RedisType {
    /// The name `TYPE` gives it.
    pub fn as_str(&self) -> &str {
        match self {
            RedisType::Missing => "none",
            RedisType::String => "string",
            RedisType::Hash => "hash",
            RedisType::Set => "set",
            RedisType::SortedSet => "zset",
            RedisType::Stream => "stream",
            RedisType::Other(name) => name,
        }
    }

    /// The type `TYPE` named `name`.
    pub fn from_name(name: &str) -> RedisType {
        match name {
            "none" => RedisType::Missing,
            "string" => RedisType::String,
            "hash" => RedisType::Hash,
            "set" => RedisType::Set,
            "zset" => RedisType::SortedSet,
            "stream" => RedisType::Stream,
            other => RedisType::Other(other.to_owned()),
        }
    }

    /// Whether a key found of this type can be used as one of type `expected`: it has
    /// that type, or it is missing (deleted meanwhile, or not created yet).
    pub fn fits(&self, expected: &RedisType) -> bool {
        self == expected || *self == RedisType::Missing
    }
}

impl std::fmt::Display for RedisType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl redis::FromRedisValue for RedisType {
    fn from_redis_value(value: redis::Value) -> Result<RedisType, redis::ParsingError> {
        Ok(RedisType::from_name(&String::from_redis_value(value)?))
    }
}

/// The kinds of per-topic key, as [`Keys::topic_key_of`] tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKeyKind {
    /// `P:h:{D}:T`, the history stream.
    History,
    /// `P:m:{D}:T`, the meta hash.
    Meta,
    /// `P:g:{D}:T`, the group hash.
    Group,
}

impl TopicKeyKind {
    /// The Redis type (as `TYPE` names it) a key of this kind must have.
    pub fn redis_type(self) -> RedisType {
        match self {
            TopicKeyKind::History => RedisType::Stream,
            TopicKeyKind::Meta | TopicKeyKind::Group => RedisType::Hash,
        }
    }
}

/// The kinds of per-instance key, as [`Keys::instance_key_of`] tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceKeyKind {
    /// `P:i:{I}:s`, the instance stream.
    Stream,
    /// `P:i:{I}:alive`, the liveness key.
    Alive,
    /// `P:i:{I}:topics`, the set of registered topics.
    Topics,
    /// `P:i:{I}:sweep`, a janitor's claim.
    Sweep,
    /// `P:i:{I}:summary`, the instance's summary for the admin views.
    Summary,
}

impl InstanceKeyKind {
    /// The Redis type (as `TYPE` names it) a key of this kind must have.
    pub fn redis_type(self) -> RedisType {
        match self {
            InstanceKeyKind::Stream => RedisType::Stream,
            InstanceKeyKind::Alive | InstanceKeyKind::Sweep | InstanceKeyKind::Summary => RedisType::String,
            InstanceKeyKind::Topics => RedisType::Set,
        }
    }
}

/// The key schema under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// Why a key prefix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key prefix must be 1 to 64 characters of ASCII letters, digits, ':', '.', '_' or '-'")]
pub struct PrefixError;

impl Keys {
    /// The schema under `prefix`. Braces are not allowed: they would change hash tags.
    pub fn new(prefix: &str) -> Result<Keys, PrefixError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'));
        if !valid {
            return Err(PrefixError);
        }
        Ok(Keys { prefix: prefix.to_owned() })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn topic_key(&self, kind: &str, topic: &Topic) -> String {
        format!("{}:{kind}:{{{}}}:{}", self.prefix, topic_digest(topic.as_str()), topic.as_str())
    }

    fn instance_key(&self, instance: &InstanceId, kind: &str) -> String {
        format!("{}:i:{{{}}}:{kind}", self.prefix, instance.as_str())
    }

    /// Topic history stream.
    pub fn history(&self, topic: &Topic) -> String {
        self.topic_key("h", topic)
    }

    /// Topic meta hash (`epoch`, `last`).
    pub fn meta(&self, topic: &Topic) -> String {
        self.topic_key("m", topic)
    }

    /// Topic group hash (instance → subscriber count).
    pub fn group(&self, topic: &Topic) -> String {
        self.topic_key("g", topic)
    }

    /// Idempotency record for `key` on `topic`, published by `scope` (`None`: no known
    /// publisher identity — anonymous HTTP, the command line, the ingest stream — which
    /// all share one scope per topic). A publisher with an identity (a JWT subject, a
    /// token's fingerprint) has keys of its own, so it can neither pre-claim nor read
    /// back another publisher's key.
    ///
    /// Topic, scope and key are hashed together, each preceded by its length, so no
    /// choice of the three can collide with another triple.
    pub fn idempotency(&self, topic: &Topic, scope: Option<&str>, key: &str) -> String {
        let mut hasher = sha1_smol::Sha1::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(topic.as_str().as_bytes());
        match scope {
            None => field(b"-"),
            Some(scope) => {
                field(b"+");
                field(scope.as_bytes());
            }
        }
        field(key.as_bytes());
        format!("{}:k:{{{}}}:{}", self.prefix, topic_digest(topic.as_str()), hasher.digest())
    }

    /// Instance stream of routed events.
    pub fn instance_stream(&self, instance: &InstanceId) -> String {
        self.instance_key(instance, "s")
    }

    /// Instance liveness key (expires unless refreshed).
    pub fn instance_alive(&self, instance: &InstanceId) -> String {
        self.instance_key(instance, "alive")
    }

    /// Set of topics an instance registered in.
    pub fn instance_topics(&self, instance: &InstanceId) -> String {
        self.instance_key(instance, "topics")
    }

    /// A janitor's claim on a dead instance while it sweeps it.
    pub fn instance_sweep(&self, instance: &InstanceId) -> String {
        self.instance_key(instance, "sweep")
    }

    /// An instance's summary (JSON: addresses, connections, topics, version, ...), written
    /// with every heartbeat with a TTL of `LIVENESS_TTL`, so it expires with the instance
    /// and needs no cleaning.
    pub fn instance_summary(&self, instance: &InstanceId) -> String {
        self.instance_key(instance, "summary")
    }

    /// Registry of instances by last heartbeat.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// Index of topics by last publish.
    pub fn topics(&self) -> String {
        format!("{}:topics", self.prefix)
    }

    /// The pattern matching every topic history (for a SCAN).
    pub fn history_pattern(&self) -> String {
        format!("{}:h:{{*", self.prefix)
    }

    /// The pattern matching every instance key (for a SCAN).
    pub fn instance_pattern(&self) -> String {
        format!("{}:i:{{*", self.prefix)
    }

    /// The pattern matching every topic's group hash (for the admin view's bounded SCAN).
    pub fn group_pattern(&self) -> String {
        format!("{}:g:{{*", self.prefix)
    }

    /// Where the janitor's next full pass resumes its SCAN of the keyspace.
    pub fn janitor_scan_cursor(&self) -> String {
        format!("{}:janitor:scan", self.prefix)
    }

    /// The pattern matching every per-topic history, meta and group key and every instance
    /// key, for the janitor's full pass: one SCAN walks the keyspace once, where one SCAN per
    /// kind would walk all of it once per kind. Idempotency records (`P:k:`) do not match.
    pub fn sweep_pattern(&self) -> String {
        format!("{}:[ghim]:{{*", self.prefix)
    }

    /// The kind and topic of a history, meta or group key, if `key` is one: the prefix, a
    /// kind, the hash tag and the topic whose digest the tag is. The topic is not
    /// validated otherwise.
    pub fn topic_key_of<'k>(&self, key: &'k str) -> Option<(TopicKeyKind, &'k str)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let (kind, rest) = if let Some(rest) = rest.strip_prefix("h:{") {
            (TopicKeyKind::History, rest)
        } else if let Some(rest) = rest.strip_prefix("m:{") {
            (TopicKeyKind::Meta, rest)
        } else {
            (TopicKeyKind::Group, rest.strip_prefix("g:{")?)
        };
        let digest = rest.get(..TOPIC_DIGEST_LEN)?;
        let topic = rest.get(TOPIC_DIGEST_LEN..)?.strip_prefix("}:")?;
        (topic_digest(topic) == digest).then_some((kind, topic))
    }

    /// The instance and kind of an instance key, if `key` is one of the four kinds. The
    /// instance id is not validated.
    pub fn instance_key_of<'k>(&self, key: &'k str) -> Option<(&'k str, InstanceKeyKind)> {
        let (instance, kind) = self.instance_of(key)?;
        let kind = match kind {
            "s" => InstanceKeyKind::Stream,
            "alive" => InstanceKeyKind::Alive,
            "topics" => InstanceKeyKind::Topics,
            "sweep" => InstanceKeyKind::Sweep,
            "summary" => InstanceKeyKind::Summary,
            _ => return None,
        };
        Some((instance, kind))
    }

    /// The topic named by a history, meta or group key, if `key` is one.
    pub fn topic_of(&self, key: &str) -> Option<String> {
        self.topic_key_of(key).map(|(_, topic)| topic.to_owned())
    }

    /// The instance named by an instance key, and the key's kind (`s`, `alive`, ...).
    pub fn instance_of<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":i:{")?;
        let (instance, kind) = rest.split_once("}:")?;
        Some((instance, kind))
    }
}

/// The Redis Cluster hash tag of a key, as Redis computes it.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_types_read_back_as_type_names_them_and_a_missing_key_fits_any() {
        for name in ["none", "string", "hash", "set", "zset", "stream", "list", "ReJSON-RL"] {
            assert_eq!(RedisType::from_name(name).as_str(), name);
        }
        assert_eq!(RedisType::from_name("list"), RedisType::Other("list".into()));
        assert!(RedisType::Missing.fits(&RedisType::Stream));
        assert!(RedisType::Hash.fits(&RedisType::Hash));
        assert!(!RedisType::String.fits(&RedisType::Hash));
        assert_eq!(TopicKeyKind::History.redis_type(), RedisType::Stream);
        assert_eq!(InstanceKeyKind::Topics.redis_type(), RedisType::Set);
    }

    fn keys() -> Keys {
        Keys::new("sg").unwrap()
    }

    fn topic(name: &str) -> Topic {
        Topic::parse(name, 256).unwrap()
    }

    #[test]
    fn keys_of_one_topic_share_one_hash_tag_whatever_braces_the_name_has() {
        let k = keys();
        for name in ["order:1", "a}b", "{x}", "a{b}c", "}{", "{", "}", "{}", "é"] {
            let topic = topic(name);
            let digest = topic_digest(name);
            let all = [
                k.history(&topic),
                k.meta(&topic),
                k.group(&topic),
                k.idempotency(&topic, None, "up-1"),
                k.idempotency(&topic, Some("jwt:alice"), "up-1"),
            ];
            for key in &all {
                assert_eq!(hash_tag(key), digest, "{key}");
            }
        }
    }

    #[test]
    fn topic_keys_round_trip_through_the_parser() {
        let k = keys();
        for name in ["order:1", "a{b}c", "{x}", "}{", "a}b:c", "x}:y", "é"] {
            let topic = topic(name);
            assert_eq!(k.topic_key_of(&k.history(&topic)), Some((TopicKeyKind::History, name)));
            assert_eq!(k.topic_key_of(&k.meta(&topic)), Some((TopicKeyKind::Meta, name)));
            assert_eq!(k.topic_key_of(&k.group(&topic)), Some((TopicKeyKind::Group, name)));
            assert_eq!(k.topic_of(&k.history(&topic)).as_deref(), Some(name));
        }
    }

    #[test]
    fn keys_of_one_instance_share_a_hash_tag() {
        let k = keys();
        let id = InstanceId::parse("gw-1").unwrap();
        assert_eq!(hash_tag(&k.instance_alive(&id)), "gw-1");
        assert_eq!(hash_tag(&k.instance_stream(&id)), "gw-1");
        assert_eq!(hash_tag(&k.instance_sweep(&id)), "gw-1");
        assert_eq!(hash_tag(&k.instance_topics(&id)), "gw-1");
        assert_eq!(hash_tag(&k.instance_summary(&id)), "gw-1");
    }

    #[test]
    fn key_names_are_stable() {
        let k = keys();
        let topic = topic("order:1");
        assert_eq!(topic_digest("order:1"), "45aac1da801d7fb8");
        assert_eq!(k.history(&topic), "sg:h:{45aac1da801d7fb8}:order:1");
        assert_eq!(k.meta(&topic), "sg:m:{45aac1da801d7fb8}:order:1");
        assert_eq!(k.group(&topic), "sg:g:{45aac1da801d7fb8}:order:1");
        assert!(k.idempotency(&topic, None, "k").starts_with("sg:k:{45aac1da801d7fb8}:"));
        let id = InstanceId::parse("gw-1").unwrap();
        assert_eq!(k.instance_stream(&id), "sg:i:{gw-1}:s");
        assert_eq!(k.instance_of("sg:i:{gw-1}:alive"), Some(("gw-1", "alive")));
    }

    #[test]
    fn parsers_tell_key_kinds_apart_and_refuse_what_no_builder_writes() {
        let k = keys();
        let topic = topic("a}b:c");
        assert_eq!(k.topic_key_of(&k.idempotency(&topic, None, "x")), None);
        assert_eq!(k.topic_key_of("sg:h:{unterminated"), None);
        assert_eq!(k.topic_key_of("sg:h:{order:1}"), None, "the shape before digests");
        assert_eq!(k.topic_key_of("sg:h:{0000000000000000}:order:1"), None, "a digest of another topic");
        assert_eq!(k.topic_key_of("other:h:{45aac1da801d7fb8}:order:1"), None);
        let id = InstanceId::parse("gw-1").unwrap();
        assert_eq!(k.instance_key_of(&k.instance_stream(&id)), Some(("gw-1", InstanceKeyKind::Stream)));
        assert_eq!(k.instance_key_of(&k.instance_alive(&id)), Some(("gw-1", InstanceKeyKind::Alive)));
        assert_eq!(k.instance_key_of(&k.instance_topics(&id)), Some(("gw-1", InstanceKeyKind::Topics)));
        assert_eq!(k.instance_key_of(&k.instance_sweep(&id)), Some(("gw-1", InstanceKeyKind::Sweep)));
        assert_eq!(k.instance_key_of(&k.instance_summary(&id)), Some(("gw-1", InstanceKeyKind::Summary)));
        assert_eq!(k.instance_key_of("sg:i:{gw-1}:other"), None);
        assert_eq!(k.sweep_pattern(), "sg:[ghim]:{*");
        assert_eq!(k.janitor_scan_cursor(), "sg:janitor:scan");
        assert_eq!(k.group_pattern(), "sg:g:{*");
        for key in [k.history(&topic), k.meta(&topic), k.group(&topic), k.instance_stream(&id)] {
            assert!(glob_match(&k.sweep_pattern(), &key), "{key}");
        }
        assert!(!glob_match(&k.sweep_pattern(), &k.idempotency(&topic, None, "x")));
    }

    /// Enough of Redis' glob for the sweep pattern: literal text, one `[...]` class, `*`.
    fn glob_match(pattern: &str, key: &str) -> bool {
        let (head, rest) = pattern.split_once('[').unwrap();
        let (class, tail) = rest.split_once(']').unwrap();
        let tail = tail.strip_suffix('*').unwrap();
        key.strip_prefix(head)
            .and_then(|key| key.chars().next().filter(|c| class.contains(*c)).map(|c| &key[c.len_utf8()..]))
            .is_some_and(|key| key.starts_with(tail))
    }

    #[test]
    fn idempotency_keys_cannot_collide_across_topics_or_scopes() {
        let k = keys();
        let a = topic("a");
        let b = topic("a}:k:b");
        assert_ne!(k.idempotency(&a, None, "b}:x"), k.idempotency(&b, None, "x"));
        assert_ne!(k.idempotency(&a, None, "x"), k.idempotency(&a, Some("jwt:alice"), "x"));
        assert_ne!(k.idempotency(&a, Some("jwt:alice"), "x"), k.idempotency(&a, Some("jwt:bob"), "x"));
        assert_ne!(k.idempotency(&a, Some("ab"), "c"), k.idempotency(&a, Some("a"), "bc"));
        assert_ne!(k.idempotency(&a, Some("-"), "x"), k.idempotency(&a, None, "x"));
        assert_eq!(k.idempotency(&a, Some("s"), "x"), k.idempotency(&a, Some("s"), "x"));
    }

    #[test]
    fn prefix_rejects_braces_and_spaces() {
        for bad in ["", "a{b", "a}b", "a b", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad:?}");
        }
    }
}
