//! Dead instances: claim, remove, release.
//!
//! An instance is dead when its liveness key (`P:i:{I}:alive`) is missing: a gateway sets
//! it before registering any membership and refreshes it every third of its TTL. Removing a
//! dead instance touches keys in several hash slots (its own keys, one group hash per
//! topic), so no single script can re-check liveness around all of it. Instead the janitor
//! *claims* the instance with a script on the instance's slot that sets `P:i:{I}:sweep`
//! only while the liveness key is missing (`streamgate::liveness::janitor_claim`):
//!
//! - A gateway starting under the same id checks the sweep key before claiming liveness and
//!   waits while it exists, so it registers only after the removal finished.
//! - A gateway that claimed liveness first makes the janitor's claim answer `live`.
//! - A second janitor's claim answers `busy`; it skips the instance.
//!
//! While it holds the claim, the janitor removes the instance's field from every group hash
//! its topic record names (read with SSCAN, in batches, the claim extended before each),
//! then, in one script on the instance's slot and only if the claim is still its own,
//! unlinks the instance stream and topic record and releases the claim.
//!
//! The claim is fenced: a janitor paused (GC, SIGSTOP, a frozen VM) between extending it
//! and removing a batch of fields can outlive it, and by then a gateway back under the same
//! id may have registered fresh fields. The group hashes are on other hash slots than the
//! claim, so the removal script cannot look at the claim; instead claiming and extending
//! return Redis' clock, the janitor keeps a deadline (that time + `SWEEP_CLAIM_TTL` −
//! [`CLOCK_MARGIN`]), and the removal scripts refuse to act once Redis' clock is past it.
//! A refusal gives up on the instance for this sweep (`claims_lapsed` in the report).

use std::collections::HashSet;
use std::time::Duration;

use streamgate::keys::{InstanceKeyKind, RedisType};
use streamgate::liveness::{self, JanitorClaim, JanitorClaimReply};
use streamgate::topic::{InstanceId, Topic};

use crate::scripts;
use crate::sweep::{Liveness, Pass, SweepError, member_name, text};

/// The shortest `SWEEP_CLAIM_TTL`: the claim is extended before every batch, so it needs
/// to outlast one batch (a few round trips) plus [`CLOCK_MARGIN`]. The default, a minute,
/// leaves room for a slow Redis and is the longest a janitor that dies mid-removal delays a
/// gateway restarting under the same id.
pub const MIN_CLAIM_TTL: Duration = Duration::from_secs(3);

/// How much earlier than the claim's expiry its removals stop: the claim expires by the
/// clock of the node holding the instance's keys, the removals check the clock of the nodes
/// holding the group hashes, and on Redis Cluster those clocks may differ a little (NTP
/// keeps them within milliseconds; a second is generous).
pub const CLOCK_MARGIN: Duration = Duration::from_secs(1);

/// The answer to a claim on an instance.
#[derive(Debug)]
pub enum Claim {
    /// The instance is dead and this janitor holds it until it is removed.
    Claimed(InstanceClaim),
    /// The instance's liveness key exists: it is alive, not to be touched.
    Live,
    /// Another janitor holds the instance.
    Busy,
}

/// A janitor's hold on a dead instance: the instance, the token stored in its sweep key, and
/// the deadline (Redis' clock, unix ms) after which nothing may be removed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceClaim {
    instance: InstanceId,
    token: String,
    deadline_ms: u64,
}

impl InstanceClaim {
    /// The claimed instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// After this (Redis' clock, unix ms) nothing may be removed under the claim.
    pub(crate) fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// The deadline for a claim set or extended at `server_ms` (Redis' clock) for `ttl`.
    fn deadline(server_ms: u64, ttl: Duration) -> u64 {
        server_ms + ttl.saturating_sub(CLOCK_MARGIN).as_millis() as u64
    }
}

