//! Per-topic hubs: the one place a gateway turns routed entries into a gapless, ordered
//! sequence of encoded events and shares it with every local subscriber of the topic.
//!
//! A hub tracks the topic's [`Position`] on this gateway. A routed entry whose predecessor
//! is that position is delivered directly; one it recently delivered is a duplicate;
//! anything else (a gap left by concurrent producers, a crashed producer, a trimmed
//! instance stream, an outage, a history whose tail Redis lost) makes the hub catch up from
//! the topic's history, in bounded batches, under the continuity rule
//! ([`streamgate::continuity`]) checked on every batch. Hubs that received nothing for a
//! while are *reconciled*: their positions are compared with the histories' newest ids in
//! one pipelined read, so an event that was appended but never routed (a producer that
//! crashed between the two steps, a route that failed after the publish answered) reaches
//! subscribers within a bound even when its topic stays quiet ([`Hubs::reconcile_idle`]).
//!
//! A routed entry that carries a trace context (`tp`, a sampled publish) gets a `deliver`
//! span on a gateway that exports spans, which travels with the shared event until every
//! subscriber has taken it ([`crate::delivery_trace`]); other entries cost nothing extra.
//!
//! Events are encoded once here and shared as `Bytes` through a broadcast ring bounded by
//! `QUEUE_SIZE` events and `QUEUE_BYTES` bytes, which frees what every subscriber has
//! read: a subscriber that falls further behind is closed and resumes from its cursor
//! ([`crate::fanout`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
pub use streamgate::continuity::ResetReason;
use streamgate::continuity::{self, Next};
use streamgate::cursor::{Epoch, HistoryId};
use streamgate::event::{Frame, reset_body};
use streamgate::keys::Keys;
use streamgate::redis::Redis;
use streamgate::redis::{Backoff, RedisError};
use streamgate::stream::{HistoryEntry, RoutedEntry};
use streamgate::topic::Topic;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::delivery_trace::{self, DeliveryTrace};
use crate::fanout;
use crate::history::{self, Position, ReadLimit};
use crate::membership::Membership;
use crate::metrics::command;
use crate::sparse::ShrinkWhenSparse as _;

/// How many routed entries may wait for a hub before the reader stops queueing and lets
/// the hub catch up from history instead.
const INBOX_CAPACITY: usize = 4096;
/// How many recently delivered ids a hub remembers, to tell a routed duplicate from a new
/// event that only *looks* old (appended after Redis lost a history's tail, by a server
/// whose clock is behind). 32 ids are 512 bytes per active hub, none for an idle one.
const RECENT_IDS: usize = 32;
/// Topics whose metas one reconciliation reads per pipelined round trip.
const RECONCILE_BATCH: usize = 500;

/// One event ready to send: encoded once, shared by every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// Its epoch.
    pub epoch: Epoch,
    /// Its history id.
    pub id: HistoryId,
    /// The encoded event (`id:` is the one-topic cursor).
    pub frame: Frame,
    /// Its delivery span, when its publish was sampled (boxed: most events have none).
    pub trace: Option<Box<DeliveryTrace>>,
}

