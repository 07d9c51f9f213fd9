//! One sweep: a bounded pass over Streamgate's keys that removes what dead gateways left
//! and enforces history retention, safe beside live services and other janitors.
//!
//! A sweep runs three phases, each in batches of at most `SCAN_COUNT` keys:
//!
//! 1. The instance index (`P:instances`, oldest heartbeat first): every instance whose
//!    liveness key is gone is claimed and removed ([`crate::instances`]).
//! 2. The topic index (`P:topics`, oldest publish first): every topic's group hash is
//!    cleaned (`groups`) and its history trimmed or, when idle past retention
//!    with no subscribers, deleted (`topics`).
//! 3. With `FULL_SCAN`, one SCAN of the keyspace (`keyspace`) catches what no
//!    index names: orphaned instance keys, group hashes, histories.
//!
//! Work is bounded by `SWEEP_BUDGET` keys examined, checked between batches; the SCAN
//! cursor is saved when the budget runs out, so successive sweeps cover the whole keyspace.
//! A dry run reads exactly what a sweep reads, simulates its removals to count them, and
//! writes nothing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use streamgate::keys::{Keys, RedisType};
use streamgate::redis::RedisError;
use streamgate::redis::{Conn, Redis};
pub use streamgate::settings::Retention;
use streamgate::topic::{InstanceId, Topic};

use crate::instances::{Claim, InstanceClaim};

/// How many malformed items a sweep logs at `warn`; the rest go to `debug`. Enough to show
/// an operator what is wrong without flooding the log when a whole keyspace is foreign.
const MALFORMED_WARNINGS_PER_SWEEP: u64 = 20;

/// What one sweep enforces and how much it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSettings {
    /// History retention.
    pub retention: Retention,
    /// Most keys examined per sweep.
    pub budget: u64,
    /// The COUNT of each SCAN, SSCAN, HSCAN, and the size of index pages.
    pub scan_count: usize,
    /// Whether phase 3 (the keyspace SCAN) runs.
    pub full_scan: bool,
    /// Longest valid topic name; keys naming longer ones are malformed.
    pub max_topic_bytes: usize,
    /// How long a claim on a dead instance lives unless extended.
    pub claim_ttl: Duration,
}

/// What one sweep did (or, in a dry run, would do). Printed as one JSON line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Dead instances whose state was removed.
    pub dead_instances: u64,
    /// Group-hash fields removed: those of dead instances, and counts that were zero,
    /// negative or not a number.
    pub membership_fields_removed: u64,
    /// Instance streams deleted.
    pub instance_streams_deleted: u64,
    /// Entries trimmed from topic histories by length or age.
    pub topic_entries_trimmed: u64,
    /// Histories of idle topics without subscribers deleted.
    pub topic_streams_deleted: u64,
    /// Group hashes left empty by removed fields (Redis deletes an empty hash).
    pub group_hashes_deleted: u64,
    /// Keys of the wrong type, names Streamgate cannot have written, and index members or
    /// fields naming no valid topic or instance: reported and left alone.
    pub malformed_keys_skipped: u64,
    /// Keys examined, the measure `SWEEP_BUDGET` bounds.
    pub keys_examined: u64,
    /// Dead instances given up on because the claim lapsed before their removal finished
    /// (the janitor was paused or Redis slow past the claim's deadline); the next sweep
    /// goes on with them.
    pub claims_lapsed: u64,
    /// Whether the sweep stopped because the budget ran out.
    pub budget_exhausted: bool,
    /// Whether the keyspace SCAN ran.
    pub full_scan: bool,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// How long the sweep took.
    pub duration_ms: u64,
}

/// Why a sweep stopped early. What it did until then stays done; the next sweep goes on.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Redis failed or could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Redis answered something a sweep does not understand.
    #[error("unexpected reply from redis: {0}")]
    UnexpectedReply(String),
}

impl From<redis::RedisError> for SweepError {
    fn from(error: redis::RedisError) -> Self {
        SweepError::Redis(RedisError::Redis(error))
    }
}

impl From<redis::ParsingError> for SweepError {
    fn from(error: redis::ParsingError) -> Self {
        SweepError::UnexpectedReply(error.to_string())
    }
}

