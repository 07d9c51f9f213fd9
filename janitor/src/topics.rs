//! Topic histories: trimmed to retention, deleted when idle past it with no subscribers.
//!
//! For a batch of topics a sweep reads each topic's keys in one read-only script
//! (types, length, newest and oldest id) and its index score, cleans the topics' group
//! hashes ([`crate::groups`]), then decides per topic ([`decide`]):
//!
//! - Idle — retention by age is set and the newest entry is older than it, or there is no
//!   entry — and no group hash (nobody subscribes): delete history and meta in one script
//!   that re-checks both conditions (no group hash, newest id unchanged), then remove the
//!   topic from the index if its score is still the one read (a publish since moved it).
//! - Otherwise trim: `XTRIM MAXLEN ~` and `XTRIM MINID ~` with the cut computed from
//!   Redis' clock. Approximate trimming removes whole macro nodes only, and at most Redis'
//!   default LIMIT per call, so each call stays cheap however long the stream.
//!
//! Keys of the wrong type are reported and the topic is left alone.

use streamgate::keys::{RedisType, TopicKeyKind};
use streamgate::topic::Topic;

use crate::scripts;
use crate::sweep::{Pass, Retention, SweepError};

/// Topics handled per pipeline. Each costs two small commands to inspect and at most one
/// script to act on, so 200 keeps each reply to a few kilobytes while a sweep of 100,000
/// topics stays near 1,500 round trips.
const TOPICS_PER_PIPELINE: usize = 200;

/// The most entries a dry run reads to count what trimming by age would remove: the most
/// one real `XTRIM ~` call removes with Redis' default node size (its LIMIT is 100 nodes of
/// `stream-node-max-entries` = 100), so the dry run never reads more than a sweep trims.
const DRY_RUN_COUNT_CAP: u64 = 10_000;

/// What a topic's keys held when inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inspection {
    /// Redis types of the history, meta and group keys (`none` when missing).
    pub(crate) history_type: RedisType,
    pub(crate) meta_type: RedisType,
    pub(crate) group_type: RedisType,
    /// History length.
    pub(crate) len: u64,
    /// Newest and oldest entry ids, empty when there is none.
    pub(crate) newest: String,
    pub(crate) oldest: String,
}

/// What to do with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing (within retention, or a key of the wrong type).
    Nothing,
    /// Trim: by length to `max_len` (0: no), by age below `min_id_ms` (0: no).
    Trim { max_len: u64, min_id_ms: u64 },
    /// Delete history and meta if the newest id is still `newest` and nobody subscribed.
    Delete { newest: String },
    /// Nothing is left of the topic: only its index entry goes.
    Unindex,
}

/// The millisecond part of a stream id.
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// Decides what a sweep does with a topic. `group_gone`: no group hash, or this sweep
/// emptied it.
pub(crate) fn decide(
    inspection: &Inspection,
    retention: &Retention,
    now_ms: u64,
    group_gone: bool,
) -> Action {
    let history_ok = inspection.history_type.fits(&RedisType::Stream);
    let meta_ok = inspection.meta_type.fits(&RedisType::Hash);
    if !history_ok || !meta_ok {
        return Action::Nothing;
    }
    let history_exists = inspection.history_type == RedisType::Stream;
    let min_id_ms = retention
        .max_age
        .map(|age| now_ms.saturating_sub(age.as_millis().try_into().unwrap_or(u64::MAX)))
        .unwrap_or(0);
    let idle = min_id_ms > 0
        && (inspection.len == 0 || id_ms(&inspection.newest).is_some_and(|newest| newest < min_id_ms));
    if idle && group_gone && (history_exists || inspection.meta_type == RedisType::Hash) {
        return Action::Delete { newest: inspection.newest.clone() };
    }
    if !history_exists {
        let nothing_left =
            inspection.meta_type == RedisType::Missing && inspection.group_type == RedisType::Missing;
        return if nothing_left { Action::Unindex } else { Action::Nothing };
    }
    let max_len = retention.max_len.filter(|&max| inspection.len > max).unwrap_or(0);
    let by_age = min_id_ms > 0 && id_ms(&inspection.oldest).is_some_and(|oldest| oldest < min_id_ms);
    let min_id_ms = if by_age { min_id_ms } else { 0 };
    if max_len == 0 && min_id_ms == 0 {
        return Action::Nothing;
    }
    Action::Trim { max_len, min_id_ms }
}

