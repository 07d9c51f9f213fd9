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
/// Separates a lane's topic tag from its cursor in a multi-topic cursor.
const TAG_SEPARATOR: char = ':';
/// The length of a topic tag.
const TAG_LEN: usize = 10;
/// The most lanes a cursor may have (the largest `MAX_TOPICS_PER_CONNECTION`).
const MAX_LANES: usize = 1024;
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

/// The topic tag of a lane in a multi-topic cursor: 10 base-36 characters derived from the
/// topic name (SHA-1, first 8 bytes). It lets a gateway match each lane to its topic
/// whatever order or set of topics the next request names; the chance that two topics of
/// one request share a tag is below one in 10^9 even at the 1,024-topic limit.
pub fn topic_tag(topic: &str) -> String {
    let digest = sha1_smol::Sha1::from(topic.as_bytes()).digest().bytes();
    let mut value = u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"));
    let mut tag = [b'0'; TAG_LEN];
    for slot in tag.iter_mut().rev() {
        *slot = b"0123456789abcdefghijklmnopqrstuvwxyz"[(value % 36) as usize];
        value /= 36;
    }
    String::from_utf8(tag.to_vec()).expect("base-36 digits are ASCII")
}

/// Parses a connection's cursor against the request's topics (URL order): one entry per
/// topic, `None` for a topic the cursor does not name (it starts live, from now).
///
/// - `0` alone: every topic from the oldest event held.
/// - One untagged cursor: the position of a one-topic request.
/// - Tagged lanes `<tag>:<cursor>` joined by `,`: matched to topics by [`topic_tag`];
///   lanes of topics no longer requested are ignored.
/// - Untagged lanes joined by `,` (the format before tags): positional, and only when
///   their number is the number of topics.
pub fn parse_cursors<T: AsRef<str>>(
    text: &str,
    topics: &[T],
) -> Result<Vec<Option<TopicCursor>>, CursorError> {
    let text = text.trim();
    if text == "0" {
        return Ok(vec![Some(TopicCursor::Start); topics.len()]);
    }
    let lanes: Vec<&str> = text.split(TOPIC_SEPARATOR).collect();
    if lanes.len() > MAX_LANES {
        return Err(CursorError::Malformed(format!("{} lanes (at most {MAX_LANES})", lanes.len())));
    }
    let tagged = lanes.iter().filter(|lane| lane.contains(TAG_SEPARATOR)).count();
    if tagged == 0 {
        if lanes.len() != topics.len() {
            return Err(CursorError::WrongCount { expected: topics.len(), found: lanes.len() });
        }
        return lanes.iter().map(|lane| lane.parse().map(Some)).collect();
    }
    if tagged != lanes.len() {
        return Err(CursorError::Malformed(text.to_owned()));
    }
    let mut by_tag: Vec<(&str, TopicCursor)> = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let (tag, cursor) = lane.split_once(TAG_SEPARATOR).expect("counted as tagged");
        if tag.len() != TAG_LEN || !tag.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()) {
            return Err(CursorError::Malformed(lane.to_owned()));
        }
        by_tag.push((tag, cursor.parse()?));
    }
    Ok(topics
        .iter()
        .map(|topic| {
            let tag = topic_tag(topic.as_ref());
            by_tag.iter().find(|(lane_tag, _)| *lane_tag == tag).map(|(_, cursor)| cursor.clone())
        })
        .collect())
}

/// Writes the cursor of a connection (the SSE `id:` value): the plain cursor for one topic,
/// tagged lanes for several.
pub fn format_cursors<T: AsRef<str>>(topics: &[T], cursors: &[TopicCursor]) -> String {
    if let [cursor] = cursors {
        return cursor.to_string();
    }
    let mut out = String::with_capacity(cursors.len() * 40);
    for (index, (topic, cursor)) in topics.iter().zip(cursors).enumerate() {
        if index > 0 {
            out.push(TOPIC_SEPARATOR);
        }
        out.push_str(&topic_tag(topic.as_ref()));
        out.push(TAG_SEPARATOR);
        cursor.write_to(&mut out);
    }
    out
}

/// A position in a topic's history as a gateway tracks it: the epoch (`None` until the
/// topic has a history) and the last event delivered in it (`0-0`: none yet, which in a
/// known epoch means "before the oldest event held").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history's epoch; `None` while no history has been seen.
    pub epoch: Option<Epoch>,
    /// The last event delivered (`0-0`: none yet).
    pub last: HistoryId,
}

impl Position {
    /// Before everything, in whatever epoch comes.
    pub const START: Position = Position { epoch: None, last: HistoryId::ZERO };

    /// The start of `epoch`.
    pub fn start_of(epoch: Epoch) -> Position {
        Position { epoch: Some(epoch), last: HistoryId::ZERO }
    }

    /// Just after `last` in `epoch`.
    pub fn at(epoch: Epoch, last: HistoryId) -> Position {
        Position { epoch: Some(epoch), last }
    }

    /// As a client cursor.
    pub fn cursor(&self) -> TopicCursor {
        match &self.epoch {
            None => TopicCursor::Start,
            Some(epoch) => TopicCursor::at(epoch.clone(), self.last),
        }
    }

