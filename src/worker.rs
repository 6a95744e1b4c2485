//! The partition worker: one dedicated OS thread per partition, owning that partition's state.
//!
//! [`Processor::step`] is the pure part: one input record in, one [`Step`] out (decode, route
//! check, state machine). [`Worker`] is the shell around it: restore from the changelog, take a
//! new epoch, then read a batch, step each record against the batch's own overlay of changes,
//! commit the changelog records, dead letters and new position atomically, and only then
//! publish the new states to the shared query view.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use compact_str::CompactString;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus::IntCounter;
use tracing::{debug, info};

use crate::changelog::{self, Entry, Epoch, StateRecord, Stored, Verdict};
use crate::event::{Event, EventKind, Malformed, ReservationNo};
use crate::log::embedded::{Commit, EmbeddedLog, LogError};
use crate::log::{NewRecord, Record, headers};
use crate::metrics::Metrics;
use crate::partitioner::{Partition, PartitionCount, Partitioner};
use crate::state_machine::{self, Outcome, RejectReason, Status};
use crate::topics::Role;

/// Default number of input records per batch (and per durable commit).
pub const DEFAULT_BATCH_SIZE: usize = 4096;

/// The state of one partition as seen by queries; written only by the partition's owner.
pub type View = DashMap<ReservationNo, Stored>;

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
    },
}

/// Dead-letter reason codes beyond the state machine's.
pub const MALFORMED: &str = "malformed";
/// See [`MALFORMED`].
pub const MISROUTED: &str = "misrouted";

/// Read access to current state, for [`Processor::step`].
pub trait StateView {
    /// Calls `f` with the current state of `key`.
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R;
}

impl StateView for HashMap<ReservationNo, Stored> {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        f(self.get(key))
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
        key: Option<&[u8]>,
        value: &[u8],
        offset: u64,
        state: &impl StateView,
    ) -> Step {
        let event = match Event::decode_record(key, value) {
            Ok(e) => e,
            Err(m) => return Step::Malformed(m),
        };
        let belongs_to = self
            .partitioner
            .partition(event.reservation_no.as_str(), self.partitions);
        if belongs_to != self.partition {
            return Step::Misrouted {
                kind: event.kind,
                key: event.reservation_no,
                belongs_to,
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
}

/// Reservations by user, derived from the changelog: kept by the partition owners, read by
/// the gateway to route an association that names only its user.
pub type UserIndex = DashMap<CompactString, Vec<ReservationNo>>;

pub(crate) fn index_user(users: &UserIndex, user: &CompactString, no: &ReservationNo) {
    let mut list = users.entry(user.clone()).or_default();
    if !list.contains(no) {
        list.push(no.clone());
    }
}

/// What a partition thread shares with the rest of the process.
#[derive(Debug)]
pub struct PartitionStatus {
    /// Set while this process owns the partition (from assignment, before the restore).
    pub owned: AtomicBool,
    /// Set once the state is restored and the epoch taken.
    pub ready: AtomicBool,
    /// The epoch this owner holds.
    pub epoch: AtomicU64,
    /// The next input offset to process: every offset below it is applied and durable.
    position: tokio::sync::watch::Sender<u64>,
}

impl Default for PartitionStatus {
    fn default() -> Self {
        PartitionStatus {
            owned: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            position: tokio::sync::watch::channel(0).0,
        }
    }
}

impl PartitionStatus {
    /// The next input offset to process.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Publishes a new position to waiting readers.
    pub fn set_position(&self, position: u64) {
        self.position.send_replace(position);
    }

    /// Follows the position, for readers waiting to read their own writes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.position.subscribe()
    }
}

/// Everything a partition worker needs.
pub struct Worker {
    pub partition: Partition,
    pub log: Arc<EmbeddedLog>,
    pub view: Arc<View>,
    pub users: Arc<UserIndex>,
    pub status: Arc<PartitionStatus>,
    pub metrics: Arc<Metrics>,
    pub batch_size: usize,
    /// Return once caught up instead of waiting for more input.
    pub until_idle: bool,
    pub shutdown: Arc<AtomicBool>,
    /// Who this owner is, written into its epoch marker.
    pub owner: String,
}

/// What a worker did, for summaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerReport {
    pub processed: u64,
    pub applied: u64,
    pub restored: u64,
    pub epoch: Epoch,
}

