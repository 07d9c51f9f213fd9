//! One SSE connection: joins its topics' hubs, replays what the client missed from history,
//! then forwards live events — per topic in history order, with no gap and no duplicate.
//!
//! The connection subscribes to a hub *before* reading history, so an event is either in
//! the history it reads or in the broadcast it buffered (or both: then the per-topic
//! position drops the second copy). Its SSE `id:` is the list of per-topic positions.
//!
//! A stream carries its cursor from its first bytes: right after subscribing (and after
//! any replay) it sends an `id:`-only block, which sets the browser's `lastEventId`
//! without dispatching an event. A stream that ends before its first event (a rolling
//! deploy, a crash, a proxy cut) then still resumes exactly where it started.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use streamgate::continuity::{self, Next, ResetReason};
use streamgate::cursor::{TopicCursor, format_cursors};
use streamgate::event::{CURSOR_EVENT, Frame, comment, id_line, reset_body, retry};
use streamgate::redis::{Backoff, RedisError};
use streamgate::stream::HistoryEntry;
use streamgate::topic::Topic;
use tokio_util::sync::CancellationToken;

use crate::fanout::{self, Lagged};
use crate::history::{self, HistoryRead, Position};
use crate::hub::{Delivery, Hub, LiveEvent, ResetNotice, Subscription};
use crate::metrics::{CloseLabels, CloseReason, GatewayMetrics, command};
use crate::sparse::ShrinkWhenSparse as _;
use crate::startup::AppState;

/// What `/admin/connections` shows of a connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// Local id.
    pub id: u64,
    /// Its topics, in URL order.
    pub topics: Vec<Topic>,
    /// The peer.
    pub remote: SocketAddr,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Events sent (resets included).
    pub events_sent: AtomicU64,
    /// Per-topic positions.
    pub positions: Mutex<Vec<Position>>,
    /// Fired by an operator (`DELETE /admin/connections/{id}`): the stream ends with its
    /// cursor block, and the client resumes from it.
    closed: CancellationToken,
}

/// Every open SSE connection of this instance, and counters.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    open: AtomicUsize,
    map: Mutex<HashMap<u64, Arc<ConnectionInfo>>>,
    /// Connections opened since start.
    pub opened_total: AtomicU64,
    /// Connections closed because they fell behind.
    pub slow_closed_total: AtomicU64,
    /// Connections refused at the limit.
    pub refused_total: AtomicU64,
    /// Events sent by connections that have closed (changed under the `map` lock).
    closed_events_sent: AtomicU64,
}

