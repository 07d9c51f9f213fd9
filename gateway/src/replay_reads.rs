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

type ReadFuture = BoxFuture<'static, SharedOutcome>;
type SharedRead = Shared<ReadFuture>;

/// Reads waiting for a slot, by topic and position, with the id each was started under.
struct Waiting {
    reads: HashMap<(Topic, HistoryId), (u64, WeakShared<ReadFuture>)>,
    /// The size at which the reads every client left are swept out (then twice what
    /// survives, at least [`SWEEP_AT`]), so abandoned reads cost O(1) amortised.
    sweep_at: usize,
}

/// The least size at which the table is swept.
const SWEEP_AT: usize = 64;

/// The gateway's replay reads.
pub struct ReplayReads {
    reader: Arc<Reader>,
    next_read: AtomicU64,
}

/// What a read needs, shared with the reads in flight.
struct Reader {
    slots: Semaphore,
    waiting: Mutex<Waiting>,
    redis: Redis,
    keys: Keys,
    metrics: Arc<GatewayMetrics>,
    limit: ReadLimit,
}

impl ReplayReads {
    /// At most `concurrency` reads at once, each within `limit`.
    pub fn new(
        concurrency: usize,
        limit: ReadLimit,
        redis: Redis,
        keys: Keys,
        metrics: Arc<GatewayMetrics>,
    ) -> ReplayReads {
        let reader = Reader {
            slots: Semaphore::new(concurrency),
            waiting: Mutex::new(Waiting { reads: HashMap::new(), sweep_at: SWEEP_AT }),
            redis,
            keys,
            metrics,
            limit,
        };
        ReplayReads { reader: Arc::new(reader), next_read: AtomicU64::new(0) }
    }

    /// The entries of `topic` after `after`, from a read this call starts or from one of
    /// the same topic and position that has not been sent yet.
    pub async fn read_after(&self, topic: &Topic, after: HistoryId) -> SharedOutcome {
        let read = {
            let mut waiting = self.reader.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (topic.clone(), after);
            match waiting.reads.get(&key).and_then(|(_, read)| read.upgrade()) {
                Some(read) => {
                    self.reader.metrics.replay_reads_shared.inc();
                    read
                }
                None => {
                    let id = self.next_read.fetch_add(1, Ordering::Relaxed);
                    let read = start(Arc::clone(&self.reader), id, key.clone());
                    if waiting.reads.len() >= waiting.sweep_at {
                        waiting.reads.retain(|_, (_, read)| read.upgrade().is_some());
                        waiting.sweep_at = (waiting.reads.len() * 2).max(SWEEP_AT);
                    }
                    if let Some(weak) = read.downgrade() {
                        waiting.reads.insert(key, (id, weak));
                    }
                    read
                }
            }
        };
        read.await
    }
}

/// A read that waits for a slot, leaves the table when it gets one, then reads.
fn start(reader: Arc<Reader>, id: u64, key: (Topic, HistoryId)) -> SharedRead {
    async move {
        let _slot = reader.slots.acquire().await.expect("the replay slots are never closed");
        // Sent from here on: a client that comes now may have subscribed after this read's
        // view of the history, so it starts its own.
        {
            let mut waiting = reader.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.reads.get(&key).is_some_and(|(waiting_id, _)| *waiting_id == id) {
                waiting.reads.remove(&key);
            }
        }
        let (topic, after) = key;
        let read = history::read_after(&reader.redis, &reader.keys, &topic, after, reader.limit);
        reader.metrics.redis.time(command::HISTORY_READ, read).await.map(Arc::new).map_err(Arc::new)
    }
    .boxed()
    .shared()
}
