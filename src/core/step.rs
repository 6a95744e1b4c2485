//! One input record through the core: decode, route check, state machine ([`Processor::step`]),
//! and what the record leaves behind ([`Processor::apply`]): a changelog record or a dead
//! letter, the batch's overlay of new states, and counts. Pure: the partition owner reads the
//! records, times them, and makes the [`Effects`] durable.

use std::collections::HashMap;

use super::changelog::Stored;
use super::event::{Event, EventKind, Malformed};
use super::ids::{Epoch, Offset, Partition, PartitionCount, ReservationNo};
use super::partitioner::Partitioner;
use super::record::{NewRecord, Record, headers};
use super::state_machine::{self, Outcome, RejectReason, Status};

/// What one input record does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Applied {
        key: ReservationNo,
        kind: EventKind,
        from: Option<Status>,
        stored: Stored,
    },
    Duplicate {
        kind: EventKind,
    },
    Rejected {
        kind: EventKind,
        reason: RejectReason,
    },
    Malformed(Malformed),
    Misrouted {
        kind: EventKind,
        key: ReservationNo,
        belongs_to: Partition,
        /// Misrouted in this partition before a change of N moved it ([`MISROUTED_BEFORE`]).
        moved_from: Option<Partition>,
    },
}

/// One input record as the processor reads it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(String, String)],
}

impl<'a> Input<'a> {
    /// A record's key (none when empty), value and headers.
    pub fn of(key: &'a [u8], value: &'a [u8], headers: &'a [(String, String)]) -> Self {
        Input {
            key: (!key.is_empty()).then_some(key),
            value,
            headers,
        }
    }
}

/// A header a rebuild (`ordo repartition`) puts on an input record that was misrouted where it
/// was processed: dead-lettered there, never applied. Wherever the move routes it, it is
/// misrouted again, so a replay of the moved input leads to the state the move carried. Its
/// value is the partition it was in.
pub const MISROUTED_BEFORE: &str = "ordo.misrouted";

/// Dead-letter reason codes beyond the state machine's.
pub const MALFORMED: &str = "malformed";
/// See [`MALFORMED`].
pub const MISROUTED: &str = "misrouted";

/// Read access to current state, for [`Processor::step`].
pub trait StateView {
    /// Calls `f` with the current state of `key`.
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R;
}

/// A partition's states by reservation, hashed with foldhash: a tenth of the core loop went
/// to SipHash on these short keys. Its seed is random per map, as SipHash's is.
pub type States = HashMap<ReservationNo, Stored, foldhash::quality::RandomState>;

impl<S: std::hash::BuildHasher> StateView for HashMap<ReservationNo, Stored, S> {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        f(self.get(key))
    }
}

/// A batch's changes over a base view: reads see the batch's own earlier changes first.
pub struct Overlay<'a, V> {
    pub changes: States,
    pub base: &'a V,
}

impl<V: StateView> StateView for Overlay<'_, V> {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        match self.changes.get(key) {
            Some(s) => f(Some(s)),
            None => self.base.with(key, f),
        }
    }
}

/// What a batch leaves to make durable: changelog records (key, value) and dead letters.
#[derive(Debug, Default)]
pub struct Effects {
    pub state: Vec<(Vec<u8>, Vec<u8>)>,
    pub dead_letters: Vec<NewRecord>,
}

impl Effects {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.state.clear();
        self.dead_letters.clear();
    }
}

/// Event types counted, in [`Tally`] row order (`unknown` is a malformed record).
pub const TALLY_TYPES: [&str; 4] = ["reservation", "association", "cancellation", "unknown"];
/// Outcomes counted, in [`Tally`] column order.
pub const TALLY_OUTCOMES: [&str; 5] =
    ["applied", "duplicate", "rejected", "malformed", "misrouted"];
/// `from` states of counted transitions.
pub const TALLY_FROM: [&str; 2] = ["none", "reserved"];
/// `to` states of counted transitions.
pub const TALLY_TO: [&str; 3] = ["reserved", "associated", "cancelled"];

