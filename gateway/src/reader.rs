//! The instance stream reader: one dedicated connection blocks on `XREAD` for this
//! instance's stream and hands each routed entry to its topic's hub.
//!
//! On a Redis Cluster the connection is a cluster connection of its own, which follows the
//! stream's slot to whichever master serves it (after a failover or a migration); behind
//! Sentinels a reconnect asks the Sentinels for the new primary, and a connection to a
//! primary they replaced while it still answers is left after its next read: within
//! [`PRIMARY_RECHECK`](streamgate::redis::PRIMARY_RECHECK) plus one `BLOCK`.
//!
//! It resumes from the last id it read after a reconnect (never from `$`), and after an
//! outage it asks every hub to catch up from history, since producers may have routed
//! events elsewhere (or nowhere) meanwhile.
//!
//! Its lag (`instance_stream_lag_seconds`) costs nothing while it keeps up: a read that
//! returns less than a full batch emptied the stream, so the lag is zero. Only after a full
//! batch does it ask for the stream's newest id (`XREVRANGE + - COUNT 1`) and report how
//! far behind it the last entry read is, in the stream ids' milliseconds — the Redis
//! server's clock on both sides, so no clock skew enters it.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use streamgate::cursor::HistoryId;
use streamgate::redis::{Backoff, OutageLog, Redis};
use streamgate::stream::RoutedEntry;
use tokio_util::sync::CancellationToken;

use crate::hub::Hubs;
use crate::metrics::command;

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
                if !backoff.pause(&shutdown).await {
                    return;
                }
                continue 'connect;
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
                    let mut n_read = 0;
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        n_read += key.ids.len();
                        for raw in key.ids {
                            match RoutedEntry::decode(&raw) {
                                Ok(routed) => hubs.dispatch(routed),
                                Err(error) => tracing::warn!(%error, "Skipping malformed routed entry."),
                            }
                            last_id = raw.id;
                        }
                    }
                    let lag = if n_read < BATCH {
                        Some(0.0)
                    } else {
                        let newest = newest_id(&mut connection, &stream);
                        hubs.metrics()
                            .redis
                            .time(command::STREAM_INFO, newest)
                            .await
                            .ok()
                            .map(|newest| newest.map_or(0.0, |newest| lag_seconds(newest, &last_id)))
                    };
                    if let Some(lag) = lag {
                        hubs.metrics().instance_stream_lag_seconds.set(lag);
                    }
                    if connection.is_stale() {
                        // The Sentinels replaced the primary this connection reads from
                        // while it still answered: routed entries now go to the new one,
                        // and what the old one held past its replica may be gone. Read
                        // there, and let every hub check history for what moved.
                        tracing::warn!("Instance stream reader: the primary was replaced; reconnecting.");
                        hubs.catch_up_all();
                        continue 'connect;
                    }
                }
                Err(error) => {
                    hubs.metrics().redis.error(command::XREAD);
                    outage.failed(&error);
                    if !backoff.pause(&shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
            }
        }
    }
}

/// The id of the newest entry of `stream`, if it has any.
async fn newest_id(
    connection: &mut impl redis::aio::ConnectionLike,
    stream: &str,
) -> Result<Option<String>, redis::RedisError> {
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    Ok(newest.ids.into_iter().next().map(|entry| entry.id))
}

/// How far, in seconds of the stream ids' clock, the entry `read` is behind `newest`; zero
/// when it is not behind or either is not a stream id.
fn lag_seconds(newest: String, read: &str) -> f64 {
    match (newest.parse::<HistoryId>(), read.parse::<HistoryId>()) {
        (Ok(newest), Ok(read)) => newest.ms.saturating_sub(read.ms) as f64 / 1000.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_difference_of_the_ids_milliseconds_and_never_negative() {
        assert_eq!(lag_seconds("1700000002500-3".into(), "1700000000000-7"), 2.5);
        assert_eq!(lag_seconds("1700000000000-9".into(), "1700000000000-1"), 0.0);
        assert_eq!(lag_seconds("1700000000000-0".into(), "1700000005000-0"), 0.0);
        assert_eq!(lag_seconds("nonsense".into(), "1-0"), 0.0);
    }
}