impl Pass {
    /// Claims an instance (in a dry run: tells whether it could be claimed, claiming nothing).
    pub(crate) async fn claim(&mut self, instance: &InstanceId) -> Result<Claim, SweepError> {
        let token = format!("{:016x}", fastrand::u64(..));
        let ttl = self.settings.claim_ttl;
        let reply: JanitorClaimReply = liveness::janitor_claim(
            &self.keys.instance_alive(instance),
            &self.keys.instance_sweep(instance),
            &token,
            ttl.as_millis() as u64,
            self.dry_run,
        )
        .query_async(&mut self.conn)
        .await?;
        Ok(match reply.claim {
            JanitorClaim::Claimed => Claim::Claimed(InstanceClaim {
                instance: instance.clone(),
                token,
                deadline_ms: InstanceClaim::deadline(reply.server_ms, ttl),
            }),
            JanitorClaim::Live => Claim::Live,
            JanitorClaim::Busy => Claim::Busy,
        })
    }

    /// Claims and removes an instance seen dead, including its fields in `extra_groups`
    /// (found by the keyspace scan, perhaps not in its topic record). Returns whether it was
    /// removed from the instance index.
    pub(crate) async fn sweep_instance(
        &mut self,
        instance: &InstanceId,
        extra_groups: &[Topic],
    ) -> Result<bool, SweepError> {
        let mut claim = match self.claim(instance).await? {
            Claim::Claimed(claim) => claim,
            Claim::Live => {
                tracing::debug!(%instance, "Instance is alive again; leaving it.");
                self.liveness.insert(instance.clone(), Liveness::Live);
                self.instances_done.insert(instance.clone());
                return Ok(false);
            }
            Claim::Busy => {
                tracing::debug!(%instance, "Another janitor is sweeping this instance; skipping it.");
                self.instances_done.insert(instance.clone());
                return Ok(false);
            }
        };
        self.remove_instance(&mut claim, extra_groups).await
    }

