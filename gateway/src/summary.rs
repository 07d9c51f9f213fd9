//! This gateway's summary in Redis, for the cluster-wide admin view (`/admin/cluster` on
//! any gateway): its addresses, connections, topics, events delivered, version, start and
//! last heartbeat, as JSON in `P:i:{I}:summary`.
//!
//! It is written at start-up, before the gateway serves, then every third of
//! `LIVENESS_TTL` (the liveness heartbeat's period), with `LIVENESS_TTL` as its TTL: a
//! gateway that dies stops writing it and it expires with its liveness key, so neither the
//! janitor nor anybody else has to clean it. A gateway that shuts down deletes it with its
//! other keys ([`Membership::deregister`](crate::membership::Membership::deregister)).
//! Writes go through [`Membership::write_summary`](crate::membership::Membership::write_summary),
//! which never writes after deregistration.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::startup::AppState;

/// What one gateway says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The instance id.
    pub instance: String,
    /// The gateway's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The public listener's address, as bound.
    pub listen_addr: String,
    /// The admin listener's address, as bound (`None`: off).
    pub admin_addr: Option<String>,
    /// SSE streams open.
    pub connections: usize,
    /// Topics with a hub (local subscribers).
    pub topics: usize,
    /// Events written to subscribers since start.
    pub events_delivered: u64,
    /// When the gateway started (unix ms).
    pub started_at_ms: u64,
    /// When this summary was written (unix ms): its last heartbeat.
    pub heartbeat_at_ms: u64,
}

/// What does not change over a gateway's life.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The public listener's bound address.
    pub listen_addr: String,
    /// The admin listener's bound address.
    pub admin_addr: Option<String>,
    /// Start time (unix ms).
    pub started_at_ms: u64,
}

/// Now, in unix milliseconds.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The summary as of now.
pub fn current(state: &AppState, identity: &Identity) -> Summary {
    Summary {
        instance: state.config.instance_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen_addr: identity.listen_addr.clone(),
        admin_addr: identity.admin_addr.clone(),
        connections: state.connections.open(),
        topics: state.hubs.len(),
        events_delivered: state.connections.events_sent_total(),
        started_at_ms: identity.started_at_ms,
        heartbeat_at_ms: unix_ms(SystemTime::now()),
    }
}

/// Writes the summary once (start-up does, before it serves, so a gateway is in the
/// cluster view as soon as it is up).
pub async fn write(state: &AppState, identity: &Identity) {
    let ttl = state.config.liveness_ttl;
    let summary = serde_json::to_string(&current(state, identity)).expect("a summary serializes");
    let write = state.membership.write_summary(&state.redis, &summary, ttl);
    // The membership task logs Redis outages; a missed summary is rewritten next time.
    if let Err(error) = tokio::time::timeout(ttl / 3, write).await.unwrap_or(Ok(())) {
        tracing::debug!(%error, "Could not write the instance summary.");
    }
}

/// Writes the summary every third of `LIVENESS_TTL` (the liveness heartbeat's period),
/// until `stop`.
pub async fn run(state: AppState, identity: Identity, stop: CancellationToken) {
    let period = state.config.liveness_ttl / 3;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        write(&state, &identity).await;
    }
}