/// Counters resolved once per worker, so the hot path touches no label maps.
pub(crate) struct Counters {
    /// `[type][outcome]`; type index 3 is `unknown` (malformed).
    events: Vec<Vec<IntCounter>>,
    rejections: Vec<IntCounter>,
    /// `[from][to]`, from ∈ {none, reserved}, to ∈ {reserved, associated, cancelled}.
    transitions: Vec<Vec<IntCounter>>,
    /// By reason: the five rejects, then malformed, misrouted.
    dead_letters: Vec<IntCounter>,
}

const OUTCOMES: [&str; 5] = ["applied", "duplicate", "rejected", "malformed", "misrouted"];

impl Counters {
    pub(crate) fn new(m: &Metrics, p: Partition) -> Self {
        let p = p.to_string();
        let types = ["reservation", "association", "cancellation", "unknown"];
        let dl_reasons: Vec<&str> = RejectReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain([MALFORMED, MISROUTED])
            .collect();
        Counters {
            events: types
                .iter()
                .map(|t| {
                    OUTCOMES
                        .iter()
                        .map(|o| m.events.with_label_values(&[p.as_str(), t, o]))
                        .collect()
                })
                .collect(),
            rejections: RejectReason::ALL
                .iter()
                .map(|r| m.rejections.with_label_values(&[r.as_str()]))
                .collect(),
            transitions: ["none", "reserved"]
                .iter()
                .map(|f| {
                    ["reserved", "associated", "cancelled"]
                        .iter()
                        .map(|t| m.transitions.with_label_values(&[f, t]))
                        .collect()
                })
                .collect(),
            dead_letters: dl_reasons
                .iter()
                .map(|r| m.dead_letters.with_label_values(&[r]))
                .collect(),
        }
    }
}

/// Per-batch tallies, flushed to the counters after the commit.
#[derive(Default)]
pub(crate) struct Tally {
    events: [[u64; 5]; 4],
    rejections: [u64; 5],
    transitions: [[u64; 3]; 2],
    dead_letters: [u64; 7],
}

impl Tally {
    pub(crate) fn flush(&self, c: &Counters) {
        fn add(counter: &IntCounter, n: u64) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        for (row, counters) in self.events.iter().zip(&c.events) {
            for (n, counter) in row.iter().zip(counters) {
                add(counter, *n);
            }
        }
        for (n, counter) in self.rejections.iter().zip(&c.rejections) {
            add(counter, *n);
        }
        for (row, counters) in self.transitions.iter().zip(&c.transitions) {
            for (n, counter) in row.iter().zip(counters) {
                add(counter, *n);
            }
        }
        for (n, counter) in self.dead_letters.iter().zip(&c.dead_letters) {
            add(counter, *n);
        }
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

/// A batch's changes over the shared view: reads see the batch's own earlier changes first.
pub(crate) struct Overlay<'a> {
    pub(crate) changes: HashMap<ReservationNo, Stored>,
    pub(crate) view: &'a View,
}

impl StateView for Overlay<'_> {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        match self.changes.get(key) {
            Some(s) => f(Some(s)),
            None => match self.view.get(key) {
                Some(r) => f(Some(r.value())),
                None => f(None),
            },
        }
    }
}

/// Loads a partition's state from its changelog into `view`, applying the fencing rule.
/// Returns the reader (highest epoch, resume offset, fenced count) and the entries restored.
pub fn restore(
    log: &EmbeddedLog,
    partition: Partition,
    view: &View,
    users: &UserIndex,
) -> Result<(changelog::Reader, u64), LogError> {
    let mut reader = changelog::Reader::default();
    let mut accepted = 0u64;
    log.scan(Role::State, partition, 0, |r| {
        match Entry::decode(&r.key, &r.value) {
            Ok(entry) => {
                if let Verdict::Accept(record) = reader.next(entry) {
                    let (key, stored) = record.into_stored();
                    index_user(users, &stored.entity.user_id, &key);
                    view.insert(key, stored);
                    accepted += 1;
                }
            }
            Err(e) => {
                tracing::warn!(partition = partition.0, offset = r.offset, error = %e, "skipping unreadable changelog record");
            }
        }
        Ok(true)
    })?;
    Ok((reader, accepted))
}