/// Removes a connection from the registry when its stream ends.
pub struct ConnectionGuard {
    connections: Arc<Connections>,
    info: Arc<ConnectionInfo>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut map = self.connections.map.lock().expect("connections lock");
        map.remove(&self.info.id);
        map.shrink_when_sparse();
        // Under the same lock, so a total is never counted twice or missed.
        let sent = self.info.events_sent.load(Ordering::Relaxed);
        self.connections.closed_events_sent.fetch_add(sent, Ordering::Relaxed);
        drop(map);
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    /// Admits a connection unless `limit` are open.
    pub fn admit(
        self: &Arc<Self>,
        limit: usize,
        topics: Vec<Topic>,
        remote: SocketAddr,
    ) -> Option<ConnectionGuard> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= limit {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let positions = Mutex::new(vec![Position::START; topics.len()]);
        let info = Arc::new(ConnectionInfo {
            id,
            topics,
            remote,
            connected_at: SystemTime::now(),
            events_sent: AtomicU64::new(0),
            positions,
            closed: CancellationToken::new(),
        });
        self.map.lock().expect("connections lock").insert(id, Arc::clone(&info));
        Some(ConnectionGuard { connections: Arc::clone(self), info })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Events sent by every connection since start, closed ones included. Summed here when
    /// asked (at a metrics scrape) rather than counted in one shared counter per delivery,
    /// which every connection task would contend on.
    pub fn events_sent_total(&self) -> u64 {
        let map = self.map.lock().expect("connections lock");
        let open: u64 = map.values().map(|info| info.events_sent.load(Ordering::Relaxed)).sum();
        open + self.closed_events_sent.load(Ordering::Relaxed)
    }

    /// Ends connection `id`'s stream, as an operator asked; false when no such connection
    /// is open. The stream sends its cursor block first, so the client resumes exactly.
    pub fn close(&self, id: u64) -> bool {
        let map = self.map.lock().expect("connections lock");
        match map.get(&id) {
            Some(info) => {
                info.closed.cancel();
                true
            }
            None => false,
        }
    }

    /// A snapshot of every open connection.
    pub fn snapshot(&self) -> Vec<Arc<ConnectionInfo>> {
        let mut all: Vec<_> = self.map.lock().expect("connections lock").values().cloned().collect();
        all.sort_by_key(|info| info.id);
        all
    }
}

/// Per-connection delivery state.
struct Lanes {
    topics: Vec<Topic>,
    positions: Vec<Position>,
    info: Arc<ConnectionInfo>,
    metrics: Arc<GatewayMetrics>,
}

/// Counts a stream open while it lives, and its end by reason when it ends (a client that
/// disconnects drops the stream: `client gone`).
struct StreamGauge {
    metrics: Arc<GatewayMetrics>,
    reason: CloseReason,
}

impl StreamGauge {
    fn open(metrics: Arc<GatewayMetrics>) -> StreamGauge {
        metrics.connections_open.inc();
        metrics.connections_opened.inc();
        tracing::debug!("Stream opened.");
        StreamGauge { metrics, reason: CloseReason::ClientGone }
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        tracing::debug!(reason = ?self.reason, "Stream ended.");
        self.metrics.connections_open.dec();
        self.metrics.connections_closed.get_or_create(&CloseLabels { reason: self.reason }).inc();
    }
}

/// Counts a replay in progress while it lives.
struct ReplayGauge(Arc<GatewayMetrics>);

impl ReplayGauge {
    fn start(metrics: &Arc<GatewayMetrics>) -> ReplayGauge {
        metrics.replays_in_progress.inc();
        ReplayGauge(Arc::clone(metrics))
    }
}

impl Drop for ReplayGauge {
    fn drop(&mut self) {
        self.0.replays_in_progress.dec();
    }
}

impl Lanes {
    fn single(&self) -> bool {
        self.positions.len() == 1
    }

    fn cursor_line(&self) -> Bytes {
        let cursors: Vec<TopicCursor> = self.positions.iter().map(Position::cursor).collect();
        id_line(&format_cursors(&self.topics, &cursors)).expect("cursors never contain line breaks")
    }

    /// An `id:`-only block: sets the client's `lastEventId` without dispatching an event.
    /// With `as_event`, a `streamgate.cursor` event with empty data instead, which a page
    /// listening for that type sees (others ignore it).
    fn cursor_block(&self, as_event: bool) -> Bytes {
        let line = self.cursor_line();
        let mut out = BytesMut::with_capacity(line.len() + 40);
        out.extend_from_slice(&line);
        if as_event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(CURSOR_EVENT.as_bytes());
            out.extend_from_slice(b"\ndata:\n");
        }
        out.extend_from_slice(b"\n");
        out.freeze()
    }

    fn sent(&self, bytes: Bytes) -> Bytes {
        self.info.events_sent.fetch_add(1, Ordering::Relaxed);
        self.info.positions.lock().expect("positions lock").clone_from(&self.positions);
        bytes
    }

    fn with_id(&self, body: Bytes) -> Bytes {
        let id = self.cursor_line();
        let mut out = BytesMut::with_capacity(id.len() + body.len());
        out.extend_from_slice(&id);
        out.extend_from_slice(&body);
        out.freeze()
    }

