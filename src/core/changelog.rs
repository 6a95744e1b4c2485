//! The changelog (`reservation-state`, contract §4 and §6): state records, epoch markers, and the
//! fencing rule every reader applies.
//!
//! Each owner of a partition holds an [`Epoch`] greater than every earlier owner's and writes an
//! [`EpochMarker`] before its first state record. A reader keeps the highest marker seen so far
//! and ignores every state record of a lower epoch after it: whatever a stalled former owner
//! writes once a newer owner has started is invisible. Pure: no I/O.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::ids::{Epoch, Offset, Partition, ReservationNo};
use super::state_machine::{Entity, Status};

/// Prefix of the key of an epoch marker; the epoch follows, so markers of different epochs
/// are different keys and compaction keeps them all.
pub const MARKER_KEY_PREFIX: &str = "__ordo.epoch/";

/// An entity as held in memory: its state plus where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub entity: Entity,
    /// Input offset of the event that produced this state.
    pub source_offset: Offset,
    pub epoch: Epoch,
}

impl Stored {
    /// The state record of this state (of `reservation_no` in `partition`) as JSON: the bytes
    /// of [`StateRecord::new`]`(..).to_json()`, written straight from the packed entity
    /// without building the record's owned strings (the owner's hot path writes one per
    /// applied event).
    pub fn record_json(&self, reservation_no: &ReservationNo, partition: Partition) -> Vec<u8> {
        let e = &self.entity;
        let record = StateRecordRef {
            reservation_no: reservation_no.as_str(),
            user_id: e.user_id(),
            state: e.status(),
            target: e.target(),
            version: e.version(),
            applied_event_ids: IdList(e),
            source_partition: partition,
            source_offset: self.source_offset,
            epoch: self.epoch,
        };
        let mut buf = Vec::with_capacity(320);
        serde_json::to_writer(&mut buf, &record).expect("a state record always serialises");
        buf
    }
}

/// [`StateRecord`]'s fields in its order, borrowed.
#[derive(Serialize)]
struct StateRecordRef<'a> {
    reservation_no: &'a str,
    user_id: &'a str,
    state: Status,
    target: Option<&'a str>,
    version: u32,
    applied_event_ids: IdList<'a>,
    source_partition: Partition,
    source_offset: Offset,
    epoch: Epoch,
}

/// An entity's applied event ids, serialised as a JSON array.
struct IdList<'a>(&'a Entity);

impl Serialize for IdList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.applied_event_ids())
    }
}

/// A state record as written to the changelog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub reservation_no: ReservationNo,
    pub user_id: CompactString,
    pub state: Status,
    pub target: Option<CompactString>,
    pub version: u32,
    pub applied_event_ids: Vec<CompactString>,
    pub source_partition: Partition,
    pub source_offset: Offset,
    pub epoch: Epoch,
}

impl StateRecord {
    /// The record for `stored`, the state of `reservation_no` in `partition`.
    pub fn new(reservation_no: ReservationNo, partition: Partition, stored: &Stored) -> Self {
        let e = &stored.entity;
        StateRecord {
            reservation_no,
            user_id: e.user_id().into(),
            state: e.status(),
            target: e.target().map(CompactString::from),
            version: e.version(),
            applied_event_ids: e.applied_event_ids().map(CompactString::from).collect(),
            source_partition: partition,
            source_offset: stored.source_offset,
            epoch: stored.epoch,
        }
    }

    /// The in-memory form, without the key and partition.
    pub fn into_stored(self) -> (ReservationNo, Stored) {
        (
            self.reservation_no,
            Stored {
                entity: Entity::new(
                    &self.user_id,
                    self.state,
                    self.target.as_deref(),
                    self.version,
                    self.applied_event_ids.iter().map(CompactString::as_str),
                ),
                source_offset: self.source_offset,
                epoch: self.epoch,
            },
        )
    }

    /// The record as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(320);
        serde_json::to_writer(&mut buf, self).expect("a state record always serialises");
        buf
    }
}

