//! History reads for replaying clients: at most `REPLAY_CONCURRENCY` at once per gateway,
//! and shared by the clients that resume the same topic from the same position while the
//! read waits for its turn.
//!
//! A reconnect storm (a gateway restarted and its clients came to this one) brings many
//! clients with the same cursor per topic, each about to read the same entries. A client
//! whose read — same topic, same position — is already waiting for a slot joins it and
//! gets the same result, so a storm costs a read per topic and position, not per client.
//!
//! Only a read that has not been sent can be joined. Every client subscribes to its
//! topic's hub before it reads history (docs/DELIVERY.md, "Connections"), so a read sent
//! after a client joined it holds everything the client's live subscription may have
//! missed; a read sent earlier might not. A read leaves the table when it takes its slot,
//! and clients that come later start their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use streamgate::cursor::HistoryId;
use streamgate::keys::Keys;
use streamgate::redis::{Redis, RedisError};
use streamgate::topic::Topic;
use tokio::sync::Semaphore;

use crate::history::{self, HistoryRead, ReadLimit};
use crate::metrics::{GatewayMetrics, command};

/// A read's outcome, shared by every client that joined it.
pub type SharedOutcome = Result<Arc<HistoryRead>, Arc<RedisError>>;

type SharedRead = Shared<BoxFuture<'static, SharedOutcome>>;

/// Reads waiting for a slot, by topic and position.
type Waiting = HashMap<(Topic, HistoryId), (u64, WeakShared<BoxFuture<'static, SharedOutcome>>)>;

/// The gateway's replay reads.
pub struct ReplayReads {
    slots: Arc<Semaphore>,
    waiting: Arc<Mutex<Waiting>>,
    next_read: AtomicU64,
}

/// The table is swept of reads every client left once it holds this many entries (then
/// twice what survives), so abandoned reads cost O(1) amortised.
const SWEEP_AT: usize = 64;

impl ReplayReads {
    /// At most `concurrency` reads at once.
    pub fn new(concurrency: usize) -> ReplayReads {
        ReplayReads {
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::new(Mutex::new(HashMap::new())),
            next_read: AtomicU64::new(0),
        }
    }

    /// The entries of `topic` after `after` (within `limit`), from a read this call starts
    /// or from one of the same topic and position that has not been sent yet.
    pub async fn read_after(
        &self,
        redis: &Redis,
        keys: &Keys,
        metrics: &Arc<GatewayMetrics>,
        topic: &Topic,
        after: HistoryId,
        limit: ReadLimit,
    ) -> SharedOutcome {
        let read = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (topic.clone(), after);
            match waiting.get(&key).and_then(|(_, read)| read.upgrade()) {
                Some(read) => {
                    metrics.replay_reads_shared.inc();
                    read
                }
                None => {
                    let id = self.next_read.fetch_add(1, Ordering::Relaxed);
                    let read =
                        self.start(id, key.clone(), redis.clone(), keys.clone(), Arc::clone(metrics), limit);
                    if waiting.len() >= SWEEP_AT {
                        waiting.retain(|_, (_, read)| read.upgrade().is_some());
                    }
                    if let Some(weak) = read.downgrade() {
                        waiting.insert(key, (id, weak));
                    }
                    read
                }
            }
        };
        read.await
    }

    /// A read that waits for a slot, leaves the table when it gets one, then reads.
    fn start(
        &self,
        id: u64,
        key: (Topic, HistoryId),
        redis: Redis,
        keys: Keys,
        metrics: Arc<GatewayMetrics>,
        limit: ReadLimit,
    ) -> SharedRead {
        let slots = Arc::clone(&self.slots);
        let waiting = Arc::clone(&self.waiting);
        async move {
            let _slot = slots.acquire_owned().await.expect("the replay slots are never closed");
            // Sent from here on: a client that comes now may have subscribed after this
            // read's view of the history, so it starts its own.
            {
                let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
                if waiting.get(&key).is_some_and(|(waiting_id, _)| *waiting_id == id) {
                    waiting.remove(&key);
                }
            }
            let (topic, after) = key;
            let read = history::read_after(&redis, &keys, &topic, after, limit);
            metrics.redis.time(command::HISTORY_READ, read).await.map(Arc::new).map_err(Arc::new)
        }
        .boxed()
        .shared()
    }
}
