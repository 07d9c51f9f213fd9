//! This instance's presence in Redis: its liveness key, and its subscriber count in every
//! topic's group hash (`HINCRBY <group> <instance> ±n`).
//!
//! Connections do not talk to Redis to join a topic: they change a local count and mark
//! the topic dirty. One task flushes all dirty topics in a single pipeline, so a storm of
//! 10,000 reconnects costs a handful of round trips, not 10,000. A connection that is the
//! first on a topic waits for the flush that carries its membership (a *generation*), since
//! only then do producers route the topic here.
//!
//! Liveness: a key with a TTL, refreshed every third of it by a script that also tells
//! whether the key had expired (the janitor may have swept this instance, or Redis lost its
//! data). Then, and after every Redis outage, every membership is written again in full
//! and every topic catches up from history.
//!
//! Redis can also lose only its most recent writes — a restart from an older snapshot, a
//! crash under `appendfsync everysec`, a failover to a replica that lagged — and keep an
//! older liveness key. To see that, the liveness value carries a *generation*:
//! `<life token>:<n>`. Every flush that changes memberships ends its pipeline with the
//! claim script writing generation `n + 1`; the heartbeat expects the generation it last
//! wrote. A single Redis (or a primary and its replicas) loses a *suffix* of its write
//! history, so if the key still holds the last generation, every membership write before
//! it survived; if it holds an older one, some were lost, and the memberships are written
//! again in full at that heartbeat. Memberships therefore converge to the truth within one
//! heartbeat (a third of `LIVENESS_TTL`) of Redis serving again.
//!
//! A Redis Cluster has one write history per master, and the liveness key lives on one of
//! them: a failover of another master can lose memberships the generation cannot see. So
//! on a cluster every heartbeat also reads which master serves which slots (`CLUSTER
//! SLOTS`); when that changed (a failover, a resharding), every membership is written
//! again in full, within the same bound.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use streamgate::keys::Keys;
use streamgate::liveness::{GatewayClaim as Claim, gateway_claim};
use streamgate::redis::{Backoff, Conn, OutageLog, Redis, RedisError};
use streamgate::topic::{InstanceId, Topic};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{GatewayMetrics, command};
use crate::sparse::ShrinkWhenSparse as _;

#[derive(Debug, Default)]
struct State {
    /// Local subscribers per topic.
    counts: HashMap<Topic, u32>,
    /// What Redis holds for this instance, as far as we know.
    registered: HashMap<Topic, u32>,
    /// Topics whose count changed since the last flush.
    dirty: HashSet<Topic>,
    /// The generation the next flush will publish.
    next_generation: u64,
    /// Write every membership in full at the next flush.
    resync: bool,
    /// The generation of the liveness value this life last wrote and Redis confirmed.
    liveness_generation: u64,
    /// On a Redis Cluster, which master served which slots at the last heartbeat.
    cluster_slots: Option<String>,
}

/// The instance's registrations. Shared by the HTTP handlers and the flush task.
#[derive(Debug)]
pub struct Membership {
    instance: InstanceId,
    keys: Keys,
    token: String,
    state: Mutex<State>,
    wake: Notify,
    flushed: watch::Sender<u64>,
    live: AtomicBool,
    resynced: watch::Sender<u64>,
    /// Set once the instance deregistered (shutdown): nothing may be written after that,
    /// or a late flush would register the leaving instance again.
    deregistered: AtomicBool,
    /// Serializes flushes with deregistration, so no flush lands after it.
    writes: tokio::sync::Mutex<()>,
    /// Flush sizes and Redis timings.
    metrics: Arc<GatewayMetrics>,
}

