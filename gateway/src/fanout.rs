//! A broadcast ring for one topic's deliveries that holds only what some receiver has not
//! read yet.
//!
//! `tokio::sync::broadcast` allocates its whole capacity up front and keeps its last
//! `capacity` values for its whole life: with the default queue of 1,024 events that is
//! ~48 KiB of slots per idle topic, plus up to 1,024 events per topic that every subscriber
//! has long read. This ring holds a delivery only while a receiver that existed when it was
//! sent has not read it:
//!
//! - each slot counts the receivers still to read it, set from the number of receivers at
//!   send time (no per-receiver work on send) and decremented by each read, under the lock
//!   the read takes anyway; slots at the front are freed as they reach zero;
//! - a dropped receiver releases the slots it still held;
//! - the ring holds at most `max_deliveries` deliveries and `max_bytes` of them (by
//!   [`Weight`]; the newest is always kept, whatever its size): beyond either, the oldest
//!   are dropped, and a receiver that had not read them gets [`Lagged`] and is closed by its
//!   connection, which resumes from its cursor — exactly like a lagging broadcast receiver;
//! - an idle ring allocates nothing, and its buffer is released when it empties after a
//!   burst.
//!
//! Why the front is enough: a slot counts the receivers subscribed before it that have not
//! read it. Receivers read in order, so every receiver still to read a slot is still to
//! read every later one: the counts never decrease from front to back, and the slots that
//! can be freed are always at the front.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A receiver fell behind: this many deliveries were dropped before it read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

/// What a delivery costs to hold, in bytes, for the ring's byte bound.
pub trait Weight {
    /// The bytes this value keeps alive while the ring holds it.
    fn weight(&self) -> usize;
}

/// A buffer emptied after a burst keeps at most this many slots' worth of capacity: enough
/// for the next few deliveries of a busy topic without reallocating, little enough (a few
/// hundred bytes) that thousands of quiet topics do not keep what their bursts needed.
const KEPT_SLOTS: usize = 8;

struct Slot<T> {
    value: T,
    weight: usize,
    /// Receivers that existed when it was sent and have not read it yet.
    unread: usize,
}

struct Ring<T> {
    /// Sequence number of `slots[0]` (the next one to be sent when `slots` is empty).
    first: u64,
    slots: VecDeque<Slot<T>>,
    /// Sum of the weights in `slots`.
    bytes: usize,
    /// Live receivers.
    receivers: usize,
    max_deliveries: usize,
    max_bytes: usize,
}

impl<T> Ring<T> {
    fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.bytes -= slot.weight;
            self.first += 1;
        }
    }

    /// Frees the front slots every receiver has read, then gives back the capacity a burst
    /// left behind.
    fn free_read(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.unread == 0) {
            self.pop_front();
        }
        self.release_spare_capacity();
    }

    /// Shrinks the buffer once it is at most a quarter full: to nothing when empty, else to
    /// twice what it holds. Halving on a quarter (like growth's doubling) keeps the cost of
    /// reallocating constant per delivery, amortised.
    fn release_spare_capacity(&mut self) {
        let capacity = self.slots.capacity();
        if capacity <= KEPT_SLOTS || self.slots.len() * 4 > capacity {
            return;
        }
        if self.slots.is_empty() {
            self.slots = VecDeque::new();
        } else {
            self.slots.shrink_to((self.slots.len() * 2).max(KEPT_SLOTS));
        }
    }

    /// Drops the oldest deliveries while the ring holds more than `max_deliveries` or (keeping
    /// the newest whatever its size) more than its byte bound.
    fn enforce_bounds(&mut self) {
        while self.slots.len() > self.max_deliveries || (self.bytes > self.max_bytes && self.slots.len() > 1)
        {
            self.pop_front();
        }
        self.release_spare_capacity();
    }
}

struct Shared<T> {
    ring: Mutex<Ring<T>>,
    sent: Notify,
}

