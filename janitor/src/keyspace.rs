//! The full pass: one SCAN of the keyspace for what no index names.
//!
//! `SCAN MATCH P:[ghim]:{*` walks the keyspace once and returns every history, meta and
//! group key and every instance key (idempotency records `P:k:` do not match). Each batch
//! is classified by name ([`classify`]) and by `TYPE` (one pipelined round trip); names
//! Streamgate cannot have written and keys of the wrong type are reported and skipped.
//! Then, per batch: instances seen dead are swept, group hashes cleaned, histories
//! trimmed or deleted.
//!
//! When the budget runs out the cursor is saved in `P:janitor:scan`, and the next sweep
//! resumes there: a SCAN cursor stays valid across connections and rehashing, so
//! successive bounded sweeps still cover the whole keyspace. A finished pass deletes it.
//!
//! On a Redis Cluster a SCAN covers one node, so the pass scans every master in turn (in
//! address order), with the same bounded batches; the saved cursor is then
//! `<host:port> <cursor>`. A saved master that is no master any more (a failover) starts
//! the pass over: SCAN is safe to repeat, and the pass still ends.

use std::time::Duration;

use streamgate::keys::{InstanceKeyKind, Keys, RedisType, TopicKeyKind};
use streamgate::redis::Node;
use streamgate::topic::{InstanceId, Topic};

use crate::sweep::{Pass, SweepError, text};

/// How long a saved SCAN cursor is kept. A day covers any sensible sweep interval; a
/// cursor left by a janitor that stopped running is then forgotten rather than resumed
/// weeks later (which would be harmless too: any cursor is a valid place to resume).
const SCAN_CURSOR_TTL: Duration = Duration::from_secs(24 * 3600);

/// A key of the full pass, as its name tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// A history, meta or group key of a valid topic.
    Topic(TopicKeyKind, Topic),
    /// A key of a valid instance id.
    Instance(InstanceKeyKind, InstanceId),
}

impl Scanned {
    fn redis_type(&self) -> RedisType {
        match self {
            Scanned::Topic(kind, _) => kind.redis_type(),
            Scanned::Instance(kind, _) => kind.redis_type(),
        }
    }
}

/// Where a saved cursor resumes: the index of its master in `masters` and the SCAN cursor.
/// `None` (start over) for a master no longer in the list or a cursor of the other form.
fn resume_at(saved: &str, masters: &[Option<Node>]) -> Option<(usize, u64)> {
    match saved.split_once(' ') {
        Some((node, cursor)) => {
            let at =
                masters.iter().position(|master| master.as_ref().is_some_and(|m| m.to_string() == node))?;
            Some((at, cursor.parse().ok()?))
        }
        None if masters == [None] => Some((0, saved.parse().ok()?)),
        None => None,
    }
}

/// What a scanned key name is, or why it is malformed.
pub(crate) fn classify(keys: &Keys, name: &str, max_topic_bytes: usize) -> Result<Scanned, &'static str> {
    if let Some((kind, topic)) = keys.topic_key_of(name) {
        return Topic::parse(topic, max_topic_bytes)
            .map(|topic| Scanned::Topic(kind, topic))
            .map_err(|_| "names no valid topic");
    }
    if let Some((instance, kind)) = keys.instance_key_of(name) {
        return InstanceId::parse(instance)
            .map(|instance| Scanned::Instance(kind, instance))
            .map_err(|_| "names no valid instance id");
    }
    Err("is no key Streamgate writes")
}

