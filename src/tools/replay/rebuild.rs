//! `ordo replay`: run the same core over history again, deterministically, into a scratch
//! state; compare it with the live changelog (`--diff`), or make it the changelog (`--apply`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::OffsetSpec;
use crate::core::changelog::{StateRecord, Stored};
use crate::core::ownership::layer_of;
use crate::core::partitioner::Partitioner;
use crate::core::step::{Input, Processor, Step};
use crate::core::{Epoch, Offset, Partition, PartitionCount, ReservationNo};
use crate::log::embedded::{EmbeddedLog, LogError};
use crate::log::topics::Role;
use crate::log::{Logs, LogsError};
use crate::tools::produce::{self, ProduceError, Validation};
use crate::tools::progress::Progress;

/// Tallies of a replay.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub misrouted: u64,
    pub rejects: BTreeMap<&'static str, u64>,
}

/// The result of a replay: the rebuilt state and where each partition stopped.
#[derive(Debug, Default)]
pub struct Replay {
    pub states: BTreeMap<ReservationNo, StateRecord>,
    pub summary: Summary,
    /// Per partition, the offset after the last record replayed.
    pub next_offsets: Vec<Offset>,
    /// Per partition, the offset of the first record replayed (its next offset when none).
    pub first_offsets: Vec<Offset>,
}

/// The replay's own state: entities by key, each with the partition that owns it.
struct Fold {
    states: HashMap<ReservationNo, Stored>,
    partition_of: HashMap<ReservationNo, Partition>,
    summary: Summary,
}

impl Fold {
    fn new() -> Self {
        Fold {
            states: HashMap::new(),
            partition_of: HashMap::new(),
            summary: Summary::default(),
        }
    }

    fn step(&mut self, processor: &Processor, input: Input<'_>, offset: Offset) {
        self.summary.records += 1;
        match processor.step(input, offset, &self.states) {
            Step::Applied { key, stored, .. } => {
                self.summary.applied += 1;
                self.partition_of.insert(key.clone(), processor.partition);
                self.states.insert(key, stored);
            }
            Step::Duplicate { .. } => self.summary.duplicates += 1,
            Step::Rejected { reason, .. } => {
                *self.summary.rejects.entry(reason.as_str()).or_default() += 1
            }
            Step::Malformed(_) => self.summary.malformed += 1,
            Step::Misrouted { .. } => self.summary.misrouted += 1,
        }
    }

    fn finish(self, first_offsets: Vec<Offset>, next_offsets: Vec<Offset>) -> Replay {
        let partition_of = self.partition_of;
        let states = self
            .states
            .into_iter()
            .map(|(k, s)| {
                let p = partition_of[&k];
                (k.clone(), StateRecord::new(k, p, &s))
            })
            .collect();
        Replay {
            states,
            summary: self.summary,
            next_offsets,
            first_offsets,
        }
    }
}

/// The epoch replayed state records carry: 0, below every owner's.
pub const REPLAY_EPOCH: Epoch = Epoch(0);

fn processor(p: Partition, n: PartitionCount, partitioner: Partitioner) -> Processor {
    Processor {
        partition: p,
        partitions: n,
        partitioner,
        epoch: REPLAY_EPOCH,
    }
}

