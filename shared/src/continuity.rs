//! The continuity rule: given where a subscriber stands in a topic and what the topic's
//! history holds right after that, may delivery simply go on, or were events lost — and
//! where does delivery resume?
//!
//! One pure function, [`check`], used by every place that reads history for a subscriber:
//! a connection replaying from its client's cursor and a hub catching up from its own
//! position, on every batch they read (a history can be recreated between two batches).
//! The rule, for a position `(epoch, last)` and a history read after `last`:
//!
//! | history | first entry after `last` | verdict |
//! |---|---|---|
//! | none | — | `history_lost` if the position had an epoch, else nothing yet |
//! | another epoch | — | `history_lost`, read again from the new epoch's oldest event |
//! | same epoch | its `p` is `last` (or `last` is `0-0`) | deliver |
//! | same epoch | its `p` is newer than `last` | `trimmed`, resume after `p` |
//! | same epoch | its `p` is older than `last` | `history_lost` (the tail with `last` is gone), resume after `p` |
//! | same epoch | none, newest is `last` | up to date |
//! | same epoch, `last` is `0-0` | none | up to date, at the newest |
//! | same epoch | none, newest is newer than `last` | `trimmed` (everything after `last` is gone), resume at the newest |
//! | same epoch | none, newest is older than `last` | `history_lost`, resume at the newest |
//!
//! A position whose epoch is unknown (the client's `0`) adopts the history's epoch and
//! takes everything held. `0-0` in a known epoch means the same: "everything held in this
//! epoch" (where a position lands after a `history_lost` reset).

use crate::cursor::{Epoch, HistoryId, Position};

/// Why a subscriber is told that events may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetReason {
    /// Retention removed events after the position.
    Trimmed,
    /// The history the position points into is gone (recreated, or lost with Redis data).
    HistoryLost,
}

impl ResetReason {
    /// The `reason` field of the `streamgate.reset` notice.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Trimmed => "trimmed",
            ResetReason::HistoryLost => "history_lost",
        }
    }
}

/// An entry's id and the id of the entry before it (`p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The entry's id.
    pub id: HistoryId,
    /// Its predecessor's id (`0-0` for the first of an epoch).
    pub prev: HistoryId,
}

/// What one read of a topic's history saw, as the rule needs it.
#[derive(Debug, Clone, Copy)]
pub struct HistoryView<'a> {
    /// The history's current epoch (`None`: the topic has no history).
    pub epoch: Option<&'a Epoch>,
    /// The id of the newest event appended in this epoch (the meta's `last`).
    pub newest: Option<HistoryId>,
    /// The first entry held after the position's `last`, if any.
    pub first: Option<Link>,
}

/// What to do after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Deliver the entries of this read (in order, after [`Verdict::position`]).
    Deliver,
    /// Discard this read and read again after [`Verdict::position`].
    ReadAgain,
    /// Nothing to deliver now.
    UpToDate,
}

/// The rule's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The notice to send first, if events may have been lost.
    pub reset: Option<ResetReason>,
    /// The position delivery continues from (after the notice, if any).
    pub position: Position,
    /// What to do with the read.
    pub next: Next,
}

impl Verdict {
    fn go_on(position: &Position, next: Next) -> Verdict {
        Verdict { reset: None, position: position.clone(), next }
    }

    fn reset(reason: ResetReason, position: Position, next: Next) -> Verdict {
        Verdict { reset: Some(reason), position, next }
    }
}