    /// A live event from lane `lane`'s hub, if this connection has not sent it yet.
    fn live_event(&mut self, lane: usize, event: &LiveEvent) -> Option<Bytes> {
        let position = &mut self.positions[lane];
        match &position.epoch {
            None => position.epoch = Some(event.epoch.clone()),
            Some(epoch) if *epoch != event.epoch => return None, // the hub's reset comes first
            Some(_) if event.id <= position.last => return None,
            Some(_) => {}
        }
        position.last = event.id;
        if let Some(trace) = &event.trace {
            trace.sent(self.info.id);
        }
        let bytes = if self.single() { event.frame.full() } else { self.with_id(event.frame.body()) };
        Some(self.sent(bytes))
    }

    fn live_reset(&mut self, lane: usize, notice: &ResetNotice) -> Option<Bytes> {
        let position = &mut self.positions[lane];
        if position.epoch.is_none() {
            *position = notice.after.clone();
            return None;
        }
        if !notice.affects(position) {
            return None;
        }
        *position = notice.after.clone();
        self.metrics.resets.get_or_create(&notice.reason.into()).inc();
        Some(self.sent(self.with_id(notice.body.clone())))
    }

    fn reset(&mut self, lane: usize, topic: &Topic, reason: ResetReason, after: Position) -> Bytes {
        self.metrics.resets.get_or_create(&reason.into()).inc();
        self.positions[lane] = after;
        self.sent(self.with_id(reset_body(topic, reason.as_str())))
    }

    fn history_event(&mut self, lane: usize, entry: &HistoryEntry) -> Option<Bytes> {
        let position = &mut self.positions[lane];
        if entry.id <= position.last {
            return None;
        }
        position.last = entry.id;
        self.metrics.events_replayed.inc();
        let cursor = position.cursor();
        let frame = Frame::encode(&cursor.to_string(), entry.name.as_deref(), &entry.data).ok()?;
        let bytes = if self.single() { frame.full() } else { self.with_id(frame.body()) };
        Some(self.sent(bytes))
    }
}

/// A connection's hold on its topics' hubs.
pub struct Joined {
    subscriptions: Vec<Subscription>,
    subscribed: Option<Vec<(fanout::Receiver<Delivery>, Position)>>,
}

fn subscribe_all(subscriptions: &[Subscription]) -> Vec<(fanout::Receiver<Delivery>, Position)> {
    subscriptions.iter().map(|s| s.hub().subscribe()).collect()
}

/// Waits up to `wait` for the hubs of subscriptions already taken (by
/// [`crate::hub::Hubs::join_all`], under the gateway's cap on topics) to be ready (their
/// membership in Redis). When they are, the connection subscribes at once, before its
/// response starts: a client that has seen the response then gets every event published
/// after that. When Redis is slow or down, the stream starts anyway and waits with
/// heartbeats; its cursor comes once it is subscribed.
pub async fn join_subscribed(
    state: &AppState,
    subscriptions: Vec<Subscription>,
    wait: std::time::Duration,
) -> Joined {
    let all_ready = async {
        for subscription in &subscriptions {
            if !subscription.hub().wait_ready(&state.shutdown).await {
                return false;
            }
        }
        true
    };
    let ready = tokio::time::timeout(wait, all_ready).await.unwrap_or(false);
    let subscribed = ready.then(|| subscribe_all(&subscriptions));
    Joined { subscriptions, subscribed }
}

/// Why a stream ends on its own, at a set time (besides shutdown and falling behind).
#[derive(Debug, Clone)]
pub enum StreamEnd {
    /// `MAX_STREAM_LIFETIME` is reached.
    Lifetime,
    /// The subscriber's token expires; this event (without `id:`, so the client's
    /// `lastEventId` stays its cursor) is sent last.
    AuthExpired(Bytes),
}

/// When and why a stream ends on its own.
#[derive(Debug, Clone)]
pub struct StreamDeadline {
    /// When.
    pub at: tokio::time::Instant,
    /// Why.
    pub end: StreamEnd,
}

