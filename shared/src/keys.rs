//! Every Redis key name Streamgate uses. No other module writes a key name literally.
//!
//! All keys start with a configurable prefix (`KEY_PREFIX`, default `streamgate`). Keys
//! that one atomic script touches share a Redis Cluster hash tag: per topic `{<topic>}`,
//! per instance `{<instance>}`, so a move to Redis Cluster needs no redesign.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:h:{T}` | stream | topic T's history (fields `d` data, `p` previous id, `n` event name) |
//! | `P:m:{T}` | hash | topic T's meta: `epoch`, `last` (id of the newest event) |
//! | `P:g:{T}` | hash | topic T's group: instance id → number of local subscribers |
//! | `P:k:{T}:<sha1>` | string | idempotency record (value: the cursor of the original event) |
//! | `P:i:{I}:s` | stream | instance I's routed events |
//! | `P:i:{I}:alive` | string | instance I's liveness, with a TTL |
//! | `P:i:{I}:topics` | set | the topics instance I has registered in |
//! | `P:i:{I}:sweep` | string | a janitor's claim while it removes dead instance I |
//! | `P:instances` | sorted set | known instances by last heartbeat (unix ms) |
//! | `P:topics` | sorted set | topics by last publish (unix ms) |
//! | `P:janitor:scan` | string | where the janitor's next full pass resumes its SCAN |
//!
//! The ingest stream is named separately (`INGEST_STREAM`, default `streamgate:ingest`).

use crate::topic::{InstanceId, Topic};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "streamgate";

/// The kinds of per-topic key, as [`Keys::topic_key_of`] tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKeyKind {
    /// `P:h:{T}`, the history stream.
    History,
    /// `P:m:{T}`, the meta hash.
    Meta,
    /// `P:g:{T}`, the group hash.
    Group,
}

impl TopicKeyKind {
    /// The Redis type (as `TYPE` names it) a key of this kind must have.
    pub fn redis_type(self) -> &'static str {
        match self {
            TopicKeyKind::History => "stream",
            TopicKeyKind::Meta | TopicKeyKind::Group => "hash",
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
}

impl InstanceKeyKind {
    /// The Redis type (as `TYPE` names it) a key of this kind must have.
    pub fn redis_type(self) -> &'static str {
        match self {
            InstanceKeyKind::Stream => "stream",
            InstanceKeyKind::Alive | InstanceKeyKind::Sweep => "string",
            InstanceKeyKind::Topics => "set",
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
        format!("{}:{kind}:{{{}}}", self.prefix, topic.as_str())
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

    /// Idempotency record for `key` on `topic`. The upstream key is hashed so that no
    /// choice of topic and key can collide with another pair.
    pub fn idempotency(&self, topic: &Topic, key: &str) -> String {
        let digest = sha1_smol::Sha1::from(key.as_bytes()).digest().to_string();
        format!("{}:{digest}", self.topic_key("k", topic))
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

    /// Registry of instances by last heartbeat.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// Index of topics by last publish.
    pub fn topics(&self) -> String {
        format!("{}:topics", self.prefix)
    }

    /// The pattern matching every topic history (for the janitor's SCAN).
    pub fn history_pattern(&self) -> String {
        format!("{}:h:{{*", self.prefix)
    }

    /// The pattern matching every instance key (for the janitor's SCAN).
    pub fn instance_pattern(&self) -> String {
        format!("{}:i:{{*", self.prefix)
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

    /// The kind and topic of a history, meta or group key, if `key` is one. The topic is
    /// not validated.
    pub fn topic_key_of<'k>(&self, key: &'k str) -> Option<(TopicKeyKind, &'k str)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let (kind, rest) = if let Some(rest) = rest.strip_prefix("h:{") {
            (TopicKeyKind::History, rest)
        } else if let Some(rest) = rest.strip_prefix("m:{") {
            (TopicKeyKind::Meta, rest)
        } else {
            (TopicKeyKind::Group, rest.strip_prefix("g:{")?)
        };
        rest.strip_suffix('}').map(|topic| (kind, topic))
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
            _ => return None,
        };
        Some((instance, kind))
    }