/// Counts of one batch, flushed to the metrics by the owner once the batch is durable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// `[type][outcome]`, indexed as [`TALLY_TYPES`] × [`TALLY_OUTCOMES`].
    pub events: [[u64; 5]; 4],
    /// By [`RejectReason::ALL`] order.
    pub rejections: [u64; 5],
    /// `[from][to]`, indexed as [`TALLY_FROM`] × [`TALLY_TO`].
    pub transitions: [[u64; 3]; 2],
    /// By reason: [`RejectReason::ALL`], then malformed, misrouted.
    pub dead_letters: [u64; 7],
}

impl Tally {
    /// Dead-letter reasons in [`Tally::dead_letters`] order.
    pub fn dead_letter_reasons() -> [&'static str; 7] {
        let r = RejectReason::ALL.map(RejectReason::as_str);
        [r[0], r[1], r[2], r[3], r[4], MALFORMED, MISROUTED]
    }
}

fn kind_index(k: EventKind) -> usize {
    match k {
        EventKind::Reservation => 0,
        EventKind::Association => 1,
        EventKind::Cancellation => 2,
    }
}

fn reason_index(r: RejectReason) -> usize {
    match r {
        RejectReason::NotReserved => 0,
        RejectReason::AlreadyReserved => 1,
        RejectReason::UserMismatch => 2,
        RejectReason::AlreadyAssociated => 3,
        RejectReason::Cancelled => 4,
    }
}

fn status_index(s: Status) -> usize {
    match s {
        Status::Reserved => 0,
        Status::Associated => 1,
        Status::Cancelled => 2,
    }
}

/// The pure per-record logic of a partition owner.
#[derive(Debug, Clone, Copy)]
pub struct Processor {
    pub partition: Partition,
    pub partitions: PartitionCount,
    pub partitioner: Partitioner,
    pub epoch: Epoch,
}

impl Processor {
    /// What the record at `offset` does, given the current state.
    pub fn step(
        &self,
        Input {
            key,
            value,
            headers,
        }: Input<'_>,
        offset: Offset,
        state: &impl StateView,
    ) -> Step {
        let event = match Event::decode_record(key, value) {
            Ok(e) => e,
            Err(m) => return Step::Malformed(m),
        };
        let belongs_to = self
            .partitioner
            .partition(event.reservation_no.as_str(), self.partitions);
        let moved_from = headers
            .iter()
            .find(|(k, _)| k == MISROUTED_BEFORE)
            .map(|(_, v)| Partition(v.parse().unwrap_or(u32::MAX)));
        if belongs_to != self.partition || moved_from.is_some() {
            return Step::Misrouted {
                kind: event.kind,
                key: event.reservation_no,
                belongs_to,
                moved_from,
            };
        }
        let outcome = state.with(event.reservation_no.as_str(), |s| {
            state_machine::apply(s.map(|s| &s.entity), &event)
        });
        match outcome {
            Outcome::Applied(t) => Step::Applied {
                kind: event.kind,
                from: t.from,
                stored: Stored {
                    entity: t.entity,
                    source_offset: offset,
                    epoch: self.epoch,
                },
                key: event.reservation_no,
            },
            Outcome::Duplicate => Step::Duplicate { kind: event.kind },
            Outcome::Rejected(reason) => Step::Rejected {
                kind: event.kind,
                reason,
            },
        }
    }