/// Written by a new owner before its first state record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMarker {
    pub epoch: Epoch,
    pub partition: Partition,
    /// The next input offset the owner will read.
    pub resume_offset: Offset,
    /// Who took ownership (host and process), for operators.
    pub owner: String,
    /// The state records of this epoch were carried over from another layout of the input
    /// (`ordo repartition`): they are state, but their source offsets do not say how far this
    /// partition's input is applied; the marker's `resume_offset` does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried: bool,
    /// Written by `ordo replay --apply`, which rebuilt the state from the whole input: its
    /// `resume_offset` is where the input is applied up to, whatever earlier records said (a
    /// forged position mark among them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl EpochMarker {
    /// The changelog key of this marker.
    pub fn key(&self) -> String {
        format!("{MARKER_KEY_PREFIX}{}", self.epoch)
    }

    /// The marker as JSON, wrapped so it cannot be mistaken for a state record.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&MarkerWire {
            epoch_marker: self.clone(),
        })
        .expect("a marker always serialises")
    }
}

#[derive(Serialize, Deserialize)]
struct MarkerWire {
    epoch_marker: EpochMarker,
}

/// Key of a position mark: this, then `/` and the epoch, so compaction keeps the latest mark
/// of each epoch (with one key for all, a fenced owner's late mark would be the one kept).
/// Marks written under this key alone are read too.
pub const POSITION_KEY: &str = "__ordo.position";

/// Written by an owner after a batch's state records, in the same ordered send: every input
/// offset below `resume_offset` is applied, including a batch's trailing records that left no
/// state record (rejects, duplicates, bad records). Where the broker loses an offset commit, a
/// new owner still resumes exactly there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionMark {
    pub epoch: Epoch,
    pub partition: Partition,
    pub resume_offset: Offset,
}

#[derive(Serialize, Deserialize)]
struct PositionWire {
    position: PositionMark,
}

impl PositionMark {
    /// The changelog key of this mark.
    pub fn key(&self) -> String {
        format!("{POSITION_KEY}/{}", self.epoch)
    }

    /// Whether `key` is the key of a position mark.
    pub fn is_key(key: &[u8]) -> bool {
        key.strip_prefix(POSITION_KEY.as_bytes())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
    }

    /// The mark as JSON, wrapped so it cannot be mistaken for a state record.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&PositionWire {
            position: self.clone(),
        })
        .expect("a position mark always serialises")
    }
}

/// One changelog record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    State(StateRecord),
    Marker(EpochMarker),
    Position(PositionMark),
    /// A record with a key and no value (a Kafka tombstone): the key has no state any more.
    /// Only `ordo replay --apply` writes them, after its own epoch marker.
    Tombstone(ReservationNo),
}

/// Epochs grow by one per owner: none ordo writes comes near this. A record of this epoch or
/// above was not written by ordo, and is refused as unreadable rather than allowed to fence
/// every later owner (or make the next epoch wrap).
pub const EPOCH_LIMIT: Epoch = Epoch(1 << 53);

/// A changelog record that is neither a state record nor a marker.
#[derive(Debug, thiserror::Error)]
#[error("changelog record is not a state record or an epoch marker: {0}")]
pub struct BadEntry(String);

impl Entry {
    /// Decodes a changelog record from its key and value.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Entry, BadEntry> {
        if value.is_empty() && !key.is_empty() {
            return std::str::from_utf8(key)
                .map(|k| Entry::Tombstone(ReservationNo::from(k)))
                .map_err(|e| BadEntry(format!("tombstone key is not UTF-8: {e}")));
        }
        let entry = if key.starts_with(MARKER_KEY_PREFIX.as_bytes())
            && let Ok(m) = serde_json::from_slice::<MarkerWire>(value)
        {
            Entry::Marker(m.epoch_marker)
        } else if PositionMark::is_key(key)
            && let Ok(p) = serde_json::from_slice::<PositionWire>(value)
        {
            Entry::Position(p.position)
        } else {
            serde_json::from_slice(value)
                .map(Entry::State)
                .map_err(|e| BadEntry(e.to_string()))?
        };
        let epoch = match &entry {
            Entry::Marker(m) => m.epoch,
            Entry::Position(p) => p.epoch,
            Entry::State(r) => r.epoch,
            Entry::Tombstone(_) => Epoch(0),
        };
        if epoch >= EPOCH_LIMIT {
            return Err(BadEntry(format!(
                "epoch {epoch} is beyond any ordo writes (a forged record?); it is ignored"
            )));
        }
        Ok(entry)
    }
}