fn dead_letter(r: &Record, reason: &str, error: String) -> NewRecord {
    NewRecord {
        key: r.key.clone(),
        value: r.value.clone(),
        timestamp: r.timestamp,
        headers: vec![
            (headers::REASON.to_owned(), reason.to_owned()),
            (
                headers::SOURCE_PARTITION.to_owned(),
                r.partition.to_string(),
            ),
            (headers::SOURCE_OFFSET.to_owned(), r.offset.to_string()),
            (headers::ERROR.to_owned(), error),
        ],
    }
}

/// Steps every record of a batch against `overlay`, collecting state records and dead letters
/// in `commit` and counts in `tally`. Shared by both backends.
pub(crate) fn apply_batch(
    processor: &Processor,
    records: &[Record],
    overlay: &mut Overlay<'_>,
    commit: &mut Commit,
    tally: &mut Tally,
    timer: &prometheus::local::LocalHistogram,
) {
    let p = processor.partition;
    for r in records {
        let t0 = Instant::now();
        let key = (!r.key.is_empty()).then_some(&r.key[..]);
        match processor.step(key, &r.value, r.offset, overlay) {
            Step::Applied {
                key,
                kind,
                from,
                stored,
            } => {
                tally.events[kind_index(kind)][0] += 1;
                let to = status_index(stored.entity.status);
                tally.transitions[usize::from(from.is_some())][to] += 1;
                let record = StateRecord::new(key.clone(), p, &stored);
                commit
                    .state
                    .push((key.as_str().as_bytes().to_vec(), record.to_json()));
                overlay.changes.insert(key, stored);
            }
            Step::Duplicate { kind } => tally.events[kind_index(kind)][1] += 1,
            Step::Rejected { kind, reason } => {
                tally.events[kind_index(kind)][2] += 1;
                tally.rejections[reason_index(reason)] += 1;
                tally.dead_letters[reason_index(reason)] += 1;
                commit.dead_letters.push(dead_letter(
                    r,
                    reason.as_str(),
                    format!("{} rejected: {}", kind.as_str(), reason.as_str()),
                ));
            }
            Step::Malformed(m) => {
                tally.events[3][3] += 1;
                tally.dead_letters[5] += 1;
                commit
                    .dead_letters
                    .push(dead_letter(r, MALFORMED, m.to_string()));
            }
            Step::Misrouted {
                kind,
                key,
                belongs_to,
            } => {
                tally.events[kind_index(kind)][4] += 1;
                tally.dead_letters[6] += 1;
                commit.dead_letters.push(dead_letter(
                    r,
                    MISROUTED,
                    format!(
                        "key {key} belongs to partition {belongs_to} under {}, not {p}",
                        processor.partitioner
                    ),
                ));
            }
        }
        timer.observe(t0.elapsed().as_secs_f64());
    }
}

/// Makes a durable batch's changes visible to queries (and the user index).
pub(crate) fn publish(
    view: &View,
    users: &UserIndex,
    changes: &mut HashMap<ReservationNo, Stored>,
) {
    for (key, stored) in changes.drain() {
        if !view.contains_key(&key) {
            index_user(users, &stored.entity.user_id, &key);
        }
        view.insert(key, stored);
    }
}