/// A reset a hub went through: delivery resumes after `after`.
#[derive(Debug)]
pub struct ResetNotice {
    /// Why.
    pub reason: ResetReason,
    /// The epoch the hub was in before the reset.
    pub from: Option<Epoch>,
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
        let same_epoch = position.epoch == self.after.epoch;
        match self.reason {
            ResetReason::Trimmed => same_epoch && position.last < self.after.last,
            // Within an epoch (Redis lost the history's tail): whoever saw events past what
            // is left.
            ResetReason::HistoryLost if self.from == self.after.epoch => {
                same_epoch && position.last > self.after.last
            }
            // Into another epoch (or none): whoever is still in the one that was lost. A
            // subscriber that already reached the new epoch (its replay read the new
            // history) lost nothing more.
            ResetReason::HistoryLost => position.epoch == self.from,
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
    // Boxed: an inbox keeps some capacity after a burst, so its slots stay small.
    Routed(Box<RoutedEntry>),
    CatchUp,
}

/// A hub's queue of routed entries and catch-up requests, in arrival order, bounded by
/// `INBOX_CAPACITY`. An idle hub's inbox allocates nothing (a tokio channel allocated its
/// first block of slots with every hub).
#[derive(Default)]
struct Inbox {
    queue: Mutex<VecDeque<HubMessage>>,
    /// One consumer (the hub's task): a push while it is not waiting leaves a permit.
    pushed: Notify,
}

/// Slots an emptied inbox keeps (more is released).
const INBOX_KEPT: usize = 8;

impl Inbox {
    /// Queues `message`; false when the inbox is full.
    fn push(&self, message: HubMessage) -> bool {
        let mut queue = self.queue.lock().expect("inbox lock");
        if queue.len() >= INBOX_CAPACITY {
            return false;
        }
        queue.push_back(message);
        drop(queue);
        self.pushed.notify_one();
        true
    }

    /// The next message, waiting for one.
    async fn pop(&self) -> HubMessage {
        loop {
            {
                let mut queue = self.queue.lock().expect("inbox lock");
                if let Some(message) = queue.pop_front() {
                    if queue.is_empty() && queue.capacity() > INBOX_KEPT {
                        queue.shrink_to(INBOX_KEPT);
                    }
                    return message;
                }
            }
            self.pushed.notified().await;
        }
    }
}

struct HubState {
    position: Position,
    recent: RecentIds,
    sender: fanout::Sender<Delivery>,
}

/// The ids a hub delivered most recently, in order, and the id at or before which it
/// takes everything as delivered (what it started from, or what left the window).
#[derive(Debug, Default)]
struct RecentIds {
    floor: HistoryId,
    ids: VecDeque<HistoryId>,
}

impl RecentIds {
    fn starting_at(floor: HistoryId) -> RecentIds {
        RecentIds { floor, ids: VecDeque::new() }
    }

    fn delivered(&self, id: HistoryId) -> bool {
        id <= self.floor || self.ids.binary_search(&id).is_ok()
    }

    fn push(&mut self, id: HistoryId) {
        self.ids.push_back(id);
        if self.ids.len() > RECENT_IDS {
            self.floor = self.ids.pop_front().unwrap_or(self.floor);
        }
    }