/// What a reader should do with one changelog entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The latest state of this key (so far).
    Accept(StateRecord),
    /// Written by an owner older than a marker already seen: ignore.
    Fenced,
    /// A marker: nothing to store.
    Marker,
    /// A tombstone: the key has no state any more.
    Delete(ReservationNo),
}

/// What one changelog record changes in the state of its partition.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Put(StateRecord),
    Delete(ReservationNo),
}

/// Reads a changelog partition in offset order, applying the fencing rule.
#[derive(Debug, Default, Clone)]
pub struct Reader {
    highest_marker: Epoch,
    /// The epoch of the latest marker, when its state records were carried over.
    carrying: Option<Epoch>,
    /// The next input offset to read: past every accepted record and every marker's position.
    resume_offset: Offset,
    /// State records ignored because a higher marker preceded them.
    pub fenced: u64,
}

impl Reader {
    /// Classifies the next entry of the partition.
    pub fn next(&mut self, entry: Entry) -> Verdict {
        match entry {
            Entry::Marker(m) => {
                if m.epoch >= self.highest_marker {
                    self.carrying = m.carried.then_some(m.epoch);
                }
                self.resume_offset = if m.replayed && m.epoch >= self.highest_marker {
                    m.resume_offset
                } else {
                    self.resume_offset.max(m.resume_offset)
                };
                self.highest_marker = self.highest_marker.max(m.epoch);
                Verdict::Marker
            }
            Entry::State(r) if r.epoch < self.highest_marker => {
                self.fenced += 1;
                Verdict::Fenced
            }
            // A zombie's position is fenced like its state records: what it applied is not.
            Entry::Position(p) if p.epoch < self.highest_marker => Verdict::Fenced,
            Entry::Position(p) => {
                self.resume_offset = self.resume_offset.max(p.resume_offset);
                Verdict::Marker
            }
            Entry::State(r) => {
                if self.carrying != Some(r.epoch) {
                    let after = r.source_offset.next().unwrap_or(r.source_offset);
                    self.resume_offset = self.resume_offset.max(after);
                }
                Verdict::Accept(r)
            }
            // Written only by `ordo replay --apply`, after its own marker: nothing to fence.
            Entry::Tombstone(key) => Verdict::Delete(key),
        }
    }

    /// The highest epoch seen in a marker; a new owner takes one above it.
    pub fn highest_epoch(&self) -> Epoch {
        self.highest_marker
    }

    /// The input offset after the last one reflected in the changelog.
    pub fn resume_offset(&self) -> Offset {
        self.resume_offset
    }

    /// Decodes the next changelog record of the partition and applies the fencing rule: the
    /// change it makes (a state record that becomes current, a key deleted), or `None` for a
    /// marker or a fenced record. Every reader of a changelog (restore, `ordo state`, replay)
    /// folds through here.
    pub fn read(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Change>, BadEntry> {
        Ok(match self.next(Entry::decode(key, value)?) {
            Verdict::Accept(record) => Some(Change::Put(record)),
            Verdict::Delete(key) => Some(Change::Delete(key)),
            Verdict::Fenced | Verdict::Marker => None,
        })
    }
}

/// The current state of changelog partitions, folded record by record through a [`Reader`]
/// per partition.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub states: BTreeMap<ReservationNo, StateRecord>,
    /// Records that were neither a state record nor a marker.
    pub unreadable: u64,
}

impl Snapshot {
    /// Folds one record of the partition `reader` follows.
    pub fn push(&mut self, reader: &mut Reader, key: &[u8], value: &[u8]) {
        match reader.read(key, value) {
            Ok(Some(Change::Put(record))) => {
                self.states.insert(record.reservation_no.clone(), record);
            }
            Ok(Some(Change::Delete(key))) => {
                self.states.remove(&key);
            }
            Ok(None) => {}
            Err(_) => self.unreadable += 1,
        }
    }
}

#[cfg(test)]
#[path = "changelog_tests.rs"]
mod tests;