impl Pass {
    /// Sweeps the histories of `topics` not handled yet in this sweep. Returns how many
    /// were removed from the topic index.
    pub(crate) async fn sweep_topics(&mut self, topics: Vec<Topic>) -> Result<usize, SweepError> {
        let topics: Vec<Topic> = topics.into_iter().filter(|t| self.topics_done.insert(t.clone())).collect();
        let mut unindexed = 0;
        for batch in topics.chunks(TOPICS_PER_PIPELINE) {
            unindexed += self.sweep_topic_batch(batch).await?;
        }
        Ok(unindexed)
    }

    async fn sweep_topic_batch(&mut self, topics: &[Topic]) -> Result<usize, SweepError> {
        let index = self.keys.topics();
        let mut pipe = redis::pipe();
        for topic in topics {
            let (history, meta, group) = self.topic_keys(topic);
            pipe.add_command(scripts::eval(scripts::INSPECT_TOPIC, &[&history, &meta, &group]));
            pipe.cmd("ZSCORE").arg(&index).arg(topic.as_str());
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.conn).await?;
        let mut inspections = Vec::with_capacity(topics.len());
        let mut replies = replies.into_iter();
        while let (Some(inspection), Some(score)) = (replies.next(), replies.next()) {
            let (history_type, meta_type, group_type, len, newest, oldest) =
                redis::from_redis_value(inspection)?;
            let score: Option<String> = redis::from_redis_value(score)?;
            inspections
                .push((Inspection { history_type, meta_type, group_type, len, newest, oldest }, score));
        }

        let mut groups = Vec::new();
        for (topic, (inspection, _)) in topics.iter().zip(&inspections) {
            self.report_wrong_types(topic, inspection);
            if inspection.group_type == RedisType::Hash {
                groups.push(topic.clone());
            }
        }
        self.clean_groups(groups).await?;

        let retention = self.settings.retention;
        let actions: Vec<(&Topic, Action, Option<String>)> = topics
            .iter()
            .zip(inspections)
            .map(|(topic, (inspection, score))| {
                let group_gone =
                    inspection.group_type == RedisType::Missing || self.emptied_groups.contains(topic);
                (topic, decide(&inspection, &retention, self.now_ms, group_gone), score)
            })
            .collect();
        let mut pipe = redis::pipe();
        let mut acting = Vec::new();
        for (topic, action, score) in &actions {
            let (history, meta, group) = self.topic_keys(topic);
            let mode = scripts::mode(self.dry_run);
            match action {
                Action::Nothing | Action::Unindex => continue,
                Action::Trim { max_len, min_id_ms } => {
                    let mut call = scripts::eval(scripts::TRIM_HISTORY, &[&history]);
                    call.arg(mode).arg(max_len).arg(min_id_ms).arg(DRY_RUN_COUNT_CAP);
                    pipe.add_command(call);
                }
                Action::Delete { newest } => {
                    let emptied = if self.emptied_groups.contains(*topic) { "1" } else { "0" };
                    let mut call = scripts::eval(scripts::DELETE_TOPIC, &[&history, &meta, &group]);
                    call.arg(mode).arg(newest).arg(emptied);
                    pipe.add_command(call);
                }
            }
            acting.push((*topic, action, score));
        }
        let replies: Vec<redis::Value> =
            if acting.is_empty() { Vec::new() } else { pipe.query_async(&mut self.conn).await? };
        let mut unindex = Vec::new();
        for ((topic, action, score), reply) in acting.into_iter().zip(replies) {
            match action {
                Action::Trim { .. } => {
                    let trimmed: u64 = redis::from_redis_value(reply)?;
                    self.report.topic_entries_trimmed += trimmed;
                }
                Action::Delete { .. } => {
                    let (deleted, history): (u64, u64) = redis::from_redis_value(reply)?;
                    if deleted == 1 {
                        self.report.topic_streams_deleted += history;
                        tracing::debug!(%topic, dry_run = self.dry_run, "Deleted an idle topic's history.");
                        unindex.push((topic, score));
                    }
                }
                Action::Nothing | Action::Unindex => {}
            }
        }
        for (topic, action, score) in &actions {
            if *action == Action::Unindex {
                unindex.push((topic, score));
            }
        }
        self.unindex(unindex).await
    }