/// Replays the input topic over `spec`'s range, stopping each partition before `until[p]`
/// when given. An input grown in place holds several layouts ([`Logs::layers`]): each layer is
/// replayed whole, routed with its own N, before the next, so a key's records in its old
/// partition come before those in its new one.
pub fn replay(
    logs: &Logs,
    spec: OffsetSpec,
    until: Option<&[Offset]>,
) -> Result<Replay, LogsError> {
    let n = logs.partitions();
    let layers = logs.layers()?;
    let mut progress = logs
        .count_hint(Role::Events, spec)?
        .map(|total| Progress::new("replay", total));
    let mut fold = Fold::new();
    let mut offsets = Vec::new();
    for layer in 0..layers.len().max(1) {
        let layout = layers.get(layer).map_or(n, |l| l.partitions);
        let processors: Vec<Processor> = n
            .iter()
            .map(|p| processor(p, layout, logs.partitioner()))
            .collect();
        offsets = logs.scan_every(Role::Events, spec, |r| {
            let p = r.partition;
            if until.is_some_and(|u| r.offset >= u[p.index()]) {
                return false;
            }
            if layer_of(&layers, p, r.offset) != layer {
                // In the range, replayed in its own layer's pass.
                return true;
            }
            fold.step(
                &processors[p.index()],
                Input::of(&r.key, &r.value, &r.headers),
                r.offset,
            );
            if let Some(progress) = progress.as_mut() {
                progress.add(1);
            }
            true
        })?;
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    let (first, next) = offsets.into_iter().unzip();
    Ok(fold.finish(first, next))
}

/// Replays an NDJSON file as if it were appended to a fresh log with `n` partitions.
pub fn replay_file(
    path: &Path,
    n: PartitionCount,
    partitioner: Partitioner,
) -> Result<Replay, ProduceError> {
    let (records, _) = produce::read_file(
        path,
        Validation::Raw,
        n,
        partitioner,
        produce::DEFAULT_MAX_RECORD_BYTES,
    )?;
    let mut fold = Fold::new();
    let mut next = vec![Offset(0); n.get() as usize];
    for (p, r) in records {
        let offset = next[p.index()];
        next[p.index()] = Offset(offset.0 + 1);
        fold.step(
            &processor(p, n, partitioner),
            Input::of(&r.key, &r.value, &r.headers),
            offset,
        );
    }
    Ok(fold.finish(vec![Offset(0); n.get() as usize], next))
}

/// One reservation whose replayed and live states differ.
#[derive(Debug, Serialize)]
pub struct Difference<'a> {
    pub reservation_no: &'a ReservationNo,
    pub replayed: Option<&'a StateRecord>,
    pub live: Option<&'a StateRecord>,
}

/// Whether two state records say the same about a reservation: state, owner, target, version
/// and applied ids (not where or by which owner they were written).
pub fn same(a: &StateRecord, b: &StateRecord) -> bool {
    a.user_id == b.user_id
        && a.state == b.state
        && a.target == b.target
        && a.version == b.version
        && a.applied_event_ids == b.applied_event_ids
}

/// Every reservation that differs between `replayed` and `live`, in key order.
pub fn diff<'a>(
    replayed: &'a BTreeMap<ReservationNo, StateRecord>,
    live: &'a BTreeMap<ReservationNo, StateRecord>,
) -> Vec<Difference<'a>> {
    let mut keys: Vec<&ReservationNo> = replayed.keys().chain(live.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (r, l) = (replayed.get(k), live.get(k));
            let differs = match (r, l) {
                (Some(r), Some(l)) => !same(r, l),
                _ => true,
            };
            differs.then_some(Difference {
                reservation_no: k,
                replayed: r,
                live: l,
            })
        })
        .collect()
}

/// Makes a full replay the live changelog: per partition, one transaction replaces the
/// changelog with a new epoch marker and the replayed records, and sets the input position
/// to where the replay stopped.
pub fn apply(log: &EmbeddedLog, replay: &Replay, owner: &str) -> Result<(), LogError> {
    for p in log.partitions().iter() {
        let mine: Vec<&StateRecord> = replay
            .states
            .values()
            .filter(|r| r.source_partition == p)
            .collect();
        log.replace_changelog(
            p,
            owner,
            |epoch| {
                mine.iter()
                    .map(|r| {
                        let mut r = (*r).clone();
                        r.epoch = epoch;
                        (r.reservation_no.as_str().as_bytes().to_vec(), r.to_json())
                    })
                    .collect()
            },
            replay.next_offsets[p.0 as usize],
        )?;
    }
    Ok(())
}
