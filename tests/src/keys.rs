//! Key names for tests that read or plant Redis keys directly, built by
//! [`streamgate::keys::Keys`] like the services do (never written out by hand: the
//! topic's hash tag is a digest of its name).

use streamgate::keys::Keys;
use streamgate::topic::{InstanceId, Topic};

fn topic_key(prefix: &str, topic: &str, key: impl Fn(&Keys, &Topic) -> String) -> String {
    let keys = Keys::new(prefix).expect("a valid key prefix");
    key(&keys, &Topic::parse(topic, 4096).expect("a valid topic"))
}

/// `P:h:{D}:T`, topic T's history under `prefix`.
pub fn history(prefix: &str, topic: &str) -> String {
    topic_key(prefix, topic, Keys::history)
}

/// `P:m:{D}:T`, topic T's meta hash under `prefix`.
pub fn meta(prefix: &str, topic: &str) -> String {
    topic_key(prefix, topic, Keys::meta)
}

/// `P:g:{D}:T`, topic T's group hash under `prefix`.
pub fn group(prefix: &str, topic: &str) -> String {
    topic_key(prefix, topic, Keys::group)
}

/// The keys of gateway instance `instance` under `prefix`, by kind.
#[derive(Debug, Clone, Copy)]
pub enum InstanceKey {
    /// `P:i:{I}:alive`, its liveness.
    Alive,
    /// `P:i:{I}:s`, its instance stream.
    Stream,
    /// `P:i:{I}:topics`, the topics it registered in.
    Topics,
}

/// Key `kind` of gateway instance `instance` under `prefix`.
pub fn instance(prefix: &str, instance: &str, kind: InstanceKey) -> String {
    let keys = Keys::new(prefix).expect("a valid key prefix");
    let instance = InstanceId::parse(instance).expect("a valid instance id");
    match kind {
        InstanceKey::Alive => keys.instance_alive(&instance),
        InstanceKey::Stream => keys.instance_stream(&instance),
        InstanceKey::Topics => keys.instance_topics(&instance),
    }
}
