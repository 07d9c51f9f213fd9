//! Per-topic hubs: the one place a gateway turns routed entries into a gapless, ordered
//! sequence of encoded events and shares it with every local subscriber of the topic.
//!
//! A hub tracks the topic's [`Position`] on this gateway. A routed entry whose predecessor
//! is that position is delivered directly; one at or below it is a duplicate; anything
//! else (a gap left by concurrent producers, a crashed producer, a trimmed instance stream,
//! an outage) makes the hub catch up from the topic's history, in bounded batches. Events
//! are encoded once here and shared as `Bytes` through a broadcast channel whose capacity
//! is the per-subscriber queue: a subscriber that falls further behind is closed and
//! resumes from its cursor ([`crate::fanout`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use deadpool_redis::Pool;
use streamgate::cursor::{Epoch, HistoryId};
use streamgate::event::{Frame, reset_body};
use streamgate::keys::Keys;
use streamgate::redis::{Backoff, RedisError};
use streamgate::stream::{HistoryEntry, RoutedEntry};
use streamgate::topic::Topic;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fanout;
use crate::history::{self, Position};
use crate::membership::Membership;

/// How many routed entries may wait for a hub before the reader stops queueing and lets
/// the hub catch up from history instead.
const INBOX_CAPACITY: usize = 4096;

/// One event ready to send: encoded once, shared by every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// Its epoch.
    pub epoch: Epoch,
    /// Its history id.
    pub id: HistoryId,
    /// The encoded event (`id:` is the one-topic cursor).
    pub frame: Frame,
}

/// Why events may have been lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Retention removed events after the cursor.
    Trimmed,
    /// The history the cursor points into is gone (recreated, or lost with Redis data).
    HistoryLost,
}

impl ResetReason {
    /// The `reason` field of the notice.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Trimmed => "trimmed",
            ResetReason::HistoryLost => "history_lost",
        }
    }
}

/// A reset a hub went through: delivery resumes after `after`.
#[derive(Debug)]
pub struct ResetNotice {
    /// Why.
    pub reason: ResetReason,
    /// Where delivery resumes.
    pub after: Position,
    /// The encoded notice body (without `id:`).
    pub body: Bytes,
}

impl ResetNotice {
    /// Whether a subscriber at `position` lost events through this reset (and so must be
    /// told), rather than being unaffected by it.
    pub fn affects(&self, position: &Position) -> bool {
        if position.epoch.is_none() {
            return false;
        }
        match self.reason {
            ResetReason::Trimmed => position.epoch == self.after.epoch && position.last < self.after.last,
            // Into a new epoch: whoever is not in it yet. Within an epoch (Redis lost the
            // history's tail): whoever saw events past what is left.
            ResetReason::HistoryLost if position.epoch != self.after.epoch => true,
            ResetReason::HistoryLost => !self.after.last.is_zero() && position.last > self.after.last,
        }
    }
}

/// What a hub broadcasts.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event.
    Event(Arc<LiveEvent>),
    /// A reset notice.
    Reset(Arc<ResetNotice>),
}

impl fanout::Weight for Delivery {
    /// The encoded bytes it keeps alive (the ring's `QUEUE_BYTES` bound counts these).
    fn weight(&self) -> usize {
        match self {
            Delivery::Event(event) => event.frame.len(),
            Delivery::Reset(notice) => notice.body.len(),
        }
    }
}

enum HubMessage {
    // Boxed: the inbox's first block is allocated with the hub, idle or not.
    Routed(Box<RoutedEntry>),
    CatchUp,
}

struct HubState {
    position: Position,
    sender: fanout::Sender<Delivery>,
}

