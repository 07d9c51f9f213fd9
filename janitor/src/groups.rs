//! Group hashes (`P:g:{D}:T`: instance id → number of its subscribers of topic T).
//!
//! A field is removed when its count is zero, negative or not a number — by a script that
//! re-checks the value, so a count a gateway rewrote meanwhile stays — or when its instance
//! is dead. A dead instance's fields are only ever removed under a claim on that instance
//! ([`crate::instances`]): the group hash lives in the topic's hash slot, where no script
//! can re-check the instance's liveness, and the claim is what keeps a gateway restarting
//! under the same id from registering while its old fields are removed. Fields naming no
//! valid instance id are reported and left alone. Redis deletes a hash whose last field
//! goes; such hashes are counted as deleted.

use std::collections::{BTreeMap, HashMap, HashSet};

use streamgate::topic::{InstanceId, Topic};

use crate::instances::InstanceClaim;
use crate::scripts;
use crate::sweep::{Pass, SweepError, member_name, text};

/// Fields per call of the removal script. Its fields go through Lua's `unpack`, whose
/// stack is limited to a few thousand values, and one call should stay short; gateways
/// rarely number more than a few dozen per topic.
const FIELDS_PER_CALL: usize = 100;

/// A hash's (field, value) pairs as Redis returns them: bytes, not necessarily UTF-8.
type FieldValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Why fields are to be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Fields of a claimed dead instance, until the claim's deadline (Redis' clock, unix ms).
    Dead(u64),
    /// Fields whose count is not a positive whole number (re-checked by the script).
    Invalid,
}

impl Removal {
    fn as_arg(self) -> &'static str {
        match self {
            Removal::Dead(_) => "dead",
            Removal::Invalid => "invalid",
        }
    }

    fn deadline_ms(self) -> u64 {
        match self {
            Removal::Dead(deadline_ms) => deadline_ms,
            Removal::Invalid => 0,
        }
    }
}

/// What a round of removals did.
#[derive(Debug, Default)]
struct Removed {
    /// Fields removed.
    fields: u64,
    /// Whether a removal was refused because the claim's deadline had passed.
    lapsed: bool,
}

/// Whether a group-hash value is a subscriber count a gateway can have written: the
/// producer's rule (a whole number above zero).
pub(crate) fn is_count(value: &str) -> bool {
    value.trim().parse::<i64>().is_ok_and(|count| count > 0)
}

impl Pass {
    /// Cleans the group hashes of `topics` not cleaned yet in this sweep.
    pub(crate) async fn clean_groups(&mut self, topics: Vec<Topic>) -> Result<(), SweepError> {
        let topics: Vec<Topic> = topics.into_iter().filter(|t| self.groups_done.insert(t.clone())).collect();
        if topics.is_empty() {
            return Ok(());
        }
        let fields = self.read_groups(&topics).await?;
        let mut invalid: Vec<(Topic, Vec<String>)> = Vec::new();
        let mut members: BTreeMap<InstanceId, Vec<Topic>> = BTreeMap::new();
        for (topic, pairs) in fields {
            let group = self.keys.group(&topic);
            let mut bad_counts = Vec::new();
            for (field, value) in pairs {
                let Some(instance) = text(&field).and_then(|f| InstanceId::parse(f).ok()) else {
                    self.malformed(member_name(&group, &field), "names no valid instance id");
                    continue;
                };
                if text(&value).is_some_and(is_count) {
                    members.entry(instance).or_default().push(topic.clone());
                } else {
                    bad_counts.push(instance.as_str().to_owned());
                }
            }
            if !bad_counts.is_empty() {
                invalid.push((topic, bad_counts));
            }
        }
        self.check_liveness(members.keys()).await?;
        for (instance, groups) in members {
            if self.is_dead(&instance) {
                self.sweep_instance(&instance, &groups).await?;
            }
        }
        self.remove_fields(Removal::Invalid, invalid).await?;
        Ok(())
    }