    /// Removes deleted topics from the index, if their score is unchanged. Returns how many
    /// went. A dry run removes none.
    async fn unindex(&mut self, topics: Vec<(&Topic, &Option<String>)>) -> Result<usize, SweepError> {
        let scored: Vec<(&Topic, &String)> =
            topics.into_iter().filter_map(|(topic, score)| score.as_ref().map(|s| (topic, s))).collect();
        if self.dry_run || scored.is_empty() {
            return Ok(0);
        }
        let index = self.keys.topics();
        let mut pipe = redis::pipe();
        for (topic, score) in &scored {
            let mut call = scripts::eval(scripts::UNINDEX_TOPIC, &[&index]);
            call.arg(topic.as_str()).arg(*score);
            pipe.add_command(call);
        }
        let removed: Vec<u64> = pipe.query_async(&mut self.conn).await?;
        Ok(removed.into_iter().filter(|&n| n == 1).count())
    }

    fn topic_keys(&self, topic: &Topic) -> (String, String, String) {
        (self.keys.history(topic), self.keys.meta(topic), self.keys.group(topic))
    }

    fn report_wrong_types(&mut self, topic: &Topic, inspection: &Inspection) {
        let (history, meta, group) = self.topic_keys(topic);
        for (key, found, kind) in [
            (history, &inspection.history_type, TopicKeyKind::History),
            (meta, &inspection.meta_type, TopicKeyKind::Meta),
            (group, &inspection.group_type, TopicKeyKind::Group),
        ] {
            if !found.fits(&kind.redis_type()) {
                self.malformed(key, format_args!("a {found}, expected a {}", kind.redis_type()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_000_000;

    fn stream(len: u64, oldest: u64, newest: u64) -> Inspection {
        Inspection {
            history_type: RedisType::Stream,
            meta_type: RedisType::Hash,
            group_type: RedisType::Missing,
            len,
            newest: if len > 0 { format!("{newest}-0") } else { String::new() },
            oldest: if len > 0 { format!("{oldest}-0") } else { String::new() },
        }
    }

    fn retention(max_len: Option<u64>, max_age_ms: Option<u64>) -> Retention {
        Retention { max_len, max_age: max_age_ms.map(Duration::from_millis) }
    }

    #[test]
    fn a_history_within_retention_is_left_alone() {
        let action = decide(&stream(10, NOW - 500, NOW - 100), &retention(Some(10), Some(1000)), NOW, true);
        assert_eq!(action, Action::Nothing);
    }

    #[test]
    fn a_history_too_long_or_too_old_is_trimmed() {
        let action = decide(&stream(12, NOW - 500, NOW - 100), &retention(Some(10), Some(1000)), NOW, true);
        assert_eq!(action, Action::Trim { max_len: 10, min_id_ms: 0 });
        let action = decide(&stream(5, NOW - 5000, NOW - 100), &retention(None, Some(1000)), NOW, true);
        assert_eq!(action, Action::Trim { max_len: 0, min_id_ms: NOW - 1000 });
    }

    #[test]
    fn an_idle_history_is_deleted_only_without_subscribers() {
        let idle = stream(5, NOW - 9000, NOW - 5000);
        let action = decide(&idle, &retention(None, Some(1000)), NOW, true);
        assert_eq!(action, Action::Delete { newest: format!("{}-0", NOW - 5000) });
        let action = decide(&idle, &retention(None, Some(1000)), NOW, false);
        assert_eq!(action, Action::Trim { max_len: 0, min_id_ms: NOW - 1000 });
    }

    #[test]
    fn an_empty_history_is_idle_but_never_without_an_age_limit() {
        let empty = stream(0, 0, 0);
        assert_eq!(
            decide(&empty, &retention(None, Some(1000)), NOW, true),
            Action::Delete { newest: String::new() }
        );
        assert_eq!(decide(&empty, &retention(Some(10), None), NOW, true), Action::Nothing);
        let old = stream(3, 1, 2);
        assert_eq!(decide(&old, &retention(None, None), NOW, true), Action::Nothing);
    }

    #[test]
    fn keys_of_the_wrong_type_stop_everything() {
        let mut wrong = stream(50, 1, 2);
        wrong.meta_type = RedisType::String;
        assert_eq!(decide(&wrong, &retention(Some(1), Some(1)), NOW, true), Action::Nothing);
    }

    #[test]
    fn a_topic_with_no_keys_left_is_only_unindexed() {
        let gone = Inspection {
            history_type: RedisType::Missing,
            meta_type: RedisType::Missing,
            group_type: RedisType::Missing,
            len: 0,
            newest: String::new(),
            oldest: String::new(),
        };
        assert_eq!(decide(&gone, &retention(None, None), NOW, true), Action::Unindex);
        assert_eq!(decide(&gone, &retention(None, Some(1000)), NOW, true), Action::Unindex);
    }
}