impl<T> Shared<T> {
    /// Nothing under this lock can leave the ring half-updated (the only code of `T` that
    /// runs while it is held is `Clone` and `Drop` of held values — for a traced event, the
    /// end of its `deliver` span, a non-blocking hand-off to the span exporter), so a
    /// poisoned lock is still usable; this also keeps `Receiver::drop` from panicking during
    /// an unwind.
    fn lock(&self) -> MutexGuard<'_, Ring<T>> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half (one per hub).
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A receiving half (one per subscriber).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Sequence number of the next delivery to read. Every held slot from here on counts
    /// this receiver in its `unread`.
    next: u64,
}

/// A ring holding at most `max_deliveries` deliveries and `max_bytes` of them (the newest
/// delivery is held whatever its weight).
pub fn channel<T: Clone + Weight>(max_deliveries: usize, max_bytes: usize) -> Sender<T> {
    let ring = Ring {
        first: 0,
        slots: VecDeque::new(),
        bytes: 0,
        receivers: 0,
        max_deliveries: max_deliveries.max(1),
        max_bytes,
    };
    Sender { shared: Arc::new(Shared { ring: Mutex::new(ring), sent: Notify::new() }) }
}

impl<T: Clone + Weight> Sender<T> {
    /// Appends a delivery for every current receiver (dropping the oldest beyond the
    /// bounds) and wakes every waiting receiver. Costs the same whatever the number of
    /// receivers.
    pub fn send(&self, value: T) {
        let weight = value.weight();
        let mut ring = self.shared.lock();
        if ring.receivers == 0 {
            // Nobody to hold it for; later receivers only see later sends. (With no
            // receivers every slot was released, so the ring is empty.)
            debug_assert!(ring.slots.is_empty());
            ring.first += 1;
            return;
        }
        let unread = ring.receivers;
        ring.slots.push_back(Slot { value, weight, unread });
        ring.bytes += weight;
        ring.enforce_bounds();
        drop(ring);
        self.shared.sent.notify_waiters();
    }

    /// How many receivers a delivery sent now would be held for.
    pub fn receivers(&self) -> usize {
        self.shared.lock().receivers
    }

    /// A receiver that gets every delivery sent from now on.
    pub fn subscribe(&self) -> Receiver<T> {
        let mut ring = self.shared.lock();
        ring.receivers += 1;
        Receiver { shared: Arc::clone(&self.shared), next: ring.end() }
    }
}

impl<T: Clone> Receiver<T> {
    /// The next delivery, waiting for one; `Err(Lagged)` when deliveries were dropped
    /// before this receiver read them (it then goes on from the oldest one held).
    pub async fn recv(&mut self) -> Result<T, Lagged> {
        let shared = Arc::clone(&self.shared);
        loop {
            let notified = shared.sent.notified();
            tokio::pin!(notified);
            // Register interest before looking, so a send in between is not missed.
            notified.as_mut().enable();
            if let Some(item) = self.try_recv()? {
                return Ok(item);
            }
            notified.await;
        }
    }

    fn try_recv(&mut self) -> Result<Option<T>, Lagged> {
        let mut ring = self.shared.lock();
        if self.next < ring.first {
            // Still counted in every slot held, so jumping to the front keeps the counts.
            let missed = ring.first - self.next;
            self.next = ring.first;
            return Err(Lagged(missed));
        }
        let index = (self.next - ring.first) as usize;
        let Some(slot) = ring.slots.get_mut(index) else {
            return Ok(None);
        };
        slot.unread -= 1;
        let item = slot.value.clone();
        self.next += 1;
        if index == 0 {
            ring.free_read();
        }
        Ok(Some(item))
    }

    /// This receiver as a stream of deliveries (ending after a lag).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<T, Lagged>> {
        futures_util::stream::unfold(Some(self), |receiver| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Ok(item) => Some((Ok(item), Some(receiver))),
                Err(lagged) => Some((Err(lagged), None)),
            }
        })
    }
}

