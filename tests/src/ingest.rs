//! The producers' ingest stream set up by hand, as producers would leave it: their
//! consumer group, and entries a consumer read and never acknowledged (a producer that died
//! mid-batch).

use redis::aio::MultiplexedConnection;

/// The producers' consumer group by default (`INGEST_GROUP`).
pub const GROUP: &str = producer::settings::INGEST_GROUP.default;
/// The ingest stream by default (`INGEST_STREAM`).
pub const STREAM: &str = producer::settings::INGEST_STREAM.default;
/// The ingest dead-letter stream by default (`INGEST_DEAD_LETTER`).
pub const DEAD_LETTER: &str = producer::settings::INGEST_DEAD_LETTER.default;

/// The ingest stream of every test producer under `prefix` (its `INGEST_STREAM`), so that
/// tests sharing one Redis under different prefixes never read each other's entries.
pub fn stream_under(prefix: &str) -> String {
    format!("{prefix}:ingest")
}

/// The dead-letter stream of every test producer under `prefix` (`INGEST_DEAD_LETTER`).
pub fn dead_letter_under(prefix: &str) -> String {
    format!("{}:dead", stream_under(prefix))
}

/// Creates the producers' consumer group (and the stream), as a producer would.
pub async fn create_group(conn: &mut MultiplexedConnection, stream: &str) {
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
        .unwrap();
}

/// Reads up to `count` new entries as `consumer` and never acknowledges them: what a
/// producer that crashes mid-batch leaves pending.
pub async fn read_as(conn: &mut MultiplexedConnection, stream: &str, consumer: &str, count: usize) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}
