//! Dead instances: claim, remove, release.
//!
//! An instance is dead when its liveness key (`P:i:{I}:alive`) is missing: a gateway sets
//! it before registering any membership and refreshes it every third of its TTL. Removing a
//! dead instance touches keys in several hash slots (its own keys, one group hash per
//! topic), so no single script can re-check liveness around all of it. Instead the janitor
//! *claims* the instance with a script on the instance's slot that sets `P:i:{I}:sweep`
//! only while the liveness key is missing (`scripts::CLAIM_INSTANCE`):
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

use std::collections::HashSet;
use std::time::Duration;

use streamgate::keys::InstanceKeyKind;
use streamgate::topic::{InstanceId, Topic};

use crate::scripts;
use crate::sweep::{Liveness, Pass, SweepError, member_name, text};

/// How long a claim lives unless extended. It is extended before every batch, so it only
/// needs to outlast one batch (a few round trips); a minute leaves room for a slow Redis,
/// and is the longest a janitor that dies mid-removal delays a gateway restarting under
/// the same id.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);

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

/// A janitor's hold on a dead instance: the instance and the token stored in its sweep key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceClaim {
    instance: InstanceId,
    token: String,
}

impl InstanceClaim {
    /// The claimed instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }
}

impl Pass {
    /// Claims an instance (in a dry run: tells whether it could be claimed, claiming nothing).
    pub(crate) async fn claim(&mut self, instance: &InstanceId) -> Result<Claim, SweepError> {
        let token = format!("{:016x}", fastrand::u64(..));
        let answer: String = scripts::eval(
            scripts::CLAIM_INSTANCE,
            &[&self.keys.instance_alive(instance), &self.keys.instance_sweep(instance)],
        )
        .arg(scripts::mode(self.dry_run))
        .arg(&token)
        .arg(CLAIM_TTL.as_millis() as u64)
        .query_async(&mut self.conn)
        .await?;
        match answer.as_str() {
            "claimed" => Ok(Claim::Claimed(InstanceClaim { instance: instance.clone(), token })),
            "live" => Ok(Claim::Live),
            "busy" => Ok(Claim::Busy),
            other => Err(SweepError::UnexpectedReply(format!("claim answered {other:?}"))),
        }
    }

    /// Claims and removes an instance seen dead, including its fields in `extra_groups`
    /// (found by the keyspace scan, perhaps not in its topic record). Returns whether it was
    /// removed from the instance index.
    pub(crate) async fn sweep_instance(
        &mut self,
        instance: &InstanceId,
        extra_groups: &[Topic],
    ) -> Result<bool, SweepError> {
        let claim = match self.claim(instance).await? {
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
        self.remove_instance(&claim, extra_groups).await
    }

    /// Removes a claimed instance's state and releases the claim. Returns whether it was
    /// removed from the instance index.
    pub(crate) async fn remove_instance(
        &mut self,
        claim: &InstanceClaim,
        extra_groups: &[Topic],
    ) -> Result<bool, SweepError> {
        let instance = &claim.instance;
        // An instance met again (an orphan field found by the keyspace scan) only needs
        // those fields removed: its record was read the first time.
        let first_time = self.instances_done.insert(instance.clone());
        let stream_key = self.keys.instance_stream(instance);
        let topics_key = self.keys.instance_topics(instance);
        let (stream_type, topics_type): (String, String) = redis::pipe()
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
            if found != "none" && found != kind.redis_type() {
                let problem = format!("a {found}, expected a {}", kind.redis_type());
                self.malformed(key.clone(), problem);
            }
        }

        let mut fields_removed = 0;
        let mut groups: HashSet<Topic> = HashSet::new();
        if first_time && topics_type == "set" {
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
                fields_removed += self.remove_fields_of_dead(instance, &topics).await?;
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
            fields_removed += self.remove_fields_of_dead(instance, &extra).await?;
        }

        // Still ours right before the index entry goes: a gateway back under this id
        // re-adds its entry only after the claim is released.
        if !self.refresh(claim).await? {
            return Ok(false);
        }
        let unindexed = first_time && self.unindex_instance(instance).await?;
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

    /// Removes the instance from the instance index (a dry run only looks). Returns whether
    /// it was there.
    async fn unindex_instance(&mut self, instance: &InstanceId) -> Result<bool, SweepError> {
        let index = self.keys.instances();
        if self.dry_run {
            let score: Option<String> =
                redis::cmd("ZSCORE").arg(&index).arg(instance.as_str()).query_async(&mut self.conn).await?;
            return Ok(score.is_some());
        }
        let removed: i64 =
            redis::cmd("ZREM").arg(&index).arg(instance.as_str()).query_async(&mut self.conn).await?;
        Ok(removed == 1)
    }

    /// Extends the claim; false (and a warning) when it was lost. Always true in a dry run,
    /// which holds no claim.
    async fn refresh(&mut self, claim: &InstanceClaim) -> Result<bool, SweepError> {
        if self.dry_run {
            return Ok(true);
        }
        let kept: i64 = scripts::eval(scripts::REFRESH_CLAIM, &[&self.keys.instance_sweep(&claim.instance)])
            .arg(&claim.token)
            .arg(CLAIM_TTL.as_millis() as u64)
            .query_async(&mut self.conn)
            .await?;
        if kept != 1 {
            self.claim_lost(&claim.instance);
        }
        Ok(kept == 1)
    }

    fn claim_lost(&self, instance: &InstanceId) {
        tracing::warn!(
            %instance,
            "Lost the claim on a dead instance before finishing; the next sweep completes it."
        );
    }
}