impl Membership {
    /// A registry for `instance`, reporting to `metrics`.
    pub fn new(instance: InstanceId, keys: Keys, metrics: Arc<GatewayMetrics>) -> Membership {
        Membership {
            instance,
            keys,
            token: format!("{:016x}", fastrand::u64(..)),
            state: Mutex::new(State { next_generation: 1, ..State::default() }),
            wake: Notify::new(),
            flushed: watch::channel(0).0,
            live: AtomicBool::new(false),
            resynced: watch::channel(0).0,
            deregistered: AtomicBool::new(false),
            writes: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// The instance id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Whether the instance is registered as live (for `/readyz`).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Counts one more local subscriber of `topic`. Returns the flush generation after
    /// which Redis holds the membership.
    pub fn add(&self, topic: &Topic) -> u64 {
        let mut state = self.state.lock().expect("membership lock");
        *state.counts.entry(topic.clone()).or_default() += 1;
        state.dirty.insert(topic.clone());
        let generation = state.next_generation;
        drop(state);
        self.wake.notify_one();
        generation
    }

    /// Counts one subscriber of `topic` less.
    pub fn remove(&self, topic: &Topic) {
        let mut state = self.state.lock().expect("membership lock");
        if let Some(count) = state.counts.get_mut(topic) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.counts.remove(topic);
                state.counts.shrink_when_sparse();
            }
        }
        state.dirty.insert(topic.clone());
        drop(state);
        self.wake.notify_one();
    }