    /// Removes a claimed instance's state and releases the claim. Returns whether it was
    /// removed from the instance index.
    pub(crate) async fn remove_instance(
        &mut self,
        claim: &mut InstanceClaim,
        extra_groups: &[Topic],
    ) -> Result<bool, SweepError> {
        let instance = &claim.instance.clone();
        // An instance met again (an orphan field found by the keyspace scan) only needs
        // those fields removed: its record was read the first time.
        let first_time = self.instances_done.insert(instance.clone());
        let stream_key = self.keys.instance_stream(instance);
        let topics_key = self.keys.instance_topics(instance);
        let (stream_type, topics_type): (RedisType, RedisType) = redis::pipe()
            .cmd("TYPE")
            .arg(&stream_key)
            .cmd("TYPE")
            .arg(&topics_key)
            .query_async(&mut self.conn)
            .await?;
        for (key, found, kind) in [
            (&stream_key, &stream_type, InstanceKeyKind::Stream),
            (&topics_key, &topics_type, InstanceKeyKind::Topics),
        ] {
            if !found.fits(&kind.redis_type()) {
                let problem = format!("a {found}, expected a {}", kind.redis_type());
                self.malformed(key.clone(), problem);
            }
        }

        let mut fields_removed = 0;
        let mut groups: HashSet<Topic> = HashSet::new();
        if first_time && topics_type == RedisType::Set {
            let mut cursor = 0u64;
            loop {
                if !self.refresh(claim).await? {
                    return Ok(false);
                }
                let (next, members): (u64, Vec<Vec<u8>>) = redis::cmd("SSCAN")
                    .arg(&topics_key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(self.settings.scan_count)
                    .query_async(&mut self.conn)
                    .await?;
                self.charge(members.len());
                let mut topics = Vec::with_capacity(members.len());
                for member in &members {
                    match text(member).and_then(|m| Topic::parse(m, self.settings.max_topic_bytes).ok()) {
                        // SSCAN may return a member twice.
                        Some(topic) if groups.insert(topic.clone()) => topics.push(topic),
                        Some(_) => {}
                        None => self.malformed(member_name(&topics_key, member), "names no valid topic"),
                    }
                }
                let Some(removed) = self.remove_fields_of_dead(claim, &topics).await? else {
                    return Ok(false);
                };
                fields_removed += removed;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let extra: Vec<Topic> =
            extra_groups.iter().filter(|t| groups.insert((*t).clone())).cloned().collect();
        if !extra.is_empty() {
            if !self.refresh(claim).await? {
                return Ok(false);
            }
            let Some(removed) = self.remove_fields_of_dead(claim, &extra).await? else {
                return Ok(false);
            };
            fields_removed += removed;
        }

        // Still ours right before the index entry goes: a gateway back under this id
        // re-adds its entry only after the claim is released.
        if !self.refresh(claim).await? {
            return Ok(false);
        }
        let mut unindexed = false;
        if first_time {
            let Some(was_indexed) = self.unindex_instance(claim).await? else {
                return Ok(false);
            };
            unindexed = was_indexed;
        }
        let (stream_deleted, record_deleted): (i64, i64) = scripts::eval(
            scripts::FINISH_INSTANCE,
            &[&stream_key, &topics_key, &self.keys.instance_sweep(instance)],
        )
        .arg(scripts::mode(self.dry_run))
        .arg(&claim.token)
        .query_async(&mut self.conn)
        .await?;
        if stream_deleted < 0 {
            self.claim_lost(instance);
            return Ok(unindexed);
        }
        // On a later visit a dry run still sees what it counted the first time.
        let stream_deleted = first_time && stream_deleted > 0;
        let record_deleted = first_time && record_deleted > 0;
        self.report.instance_streams_deleted += u64::from(stream_deleted);
        let removed_anything = unindexed || stream_deleted || record_deleted || fields_removed > 0;
        if removed_anything && self.counted_instances.insert(instance.clone()) {
            self.report.dead_instances += 1;
            tracing::info!(
                %instance,
                fields_removed,
                stream_deleted,
                dry_run = self.dry_run,
                "Removed a dead instance's state."
            );
        }
        Ok(unindexed)
    }

    /// Removes the instance from the instance index (a dry run only looks), fenced by the
    /// claim's deadline. Returns whether it was there, or `None` when the claim lapsed.
    async fn unindex_instance(&mut self, claim: &InstanceClaim) -> Result<Option<bool>, SweepError> {
        let answer: i64 = scripts::eval(scripts::UNINDEX_INSTANCE, &[&self.keys.instances()])
            .arg(scripts::mode(self.dry_run))
            .arg(claim.instance.as_str())
            .arg(claim.deadline_ms)
            .query_async(&mut self.conn)
            .await?;
        if answer == scripts::CLAIM_LAPSED {
            self.claim_lost(&claim.instance);
            return Ok(None);
        }
        Ok(Some(answer == 1))
    }

    /// Extends the claim and moves its deadline; false (and a warning) when it was lost.
    /// Always true in a dry run, which holds no claim.
    async fn refresh(&mut self, claim: &mut InstanceClaim) -> Result<bool, SweepError> {
        if self.dry_run {
            return Ok(true);
        }
        let ttl = self.settings.claim_ttl;
        let server_ms: u64 = liveness::janitor_refresh(
            &self.keys.instance_sweep(&claim.instance),
            &claim.token,
            ttl.as_millis() as u64,
        )
        .query_async(&mut self.conn)
        .await?;
        if server_ms == 0 {
            self.claim_lost(&claim.instance);
            return Ok(false);
        }
        claim.deadline_ms = InstanceClaim::deadline(server_ms, ttl);
        Ok(true)
    }

    /// Counts and logs giving up on an instance whose claim lapsed (or was taken).
    pub(crate) fn claim_lost(&mut self, instance: &InstanceId) {
        self.report.claims_lapsed += 1;
        tracing::warn!(
            %instance,
            "Lost the claim on a dead instance before finishing (paused or slow past its deadline); \
             the next sweep completes it."
        );
    }
}