/// One topic's hub.
pub struct Hub {
    topic: Topic,
    state: Mutex<HubState>,
    inbox: mpsc::Sender<HubMessage>,
    overflowed: AtomicBool,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl Hub {
    /// Waits until the hub knows its position (its membership has reached Redis).
    pub async fn wait_ready(&self, cancel: &CancellationToken) -> bool {
        let mut ready = self.ready.clone();
        tokio::select! {
            result = ready.wait_for(|r| *r) => result.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    /// Subscribes, returning the receiver and the hub's position at that instant: every
    /// delivery the receiver gets comes after that position.
    pub fn subscribe(&self) -> (fanout::Receiver<Delivery>, Position) {
        let state = self.state.lock().expect("hub lock");
        (state.sender.subscribe(), state.position.clone())
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
}

/// What hubs need from the gateway.
#[derive(Clone)]
pub struct HubContext {
    /// Pool for history reads.
    pub pool: Pool,
    /// Key schema.
    pub keys: Keys,
    /// Broadcast capacity (the per-subscriber queue).
    pub queue_size: usize,
    /// Most bytes of encoded events a hub holds for its subscribers.
    pub queue_bytes: usize,
    /// History batch size.
    pub replay_batch: usize,
    /// Memberships.
    pub membership: Arc<Membership>,
    /// Stops every hub.
    pub shutdown: CancellationToken,
}

struct Entry {
    hub: Arc<Hub>,
    subscribers: usize,
}

/// Every hub of this gateway, by topic.
pub struct Hubs {
    map: Mutex<HashMap<Topic, Entry>>,
    context: HubContext,
}

/// A subscriber's hold on a hub; dropping it leaves the topic.
pub struct Subscription {
    hubs: Arc<Hubs>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hubs.leave(&self.hub.topic);
    }
}

impl Hubs {
    /// An empty set of hubs.
    pub fn new(context: HubContext) -> Arc<Hubs> {
        Arc::new(Hubs { map: Mutex::new(HashMap::new()), context })
    }

    /// Joins `topic`, creating its hub (and registering the membership) when it is the
    /// first local subscriber.
    pub fn join(self: &Arc<Self>, topic: &Topic) -> Subscription {
        let generation = self.context.membership.add(topic);
        let mut map = self.map.lock().expect("hubs lock");
        let entry = map
            .entry(topic.clone())
            .or_insert_with(|| Entry { hub: self.spawn_hub(topic.clone(), generation), subscribers: 0 });
        entry.subscribers += 1;
        Subscription { hubs: Arc::clone(self), hub: Arc::clone(&entry.hub) }
    }

    fn leave(&self, topic: &Topic) {
        let mut map = self.map.lock().expect("hubs lock");
        if let Some(entry) = map.get_mut(topic) {
            entry.subscribers -= 1;
            if entry.subscribers == 0 {
                entry.hub.stop.cancel();
                map.remove(topic);
            }
        }
        drop(map);
        self.context.membership.remove(topic);
    }

    /// Hands a routed entry to its topic's hub; entries for topics without local
    /// subscribers are dropped.
    pub fn dispatch(&self, routed: RoutedEntry) {
        let Ok(topic) = Topic::parse(routed.topic.as_str(), usize::MAX) else {
            return;
        };
        let map = self.map.lock().expect("hubs lock");
        let Some(entry) = map.get(&topic) else {
            return;
        };
        if entry.hub.inbox.try_send(HubMessage::Routed(Box::new(routed))).is_err() {
            // The hub is behind: rather than queue without bound, it catches up from
            // history once its queue drains.
            entry.hub.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Makes every hub catch up from history (after an outage or a re-registration).
    pub fn catch_up_all(&self) {
        let map = self.map.lock().expect("hubs lock");
        for entry in map.values() {
            if entry.hub.inbox.try_send(HubMessage::CatchUp).is_err() {
                entry.hub.overflowed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Number of hubs (topics with local subscribers).
    pub fn len(&self) -> usize {
        self.map.lock().expect("hubs lock").len()
    }

    /// Whether there are no hubs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spawn_hub(&self, topic: Topic, generation: u64) -> Arc<Hub> {
        let (inbox, receiver) = mpsc::channel(INBOX_CAPACITY);
        let (ready_tx, ready) = watch::channel(false);
        let stop = self.context.shutdown.child_token();
        let hub = Arc::new(Hub {
            topic,
            state: Mutex::new(HubState {
                position: Position::START,
                sender: fanout::channel(self.context.queue_size, self.context.queue_bytes),
            }),
            inbox,
            overflowed: AtomicBool::new(false),
            ready,
            stop,
        });
        let worker = HubWorker { hub: Arc::clone(&hub), context: self.context.clone() };
        tokio::spawn(worker.run(receiver, ready_tx, generation));
        hub
    }
}

struct HubWorker {
    hub: Arc<Hub>,
    context: HubContext,
}

impl HubWorker {
    async fn run(self, mut inbox: mpsc::Receiver<HubMessage>, ready: watch::Sender<bool>, generation: u64) {
        let stop = self.hub.stop.clone();
        if !self.context.membership.wait_flushed(generation, &stop).await {
            return;
        }
        // Membership is in Redis: every event appended from now on is routed here, so the
        // history's newest id is where this hub starts.
        let mut backoff = Backoff::redis();
        let position = loop {
            match history::read_meta(&self.context.pool, &self.context.keys, &self.hub.topic).await {
                Ok(position) => break position,
                Err(error) => {
                    tracing::debug!(%error, topic = %self.hub.topic, "Hub start: history unreadable; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        };
        self.hub.state.lock().expect("hub lock").position = position;
        ready.send_replace(true);
        loop {
            let message = tokio::select! {
                message = inbox.recv() => message,
                _ = stop.cancelled() => return,
            };
            let Some(message) = message else { return };
            let result = match message {
                HubMessage::Routed(routed) => self.on_routed(*routed).await,
                HubMessage::CatchUp => self.catch_up().await,
            };
            let result = match result {
                Ok(()) if self.hub.overflowed.swap(false, Ordering::Relaxed) => self.catch_up().await,
                other => other,
            };
            if let Err(error) = result {
                tracing::debug!(%error, topic = %self.hub.topic, "Hub catch-up failed; will retry.");
                self.hub.overflowed.store(true, Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.cancelled() => return,
                }
                // Retry through the queue so newer routed entries are not starved.
                let _ = self.hub.inbox.try_send(HubMessage::CatchUp);
            } else {
                backoff.reset();
            }
        }
    }

    fn position(&self) -> Position {
        self.hub.state.lock().expect("hub lock").position.clone()
    }

    async fn on_routed(&self, routed: RoutedEntry) -> Result<(), RedisError> {
        let position = self.position();
        let same_epoch = position.epoch.as_ref() == Some(&routed.epoch);
        if same_epoch && routed.entry.id <= position.last {
            return Ok(()); // Already delivered (history and live path both carried it).
        }
        let continues = routed.entry.prev == position.last && (same_epoch || position.epoch.is_none());
        if continues {
            self.emit(&routed.epoch, &routed.entry);
            return Ok(());
        }
        // A gap (reordered producers, a crashed producer, a trimmed instance stream) or
        // another epoch: the history decides.
        self.catch_up().await
    }

    /// Reads the history after the hub's position until it is exhausted, delivering every
    /// entry in order and announcing resets where events were lost.
    async fn catch_up(&self) -> Result<(), RedisError> {
        loop {
            let position = self.position();
            let read = history::read_after(
                &self.context.pool,
                &self.context.keys,
                &self.hub.topic,
                position.last,
                self.context.replay_batch,
            )
            .await?;
            let Some(epoch) = read.epoch else {
                if position.epoch.is_some() {
                    self.reset(ResetReason::HistoryLost, Position::START);
                }
                return Ok(());
            };
            match &position.epoch {
                Some(current) if *current != epoch => {
                    self.reset(ResetReason::HistoryLost, Position::start_of(epoch));
                    continue;
                }
                None => {
                    // First sight of this topic's history: adopt it from its start.
                    self.hub.state.lock().expect("hub lock").position = Position::start_of(epoch.clone());
                    if !position.last.is_zero() {
                        continue;
                    }
                }
                Some(_) => {}
            }
            let Some(first) = read.entries.first() else {
                if read.last.is_some_and(|last| last < position.last) {
                    // The history lost events this hub delivered (Redis lost its tail).
                    let after = Position { epoch: Some(epoch), last: read.last.unwrap_or_default() };
                    self.reset(ResetReason::HistoryLost, after);
                }
                return Ok(());
            };
            if first.prev != position.last && !position.last.is_zero() {
                let reason =
                    if first.prev > position.last { ResetReason::Trimmed } else { ResetReason::HistoryLost };
                self.reset(reason, Position { epoch: Some(epoch.clone()), last: first.prev });
            }
            let exhausted = read.entries.len() < self.context.replay_batch;
            for entry in &read.entries {
                self.emit(&epoch, entry);
            }
            if exhausted {
                return Ok(());
            }
        }
    }

    fn emit(&self, epoch: &Epoch, entry: &HistoryEntry) {
        let cursor = streamgate::cursor::TopicCursor::at(epoch.clone(), entry.id);
        let frame = match Frame::encode(&cursor.to_string(), entry.name.as_deref(), &entry.data) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, topic = %self.hub.topic, id = %entry.id, "Skipping unencodable event.");
                return;
            }
        };
        let event = Arc::new(LiveEvent { epoch: epoch.clone(), id: entry.id, frame });
        let mut state = self.hub.state.lock().expect("hub lock");
        state.position = Position { epoch: Some(epoch.clone()), last: entry.id };
        state.sender.send(Delivery::Event(event));
    }

    fn reset(&self, reason: ResetReason, after: Position) {
        tracing::info!(topic = %self.hub.topic, reason = reason.as_str(), "Topic history reset; telling subscribers.");
        let notice =
            Arc::new(ResetNotice { reason, body: reset_body(&self.hub.topic, reason.as_str()), after });
        let mut state = self.hub.state.lock().expect("hub lock");
        state.position = notice.after.clone();
        state.sender.send(Delivery::Reset(notice));
    }
}