    /// Waits until the flush of `generation` has reached Redis, or `cancel` fires.
    pub async fn wait_flushed(&self, generation: u64, cancel: &CancellationToken) -> bool {
        let mut flushed = self.flushed.subscribe();
        tokio::select! {
            result = flushed.wait_for(|done| *done >= generation) => result.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    /// A counter that moves each time memberships were rewritten after an outage or an
    /// expired liveness key: topics must then catch up from history.
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resynced.subscribe()
    }

    /// Start-up: waits out a janitor's sweep, claims liveness, and removes what an earlier
    /// life under the same id left (memberships, topic record, instance stream).
    pub async fn reset_and_claim(&self, redis: &Redis, liveness_ttl: Duration) -> Result<(), RedisError> {
        let mut conn = redis.get().await?;
        loop {
            let (claim,): (Claim,) = self.claim(liveness_ttl).query_async(&mut conn).await?;
            if claim != Claim::Sweeping {
                break;
            }
            tracing::info!(instance = %self.instance, "A janitor is sweeping this instance id; waiting.");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let topics_key = self.keys.instance_topics(&self.instance);
        let stale: Vec<String> = redis::cmd("SMEMBERS").arg(&topics_key).query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        for topic in &stale {
            if let Ok(topic) = Topic::parse(topic.as_str(), usize::MAX) {
                pipe.cmd("HDEL").arg(self.keys.group(&topic)).arg(self.instance.as_str()).ignore();
            }
        }
        pipe.cmd("DEL").arg(&topics_key).ignore();
        pipe.cmd("DEL").arg(self.keys.instance_stream(&self.instance)).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        if !stale.is_empty() {
            tracing::info!(instance = %self.instance, topics = stale.len(), "Removed memberships of an earlier life.");
        }
        self.live.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The claim script's invocation at the confirmed generation (the heartbeat), plus the
    /// instance index update.
    fn claim(&self, liveness_ttl: Duration) -> redis::Pipeline {
        let generation = self.state.lock().expect("membership lock").liveness_generation;
        self.claim_at(liveness_ttl, generation, generation)
    }

    fn claim_at(&self, liveness_ttl: Duration, expected: u64, new: u64) -> redis::Pipeline {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.add_command(gateway_claim(
            &self.keys.instance_alive(&self.instance),
            &self.keys.instance_sweep(&self.instance),
            &self.token,
            liveness_ttl.as_millis() as u64,
            expected,
            new,
        ))
        .cmd("ZADD")
        .arg(self.keys.instances())
        .arg(now_ms)
        .arg(self.instance.as_str())
        .ignore();
        pipe
    }

    /// Flushes dirty topics and refreshes liveness until `shutdown`, then deregisters.
    pub async fn run(self: Arc<Self>, redis: Redis, liveness_ttl: Duration, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(liveness_ttl / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Backoff::redis();
        let mut outage = OutageLog::new("membership");
        loop {
            let beat = tokio::select! {
                _ = self.wake.notified() => false,
                _ = heartbeat.tick() => true,
                _ = shutdown.cancelled() => break,
            };
            let result = self.flush_once(&redis, liveness_ttl, beat).await;
            match result {
                Ok(()) => {
                    backoff.reset();
                    if outage.recovered() {
                        self.state.lock().expect("membership lock").resync = true;
                        self.wake.notify_one();
                    }
                }
                Err(error) => {
                    outage.failed(&error);
                    self.live.store(false, Ordering::Relaxed);
                    self.state.lock().expect("membership lock").resync = true;
                    if !backoff.pause(&shutdown).await {
                        break;
                    }
                    self.wake.notify_one();
                }
            }
        }
    }

    async fn flush_once(&self, redis: &Redis, liveness_ttl: Duration, beat: bool) -> Result<(), RedisError> {
        let _writing = self.writes.lock().await;
        if self.deregistered.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = redis.get().await?;
        if beat {
            self.check_cluster_slots(&mut conn).await?;
        }
        let resync_pending = self.state.lock().expect("membership lock").resync;
        if beat || resync_pending {
            let heartbeat = self.claim(liveness_ttl);
            let (claim,): (Claim,) =
                self.metrics.redis.time(command::LIVENESS, heartbeat.query_async(&mut conn)).await?;
            if !self.on_claim(claim) {
                return Ok(());
            }
        }
        let (generation, resync, changes) = {
            let mut state = self.state.lock().expect("membership lock");
            let generation = state.next_generation;
            state.next_generation += 1;
            let resync = std::mem::take(&mut state.resync);
            let topics: Vec<Topic> =
                if resync { state.counts.keys().cloned().collect() } else { state.dirty.drain().collect() };
            if resync {
                state.dirty.clear();
                state.registered.clear();
            }
            let changes: Vec<(Topic, u32, u32)> = topics
                .into_iter()
                .map(|t| {
                    let want = state.counts.get(&t).copied().unwrap_or(0);
                    let have = state.registered.get(&t).copied().unwrap_or(0);
                    (t, want, have)
                })
                .collect();
            (generation, resync, changes)
        };
        let result = self.write(&mut conn, liveness_ttl, resync, &changes).await;
        let result = match result {
            Ok(Some(claim)) if !self.on_claim(claim) => Err(None),
            Ok(_) => Ok(()),
            Err(error) => Err(Some(error)),
        };
        let mut state = self.state.lock().expect("membership lock");
        match result {
            Ok(()) => {
                for (topic, want, _) in changes {
                    if want == 0 {
                        state.registered.remove(&topic);
                    } else {
                        state.registered.insert(topic, want);
                    }
                }
                state.registered.shrink_when_sparse();
                state.dirty.shrink_when_sparse();
                drop(state);
                self.live.store(true, Ordering::Relaxed);
                self.flushed.send_replace(generation);
                if resync {
                    self.resynced.send_modify(|n| *n += 1);
                }
                Ok(())
            }
            Err(error) => {
                // Whatever was half-written is corrected by the full rewrite that follows.
                state.resync = true;
                match error {
                    Some(error) => Err(error),
                    None => Ok(()),
                }
            }
        }
    }

    /// On a Redis Cluster: asks for a full rewrite when the masters serving the slots
    /// changed since the last heartbeat, as a failed-over master may have lost memberships.
    async fn check_cluster_slots(&self, conn: &mut Conn) -> Result<(), RedisError> {
        let Some(slots) = conn.topology_fingerprint().await? else {
            return Ok(());
        };
        let mut state = self.state.lock().expect("membership lock");
        if state.cluster_slots.as_ref().is_some_and(|before| *before != slots) {
            tracing::warn!(
                instance = %self.instance,
                "Redis Cluster masters changed (a failover or resharding); writing memberships again."
            );
            state.resync = true;
        }
        state.cluster_slots = Some(slots);
        Ok(())
    }

    /// Acts on what the claim script found; false when nothing may be written now (a
    /// janitor is sweeping this instance).
    fn on_claim(&self, claim: Claim) -> bool {
        match claim {
            Claim::Kept => true,
            Claim::Claimed => {
                if self.is_live() {
                    tracing::warn!(instance = %self.instance, "Liveness key had expired; registering again.");
                }
                self.state.lock().expect("membership lock").resync = true;
                true
            }
            Claim::Stale => {
                tracing::warn!(
                    instance = %self.instance,
                    "Redis lost recent membership writes (an older snapshot or a lagging replica); writing them again."
                );
                self.state.lock().expect("membership lock").resync = true;
                true
            }
            Claim::Sweeping => {
                self.live.store(false, Ordering::Relaxed);
                tracing::warn!(instance = %self.instance, "A janitor is sweeping this instance; will register again.");
                self.state.lock().expect("membership lock").resync = true;
                false
            }
        }
    }

    /// Writes the changes and ends the pipeline with the claim script at the next liveness
    /// generation; returns what the claim found (`None` when there was nothing to write).
    async fn write(
        &self,
        conn: &mut Conn,
        liveness_ttl: Duration,
        resync: bool,
        changes: &[(Topic, u32, u32)],
    ) -> Result<Option<Claim>, RedisError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let topics_key = self.keys.instance_topics(&self.instance);
        let field = self.instance.as_str();
        let mut pipe = redis::pipe();
        for (topic, want, have) in changes {
            let group = self.keys.group(topic);
            if *want == 0 {
                pipe.cmd("HDEL").arg(&group).arg(field).ignore();
                pipe.cmd("SREM").arg(&topics_key).arg(topic.as_str()).ignore();
            } else if resync {
                pipe.cmd("HSET").arg(&group).arg(field).arg(*want).ignore();
                pipe.cmd("SADD").arg(&topics_key).arg(topic.as_str()).ignore();
            } else if want != have {
                let delta = i64::from(*want) - i64::from(*have);
                pipe.cmd("HINCRBY").arg(&group).arg(field).arg(delta).ignore();
                if *have == 0 {
                    pipe.cmd("SADD").arg(&topics_key).arg(topic.as_str()).ignore();
                }
            }
        }
        let expected = self.state.lock().expect("membership lock").liveness_generation;
        let claim = self.claim_at(liveness_ttl, expected, expected + 1);
        for command in claim.cmd_iter() {
            pipe.add_command(command.clone());
        }
        pipe.ignore(); // the ZADD
        self.metrics.membership_flush_topics.observe(changes.len() as f64);
        let (claim,): (Claim,) =
            self.metrics.redis.time(command::MEMBERSHIP_FLUSH, pipe.query_async(conn)).await?;
        if claim != Claim::Sweeping {
            self.state.lock().expect("membership lock").liveness_generation = expected + 1;
        }
        Ok(Some(claim))
    }

    /// Writes this instance's summary for the admin views (`P:i:{I}:summary`), to expire
    /// after `ttl` unless written again. Under the same lock as the flushes, and never
    /// after deregistration or while a janitor sweeps this instance: a summary outliving
    /// its instance would show a dead gateway as live.
    pub async fn write_summary(&self, redis: &Redis, summary: &str, ttl: Duration) -> Result<(), RedisError> {
        let _writing = self.writes.lock().await;
        if self.deregistered.load(Ordering::Acquire) || !self.is_live() {
            return Ok(());
        }
        let mut conn = redis.get().await?;
        redis::cmd("SET")
            .arg(self.keys.instance_summary(&self.instance))
            .arg(summary)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Shutdown: removes every membership, the liveness key and the instance stream, so
    /// producers stop routing here at once.
    pub async fn deregister(&self, redis: &Redis) -> Result<(), RedisError> {
        self.deregistered.store(true, Ordering::Release);
        let _writing = self.writes.lock().await;
        self.live.store(false, Ordering::Relaxed);
        let topics: Vec<Topic> = {
            let state = self.state.lock().expect("membership lock");
            state.counts.keys().chain(state.registered.keys()).cloned().collect()
        };
        let mut conn = redis.get().await?;
        let mut pipe = redis::pipe();
        for topic in &topics {
            pipe.cmd("HDEL").arg(self.keys.group(topic)).arg(self.instance.as_str()).ignore();
        }
        pipe.cmd("DEL").arg(self.keys.instance_topics(&self.instance)).ignore();
        pipe.cmd("DEL").arg(self.keys.instance_alive(&self.instance)).ignore();
        pipe.cmd("DEL").arg(self.keys.instance_stream(&self.instance)).ignore();
        pipe.cmd("DEL").arg(self.keys.instance_summary(&self.instance)).ignore();
        pipe.cmd("ZREM").arg(self.keys.instances()).arg(self.instance.as_str()).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        tracing::info!(instance = %self.instance, topics = topics.len(), "Deregistered.");
        Ok(())
    }
}