impl Worker {
    /// Restores, takes ownership, and processes until idle (with `until_idle`) or shutdown.
    pub fn run(self) -> Result<WorkerReport, LogError> {
        let p = self.partition;
        let started = Instant::now();
        self.status.owned.store(true, Ordering::Release);
        let (reader, restored) = restore(&self.log, p, &self.view, &self.users)?;
        let plabel = p.to_string();
        self.metrics
            .restore
            .with_label_values(&[&plabel])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.fenced.inc_by(reader.fenced);
        let marker = self
            .log
            .begin_epoch(p, &self.owner, reader.highest_epoch())?;
        let processor = Processor {
            partition: p,
            partitions: self.log.partitions(),
            partitioner: self.log.partitioner(),
            epoch: marker.epoch,
        };
        let mut position = marker.resume_offset;
        self.status.set_position(position);
        self.status.epoch.store(marker.epoch.0, Ordering::Release);
        self.metrics
            .epoch
            .with_label_values(&[&plabel])
            .set(marker.epoch.0 as i64);
        let entries = self.metrics.state_entries.with_label_values(&[&plabel]);
        entries.set(self.view.len() as i64);
        let lag = self.metrics.lag.with_label_values(&[&plabel]);
        self.metrics.partitions_owned.inc();
        self.status.ready.store(true, Ordering::Release);
        info!(
            partition = p.0,
            epoch = marker.epoch.0,
            restored,
            fenced = reader.fenced,
            resume_offset = position,
            restore_ms = started.elapsed().as_millis() as u64,
            "partition owned"
        );

        let counters = Counters::new(&self.metrics, p);
        let mut report = WorkerReport {
            restored,
            epoch: marker.epoch,
            ..WorkerReport::default()
        };
        // Buffers live across batches: large allocations freed every batch would go back to the
        // OS and be faulted in (and zeroed) again.
        let mut records = Vec::with_capacity(self.batch_size);
        let mut changes = HashMap::with_capacity(self.batch_size);
        let mut commit = Commit::default();
        let result = loop {
            if self.shutdown.load(Ordering::Acquire) {
                break Ok(());
            }
            let seen = self.log.appended().generation();
            if let Err(e) =
                self.log
                    .read_into(Role::Events, p, position, self.batch_size, &mut records)
            {
                break Err(e);
            }
            if records.is_empty() {
                lag.set(0);
                if self.until_idle {
                    break Ok(());
                }
                // Appends and shutdown both notify; the timeout only bounds a missed wake-up.
                self.log.appended().wait(seen, Duration::from_millis(200));
                continue;
            }
            let mut overlay = Overlay {
                changes,
                view: &self.view,
            };
            commit.state.clear();
            commit.dead_letters.clear();
            let mut tally = Tally::default();
            let timer = self.metrics.processing.local();
            apply_batch(
                &processor,
                &records,
                &mut overlay,
                &mut commit,
                &mut tally,
                &timer,
            );
            let last = records.last().expect("non-empty batch").offset;
            commit.next_offset = last + 1;
            let t0 = Instant::now();
            let (returned, result) = self.log.commit(p, commit);
            commit = returned;
            if let Err(e) = result {
                break Err(e);
            }
            self.metrics.commit.observe(t0.elapsed().as_secs_f64());
            // Durable: now the batch may be seen.
            report.applied += commit.state.len() as u64;
            changes = overlay.changes;
            publish(&self.view, &self.users, &mut changes);
            position = commit.next_offset;
            self.status.set_position(position);
            report.processed += records.len() as u64;
            timer.flush();
            tally.flush(&counters);
            entries.set(self.view.len() as i64);
            if let Ok(end) = self.log.end_offset(Role::Events, p) {
                lag.set(end.saturating_sub(position) as i64);
            }
            debug!(
                partition = p.0,
                records = records.len(),
                position,
                "batch committed"
            );
        };
        self.metrics.partitions_owned.dec();
        self.status.ready.store(false, Ordering::Release);
        self.status.owned.store(false, Ordering::Release);
        result.map(|()| report)
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
        } = p.step(Some(b"R"), reserve, 0, &state)
        else {
            panic!()
        };
        assert_eq!(stored.source_offset, 0);
        assert_eq!(stored.epoch, Epoch(1));
        state.insert(key, stored);
        assert_eq!(
            p.step(Some(b"R"), reserve, 1, &state),
            Step::Duplicate {
                kind: EventKind::Reservation
            }
        );
        let again = br#"{"type":"reservation","event_id":"e2","reservation_no":"R","user_id":"u"}"#;
        assert_eq!(
            p.step(Some(b"R"), again, 2, &state),
            Step::Rejected {
                kind: EventKind::Reservation,
                reason: RejectReason::AlreadyReserved
            }
        );
        assert!(matches!(
            p.step(None, b"{oops", 3, &state),
            Step::Malformed(Malformed::NotJson(_))
        ));

        // With N = 10, "R-0001" belongs to partition 6, so partition 0 must refuse it.
        let p10 = processor(10);
        let other =
            br#"{"type":"reservation","event_id":"e1","reservation_no":"R-0001","user_id":"u"}"#;
        assert!(matches!(
            p10.step(Some(b"R-0001"), other, 0, &state),
            Step::Misrouted {
                belongs_to: Partition(6),
                ..
            }
        ));
    }
}
