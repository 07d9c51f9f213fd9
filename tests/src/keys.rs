//! Key names for tests that read or plant Redis keys directly, built by
//! [`streamgate::keys::Keys`] like the services do (never written out by hand: the
//! topic's hash tag is a digest of its name).

use streamgate::keys::Keys;
use streamgate::topic::Topic;

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
