//! Positions in a topic's history, and the SSE `id:` that carries them to the client.
//!
//! A topic's history is a Redis stream, so a position is a stream id (`<ms>-<seq>`). Stream
//! ids alone cannot tell "nothing happened since" from "the history was wiped and started
//! again", so every position also names the history's *epoch*: a random token created
//! with the history and replaced whenever the history is created anew.
//!
//! Wire format of one topic's cursor: `<ms>-<seq>~<epoch>` (for example
//! `1732350000000-0~k3j9x2mf0a`), or `0`, which means "from the oldest event held, in
//! whatever epoch". A connection to several topics sends one cursor per topic, in the order
//! the topics appear in the URL, joined by `,`. The cursor means the same on every gateway.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Separates the history id from the epoch in a topic cursor.
const EPOCH_SEPARATOR: char = '~';
/// Separates per-topic cursors in a multi-topic cursor.
const TOPIC_SEPARATOR: char = ',';
/// The longest epoch accepted from a client.
const MAX_EPOCH_BYTES: usize = 32;

/// Why a cursor could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// The text is not of the cursor format.
    #[error("malformed cursor {0:?}: expected <ms>-<seq>~<epoch> or 0 per topic")]
    Malformed(String),
    /// The number of per-topic cursors does not match the number of topics.
    #[error("cursor names {found} topic positions but the request has {expected} topics")]
    WrongCount {
        /// Topics in the request.
        expected: usize,
        /// Positions in the cursor.
        found: usize,
    },
}

/// A Redis stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HistoryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl HistoryId {
    /// The id before every real entry (`0-0`).
    pub const ZERO: HistoryId = HistoryId { ms: 0, seq: 0 };

    /// Whether this is `0-0`.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }
}

impl FromStr for HistoryId {
    type Err = CursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || CursorError::Malformed(text.to_owned());
        let (ms, seq) = text.split_once('-').ok_or_else(malformed)?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(malformed());
        }
        Ok(HistoryId { ms: ms.parse().map_err(|_| malformed())?, seq: seq.parse().map_err(|_| malformed())? })
    }
}

impl fmt::Display for HistoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The token naming one incarnation of a topic's history. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A fresh random epoch (10 lowercase base-36 characters).
    pub fn generate() -> Epoch {
        Epoch((0..10).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect::<String>().into())
    }

    /// Parses an epoch: 1 to 32 ASCII letters or digits.
    pub fn parse(text: &str) -> Option<Epoch> {
        let valid = !text.is_empty()
            && text.len() <= MAX_EPOCH_BYTES
            && text.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| Epoch(text.into()))
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in one topic's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicCursor {
    /// Before the oldest event held, in whatever epoch is current (`0`).
    Start,
    /// Just after event `id` of history incarnation `epoch`.
    At {
        /// The history's epoch.
        epoch: Epoch,
        /// The last event seen (`0-0`: none yet in this epoch).
        id: HistoryId,
    },
}

impl TopicCursor {
    /// The cursor just after `id` in `epoch`.
    pub fn at(epoch: Epoch, id: HistoryId) -> TopicCursor {
        TopicCursor::At { epoch, id }
    }

    /// Writes the wire form into `out`.
    pub fn write_to(&self, out: &mut String) {
        use fmt::Write as _;
        match self {
            TopicCursor::Start => out.push('0'),
            TopicCursor::At { epoch, id } => {
                let _ = write!(out, "{id}{EPOCH_SEPARATOR}{epoch}");
            }
        }
    }
}

impl FromStr for TopicCursor {
    type Err = CursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "0" {
            return Ok(TopicCursor::Start);
        }
        let malformed = || CursorError::Malformed(text.to_owned());
        let (id, epoch) = text.split_once(EPOCH_SEPARATOR).ok_or_else(malformed)?;
        let epoch = Epoch::parse(epoch).ok_or_else(malformed)?;
        let id = id.parse().map_err(|_| malformed())?;
        Ok(TopicCursor::At { epoch, id })
    }
}

impl fmt::Display for TopicCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_to(&mut text);
        f.write_str(&text)
    }
}

/// Parses a connection's cursor: one position per topic, in the order of `n_topics` topics.
pub fn parse_cursors(text: &str, n_topics: usize) -> Result<Vec<TopicCursor>, CursorError> {
    let text = text.trim();
    let cursors = text.split(TOPIC_SEPARATOR).map(str::parse).collect::<Result<Vec<TopicCursor>, _>>()?;
    if cursors.len() != n_topics {
        return Err(CursorError::WrongCount { expected: n_topics, found: cursors.len() });
    }
    Ok(cursors)
}

/// Writes the cursor of a connection to several topics (the SSE `id:` value).
pub fn format_cursors(cursors: &[TopicCursor]) -> String {
    let mut out = String::with_capacity(cursors.len() * 28);
    for (index, cursor) in cursors.iter().enumerate() {
        if index > 0 {
            out.push(TOPIC_SEPARATOR);
        }
        cursor.write_to(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(s: &str) -> Epoch {
        Epoch::parse(s).unwrap()
    }

    #[test]
    fn history_ids_order_like_redis() {
        let a: HistoryId = "1700000000000-1".parse().unwrap();
        let b: HistoryId = "1700000000000-10".parse().unwrap();
        let c: HistoryId = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-10");
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", "1 -2", "+1-2"] {
            assert!(bad.parse::<HistoryId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_cursor_round_trips() {
        let cursor = TopicCursor::at(epoch("k3j9x2mf0a"), "1732350000000-7".parse().unwrap());
        assert_eq!(cursor.to_string(), "1732350000000-7~k3j9x2mf0a");
        assert_eq!(cursor.to_string().parse::<TopicCursor>().unwrap(), cursor);
        assert_eq!("0".parse::<TopicCursor>().unwrap(), TopicCursor::Start);
    }

    #[test]
    fn topic_cursor_rejects_garbage() {
        for bad in ["", "1-0", "1-0~", "~abc", "1-0~ab-c", "x~abc", "1-0~abc\n"] {
            assert!(bad.parse::<TopicCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn multi_topic_cursor_is_positional() {
        let cursors = vec![
            TopicCursor::at(epoch("aa"), "5-0".parse().unwrap()),
            TopicCursor::Start,
            TopicCursor::at(epoch("bb"), "7-2".parse().unwrap()),
        ];
        let text = format_cursors(&cursors);
        assert_eq!(text, "5-0~aa,0,7-2~bb");
        assert_eq!(parse_cursors(&text, 3).unwrap(), cursors);
        assert_eq!(parse_cursors(&text, 2), Err(CursorError::WrongCount { expected: 2, found: 3 }));
    }
}