/// Runs sweeps against one Redis.
#[derive(Debug, Clone)]
pub struct Sweeper {
    redis: Redis,
    keys: Keys,
    settings: SweepSettings,
}

impl Sweeper {
    /// A sweeper of the keys under `keys` through `redis`.
    pub fn new(redis: Redis, keys: Keys, settings: SweepSettings) -> Sweeper {
        Sweeper { redis, keys, settings }
    }

    /// One sweep. With `dry_run`, it reads and reports but changes nothing, not even claims.
    #[tracing::instrument(skip_all, err, fields(dry_run = dry_run))]
    pub async fn sweep(&self, dry_run: bool) -> Result<SweepReport, SweepError> {
        let started = Instant::now();
        let mut pass = self.start(dry_run).await?;
        pass.sweep_instance_index().await?;
        pass.sweep_topic_index().await?;
        if self.settings.full_scan {
            pass.report.full_scan = true;
            pass.sweep_keyspace().await?;
        }
        let mut report = pass.report;
        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            dead_instances = report.dead_instances,
            membership_fields_removed = report.membership_fields_removed,
            topic_entries_trimmed = report.topic_entries_trimmed,
            topic_streams_deleted = report.topic_streams_deleted,
            malformed_keys_skipped = report.malformed_keys_skipped,
            keys_examined = report.keys_examined,
            budget_exhausted = report.budget_exhausted,
            duration_ms = report.duration_ms,
            dry_run,
            "Sweep finished."
        );
        Ok(report)
    }

    /// Claims one instance as a sweep does before removing it: succeeds only while its
    /// liveness key is missing and no other janitor holds it. Exposed so that the ordering
    /// against a gateway restarting under the same id can be tested step by step.
    pub async fn claim_instance(&self, instance: &InstanceId) -> Result<Claim, SweepError> {
        let mut pass = self.start(false).await?;
        pass.claim(instance).await
    }

    /// Removes a claimed instance's state and releases the claim, as a sweep does after
    /// [`Sweeper::claim_instance`].
    pub async fn remove_claimed_instance(&self, mut claim: InstanceClaim) -> Result<SweepReport, SweepError> {
        let mut pass = self.start(false).await?;
        pass.remove_instance(&mut claim, &[]).await?;
        Ok(pass.report)
    }

    async fn start(&self, dry_run: bool) -> Result<Pass, SweepError> {
        let mut conn = self.redis.get().await?;
        // Ages are measured by Redis' clock, never ours: stream ids are Redis timestamps.
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(Pass {
            conn: SweepConn(conn),
            keys: self.keys.clone(),
            settings: self.settings.clone(),
            dry_run,
            now_ms: seconds * 1000 + micros / 1000,
            report: SweepReport { dry_run, ..SweepReport::default() },
            malformed_seen: HashSet::new(),
            liveness: HashMap::new(),
            instances_done: HashSet::new(),
            counted_instances: HashSet::new(),
            topics_done: HashSet::new(),
            groups_done: HashSet::new(),
            emptied_groups: HashSet::new(),
            simulated_removals: HashMap::new(),
        })
    }
}

/// A sweep's connection: a command or pipeline that timed out is sent once more.
///
/// A janitor stopped while it waited for a reply (SIGSTOP, a frozen VM, a host under
/// memory pressure) finds its timer expired when it resumes, though the reply may be in
/// its socket; without a second try one such pause fails the whole sweep. Every command a
/// sweep sends may be repeated: reads, deletions and trims are idempotent, removals are
/// fenced scripts that check the claim again, and a repeated claim finds the instance
/// held and skips it for this sweep. A second timeout fails the sweep as before.
pub(crate) struct SweepConn(Conn);