impl Pass {
    /// Phase 3: the keyspace SCAN, from where the last bounded sweep stopped.
    pub(crate) async fn sweep_keyspace(&mut self) -> Result<(), SweepError> {
        if !self.budget_left() {
            return Ok(());
        }
        let cursor_key = self.keys.janitor_scan_cursor();
        let cursor_usable = self.has_type(&cursor_key, RedisType::String).await?;
        let masters: Vec<Option<Node>> = match self.conn.masters().await? {
            Some(masters) => masters.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut at = 0;
        let mut cursor: u64 = 0;
        if cursor_usable {
            let saved: Option<String> =
                redis::cmd("GET").arg(&cursor_key).query_async(&mut self.conn).await?;
            (at, cursor) = saved.and_then(|saved| resume_at(&saved, &masters)).unwrap_or((0, 0));
        }
        let pattern = self.keys.sweep_pattern();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(self.settings.scan_count);
            let reply = self.conn.query_on(masters[at].as_ref(), &scan).await?;
            let (next, names): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
            self.charge(names.len());
            let scanned = self.classify_batch(names).await?;
            self.sweep_scanned(scanned).await?;
            cursor = next;
            if cursor == 0 {
                at += 1;
            }
            if at == masters.len() || !self.budget_left() {
                break;
            }
        }
        if self.dry_run || !cursor_usable {
            return Ok(());
        }
        if at == masters.len() {
            let () = redis::cmd("DEL").arg(&cursor_key).query_async(&mut self.conn).await?;
        } else {
            let saved = match &masters[at] {
                Some(node) => format!("{node} {cursor}"),
                None => cursor.to_string(),
            };
            let () = redis::cmd("SET")
                .arg(&cursor_key)
                .arg(saved)
                .arg("EX")
                .arg(SCAN_CURSOR_TTL.as_secs())
                .query_async(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Classifies a batch by name, then checks the types of the well-named in one round
    /// trip. Returns the keys to sweep.
    async fn classify_batch(&mut self, names: Vec<Vec<u8>>) -> Result<Vec<Scanned>, SweepError> {
        let mut named = Vec::with_capacity(names.len());
        for name in names {
            let Some(text) = text(&name) else {
                self.malformed(String::from_utf8_lossy(&name).into_owned(), "is not UTF-8");
                continue;
            };
            match classify(&self.keys, text, self.settings.max_topic_bytes) {
                Ok(scanned) => named.push((text.to_owned(), scanned)),
                Err(problem) => self.malformed(text.to_owned(), problem),
            }
        }
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (name, _) in &named {
            pipe.cmd("TYPE").arg(name);
        }
        let types: Vec<RedisType> = pipe.query_async(&mut self.conn).await?;
        let mut scanned = Vec::with_capacity(named.len());
        for ((name, key), found) in named.into_iter().zip(types) {
            if found == key.redis_type() {
                scanned.push(key);
            } else if found != RedisType::Missing {
                // (Missing: deleted since the SCAN returned it.)
                self.malformed(name, format_args!("a {found}, expected a {}", key.redis_type()));
            }
        }
        Ok(scanned)
    }

    /// Sweeps one classified batch: instances first, so that fields of instances removed
    /// here are gone before group hashes are read; then group hashes, so that a topic whose
    /// last subscriber field went can be deleted as idle; then histories.
    async fn sweep_scanned(&mut self, scanned: Vec<Scanned>) -> Result<(), SweepError> {
        let mut instances = Vec::new();
        let mut groups = Vec::new();
        let mut topics = Vec::new();
        for key in scanned {
            match key {
                Scanned::Instance(_, instance) => instances.push(instance),
                Scanned::Topic(TopicKeyKind::Group, topic) => groups.push(topic),
                Scanned::Topic(TopicKeyKind::History | TopicKeyKind::Meta, topic) => topics.push(topic),
            }
        }
        instances.sort_unstable();
        instances.dedup();
        self.sweep_instances(instances).await?;
        self.clean_groups(groups).await?;
        self.sweep_topics(topics).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_or_explained() {
        let keys = Keys::new("sg").unwrap();
        let topic = Topic::parse("order:1", 256).unwrap();
        assert_eq!(
            classify(&keys, &keys.history(&topic), 256),
            Ok(Scanned::Topic(TopicKeyKind::History, topic.clone()))
        );
        assert_eq!(
            classify(&keys, &keys.group(&topic), 256),
            Ok(Scanned::Topic(TopicKeyKind::Group, topic.clone()))
        );
        assert_eq!(
            classify(&keys, "sg:i:{gw-1}:alive", 256),
            Ok(Scanned::Instance(InstanceKeyKind::Alive, InstanceId::parse("gw-1").unwrap()))
        );
        // A gateway's summary expires with it; the scan knows it, so it is never malformed.
        assert_eq!(
            classify(&keys, "sg:i:{gw-1}:summary", 256),
            Ok(Scanned::Instance(InstanceKeyKind::Summary, InstanceId::parse("gw-1").unwrap()))
        );
        assert_eq!(classify(&keys, &keys.history(&topic), 3), Err("names no valid topic"));
        let digest = streamgate::keys::topic_digest("a\nb");
        assert_eq!(classify(&keys, &format!("sg:h:{{{digest}}}:a\nb"), 256), Err("names no valid topic"));
        assert_eq!(classify(&keys, "sg:i:{bad id}:s", 256), Err("names no valid instance id"));
        assert_eq!(classify(&keys, "sg:i:{gw-1}:other", 256), Err("is no key Streamgate writes"));
        assert_eq!(classify(&keys, "sg:h:{unterminated", 256), Err("is no key Streamgate writes"));
        assert_eq!(classify(&keys, "sg:h:{order:1}", 256), Err("is no key Streamgate writes"));
    }
}