    /// Forgets what a reset took back: everything after `position` (in its epoch).
    fn rewind(&mut self, position: &Position, same_epoch: bool) {
        if !same_epoch {
            *self = RecentIds::starting_at(position.last);
            return;
        }
        while self.ids.back().is_some_and(|id| *id > position.last) {
            self.ids.pop_back();
        }
        self.floor = self.floor.min(position.last);
    }
}

/// One topic's hub.
pub struct Hub {
    topic: Topic,
    state: Mutex<HubState>,
    inbox: Inbox,
    overflowed: AtomicBool,
    /// Set whenever a routed entry arrives; reconciliation skips hubs that had one since
    /// the last round (their next entry's `p` reveals any gap).
    touched: AtomicBool,
    /// Set once the hub knows its position (and `became_ready` notified).
    ready: AtomicBool,
    /// Set when the hub's task ended (stopped) without becoming ready.
    finished: AtomicBool,
    became_ready: Notify,
    stop: CancellationToken,
}

impl Hub {
    /// Waits until the hub knows its position (its membership has reached Redis).
    pub async fn wait_ready(&self, cancel: &CancellationToken) -> bool {
        loop {
            let notified = self.became_ready.notified();
            tokio::pin!(notified);
            // Register before looking, so a change in between is not missed.
            notified.as_mut().enable();
            if self.ready.load(Ordering::Acquire) {
                return true;
            }
            if self.finished.load(Ordering::Acquire) {
                return false;
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// Marks the hub ready (or, with `ready` false, ended without becoming so) and wakes
    /// whoever waits for it.
    fn settle(&self, ready: bool) {
        let flag = if ready { &self.ready } else { &self.finished };
        flag.store(true, Ordering::Release);
        self.became_ready.notify_waiters();
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

    /// Whether this hub delivered the event `id` of `epoch`, as far as it remembers: ids at
    /// or before what it started from count as delivered.
    pub fn delivered(&self, epoch: &Epoch, id: HistoryId) -> bool {
        let state = self.state.lock().expect("hub lock");
        state.position.epoch.as_ref() == Some(epoch) && state.recent.delivered(id)
    }
}

/// What hubs need from the gateway.
#[derive(Clone)]
pub struct HubContext {
    /// Pool for history reads.
    pub redis: Redis,
    /// Key schema.
    pub keys: Keys,
    /// Broadcast capacity (the per-subscriber queue).
    pub queue_size: usize,
    /// Most bytes of encoded events a hub holds for its subscribers.
    pub queue_bytes: usize,
    /// How much one history read may return.
    pub read_limit: ReadLimit,
    /// Memberships.
    pub membership: Arc<Membership>,
    /// Metrics.
    pub metrics: Arc<crate::metrics::GatewayMetrics>,
    /// Whether spans are exported: only then do routed entries' trace contexts get a
    /// delivery span.
    pub traces: bool,
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
    context: Arc<HubContext>,
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
        Arc::new(Hubs { map: Mutex::new(HashMap::new()), context: Arc::new(context) })
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
        let subscription = Subscription { hubs: Arc::clone(self), hub: Arc::clone(&entry.hub) };
        self.context.metrics.hubs.set(map.len() as i64);
        self.context.metrics.subscriptions.inc();
        subscription
    }

    /// Joins every topic of `topics`, unless that would make this gateway hold more than
    /// `max_hubs` hubs: then joins none and returns `None`. The check and the joins happen
    /// under one lock, so concurrent requests cannot overshoot the cap together.
    pub fn join_all(self: &Arc<Self>, topics: &[Topic], max_hubs: usize) -> Option<Vec<Subscription>> {
        let mut map = self.map.lock().expect("hubs lock");
        let new_hubs = topics.iter().filter(|topic| !map.contains_key(*topic)).count();
        if new_hubs > 0 && map.len() + new_hubs > max_hubs {
            return None;
        }
        let subscriptions = topics
            .iter()
            .map(|topic| {
                // The membership lock is only ever taken inside this one, never around it.
                let generation = self.context.membership.add(topic);
                let entry = map.entry(topic.clone()).or_insert_with(|| Entry {
                    hub: self.spawn_hub(topic.clone(), generation),
                    subscribers: 0,
                });
                entry.subscribers += 1;
                Subscription { hubs: Arc::clone(self), hub: Arc::clone(&entry.hub) }
            })
            .collect();
        self.context.metrics.hubs.set(map.len() as i64);
        self.context.metrics.subscriptions.inc_by(topics.len() as i64);
        Some(subscriptions)
    }

    fn leave(&self, topic: &Topic) {
        let mut map = self.map.lock().expect("hubs lock");
        if let Some(entry) = map.get_mut(topic) {
            entry.subscribers -= 1;
            if entry.subscribers == 0 {
                entry.hub.stop.cancel();
                map.remove(topic);
                map.shrink_when_sparse();
            }
        }
        self.context.metrics.hubs.set(map.len() as i64);
        self.context.metrics.subscriptions.dec();
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
        entry.hub.touched.store(true, Ordering::Relaxed);
        if !entry.hub.inbox.push(HubMessage::Routed(Box::new(routed))) {
            // The hub is behind: rather than queue without bound, it catches up from
            // history once its queue drains.
            entry.hub.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Makes every hub catch up from history (after an outage or a re-registration).
    pub fn catch_up_all(&self) {
        let map = self.map.lock().expect("hubs lock");
        for entry in map.values() {
            if !entry.hub.inbox.push(HubMessage::CatchUp) {
                entry.hub.overflowed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Compares every hub that received no routed entry since the last call with its
    /// topic's history (the meta's epoch and newest id, read for all of them in pipelined
    /// batches) and makes those that are behind catch up. This bounds the delay of an event
    /// that was appended but never routed here, on a topic that stays quiet.
    pub async fn reconcile_idle(&self) -> Result<usize, streamgate::redis::RedisError> {
        let idle: Vec<Arc<Hub>> = {
            let map = self.map.lock().expect("hubs lock");
            map.values()
                .filter(|entry| {
                    !entry.hub.touched.swap(false, Ordering::Relaxed)
                        && entry.hub.ready.load(Ordering::Acquire)
                })
                .map(|entry| Arc::clone(&entry.hub))
                .collect()
        };
        let mut behind = 0;
        for hubs in idle.chunks(RECONCILE_BATCH) {
            let topics: Vec<Topic> = hubs.iter().map(|hub| hub.topic.clone()).collect();
            let metas = self
                .context
                .metrics
                .redis
                .time(
                    command::META_READ,
                    history::read_metas(&self.context.redis, &self.context.keys, &topics),
                )
                .await?;
            for (hub, meta) in hubs.iter().zip(metas) {
                let position = hub.state.lock().expect("hub lock").position.clone();
                if meta != position {
                    behind += 1;
                    if !hub.inbox.push(HubMessage::CatchUp) {
                        hub.overflowed.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(behind)
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &crate::metrics::GatewayMetrics {
        &self.context.metrics
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
        let stop = self.context.shutdown.child_token();
        let hub = Arc::new(Hub {
            topic,
            state: Mutex::new(HubState {
                position: Position::START,
                recent: RecentIds::default(),
                sender: fanout::channel(self.context.queue_size, self.context.queue_bytes),
            }),
            inbox: Inbox::default(),
            overflowed: AtomicBool::new(false),
            touched: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            became_ready: Notify::new(),
            stop,
        });
        let worker = HubWorker { hub: Arc::clone(&hub), context: Arc::clone(&self.context) };
        tokio::spawn(worker.run(generation));
        hub
    }
}

/// What a routed entry left to do.
enum Routed {
    /// Delivered, or dropped as a duplicate.
    Delivered,
    /// A gap: catch up from history (with the entry's delivery span, if it has one).
    Gap(Option<(HistoryId, Box<DeliveryTrace>)>),
}

struct HubWorker {
    hub: Arc<Hub>,
    /// Shared by every hub: one copy, not one per idle topic.
    context: Arc<HubContext>,
}

impl HubWorker {
    /// The hub's task. An idle hub's task waits on its inbox, and its future is all the
    /// memory that wait holds: the start and every catch-up (Redis reads, timing, retries;
    /// ~15 KiB of future state together) run boxed, only while they run.
    async fn run(self, generation: u64) {
        let stop = self.hub.stop.clone();
        let Some(position) = Box::pin(self.start(generation, &stop)).await else {
            self.hub.settle(false);
            return;
        };
        {
            let mut state = self.hub.state.lock().expect("hub lock");
            state.recent = RecentIds::starting_at(position.last);
            state.position = position;
        }
        self.hub.settle(true);
        let mut backoff = Backoff::redis();
        loop {
            let message = tokio::select! {
                message = self.hub.inbox.pop() => message,
                _ = stop.cancelled() => return,
            };
            let result = match message {
                HubMessage::Routed(routed) => match self.on_routed(*routed) {
                    Routed::Delivered => Ok(()),
                    Routed::Gap(traced) => Box::pin(self.catch_up(traced)).await,
                },
                HubMessage::CatchUp => Box::pin(self.catch_up(None)).await,
            };
            let result = match result {
                Ok(()) if self.hub.overflowed.swap(false, Ordering::Relaxed) => {
                    Box::pin(self.catch_up(None)).await
                }
                other => other,
            };
            if let Err(error) = result {
                tracing::debug!(%error, topic = %self.hub.topic, "Hub catch-up failed; will retry.");
                self.hub.overflowed.store(true, Ordering::Relaxed);
                if !backoff.pause(&stop).await {
                    return;
                }
                // Retry through the queue so newer routed entries are not starved.
                let _ = self.hub.inbox.push(HubMessage::CatchUp);
            } else {
                backoff.reset();
            }
        }
    }

    /// Waits for the membership to reach Redis, then reads where the topic's history ends:
    /// every event appended from then on is routed here, so that is where this hub starts.
    /// `None` when stopped first.
    async fn start(&self, generation: u64, stop: &CancellationToken) -> Option<Position> {
        if !self.context.membership.wait_flushed(generation, stop).await {
            return None;
        }
        let mut backoff = Backoff::redis();
        loop {
            let read = history::read_meta(&self.context.redis, &self.context.keys, &self.hub.topic);
            match self.context.metrics.redis.time(command::HISTORY_READ, read).await {
                Ok(position) => return Some(position),
                Err(error) => {
                    tracing::debug!(%error, topic = %self.hub.topic, "Hub start: history unreadable; retrying.");
                    if !backoff.pause(stop).await {
                        return None;
                    }
                }
            }
        }
    }

    fn position(&self) -> Position {
        self.hub.state.lock().expect("hub lock").position.clone()
    }

    /// The delivery span of a routed entry that carries a trace context, on a gateway
    /// that exports spans.
    fn trace(&self, routed: &RoutedEntry) -> Option<Box<DeliveryTrace>> {
        if !self.context.traces {
            return None;
        }
        let trace_parent = routed.trace_parent.as_deref()?;
        DeliveryTrace::start(&self.hub.topic, routed.entry.id, trace_parent).map(Box::new)
    }

    /// Delivers a routed entry that continues the hub's position (or drops a duplicate);
    /// anything else is a gap, which the history must fill.
    fn on_routed(&self, routed: RoutedEntry) -> Routed {
        let trace = self.trace(&routed);
        let (position, duplicate) = {
            let state = self.hub.state.lock().expect("hub lock");
            let same_epoch = state.position.epoch.as_ref() == Some(&routed.epoch);
            let duplicate = same_epoch
                && routed.entry.id <= state.position.last
                && state.recent.delivered(routed.entry.id);
            (state.position.clone(), duplicate)
        };
        if duplicate {
            if let Some(trace) = trace {
                trace.path(delivery_trace::Path::Duplicate);
            }
            return Routed::Delivered; // Already delivered (history and live path both carried it).
        }
        let same_epoch = position.epoch.as_ref() == Some(&routed.epoch);
        let continues = routed.entry.prev == position.last
            && routed.entry.id > position.last
            && (same_epoch || position.epoch.is_none());
        if continues {
            if let Some(trace) = &trace {
                trace.path(delivery_trace::Path::Direct);
            }
            self.emit(&routed.epoch, &routed.entry, trace);
            if let Some(published_at) = routed.published_at_micros {
                // Once per event per hub, whatever the number of subscribers.
                self.context.metrics.observe_publish_to_deliver(published_at);
            }
            return Routed::Delivered;
        }
        // A gap (reordered producers, a crashed producer, a trimmed instance stream),
        // another epoch, or an id at or before the position that this hub never delivered
        // (Redis lost the tail, and the new server's clock is behind): the history decides.
        self.context.metrics.hub_gap_fills.inc();
        if let Some(trace) = &trace {
            trace.path(delivery_trace::Path::CatchUp);
        }
        Routed::Gap(trace.map(|trace| (routed.entry.id, trace)))
    }

    /// Reads the history after the hub's position until it is exhausted, delivering every
    /// entry in order and announcing resets where events were lost. The continuity rule is
    /// checked on every batch. `traced`: the delivery span of the routed entry that started
    /// the catch-up, handed to that event if the catch-up delivers it.
    async fn catch_up(&self, mut traced: Option<(HistoryId, Box<DeliveryTrace>)>) -> Result<(), RedisError> {
        self.context.metrics.hub_catch_ups.inc();
        loop {
            let position = self.position();
            let read = history::read_after(
                &self.context.redis,
                &self.context.keys,
                &self.hub.topic,
                position.last,
                self.context.read_limit,
            );
            let read = self.context.metrics.redis.time(command::HISTORY_READ, read).await?;
            let verdict = continuity::check(&position, read.view());
            if let Some(reason) = verdict.reset {
                let same_epoch = verdict.position.epoch.is_some() && verdict.position.epoch == position.epoch;
                if reason == ResetReason::HistoryLost && same_epoch {
                    // The tail with this hub's position is gone. New events may carry ids
                    // at or before it: resume after the newest one this hub delivered.
                    let epoch = verdict.position.epoch.clone().expect("same epoch");
                    let recent = |id| self.hub.state.lock().expect("hub lock").recent.delivered(id);
                    let tail = history::surviving_tail(
                        &self.context.redis,
                        &self.context.keys,
                        &self.hub.topic,
                        verdict.position.last,
                        recent,
                    );
                    let tail = self.context.metrics.redis.time(command::HISTORY_READ, tail).await?;
                    self.reset(reason, Position::at(epoch, tail));
                    continue;
                }
                self.reset(reason, verdict.position.clone());
            } else if verdict.position != position {
                // First sight of this topic's history: adopt its epoch.
                let mut state = self.hub.state.lock().expect("hub lock");
                state.recent.rewind(&verdict.position, false);
                state.position = verdict.position.clone();
            }
            match verdict.next {
                Next::UpToDate => return Ok(()),
                Next::ReadAgain => continue,
                Next::Deliver => {}
            }
            let epoch = verdict.position.epoch.clone().expect("a history to deliver from has an epoch");
            for entry in &read.entries {
                let trace = match &traced {
                    Some((id, _)) if *id == entry.id => traced.take().map(|(_, trace)| trace),
                    _ => None,
                };
                self.emit(&epoch, entry, trace);
            }
            if !read.truncated {
                return Ok(());
            }
        }
    }

    fn emit(&self, epoch: &Epoch, entry: &HistoryEntry, trace: Option<Box<DeliveryTrace>>) {
        let cursor = streamgate::cursor::TopicCursor::at(epoch.clone(), entry.id);
        let frame = match Frame::encode(&cursor.to_string(), entry.name.as_deref(), &entry.data) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, topic = %self.hub.topic, id = %entry.id, "Skipping unencodable event.");
                return;
            }
        };
        let mut state = self.hub.state.lock().expect("hub lock");
        if let Some(trace) = &trace {
            trace.subscribers(state.sender.receivers());
        }
        let event = Arc::new(LiveEvent { epoch: epoch.clone(), id: entry.id, frame, trace });
        state.position = Position { epoch: Some(epoch.clone()), last: entry.id };
        state.recent.push(entry.id);
        state.sender.send(Delivery::Event(event));
    }

    fn reset(&self, reason: ResetReason, after: Position) {
        tracing::info!(topic = %self.hub.topic, reason = reason.as_str(), "Topic history reset; telling subscribers.");
        let mut state = self.hub.state.lock().expect("hub lock");
        let notice = Arc::new(ResetNotice {
            reason,
            from: state.position.epoch.clone(),
            body: reset_body(&self.hub.topic, reason.as_str()),
            after,
        });
        let same_epoch = state.position.epoch.is_some() && state.position.epoch == notice.after.epoch;
        state.recent.rewind(&notice.after, same_epoch);
        state.position = notice.after.clone();
        state.sender.send(Delivery::Reset(notice));
    }
}