    /// From a client cursor.
    pub fn from_cursor(cursor: &TopicCursor) -> Position {
        match cursor {
            TopicCursor::Start => Position::START,
            TopicCursor::At { epoch, id } => Position { epoch: Some(epoch.clone()), last: *id },
        }
    }
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
    fn multi_topic_lanes_are_matched_by_topic_not_by_place() {
        let a = TopicCursor::at(epoch("aa"), "5-0".parse().unwrap());
        let c = TopicCursor::at(epoch("cc"), "7-2".parse().unwrap());
        let text = format_cursors(&["a", "b", "c"], &[a.clone(), TopicCursor::Start, c.clone()]);
        assert_eq!(text.split(',').count(), 3);
        assert!(text.starts_with(&format!("{}:5-0~aa,", topic_tag("a"))), "{text}");
        // Same topics, another order: each lane still finds its topic.
        assert_eq!(
            parse_cursors(&text, &["c", "a", "b"]).unwrap(),
            vec![Some(c.clone()), Some(a.clone()), Some(TopicCursor::Start)]
        );
        // A topic added starts fresh; a topic dropped is ignored.
        assert_eq!(parse_cursors(&text, &["d", "c"]).unwrap(), vec![None, Some(c)]);
    }

    #[test]
    fn zero_means_everything_held_for_every_topic() {
        assert_eq!(parse_cursors("0", &["a", "b"]).unwrap(), vec![Some(TopicCursor::Start); 2]);
        assert_eq!(parse_cursors(" 0 ", &["a"]).unwrap(), vec![Some(TopicCursor::Start)]);
    }

    #[test]
    fn one_topic_keeps_the_plain_cursor() {
        let a = TopicCursor::at(epoch("aa"), "5-0".parse().unwrap());
        assert_eq!(format_cursors(&["a"], std::slice::from_ref(&a)), "5-0~aa");
        assert_eq!(parse_cursors("5-0~aa", &["a"]).unwrap(), vec![Some(a)]);
    }

    #[test]
    fn untagged_lanes_are_positional_and_must_match_the_count() {
        let text = "5-0~aa,0";
        assert_eq!(
            parse_cursors(text, &["a", "b"]).unwrap(),
            vec![Some(TopicCursor::at(epoch("aa"), "5-0".parse().unwrap())), Some(TopicCursor::Start)]
        );
        assert_eq!(parse_cursors(text, &["a"]), Err(CursorError::WrongCount { expected: 1, found: 2 }));
    }

    #[test]
    fn malformed_lanes_are_rejected() {
        let tag = topic_tag("a");
        for bad in [
            format!("{tag}:5-0~aa,5-0~bb"),
            format!("{tag}:zz"),
            "ABCDEFGHIJ:5-0~aa".to_owned(),
            "short:5-0~aa".to_owned(),
            vec!["0"; MAX_LANES + 1].join(","),
        ] {
            assert!(parse_cursors(&bad, &["a", "b"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_tags_are_stable_and_distinct() {
        assert_eq!(topic_tag("order:1"), topic_tag("order:1"));
        assert_eq!(topic_tag("order:1").len(), TAG_LEN);
        let tags: std::collections::HashSet<String> =
            (0..10_000).map(|i| topic_tag(&format!("t{i}"))).collect();
        assert_eq!(tags.len(), 10_000);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn cursor() -> impl Strategy<Value = TopicCursor> {
            prop_oneof![
                Just(TopicCursor::Start),
                (any::<u64>(), any::<u64>(), "[a-z0-9]{1,32}").prop_map(|(ms, seq, epoch)| {
                    TopicCursor::at(Epoch::parse(&epoch).unwrap(), HistoryId { ms, seq })
                }),
            ]
        }

        proptest! {
            #[test]
            fn no_input_panics_the_parser(text in "(?s).{0,300}", n in 1usize..5) {
                let topics: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
                let _ = parse_cursors(&text, &topics);
                let _ = text.parse::<TopicCursor>();
            }

            #[test]
            fn lanes_find_their_topics_in_any_order(
                lanes in proptest::collection::vec(("[a-z:]{1,12}", cursor()), 2..8),
                seed in any::<u64>(),
            ) {
                let mut unique = std::collections::HashMap::new();
                for (topic, cursor) in lanes {
                    unique.insert(topic, cursor);
                }
                prop_assume!(unique.len() >= 2);
                let (topics, cursors): (Vec<String>, Vec<TopicCursor>) = unique.into_iter().unzip();
                let text = format_cursors(&topics, &cursors);
                let mut shuffled: Vec<usize> = (0..topics.len()).collect();
                fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
                let reordered: Vec<&String> = shuffled.iter().map(|i| &topics[*i]).collect();
                let parsed = parse_cursors(&text, &reordered).unwrap();
                for (at, index) in shuffled.iter().enumerate() {
                    prop_assert_eq!(parsed[at].as_ref(), Some(&cursors[*index]));
                }
            }
        }
    }
}