    /// Steps `r` against `overlay` and records what it leaves: the new state in the overlay and
    /// a changelog record in `effects`, or a dead letter; and its counts in `tally`.
    pub fn apply<V: StateView>(
        &self,
        r: &Record,
        overlay: &mut Overlay<'_, V>,
        effects: &mut Effects,
        tally: &mut Tally,
    ) {
        match self.step(Input::of(&r.key, &r.value, &r.headers), r.offset, overlay) {
            Step::Applied {
                key,
                kind,
                from,
                stored,
            } => {
                tally.events[kind_index(kind)][0] += 1;
                let to = status_index(stored.entity.status());
                tally.transitions[usize::from(from.is_some())][to] += 1;
                let value = stored.record_json(&key, self.partition);
                effects
                    .state
                    .push((key.as_str().as_bytes().to_vec(), value));
                overlay.changes.insert(key, stored);
            }
            Step::Duplicate { kind } => tally.events[kind_index(kind)][1] += 1,
            Step::Rejected { kind, reason } => {
                tally.events[kind_index(kind)][2] += 1;
                tally.rejections[reason_index(reason)] += 1;
                tally.dead_letters[reason_index(reason)] += 1;
                effects.dead_letters.push(dead_letter(
                    r,
                    reason.as_str(),
                    format!("{} rejected: {}", kind.as_str(), reason.as_str()),
                ));
            }
            Step::Malformed(m) => {
                tally.events[3][3] += 1;
                tally.dead_letters[5] += 1;
                effects
                    .dead_letters
                    .push(dead_letter(r, MALFORMED, m.to_string()));
            }
            Step::Misrouted {
                kind,
                key,
                belongs_to,
                moved_from,
            } => {
                tally.events[kind_index(kind)][4] += 1;
                tally.dead_letters[6] += 1;
                let why = match moved_from {
                    Some(q) => format!(
                        "key {key} was misrouted in partition {q} before a change of N \
                         (dead-lettered there, never applied)"
                    ),
                    None => format!(
                        "key {key} belongs to partition {belongs_to} under {}, not {}",
                        self.partitioner, self.partition
                    ),
                };
                effects.dead_letters.push(dead_letter(r, MISROUTED, why));
            }
        }
    }
}

