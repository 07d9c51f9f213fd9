//! The instance stream reader: one dedicated connection blocks on `XREAD` for this
//! instance's stream and hands each routed entry to its topic's hub.
//!
//! On a Redis Cluster the connection is a cluster connection of its own, which follows the
//! stream's slot to whichever master serves it (after a failover or a migration); behind
//! Sentinels a reconnect asks the Sentinels for the new primary.
//!
//! It resumes from the last id it read after a reconnect (never from `$`), and after an
//! outage it asks every hub to catch up from history, since producers may have routed
//! events elsewhere (or nowhere) meanwhile.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamReadOptions, StreamReadReply};
use streamgate::redis::{Backoff, OutageLog, Redis};
use streamgate::stream::RoutedEntry;
use tokio_util::sync::CancellationToken;

use crate::hub::Hubs;

/// How long one XREAD blocks. Short enough that shutdown never waits long on it.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries per XREAD.
const BATCH: usize = 1000;

/// Reads `stream` until `shutdown`, dispatching entries to `hubs`.
pub async fn run(redis: Redis, stream: String, hubs: Arc<Hubs>, shutdown: CancellationToken) {
    let mut last_id = String::from("0-0");
    let mut backoff = Backoff::redis();
    let mut outage = OutageLog::new("instance stream reader");
    let options = StreamReadOptions::default().block(BLOCK.as_millis() as usize).count(BATCH);
    'connect: loop {
        let connection = tokio::select! {
            connection = redis.blocking_connection() => connection,
            _ = shutdown.cancelled() => return,
        };
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                outage.failed(&error);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue 'connect,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        loop {
            let keys = [stream.as_str()];
            let ids = [last_id.as_str()];
            let read = redis::AsyncCommands::xread_options::<_, _, Option<StreamReadReply>>(
                &mut connection,
                &keys,
                &ids,
                &options,
            );
            let reply = tokio::select! {
                reply = read => reply,
                _ = shutdown.cancelled() => return,
            };
            match reply {
                Ok(reply) => {
                    backoff.reset();
                    if outage.recovered() {
                        hubs.catch_up_all();
                    }
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        for raw in key.ids {
                            match RoutedEntry::decode(&raw) {
                                Ok(routed) => hubs.dispatch(routed),
                                Err(error) => tracing::warn!(%error, "Skipping malformed routed entry."),
                            }
                            last_id = raw.id;
                        }
                    }
                }
                Err(error) => {
                    outage.failed(&error);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => continue 'connect,
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}