/// Decides how `position` continues into a history read after `position.last`.
pub fn check(position: &Position, view: HistoryView<'_>) -> Verdict {
    let Some(epoch) = view.epoch else {
        return match position.epoch {
            Some(_) => Verdict::reset(ResetReason::HistoryLost, Position::START, Next::UpToDate),
            None => Verdict::go_on(position, Next::UpToDate),
        };
    };
    let Some(known) = &position.epoch else {
        // `0`: everything held, in whatever epoch is current.
        return match (position.last.is_zero(), view.first, view.newest) {
            (false, _, _) => Verdict::go_on(&Position::start_of(epoch.clone()), Next::ReadAgain),
            (true, Some(_), _) => Verdict::go_on(&Position::start_of(epoch.clone()), Next::Deliver),
            // Nothing held: the position is the newest event, whose successor comes next.
            (true, None, newest) => {
                Verdict::go_on(&Position::at(epoch.clone(), newest.unwrap_or_default()), Next::UpToDate)
            }
        };
    };
    if known != epoch {
        return Verdict::reset(ResetReason::HistoryLost, Position::start_of(epoch.clone()), Next::ReadAgain);
    }
    let last = position.last;
    match view.first {
        Some(_) if last.is_zero() => Verdict::go_on(position, Next::Deliver),
        Some(first) if first.prev == last => Verdict::go_on(position, Next::Deliver),
        Some(first) if first.prev > last => {
            Verdict::reset(ResetReason::Trimmed, Position::at(epoch.clone(), first.prev), Next::Deliver)
        }
        Some(first) => {
            Verdict::reset(ResetReason::HistoryLost, Position::at(epoch.clone(), first.prev), Next::Deliver)
        }
        None => match view.newest {
            Some(newest) if !last.is_zero() && newest > last => {
                Verdict::reset(ResetReason::Trimmed, Position::at(epoch.clone(), newest), Next::UpToDate)
            }
            Some(newest) if newest < last => {
                Verdict::reset(ResetReason::HistoryLost, Position::at(epoch.clone(), newest), Next::UpToDate)
            }
            // "Everything held in this epoch", and nothing is held: at the newest event.
            Some(newest) if last.is_zero() => {
                Verdict::go_on(&Position::at(epoch.clone(), newest), Next::UpToDate)
            }
            _ => Verdict::go_on(position, Next::UpToDate),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> HistoryId {
        text.parse().unwrap()
    }

    fn epoch(text: &str) -> Epoch {
        Epoch::parse(text).unwrap()
    }

    fn at(e: &str, last: &str) -> Position {
        Position::at(epoch(e), id(last))
    }

    fn link(entry: &str, prev: &str) -> Option<Link> {
        Some(Link { id: id(entry), prev: id(prev) })
    }

    struct Case {
        name: &'static str,
        position: Position,
        epoch: Option<&'static str>,
        newest: Option<&'static str>,
        first: Option<Link>,
        reset: Option<ResetReason>,
        resume: Position,
        next: Next,
    }

    #[test]
    fn every_case_of_the_rule() {
        use Next::*;
        use ResetReason::*;
        let cases = [
            Case {
                name: "no history, never had one",
                position: Position::START,
                epoch: None,
                newest: None,
                first: None,
                reset: None,
                resume: Position::START,
                next: UpToDate,
            },
            Case {
                name: "history gone (deleted, or lost with Redis data)",
                position: at("e1", "5-0"),
                epoch: None,
                newest: None,
                first: None,
                reset: Some(HistoryLost),
                resume: Position::START,
                next: UpToDate,
            },
            Case {
                name: "`0` adopts the epoch and takes everything held",
                position: Position::START,
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: link("3-0", "2-0"),
                reset: None,
                resume: Position::start_of(epoch("e1")),
                next: Deliver,
            },
            Case {
                name: "`0` on an emptied history",
                position: Position::START,
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: None,
                reset: None,
                resume: at("e1", "9-0"),
                next: UpToDate,
            },
            Case {
                name: "another epoch: recreated while away (or between two batches)",
                position: at("e1", "5-0"),
                epoch: Some("e2"),
                newest: Some("1-0"),
                first: None,
                reset: Some(HistoryLost),
                resume: Position::start_of(epoch("e2")),
                next: ReadAgain,
            },
            Case {
                name: "continues",
                position: at("e1", "5-0"),
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: link("6-0", "5-0"),
                reset: None,
                resume: at("e1", "5-0"),
                next: Deliver,
            },
            Case {
                name: "start of a known epoch takes everything held",
                position: Position::start_of(epoch("e1")),
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: link("6-0", "5-0"),
                reset: None,
                resume: Position::start_of(epoch("e1")),
                next: Deliver,
            },
            Case {
                name: "the event after the cursor was trimmed",
                position: at("e1", "5-0"),
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: link("8-0", "7-0"),
                reset: Some(Trimmed),
                resume: at("e1", "7-0"),
                next: Deliver,
            },
            Case {
                name: "the tail with the cursor was lost, new events follow the surviving tail",
                position: at("e1", "5-0"),
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: link("9-0", "3-0"),
                reset: Some(HistoryLost),
                resume: at("e1", "3-0"),
                next: Deliver,
            },
            Case {
                name: "up to date",
                position: at("e1", "5-0"),
                epoch: Some("e1"),
                newest: Some("5-0"),
                first: None,
                reset: None,
                resume: at("e1", "5-0"),
                next: UpToDate,
            },
            Case {
                name: "retention emptied the history past the cursor",
                position: at("e1", "5-0"),
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: None,
                reset: Some(Trimmed),
                resume: at("e1", "9-0"),
                next: UpToDate,
            },
            Case {
                name: "the tail with the cursor was lost, nothing new yet",
                position: at("e1", "5-0"),
                epoch: Some("e1"),
                newest: Some("3-0"),
                first: None,
                reset: Some(HistoryLost),
                resume: at("e1", "3-0"),
                next: UpToDate,
            },
            Case {
                name: "start of a known epoch on an emptied history",
                position: Position::start_of(epoch("e1")),
                epoch: Some("e1"),
                newest: Some("9-0"),
                first: None,
                reset: None,
                resume: at("e1", "9-0"),
                next: UpToDate,
            },
        ];
        for case in cases {
            let history_epoch = case.epoch.map(epoch);
            let view =
                HistoryView { epoch: history_epoch.as_ref(), newest: case.newest.map(id), first: case.first };
            let verdict = check(&case.position, view);
            assert_eq!(
                verdict,
                Verdict { reset: case.reset, position: case.resume, next: case.next },
                "{}",
                case.name
            );
        }
    }
}
