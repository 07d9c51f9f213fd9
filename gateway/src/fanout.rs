//! A broadcast ring for one topic's deliveries that allocates only what it holds.
//!
//! `tokio::sync::broadcast` allocates its whole capacity up front: with the default queue
//! of 1,024 events that is ~48 KiB per topic, paid by every idle topic of every gateway.
//! This ring grows with use up to its capacity. A receiver that falls more than `capacity`
//! deliveries behind gets [`Lagged`] and is closed by its connection (which then resumes
//! from its cursor), exactly like a lagging broadcast receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A receiver fell behind by more than the ring's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

struct Ring<T> {
    /// Sequence number of `buffer[0]`.
    first: u64,
    buffer: VecDeque<T>,
    capacity: usize,
}

struct Shared<T> {
    ring: Mutex<Ring<T>>,
    sent: Notify,
}

/// The sending half (one per hub).
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A receiving half (one per subscriber).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    next: u64,
}

/// A ring holding at most `capacity` deliveries.
pub fn channel<T: Clone>(capacity: usize) -> Sender<T> {
    let ring = Ring { first: 0, buffer: VecDeque::new(), capacity: capacity.max(1) };
    Sender { shared: Arc::new(Shared { ring: Mutex::new(ring), sent: Notify::new() }) }
}

impl<T: Clone> Sender<T> {
    /// Appends a delivery (dropping the oldest when full) and wakes every waiting receiver.
    pub fn send(&self, value: T) {
        let mut ring = self.shared.ring.lock().expect("fan-out lock");
        if ring.buffer.len() == ring.capacity {
            ring.buffer.pop_front();
            ring.first += 1;
        }
        ring.buffer.push_back(value);
        drop(ring);
        self.shared.sent.notify_waiters();
    }

    /// A receiver that gets every delivery sent from now on.
    pub fn subscribe(&self) -> Receiver<T> {
        let ring = self.shared.ring.lock().expect("fan-out lock");
        Receiver { shared: Arc::clone(&self.shared), next: ring.first + ring.buffer.len() as u64 }
    }
}

impl<T: Clone> Receiver<T> {
    /// The next delivery, waiting for one; `Err(Lagged)` when it was overwritten.
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
        let ring = self.shared.ring.lock().expect("fan-out lock");
        if self.next < ring.first {
            return Err(Lagged(ring.first - self.next));
        }
        let index = (self.next - ring.first) as usize;
        match ring.buffer.get(index) {
            Some(item) => {
                self.next += 1;
                Ok(Some(item.clone()))
            }
            None => Ok(None),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receivers_get_what_was_sent_after_they_subscribed_in_order() {
        let sender = channel(4);
        sender.send(0);
        let mut receiver = sender.subscribe();
        sender.send(1);
        sender.send(2);
        assert_eq!(receiver.recv().await, Ok(1));
        assert_eq!(receiver.recv().await, Ok(2));
        let waiting = tokio::spawn(async move { receiver.recv().await });
        tokio::task::yield_now().await;
        sender.send(3);
        assert_eq!(waiting.await.unwrap(), Ok(3));
    }

    #[tokio::test]
    async fn a_receiver_that_falls_behind_the_capacity_lags() {
        let sender = channel(2);
        let mut receiver = sender.subscribe();
        for n in 0..5 {
            sender.send(n);
        }
        assert_eq!(receiver.recv().await, Err(Lagged(3)));
    }

    #[test]
    fn an_idle_ring_allocates_nothing() {
        let sender = channel::<u64>(1024);
        assert_eq!(sender.shared.ring.lock().unwrap().buffer.capacity(), 0);
    }
}