    /// The topic named by a history, meta or group key, if `key` is one.
    pub fn topic_of(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let rest = rest
            .strip_prefix("h:{")
            .or_else(|| rest.strip_prefix("m:{"))
            .or_else(|| rest.strip_prefix("g:{"))?;
        rest.strip_suffix('}').map(str::to_owned)
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

    fn keys() -> Keys {
        Keys::new("sg").unwrap()
    }

    #[test]
    fn keys_of_one_topic_share_a_hash_tag() {
        let k = keys();
        for name in ["order:1", "a}b", "{x}", "é"] {
            let topic = Topic::parse(name, 256).unwrap();
            let tag = hash_tag(&k.history(&topic)).to_owned();
            assert_eq!(hash_tag(&k.meta(&topic)), tag);
            assert_eq!(hash_tag(&k.group(&topic)), tag);
            assert_eq!(hash_tag(&k.idempotency(&topic, "up-1")), tag);
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
    }

    #[test]
    fn key_names_are_stable() {
        let k = keys();
        let topic = Topic::parse("order:1", 256).unwrap();
        assert_eq!(k.history(&topic), "sg:h:{order:1}");
        assert_eq!(k.meta(&topic), "sg:m:{order:1}");
        assert_eq!(k.group(&topic), "sg:g:{order:1}");
        let id = InstanceId::parse("gw-1").unwrap();
        assert_eq!(k.instance_stream(&id), "sg:i:{gw-1}:s");
        assert_eq!(k.topic_of("sg:h:{order:1}").as_deref(), Some("order:1"));
        assert_eq!(k.instance_of("sg:i:{gw-1}:alive"), Some(("gw-1", "alive")));
    }

    #[test]
    fn parsers_tell_key_kinds_apart_and_invert_the_builders() {
        let k = keys();
        let topic = Topic::parse("a}b:c", 256).unwrap();
        assert_eq!(k.topic_key_of(&k.history(&topic)), Some((TopicKeyKind::History, "a}b:c")));
        assert_eq!(k.topic_key_of(&k.meta(&topic)), Some((TopicKeyKind::Meta, "a}b:c")));
        assert_eq!(k.topic_key_of(&k.group(&topic)), Some((TopicKeyKind::Group, "a}b:c")));
        assert_eq!(k.topic_key_of(&k.idempotency(&topic, "x")), None);
        assert_eq!(k.topic_key_of("sg:h:{unterminated"), None);
        assert_eq!(k.topic_key_of("other:h:{t}"), None);
        let id = InstanceId::parse("gw-1").unwrap();
        assert_eq!(k.instance_key_of(&k.instance_stream(&id)), Some(("gw-1", InstanceKeyKind::Stream)));
        assert_eq!(k.instance_key_of(&k.instance_alive(&id)), Some(("gw-1", InstanceKeyKind::Alive)));
        assert_eq!(k.instance_key_of(&k.instance_topics(&id)), Some(("gw-1", InstanceKeyKind::Topics)));
        assert_eq!(k.instance_key_of(&k.instance_sweep(&id)), Some(("gw-1", InstanceKeyKind::Sweep)));
        assert_eq!(k.instance_key_of("sg:i:{gw-1}:other"), None);
        assert_eq!(k.sweep_pattern(), "sg:[ghim]:{*");
        assert_eq!(k.janitor_scan_cursor(), "sg:janitor:scan");
    }

    #[test]
    fn idempotency_keys_cannot_collide_across_topics() {
        let k = keys();
        let a = Topic::parse("a", 256).unwrap();
        let b = Topic::parse("a}:k:b", 256).unwrap();
        assert_ne!(k.idempotency(&a, "b}:x"), k.idempotency(&b, "x"));
    }

    #[test]
    fn prefix_rejects_braces_and_spaces() {
        for bad in ["", "a{b", "a}b", "a b", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad:?}");
        }
    }
}