impl std::ops::Deref for SweepConn {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl std::ops::DerefMut for SweepConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

impl redis::aio::ConnectionLike for SweepConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            match self.0.req_packed_command(cmd).await {
                Err(error) if error.is_timeout() => {
                    tracing::debug!(%error, "A sweep command timed out; sending it once more.");
                    self.0.req_packed_command(cmd).await
                }
                result => result,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            match self.0.req_packed_commands(pipeline, offset, count).await {
                Err(error) if error.is_timeout() => {
                    tracing::debug!(%error, "A sweep pipeline timed out; sending it once more.");
                    self.0.req_packed_commands(pipeline, offset, count).await
                }
                result => result,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Whether an instance's liveness key exists, as seen once per sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Live,
    Dead,
}

/// The state of one sweep in progress. The modules `instances`, `groups`, `topics` and
/// `keyspace` each add the methods of their phase.
pub(crate) struct Pass {
    pub(crate) conn: SweepConn,
    pub(crate) keys: Keys,
    pub(crate) settings: SweepSettings,
    pub(crate) dry_run: bool,
    /// Redis' clock at the start of the sweep, in unix ms.
    pub(crate) now_ms: u64,
    pub(crate) report: SweepReport,
    /// Malformed items already counted, so one seen twice is counted once.
    malformed_seen: HashSet<String>,
    /// Liveness per instance, checked at most once per sweep. Only a hint: every removal
    /// is preceded by a claim that re-checks liveness atomically.
    pub(crate) liveness: HashMap<InstanceId, Liveness>,
    /// Instances whose claim was attempted in this sweep.
    pub(crate) instances_done: HashSet<InstanceId>,
    /// Instances counted in `dead_instances`.
    pub(crate) counted_instances: HashSet<InstanceId>,
    /// Topics whose history was handled in this sweep.
    pub(crate) topics_done: HashSet<Topic>,
    /// Topics whose group hash was cleaned in this sweep.
    pub(crate) groups_done: HashSet<Topic>,
    /// Topics whose group hash this sweep emptied (or, in a dry run, would have).
    pub(crate) emptied_groups: HashSet<Topic>,
    /// Dry run only: the fields a real sweep would have removed so far, per group.
    pub(crate) simulated_removals: HashMap<Topic, HashSet<String>>,
}

impl Pass {
    /// Counts `n` keys against the budget.
    pub(crate) fn charge(&mut self, n: usize) {
        self.report.keys_examined += n as u64;
    }

    /// Whether budget is left; records that it ran out.
    pub(crate) fn budget_left(&mut self) -> bool {
        if self.report.keys_examined >= self.settings.budget {
            self.report.budget_exhausted = true;
        }
        !self.report.budget_exhausted
    }

    /// Reports a malformed item (once per sweep) and counts it. It is never touched.
    pub(crate) fn malformed(&mut self, item: String, problem: impl fmt::Display) {
        if !self.malformed_seen.insert(item.clone()) {
            return;
        }
        self.report.malformed_keys_skipped += 1;
        if self.report.malformed_keys_skipped <= MALFORMED_WARNINGS_PER_SWEEP {
            tracing::warn!(item, %problem, "Skipping a malformed key; it is left as it is.");
        } else {
            tracing::debug!(item, %problem, "Skipping a malformed key; it is left as it is.");
        }
    }

    /// Checks that `key` is of `expected` type (or missing); reports it otherwise.
    pub(crate) async fn has_type(&mut self, key: &str, expected: RedisType) -> Result<bool, SweepError> {
        let found: RedisType = redis::cmd("TYPE").arg(key).query_async(&mut self.conn).await?;
        if found.fits(&expected) {
            return Ok(true);
        }
        self.malformed(key.to_owned(), format_args!("a {found}, expected a {expected}"));
        Ok(false)
    }

    /// Looks up the liveness of the instances not checked yet in this sweep, in one round
    /// trip.
    pub(crate) async fn check_liveness<'i>(
        &mut self,
        instances: impl IntoIterator<Item = &'i InstanceId>,
    ) -> Result<(), SweepError> {
        let mut unknown: Vec<&InstanceId> =
            instances.into_iter().filter(|i| !self.liveness.contains_key(*i)).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for instance in &unknown {
            pipe.exists(self.keys.instance_alive(instance));
        }
        let alive: Vec<bool> = pipe.query_async(&mut self.conn).await?;
        for (instance, alive) in unknown.into_iter().zip(alive) {
            let liveness = if alive { Liveness::Live } else { Liveness::Dead };
            self.liveness.insert(instance.clone(), liveness);
        }
        Ok(())
    }

