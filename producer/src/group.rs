//! Group commit for `POST /publish`: the publishes that arrive while the previous append
//! script is in flight share the next script call and routing pipeline.
//!
//! One writer task takes every queued request (up to [`MAX_GROUP_EVENTS`] events), hands
//! their events to [`Publisher::publish_scoped`] as one batch — each event keeps its own
//! request's idempotency scope — and gives every request its own slice of the results.
//! Under load the cost of a script call, a routing pipeline and their wake-ups is shared by
//! a whole group; at low rates a group is one request and the writer adds one task hand-off,
//! as the task per publish it replaces did.
//!
//! A group's script call is one atomic step on a single Redis, so a failure means the same
//! for every request in it: `NotWritten` (nothing of the group is in history: 503,
//! `"written": false`) or `OutcomeUnknown` (all of it may be: 504, `"written": "unknown"`).
//! A `Refused` group (a key of the wrong type behind one request's topic; the script checks
//! every key before writing, so nothing was written) is published again one request at a
//! time, so only the request at fault fails. On a Redis Cluster a group would span slots
//! whose scripts succeed and fail apart, so there each request is published on its own
//! ([`PublishTasks`](crate::http::PublishTasks) does not use the writer).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::publisher::{Publish, PublishError, Published, Publisher};

/// At most this many events in one group (a single request's batch may exceed it and is
/// then a group of its own): large enough that a burst of single-event requests shares a
/// few script calls, small enough that one script does not hold Redis for long (the
/// script's cost is a few µs per event).
pub const MAX_GROUP_EVENTS: usize = 512;

/// The outcome a request gets back.
pub type Outcome = Result<Vec<Published>, PublishError>;

/// One request waiting for the writer.
pub struct Request {
    /// Its idempotency scope.
    pub scope: Option<String>,
    /// Its events.
    pub batch: Vec<Publish>,
    /// Where its outcome goes (nobody listens once its client left).
    pub reply: oneshot::Sender<Outcome>,
    /// Its place under `MAX_CONCURRENT_PUBLISHES` and in the shutdown drain, both held until
    /// its group is done.
    pub _held: (OwnedSemaphorePermit, TaskTrackerToken),
}

/// Starts the writer task; it runs until every sender is dropped.
pub fn spawn_writer(publisher: Arc<Publisher>) -> mpsc::UnboundedSender<Request> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(run_writer(publisher, receiver));
    sender
}

async fn run_writer(publisher: Arc<Publisher>, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut group = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut n_events = first.batch.len();
        group.push(first);
        while n_events < MAX_GROUP_EVENTS {
            let Ok(next) = receiver.try_recv() else { break };
            n_events += next.batch.len();
            group.push(next);
        }
        // A panic fails this group's requests (their replies are dropped: 500), as a
        // panicking task failed its one request before; the writer goes on with the next.
        let committed = AssertUnwindSafe(commit(&publisher, &mut group)).catch_unwind().await;
        if committed.is_err() {
            tracing::error!(n_requests = group.len(), "A group commit panicked.");
        }
        group.clear();
    }
}

/// Publishes `group` as one batch and answers each request.
async fn commit(publisher: &Publisher, group: &mut Vec<Request>) {
    if let [only] = group.as_slice() {
        let outcome = publisher.publish_as(only.scope.as_deref(), &only.batch).await;
        let only = group.pop().expect("one request");
        let _ = only.reply.send(outcome);
        return;
    }
    let mut events = Vec::with_capacity(group.iter().map(|request| request.batch.len()).sum());
    let mut lengths = Vec::with_capacity(group.len());
    for request in group.iter_mut() {
        lengths.push(request.batch.len());
        events.append(&mut request.batch);
    }
    let scopes: Vec<Option<&str>> = group
        .iter()
        .zip(&lengths)
        .flat_map(|(request, length)| std::iter::repeat_n(request.scope.as_deref(), *length))
        .collect();
    let outcome = publisher.publish_scoped(&scopes, &events).await;
    match outcome {
        Ok(published) => {
            let mut published = published.into_iter();
            for (request, length) in group.drain(..).zip(lengths) {
                let _ = request.reply.send(Ok(published.by_ref().take(length).collect()));
            }
        }
        Err(PublishError::Refused(_)) => {
            // Nothing was written (the script refuses before its first write): find the
            // request at fault by publishing each on its own, in the group's order.
            let mut events = events.into_iter();
            for (mut request, length) in group.drain(..).zip(lengths) {
                request.batch = events.by_ref().take(length).collect();
                let outcome = publisher.publish_as(request.scope.as_deref(), &request.batch).await;
                let _ = request.reply.send(outcome);
            }
        }
        Err(error) => {
            for request in group.drain(..) {
                let _ = request.reply.send(Err(error.clone()));
            }
        }
    }
}