/// The dead letter of `r`: its key and bytes unchanged, with contract §4 headers, then the
/// record's own headers (a trace id, a producer's metadata) except any in ordo's `ordo.`
/// namespace, which only ordo's own say.
pub fn dead_letter(r: &Record, reason: &str, error: String) -> NewRecord {
    let mut headers = vec![
        (headers::REASON.to_owned(), reason.to_owned()),
        (
            headers::SOURCE_PARTITION.to_owned(),
            r.partition.to_string(),
        ),
        (headers::SOURCE_OFFSET.to_owned(), r.offset.to_string()),
        (headers::ERROR.to_owned(), error),
    ];
    headers.extend(
        r.headers
            .iter()
            .filter(|(k, _)| !k.starts_with("ordo."))
            .cloned(),
    );
    NewRecord {
        key: r.key.clone(),
        value: r.value.clone(),
        timestamp: r.timestamp,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(n: u32) -> Processor {
        Processor {
            partition: Partition(0),
            partitions: PartitionCount::new(n).unwrap(),
            partitioner: Partitioner::AbsHashModN,
            epoch: Epoch(1),
        }
    }

    #[test]
    fn steps_apply_reject_duplicate_malformed_misrouted() {
        let p = processor(1);
        let mut state: HashMap<ReservationNo, Stored> = HashMap::new();
        let reserve =
            br#"{"type":"reservation","event_id":"e1","reservation_no":"R","user_id":"u"}"#;
        let Step::Applied {
            key,
            stored,
            from: None,
            ..
        } = p.step(
            Input {
                key: Some(b"R"),
                value: reserve,
                headers: &[],
            },
            Offset(0),
            &state,
        )
        else {
            panic!()
        };
        assert_eq!(stored.source_offset, Offset(0));
        assert_eq!(stored.epoch, Epoch(1));
        state.insert(key, stored);
        assert_eq!(
            p.step(
                Input {
                    key: Some(b"R"),
                    value: reserve,
                    headers: &[]
                },
                Offset(1),
                &state
            ),
            Step::Duplicate {
                kind: EventKind::Reservation
            }
        );
        let again = br#"{"type":"reservation","event_id":"e2","reservation_no":"R","user_id":"u"}"#;
        assert_eq!(
            p.step(
                Input {
                    key: Some(b"R"),
                    value: again,
                    headers: &[]
                },
                Offset(2),
                &state
            ),
            Step::Rejected {
                kind: EventKind::Reservation,
                reason: RejectReason::AlreadyReserved
            }
        );
        assert!(matches!(
            p.step(
                Input {
                    key: None,
                    value: b"{oops",
                    headers: &[]
                },
                Offset(3),
                &state
            ),
            Step::Malformed(Malformed::NotJson(_))
        ));

        // With N = 10, "R-0001" belongs to partition 6, so partition 0 must refuse it.
        let p10 = processor(10);
        let other =
            br#"{"type":"reservation","event_id":"e1","reservation_no":"R-0001","user_id":"u"}"#;
        assert!(matches!(
            p10.step(
                Input {
                    key: Some(b"R-0001"),
                    value: other,
                    headers: &[]
                },
                Offset(0),
                &state
            ),
            Step::Misrouted {
                belongs_to: Partition(6),
                ..
            }
        ));
    }

    #[test]
    fn apply_leaves_records_dead_letters_and_counts() {
        let p = processor(1);
        let base: HashMap<ReservationNo, Stored> = HashMap::new();
        let mut overlay = Overlay {
            changes: States::default(),
            base: &base,
        };
        let (mut effects, mut tally) = (Effects::default(), Tally::default());
        let rec = |offset, value: &str| Record {
            partition: Partition(0),
            offset: Offset(offset),
            timestamp: 7,
            key: b"R".to_vec(),
            value: value.as_bytes().to_vec(),
            headers: vec![],
        };
        let reserve =
            r#"{"type":"reservation","event_id":"e1","reservation_no":"R","user_id":"u"}"#;
        let cancel =
            r#"{"type":"cancellation","event_id":"e2","reservation_no":"R","user_id":"x"}"#;
        p.apply(&rec(0, reserve), &mut overlay, &mut effects, &mut tally);
        p.apply(&rec(1, reserve), &mut overlay, &mut effects, &mut tally);
        p.apply(&rec(2, cancel), &mut overlay, &mut effects, &mut tally);
        assert_eq!(effects.state.len(), 1);
        assert_eq!(overlay.changes["R"].source_offset, Offset(0));
        assert_eq!(effects.dead_letters.len(), 1);
        let dl = &effects.dead_letters[0];
        assert!(
            dl.headers
                .contains(&(headers::REASON.into(), "user_mismatch".into()))
        );
        assert!(
            dl.headers
                .contains(&(headers::SOURCE_OFFSET.into(), "2".into()))
        );
        assert_eq!(tally.events[0], [1, 1, 0, 0, 0]);
        assert_eq!(tally.events[2], [0, 0, 1, 0, 0]);
        assert_eq!(tally.transitions[0], [1, 0, 0]);
        assert_eq!(tally.dead_letters[2], 1);
    }

    #[test]
    fn a_dead_letter_keeps_the_records_own_headers_but_not_a_forged_ordo_one() {
        let r = Record {
            partition: Partition(2),
            offset: Offset(9),
            timestamp: 1,
            key: b"R".to_vec(),
            value: b"{".to_vec(),
            headers: vec![
                ("traceparent".into(), "00-abc-01".into()),
                (headers::REASON.into(), "forged".into()),
            ],
        };
        let dl = dead_letter(&r, "malformed", "bad".into());
        let reasons: Vec<&str> = dl
            .headers
            .iter()
            .filter(|(k, _)| k == headers::REASON)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(reasons, ["malformed"]);
        assert!(
            dl.headers
                .contains(&("traceparent".into(), "00-abc-01".into()))
        );
        assert!(
            dl.headers
                .contains(&(headers::SOURCE_OFFSET.into(), "9".into()))
        );
    }
}