impl<T> Drop for Receiver<T> {
    /// Releases every slot this receiver had still to read (at most `max_deliveries`).
    fn drop(&mut self) {
        let mut ring = self.shared.lock();
        ring.receivers -= 1;
        let from = self.next.saturating_sub(ring.first) as usize;
        for slot in ring.slots.iter_mut().skip(from) {
            slot.unread -= 1;
        }
        ring.free_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery of `bytes` bytes, numbered `n`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Item {
        n: u64,
        bytes: usize,
    }

    impl Weight for Item {
        fn weight(&self) -> usize {
            self.bytes
        }
    }

    fn item(n: u64) -> Item {
        Item { n, bytes: 1 }
    }

    fn held(sender: &Sender<Item>) -> Vec<u64> {
        sender.shared.lock().slots.iter().map(|slot| slot.value.n).collect()
    }

    fn held_bytes(sender: &Sender<Item>) -> usize {
        sender.shared.lock().bytes
    }

    fn slots_allocated(sender: &Sender<Item>) -> usize {
        sender.shared.lock().slots.capacity()
    }

    fn next(receiver: &mut Receiver<Item>) -> Result<Option<u64>, Lagged> {
        receiver.try_recv().map(|item| item.map(|item| item.n))
    }

    #[tokio::test]
    async fn receivers_get_what_was_sent_after_they_subscribed_in_order() {
        let sender = channel(4, usize::MAX);
        sender.send(item(0));
        let mut receiver = sender.subscribe();
        sender.send(item(1));
        sender.send(item(2));
        assert_eq!(receiver.recv().await, Ok(item(1)));
        assert_eq!(receiver.recv().await, Ok(item(2)));
        let waiting = tokio::spawn(async move { receiver.recv().await });
        tokio::task::yield_now().await;
        sender.send(item(3));
        assert_eq!(waiting.await.unwrap(), Ok(item(3)));
    }

    #[test]
    fn a_delivery_is_freed_once_every_receiver_has_read_it() {
        let sender = channel(16, usize::MAX);
        let mut first = sender.subscribe();
        let mut second = sender.subscribe();
        sender.send(Item { n: 0, bytes: 100 });
        sender.send(Item { n: 1, bytes: 10 });
        assert_eq!(next(&mut first), Ok(Some(0)));
        assert_eq!(next(&mut first), Ok(Some(1)));
        assert_eq!(held(&sender), [0, 1], "the second receiver has read neither");
        assert_eq!(next(&mut second), Ok(Some(0)));
        assert_eq!((held(&sender), held_bytes(&sender)), (vec![1], 10));
        assert_eq!(next(&mut second), Ok(Some(1)));
        assert_eq!((held(&sender), held_bytes(&sender)), (vec![], 0));
    }

    #[test]
    fn a_receiver_that_subscribed_later_holds_only_what_was_sent_after_it() {
        let sender = channel(16, usize::MAX);
        let mut early = sender.subscribe();
        sender.send(item(0));
        let mut late = sender.subscribe();
        sender.send(item(1));
        assert_eq!(next(&mut early), Ok(Some(0)));
        assert_eq!(held(&sender), [1], "the late receiver never counted in delivery 0");
        assert_eq!(next(&mut late), Ok(Some(1)));
        assert_eq!(held(&sender), [1], "the early receiver has not read delivery 1");
        assert_eq!(next(&mut early), Ok(Some(1)));
        assert_eq!(held(&sender), Vec::<u64>::new());
    }

    #[test]
    fn sends_without_receivers_hold_nothing_and_new_receivers_see_only_later_sends() {
        let sender = channel(16, usize::MAX);
        sender.send(item(0));
        assert_eq!(held(&sender), Vec::<u64>::new());
        let mut receiver = sender.subscribe();
        assert_eq!(next(&mut receiver), Ok(None));
        sender.send(item(1));
        assert_eq!(next(&mut receiver), Ok(Some(1)));
    }

    #[test]
    fn a_dropped_receiver_releases_what_it_had_not_read() {
        let sender = channel(16, usize::MAX);
        let mut reader = sender.subscribe();
        let gone = sender.subscribe();
        for n in 0..3 {
            sender.send(item(n));
        }
        for n in 0..3 {
            assert_eq!(next(&mut reader), Ok(Some(n)));
        }
        assert_eq!(held(&sender), [0, 1, 2]);
        drop(gone);
        assert_eq!((held(&sender), held_bytes(&sender)), (vec![], 0));
    }

    #[test]
    fn a_dropped_receiver_that_had_lagged_releases_what_it_still_held() {
        let sender = channel(2, usize::MAX);
        let mut reader = sender.subscribe();
        let mut lagging = sender.subscribe();
        for n in 0..5 {
            sender.send(item(n));
        }
        assert_eq!(next(&mut lagging), Err(Lagged(3)));
        assert_eq!(next(&mut reader), Err(Lagged(3)));
        assert_eq!(next(&mut reader), Ok(Some(3)));
        assert_eq!(next(&mut reader), Ok(Some(4)));
        assert_eq!(held(&sender), [3, 4], "the lagging receiver has not read them");
        drop(lagging);
        assert_eq!(held(&sender), Vec::<u64>::new());
    }

    #[tokio::test]
    async fn a_receiver_that_falls_more_deliveries_behind_than_the_ring_holds_lags() {
        let sender = channel(2, usize::MAX);
        let mut receiver = sender.subscribe();
        for n in 0..5 {
            sender.send(item(n));
        }
        assert_eq!(held(&sender), [3, 4]);
        assert_eq!(receiver.recv().await, Err(Lagged(3)));
        // Like a broadcast receiver, it goes on from the oldest delivery held.
        assert_eq!(receiver.recv().await, Ok(item(3)));
    }

    #[test]
    fn a_receiver_lags_when_what_it_has_not_read_outweighs_the_byte_bound() {
        let sender = channel(1024, 100);
        let mut slow = sender.subscribe();
        let mut fast = sender.subscribe();
        for n in 0..4 {
            sender.send(Item { n, bytes: 40 });
            assert_eq!(next(&mut fast), Ok(Some(n)));
        }
        // 160 bytes were sent; the ring keeps the newest 80 for the slow receiver.
        assert_eq!((held(&sender), held_bytes(&sender)), (vec![2, 3], 80));
        assert_eq!(next(&mut slow), Err(Lagged(2)));
        assert_eq!(next(&mut slow), Ok(Some(2)));
    }

    #[test]
    fn the_newest_delivery_is_held_even_when_it_alone_outweighs_the_byte_bound() {
        let sender = channel(1024, 100);
        let mut receiver = sender.subscribe();
        sender.send(Item { n: 0, bytes: 10 });
        sender.send(Item { n: 1, bytes: 500 });
        assert_eq!((held(&sender), held_bytes(&sender)), (vec![1], 500));
        assert_eq!(next(&mut receiver), Err(Lagged(1)));
        assert_eq!(next(&mut receiver), Ok(Some(1)));
        assert_eq!(held_bytes(&sender), 0);
    }

    #[test]
    fn an_idle_ring_allocates_nothing() {
        let sender = channel::<Item>(1024, usize::MAX);
        let _receiver = sender.subscribe();
        assert_eq!(slots_allocated(&sender), 0);
    }

    #[test]
    fn the_buffer_is_released_when_the_ring_empties_after_a_burst() {
        let sender = channel(1024, usize::MAX);
        let mut receiver = sender.subscribe();
        for n in 0..1000 {
            sender.send(item(n));
        }
        assert!(slots_allocated(&sender) >= 1000);
        for n in 0..990 {
            assert_eq!(next(&mut receiver), Ok(Some(n)));
        }
        assert!(slots_allocated(&sender) <= 40, "10 held in {} slots", slots_allocated(&sender));
        while let Ok(Some(_)) = next(&mut receiver) {}
        assert_eq!(held(&sender), Vec::<u64>::new());
        assert!(slots_allocated(&sender) <= KEPT_SLOTS, "{} slots kept", slots_allocated(&sender));
    }

    #[test]
    fn a_buffer_emptied_at_once_is_released_whole() {
        let sender = channel(1024, usize::MAX);
        let mut receiver = sender.subscribe();
        let dropped = sender.subscribe();
        for n in 0..1000 {
            sender.send(item(n));
        }
        for n in 0..1000 {
            assert_eq!(next(&mut receiver), Ok(Some(n)));
        }
        drop(dropped);
        assert_eq!(slots_allocated(&sender), 0);
    }

    mod model {
        //! The ring against a model that states its rules directly: a delivery is held
        //! from its send until every receiver that existed then has read it or been
        //! dropped, unless the bounds drop it first (oldest first, never the newest).

        use std::collections::VecDeque;

        use proptest::prelude::*;

        use super::*;

        const MAX_DELIVERIES: usize = 6;
        const MAX_BYTES: usize = 100;

        #[derive(Debug, Clone)]
        enum Op {
            Subscribe,
            Drop(usize),
            Send(usize),
            Read(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                1 => Just(Op::Subscribe),
                1 => any::<usize>().prop_map(Op::Drop),
                4 => (1..60usize).prop_map(Op::Send),
                4 => any::<usize>().prop_map(Op::Read),
            ]
        }

        struct ModelReceiver {
            receiver: Receiver<Item>,
            /// The next delivery it must get (or be told it lagged past).
            next: u64,
        }

        proptest! {
            #[test]
            fn the_ring_holds_exactly_what_its_rules_say(ops in proptest::collection::vec(op(), 1..200)) {
                let sender = channel(MAX_DELIVERIES, MAX_BYTES);
                let mut receivers: Vec<ModelReceiver> = Vec::new();
                // (sequence number, weight) of every delivery the model holds.
                let mut held_model: VecDeque<(u64, usize)> = VecDeque::new();
                let mut sent = 0u64;
                for op in ops {
                    match op {
                        Op::Subscribe => {
                            receivers.push(ModelReceiver { receiver: sender.subscribe(), next: sent });
                        }
                        Op::Drop(index) if !receivers.is_empty() => {
                            receivers.swap_remove(index % receivers.len());
                        }
                        Op::Send(bytes) => {
                            sender.send(Item { n: sent, bytes });
                            if !receivers.is_empty() {
                                held_model.push_back((sent, bytes));
                                while held_model.len() > MAX_DELIVERIES
                                    || (held_model.iter().map(|(_, w)| w).sum::<usize>() > MAX_BYTES
                                        && held_model.len() > 1)
                                {
                                    held_model.pop_front();
                                }
                            }
                            sent += 1;
                        }
                        Op::Read(index) if !receivers.is_empty() => {
                            let count = receivers.len();
                            let model = &mut receivers[index % count];
                            match model.receiver.try_recv() {
                                Ok(Some(item)) => {
                                    prop_assert_eq!(item.n, model.next);
                                    model.next += 1;
                                }
                                Ok(None) => prop_assert_eq!(model.next, sent),
                                Err(Lagged(missed)) => {
                                    let oldest = held_model.front().map_or(sent, |(n, _)| *n);
                                    prop_assert_eq!(model.next + missed, oldest);
                                    model.next = oldest;
                                }
                            }
                        }
                        Op::Drop(_) | Op::Read(_) => {}
                    }
                    // Freed: every front delivery no receiver is still to read.
                    while held_model.front().is_some_and(|(n, _)| receivers.iter().all(|r| r.next > *n)) {
                        held_model.pop_front();
                    }

                    let ring = sender.shared.lock();
                    let held: Vec<(u64, usize)> = ring.slots.iter().map(|s| (s.value.n, s.weight)).collect();
                    prop_assert_eq!(&held, &held_model.iter().copied().collect::<Vec<_>>());
                    prop_assert_eq!(ring.bytes, held.iter().map(|(_, w)| w).sum::<usize>());
                    prop_assert_eq!(ring.end(), sent);
                    prop_assert_eq!(ring.receivers, receivers.len());
                    for slot in &ring.slots {
                        let unread = receivers.iter().filter(|r| r.next <= slot.value.n).count();
                        prop_assert_eq!(slot.unread, unread);
                    }
                    let allocated = ring.slots.capacity();
                    prop_assert!(allocated <= KEPT_SLOTS || ring.slots.len() * 4 > allocated);
                }
            }
        }
    }
}