    /// Every (field, value) of the group hashes of `topics`, read with HSCAN: the first
    /// page of every hash in one round trip, further pages (large hashes only) after.
    async fn read_groups(&mut self, topics: &[Topic]) -> Result<Vec<(Topic, FieldValues)>, SweepError> {
        let mut fields: HashMap<&Topic, HashMap<Vec<u8>, Vec<u8>>> = HashMap::new();
        let mut pending: Vec<(&Topic, u64)> = topics.iter().map(|t| (t, 0)).collect();
        while !pending.is_empty() {
            let mut pipe = redis::pipe();
            for (topic, cursor) in &pending {
                pipe.cmd("HSCAN")
                    .arg(self.keys.group(topic))
                    .arg(*cursor)
                    .arg("COUNT")
                    .arg(self.settings.scan_count);
            }
            let pages: Vec<(u64, FieldValues)> = pipe.query_async(&mut self.conn).await?;
            let mut next_pending = Vec::new();
            for ((topic, _), (next, page)) in pending.into_iter().zip(pages) {
                // HSCAN may return a field twice; the map keeps one.
                fields.entry(topic).or_default().extend(page);
                if next != 0 {
                    next_pending.push((topic, next));
                }
            }
            pending = next_pending;
        }
        Ok(topics
            .iter()
            .map(|topic| {
                (topic.clone(), fields.remove(topic).map(|f| f.into_iter().collect()).unwrap_or_default())
            })
            .collect())
    }

    /// Removes a claimed dead instance's field from the group hashes of `topics`, fenced by
    /// the claim's deadline. Returns how many fields were removed, or `None` when the claim
    /// lapsed before a removal ran (then the instance is given up on for this sweep).
    pub(crate) async fn remove_fields_of_dead(
        &mut self,
        claim: &InstanceClaim,
        topics: &[Topic],
    ) -> Result<Option<u64>, SweepError> {
        let instance = claim.instance();
        let requests = topics.iter().map(|t| (t.clone(), vec![instance.as_str().to_owned()])).collect();
        let removed = self.remove_fields(Removal::Dead(claim.deadline_ms()), requests).await?;
        if removed.lapsed {
            self.claim_lost(instance);
            return Ok(None);
        }
        Ok(Some(removed.fields))
    }

    /// Runs the removal script for each (topic, fields), pipelined, and counts what went.
    async fn remove_fields(
        &mut self,
        removal: Removal,
        requests: Vec<(Topic, Vec<String>)>,
    ) -> Result<Removed, SweepError> {
        let mut calls: Vec<(Topic, Vec<String>)> = Vec::new();
        for (topic, fields) in requests {
            // A dry run removes nothing, so a field it already counted is still there:
            // leave it out rather than count it twice.
            let fields: Vec<String> = match self.simulated_removals.get(&topic) {
                Some(done) => fields.into_iter().filter(|f| !done.contains(f)).collect(),
                None => fields,
            };
            for chunk in fields.chunks(FIELDS_PER_CALL) {
                calls.push((topic.clone(), chunk.to_vec()));
            }
        }
        if calls.is_empty() {
            return Ok(Removed::default());
        }
        let mut pipe = redis::pipe();
        for (topic, fields) in &calls {
            let already = self.simulated_removals.get(topic).map_or(0, HashSet::len);
            let mut call = scripts::eval(scripts::REMOVE_FIELDS, &[&self.keys.group(topic)]);
            call.arg(scripts::mode(self.dry_run))
                .arg(removal.as_arg())
                .arg(already)
                .arg(removal.deadline_ms())
                .arg(fields);
            pipe.add_command(call);
        }
        let replies: Vec<Vec<redis::Value>> = pipe.query_async(&mut self.conn).await?;
        let mut outcome = Removed::default();
        for ((topic, _), reply) in calls.into_iter().zip(replies) {
            let mut reply = reply.into_iter();
            let emptied: i64 = redis::from_redis_value(reply.next().unwrap_or(redis::Value::Int(0)))?;
            if emptied == scripts::CLAIM_LAPSED {
                outcome.lapsed = true;
                continue;
            }
            if emptied < 0 {
                let group = self.keys.group(&topic);
                self.malformed(group, "not a hash");
                continue;
            }
            let removed: Vec<String> = reply.map(redis::from_redis_value).collect::<Result<_, _>>()?;
            outcome.fields += removed.len() as u64;
            self.report.membership_fields_removed += removed.len() as u64;
            if self.dry_run {
                self.simulated_removals.entry(topic.clone()).or_default().extend(removed);
            }
            if emptied == 1 && self.emptied_groups.insert(topic) {
                self.report.group_hashes_deleted += 1;
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_numbers_above_zero_are_counts() {
        for valid in ["1", "42", " 7 ", "+3"] {
            assert!(is_count(valid), "{valid:?}");
        }
        for invalid in ["0", "-1", "abc", "", "1.5", "99999999999999999999"] {
            assert!(!is_count(invalid), "{invalid:?}");
        }
    }
}