/// Builds the SSE body of one connection.
///
/// `joined` holds the topics' subscriptions, in URL order, and — when their hubs were
/// already ready before the response started — the receivers and hub positions taken
/// then, so that every event published after the client saw the response is delivered.
pub fn event_stream(
    state: AppState,
    topics: Vec<Topic>,
    cursors: Option<Vec<Option<TopicCursor>>>,
    cursor_event: bool,
    joined: Joined,
    guard: ConnectionGuard,
    deadline: Option<StreamDeadline>,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    async_stream::stream! {
        let guard = guard;
        let mut gauge = StreamGauge::open(Arc::clone(&state.metrics));
        // A deadline that passes during the replay ends the stream as soon as the replay
        // is done and the cursor block sent (the replay itself is bounded by the history).
        let (deadline_at, deadline_end) = match deadline {
            Some(StreamDeadline { at, end }) => (Some(at), Some(end)),
            None => (None, None),
        };
        let deadline_passes = async move {
            match deadline_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline_passes);
        let Joined { subscriptions, subscribed } = joined;
        let shutdown = state.shutdown.clone();
        let closed = guard.info.closed.clone();
        let mut heartbeat = tokio::time::interval(state.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        yield Ok(retry(state.config.retry_interval.as_millis() as u64));
        yield Ok(comment(&format!("streamgate instance {}", state.config.instance_id)));

        let mut lanes = Lanes {
            topics,
            positions: Vec::with_capacity(subscriptions.len()),
            info: Arc::clone(&guard.info),
            metrics: Arc::clone(&state.metrics),
        };
        let mut receivers = Vec::with_capacity(subscriptions.len());
        {
            // Boxed, and dropped once done: the opening's state (waits, replay reads,
            // retries) is larger than the live loop's, and every idle stream would keep it.
            let mut opening = Box::pin(opening(
                &state, &subscriptions, subscribed, cursors, &closed, &mut heartbeat, &mut lanes, &mut receivers,
            ));
            while let Some(step) = opening.next().await {
                match step {
                    Opening::Send(bytes) => yield Ok(bytes),
                    Opening::End(reason) => {
                        if let Some(reason) = reason { gauge.reason = reason; }
                        return;
                    }
                }
            }
        }
        // The stream's position from its first bytes on (and after the replay).
        yield Ok(lanes.cursor_block(cursor_event));

        let receivers = receivers
            .into_iter()
            .enumerate()
            .map(|(lane, receiver)| Box::pin(receiver.into_stream().map(move |item| (lane, item))));
        let mut live = futures_util::stream::select_all(receivers);
        // Registered once: a fresh `cancelled()` per event would take the token's waiter
        // lock, shared by every connection, twice per delivery.
        let ended = shutdown.cancelled();
        tokio::pin!(ended);
        let closed_by_operator = closed.cancelled();
        tokio::pin!(closed_by_operator);
        loop {
            tokio::select! {
                item = live.next() => match item {
                    Some((lane, Ok(Delivery::Event(event)))) => {
                        if let Some(bytes) = lanes.live_event(lane, &event) { yield Ok(bytes); }
                    }
                    Some((lane, Ok(Delivery::Reset(notice)))) => {
                        if let Some(bytes) = lanes.live_reset(lane, &notice) { yield Ok(bytes); }
                    }
                    Some((_, Err(Lagged(missed)))) => {
                        state.connections.slow_closed_total.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(connection = guard.info.id, missed, "Closing a subscriber that fell behind; it resumes from its cursor.");
                        gauge.reason = CloseReason::Slow;
                        return;
                    }
                    None => return,
                },
                _ = heartbeat.tick() => yield Ok(comment("")),
                _ = &mut ended => {
                    gauge.reason = CloseReason::Drained;
                    return;
                }
                _ = &mut closed_by_operator => {
                    // The cursor again, so the client resumes exactly where this ends.
                    yield Ok(lanes.cursor_block(false));
                    gauge.reason = CloseReason::Admin;
                    return;
                }
                _ = &mut deadline_passes => {
                    // The cursor again, so the client resumes exactly where this ends.
                    yield Ok(lanes.cursor_block(false));
                    gauge.reason = CloseReason::Lifetime;
                    if let Some(StreamEnd::AuthExpired(event)) = deadline_end {
                        gauge.reason = CloseReason::Auth;
                        yield Ok(event);
                    }
                    return;
                }
            }
        }
    }
}

/// A coalesced chunk stops growing at this size (the next ready chunk starts another).
const COALESCED_BYTES: usize = 64 * 1024;

/// `stream` with the chunks that are ready at once joined into one (up to
/// [`COALESCED_BYTES`]): a chunk alone passes through as it is, without a copy.
pub fn coalesced(
    stream: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut inner = Box::pin(stream);
    let mut ended = false;
    futures_util::stream::poll_fn(move |cx| {
        if ended {
            return Poll::Ready(None);
        }
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        loop {
            match inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => match first.take() {
                    None if joined.is_empty() => first = Some(chunk),
                    held => {
                        if let Some(held) = held {
                            joined.extend_from_slice(&held);
                        }
                        joined.extend_from_slice(&chunk);
                    }
                },
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
            if joined.len() >= COALESCED_BYTES {
                break;
            }
        }
        match (first, joined.is_empty()) {
            (Some(chunk), true) => Poll::Ready(Some(Ok(chunk))),
            (None, false) => Poll::Ready(Some(Ok(joined.freeze()))),
            (None, true) if ended => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
}

/// What a stream's opening yields: bytes to send, or its end (with the reason to count,
/// when it is not a shutdown).
enum Opening {
    Send(Bytes),
    End(Option<CloseReason>),
}

/// A stream's opening: waits for its topics' hubs when they were not ready before the
/// response started (with heartbeats), subscribes, and replays what each lane's cursor
/// missed, in bounded batches, checking continuity on every batch. Leaves the lanes'
/// positions in `lanes` and the receivers, in lane order, in `receivers`.
#[expect(clippy::too_many_arguments, reason = "the borrowed parts of one stream's state")]
fn opening<'a>(
    state: &'a AppState,
    subscriptions: &'a [Subscription],
    subscribed: Option<Vec<(fanout::Receiver<Delivery>, Position)>>,
    cursors: Option<Vec<Option<TopicCursor>>>,
    closed: &'a CancellationToken,
    heartbeat: &'a mut tokio::time::Interval,
    lanes: &'a mut Lanes,
    receivers: &'a mut Vec<fanout::Receiver<Delivery>>,
) -> impl Stream<Item = Opening> + Send + 'a {
    async_stream::stream! {
        let shutdown = &state.shutdown;
        if subscribed.is_none() {
            for subscription in subscriptions {
                loop {
                    tokio::select! {
                        ready = subscription.hub().wait_ready(shutdown) => {
                            if !ready { yield Opening::End(None); return; }
                            break;
                        }
                        _ = heartbeat.tick() => yield Opening::Send(comment("")),
                        _ = closed.cancelled() => { yield Opening::End(Some(CloseReason::Admin)); return; }
                    }
                }
            }
        }
        let subscribed = subscribed.unwrap_or_else(|| subscribe_all(subscriptions));
        // Lanes with a cursor replay from it; the others start at their hub's position.
        let mut replay_lanes = Vec::new();
        for (lane, (receiver, hub_position)) in subscribed.into_iter().enumerate() {
            receivers.push(receiver);
            let start = match cursors.as_ref().and_then(|cursors| cursors[lane].as_ref()) {
                Some(cursor) => {
                    replay_lanes.push(lane);
                    Position::from_cursor(cursor)
                }
                None => hub_position,
            };
            lanes.positions.push(start);
        }

        let mut backoff = Backoff::redis();
        let _replaying = (!replay_lanes.is_empty()).then(|| ReplayGauge::start(&state.metrics));
        for lane in replay_lanes {
            let topic = lanes.topics[lane].clone();
            let hub = subscriptions[lane].hub();
            loop {
                let position = lanes.positions[lane].clone();
                let step = tokio::select! {
                    step = replay_step(state, hub, &position) => step,
                    _ = shutdown.cancelled() => { yield Opening::End(None); return; }
                    // Every event replayed so far carried its cursor: the client resumes
                    // after the last one.
                    _ = closed.cancelled() => { yield Opening::End(Some(CloseReason::Admin)); return; }
                };
                let (verdict, read) = match step {
                    Ok(step) => { backoff.reset(); step }
                    Err(error) => {
                        tracing::debug!(%error, topic = %topic, "Replay read failed; retrying.");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = heartbeat.tick() => yield Opening::Send(comment("")),
                            _ = shutdown.cancelled() => { yield Opening::End(None); return; }
                            _ = closed.cancelled() => { yield Opening::End(Some(CloseReason::Admin)); return; }
                        }
                        continue;
                    }
                };
                match verdict.reset {
                    Some(reason) => yield Opening::Send(lanes.reset(lane, &topic, reason, verdict.position.clone())),
                    None => lanes.positions[lane] = verdict.position.clone(),
                }
                match verdict.next {
                    Next::UpToDate => break,
                    Next::ReadAgain => continue,
                    Next::Deliver => {}
                }
                for entry in &read.entries {
                    if let Some(bytes) = lanes.history_event(lane, entry) {
                        yield Opening::Send(bytes);
                    }
                }
                if !read.truncated { break; }
            }
        }
    }
}

/// One replay read under the gateway's bound on concurrent replays, and the continuity
/// rule's verdict on it. When the tail holding the client's position was lost, delivery
/// resumes after the newest event this gateway's hub knows was delivered before the loss.
async fn replay_step(
    state: &AppState,
    hub: &Hub,
    position: &Position,
) -> Result<(continuity::Verdict, Arc<HistoryRead>), Arc<RedisError>> {
    let read = state.replays.read_after(hub.topic(), position.last).await?;
    let mut verdict = continuity::check(position, read.view());
    let same_epoch = verdict.position.epoch.is_some() && verdict.position.epoch == position.epoch;
    if verdict.reset == Some(ResetReason::HistoryLost) && same_epoch {
        let epoch = verdict.position.epoch.clone().expect("same epoch");
        let tail =
            history::surviving_tail(&state.redis, &state.keys, hub.topic(), verdict.position.last, |id| {
                hub.delivered(&epoch, id)
            });
        let tail = state.metrics.redis.time(command::HISTORY_READ, tail).await.map_err(Arc::new)?;
        verdict.position = Position::at(epoch, tail);
        verdict.next = Next::ReadAgain;
    }
    Ok((verdict, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(chunks: Vec<Bytes>) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures_util::stream::iter(chunks.into_iter().map(Ok))
    }

    #[tokio::test]
    async fn chunks_ready_together_become_one_and_a_lone_chunk_is_not_copied() {
        let lone = Bytes::from_static(b"data: 1\n\n");
        let only: Vec<Bytes> = coalesced(ready(vec![lone.clone()])).map(Result::unwrap).collect().await;
        assert_eq!(only.as_slice(), std::slice::from_ref(&lone));
        assert_eq!(only[0].as_ptr(), lone.as_ptr(), "passed through, not copied");

        let parts = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b"), Bytes::from_static(b"c")];
        let joined: Vec<Bytes> = coalesced(ready(parts)).map(Result::unwrap).collect().await;
        assert_eq!(joined, [Bytes::from_static(b"abc")]);
    }

    #[tokio::test]
    async fn a_joined_chunk_stops_growing_at_its_bound() {
        let big = Bytes::from(vec![b'x'; COALESCED_BYTES / 2]);
        let parts = vec![big; 5];
        let joined: Vec<Bytes> = coalesced(ready(parts)).map(Result::unwrap).collect().await;
        let sizes: Vec<usize> = joined.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [COALESCED_BYTES, COALESCED_BYTES, COALESCED_BYTES / 2]);
    }
}