    /// Whether the instance was seen dead in this sweep.
    pub(crate) fn is_dead(&self, instance: &InstanceId) -> bool {
        self.liveness.get(instance) == Some(&Liveness::Dead)
    }

    /// Phase 1: the instance index, oldest heartbeat first (the dead come first).
    async fn sweep_instance_index(&mut self) -> Result<(), SweepError> {
        let index = self.keys.instances();
        if !self.has_type(&index, RedisType::SortedSet).await? {
            return Ok(());
        }
        self.sweep_index_pages(&index, async |this, members| {
            let instances = this.parse_members(
                &index,
                &members,
                |m| InstanceId::parse(m).ok(),
                "names no valid instance id",
            );
            this.sweep_instances(instances).await
        })
        .await
    }

    /// Goes through a sorted-set index page by page, lowest scores first, while the budget
    /// lasts: `sweep` handles one page and returns how many of its members it removed from
    /// the index.
    async fn sweep_index_pages(
        &mut self,
        index: &str,
        mut sweep: impl AsyncFnMut(&mut Self, Vec<Vec<u8>>) -> Result<usize, SweepError>,
    ) -> Result<(), SweepError> {
        let page_size = self.settings.scan_count;
        let mut offset = 0;
        while self.budget_left() {
            let members = self.index_page(index, offset, page_size).await?;
            let n_members = members.len();
            let unindexed = sweep(self, members).await?;
            if n_members < page_size {
                break;
            }
            // Members this page's sweep removed from the index shift the later ones down.
            offset += n_members - unindexed;
        }
        Ok(())
    }

    /// One page of a sorted-set index, lowest scores first, charged to the budget.
    async fn index_page(
        &mut self,
        index: &str,
        offset: usize,
        page_size: usize,
    ) -> Result<Vec<Vec<u8>>, SweepError> {
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(index)
            .arg(offset)
            .arg(offset + page_size - 1)
            .query_async(&mut self.conn)
            .await?;
        self.charge(members.len());
        Ok(members)
    }

    /// The members `parse` accepts; the others are reported as malformed (`why`).
    fn parse_members<T>(
        &mut self,
        index: &str,
        members: &[Vec<u8>],
        parse: impl Fn(&str) -> Option<T>,
        why: &'static str,
    ) -> Vec<T> {
        let mut parsed = Vec::with_capacity(members.len());
        for member in members {
            match text(member).and_then(&parse) {
                Some(value) => parsed.push(value),
                None => self.malformed(member_name(index, member), why),
            }
        }
        parsed
    }

    /// Phase 2: the topic index, oldest publish first (the idle come first).
    async fn sweep_topic_index(&mut self) -> Result<(), SweepError> {
        let index = self.keys.topics();
        if !self.has_type(&index, RedisType::SortedSet).await? {
            return Ok(());
        }
        let max_topic_bytes = self.settings.max_topic_bytes;
        self.sweep_index_pages(&index, async |this, members| {
            let topics = this.parse_members(
                &index,
                &members,
                |m| Topic::parse(m, max_topic_bytes).ok(),
                "names no valid topic",
            );
            this.sweep_topics(topics).await
        })
        .await
    }

    /// Sweeps the candidates that are dead and not handled yet in this sweep. Returns how
    /// many were removed from the instance index.
    pub(crate) async fn sweep_instances(&mut self, candidates: Vec<InstanceId>) -> Result<usize, SweepError> {
        let candidates: Vec<InstanceId> =
            candidates.into_iter().filter(|i| !self.instances_done.contains(i)).collect();
        self.check_liveness(&candidates).await?;
        let mut unindexed = 0;
        for instance in candidates {
            if self.is_dead(&instance) && !self.instances_done.contains(&instance) {
                unindexed += usize::from(self.sweep_instance(&instance, &[]).await?);
            }
        }
        Ok(unindexed)
    }
}

/// Bytes from Redis as text, if they are UTF-8.
pub(crate) fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// How a member of a set or sorted set, or a field of a hash, is named in reports.
pub(crate) fn member_name(key: &str, member: &[u8]) -> String {
    format!("{key} member {:?}", String::from_utf8_lossy(member))
}
