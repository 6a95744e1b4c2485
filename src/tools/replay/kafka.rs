//! The replay tooling's writes on Kafka: a replay made the live changelog (`replay --apply`),
//! and a change of N (`repartition --apply`, in [`repartition`]). Both refuse while a member
//! holds a partition, per `reservation-owners`.

pub mod repartition;

use std::collections::{BTreeMap, VecDeque};

use super::rebuild::{self, Replay};
use super::{OffsetSpec, Progress};
use crate::core::changelog::{EpochMarker, Reader, Snapshot, StateRecord};
use crate::core::ownership::OwnershipRecord;
use crate::core::record::NewRecord;
use crate::core::{Epoch, Offset, Partition, PartitionCount, ReservationNo};
use crate::log::kafka::{
    BulkReader, KafkaLogError, KafkaOptions, KafkaProducer, Outgoing, OwnersLog, Pending,
    read_owners,
};
use crate::log::topics::Role;
use crate::log::{Logs, LogsError, now_millis};

/// What went wrong in a write of the replay tooling on Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaToolError {
    #[error(transparent)]
    Log(#[from] LogsError),
    /// Refused before anything was changed; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// A check after the writes failed.
    #[error("{0}")]
    Check(String),
}

impl From<KafkaLogError> for KafkaToolError {
    fn from(e: KafkaLogError) -> Self {
        KafkaToolError::Log(e.into())
    }
}

/// Refuses while `reservation-owners` says a member holds a partition, naming the members;
/// `assume_stopped` is the operator saying they died without letting go.
pub fn refuse_held(owners: &OwnersLog, assume_stopped: bool) -> Result<(), KafkaToolError> {
    if let Some(r) = owners.repartition.as_ref().filter(|r| r.in_progress()) {
        return Err(KafkaToolError::Refused(format!(
            "a change of N from {} to {} is under way; finish it first with `ordo repartition \
             --brokers ... --to-partitions {} --apply`",
            r.from, r.to, r.to
        )));
    }
    // Per partition, the record of the highest epoch (the later one at the same epoch).
    let mut latest: BTreeMap<u32, &OwnershipRecord> = BTreeMap::new();
    for r in &owners.owners {
        match latest.get(&r.partition) {
            Some(held) if held.epoch > r.epoch => {}
            _ => {
                latest.insert(r.partition, r);
            }
        }
    }
    let held: Vec<&&OwnershipRecord> = latest.values().filter(|r| r.is_held()).collect();
    if held.is_empty() || assume_stopped {
        return Ok(());
    }
    let mut members: Vec<String> = held
        .iter()
        .map(|r| match &r.url {
            Some(url) => format!("{} ({url})", r.owner),
            None => r.owner.clone(),
        })
        .collect();
    members.sort();
    members.dedup();
    Err(KafkaToolError::Refused(format!(
        "partitions {} are held by running members: {}; stop them first (scale the StatefulSet \
         to 0), or pass --assume-stopped if they died without letting go",
        held.iter()
            .map(|r| r.partition.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        members.join(", ")
    )))
}

/// Every changelog partition, folded with the fencing rule.
#[derive(Debug)]
pub struct Changelog {
    pub states: Vec<BTreeMap<ReservationNo, StateRecord>>,
    /// Per partition, the highest epoch of its markers.
    pub epochs: Vec<Epoch>,
    /// Per partition, the input offset after the last one applied.
    pub resume: Vec<Offset>,
}

impl Changelog {
    /// The highest epoch of any partition.
    pub fn max_epoch(&self) -> Epoch {
        self.epochs.iter().copied().max().unwrap_or_default()
    }

    /// Every reservation, in key order.
    pub fn into_all(self) -> BTreeMap<ReservationNo, StateRecord> {
        self.states.into_iter().flatten().collect()
    }
}

/// Reads `topic` (a changelog, live or staged) with `n` partitions.
pub fn read_changelog(
    opts: &KafkaOptions,
    topic: &str,
    n: PartitionCount,
) -> Result<Changelog, KafkaLogError> {
    let size = n.get() as usize;
    let mut readers = vec![Reader::default(); size];
    let mut snapshots: Vec<Snapshot> = (0..size).map(|_| Snapshot::default()).collect();
    let partitions: Vec<Partition> = n.iter().collect();
    BulkReader::new(opts, topic)?.read_to_end(&partitions, |p, record| {
        if let Some(r) = record {
            snapshots[p.index()].push(&mut readers[p.index()], &r.key, &r.value);
        }
    })?;
    Ok(Changelog {
        states: snapshots.into_iter().map(|s| s.states).collect(),
        epochs: readers.iter().map(Reader::highest_epoch).collect(),
        resume: readers.iter().map(Reader::resume_offset).collect(),
    })
}

/// Records per send.
const CHUNK: usize = 4096;
/// Sends in flight before the oldest is waited for.
const IN_FLIGHT: usize = 8;

/// Sends records through the idempotent producer with a few chunks in flight, and checks
/// where they land: into a topic that started empty, each partition's records must land at
/// 0, 1, 2, … (nothing lost, nothing twice).
pub struct Sender<'a> {
    producer: &'a KafkaProducer,
    chunk: Vec<Outgoing<'a>>,
    /// Where each record of the chunk must land, when checked.
    expected: Vec<Option<u64>>,
    in_flight: VecDeque<(Pending, Vec<Option<u64>>)>,
    /// Per partition, the offset the next record must land at; `None`: not checked.
    next: Option<Vec<u64>>,
    progress: Option<&'a mut Progress>,
}

impl<'a> Sender<'a> {
    /// A sender into topics that started empty with `n` partitions (checked), or (`None`)
    /// into any.
    pub fn new(
        producer: &'a KafkaProducer,
        empty: Option<PartitionCount>,
        progress: Option<&'a mut Progress>,
    ) -> Self {
        Sender {
            producer,
            chunk: Vec::with_capacity(CHUNK),
            expected: Vec::with_capacity(CHUNK),
            in_flight: VecDeque::new(),
            next: empty.map(|n| vec![0; n.get() as usize]),
            progress,
        }
    }

    /// Queues one record; returns the offset it will land at when checked.
    pub fn push(
        &mut self,
        topic: &'a str,
        partition: Partition,
        record: NewRecord,
    ) -> Result<Option<u64>, KafkaToolError> {
        let at = self.next.as_mut().map(|next| {
            let at = next[partition.index()];
            next[partition.index()] += 1;
            at
        });
        self.chunk.push(Outgoing {
            topic,
            partition,
            record,
        });
        self.expected.push(at);
        if self.chunk.len() >= CHUNK {
            self.send_chunk()?;
        }
        Ok(at)
    }

    fn send_chunk(&mut self) -> Result<(), KafkaToolError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let expected = std::mem::replace(&mut self.expected, Vec::with_capacity(CHUNK));
        self.in_flight
            .push_back((self.producer.send(&self.chunk), expected));
        if let Some(p) = self.progress.as_mut() {
            p.add(self.chunk.len() as u64);
        }
        self.chunk.clear();
        while self.in_flight.len() > IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), KafkaToolError> {
        let Some((pending, expected)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        for (landed, expected) in pending.wait()?.into_iter().zip(expected) {
            if let Some(e) = expected
                && landed.0 != e
            {
                return Err(KafkaToolError::Check(format!(
                    "a record landed at offset {} where {e} was expected (was the topic \
                     written to meanwhile?)",
                    landed.0
                )));
            }
        }
        Ok(())
    }

    /// Sends what is queued and waits for every acknowledgement; returns per partition how
    /// many records were sent (when checked).
    pub fn finish(mut self) -> Result<Option<Vec<u64>>, KafkaToolError> {
        self.send_chunk()?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(self.next)
    }
}

/// What `replay --apply` did.
#[derive(Debug)]
pub struct Applied {
    pub replay: Replay,
    /// Keys of the live changelog the replay does not produce, deleted (Kafka).
    pub deleted: Option<u64>,
    /// The new epoch of each partition (Kafka).
    pub epochs: Vec<Epoch>,
}

/// Replays the whole input of a Kafka deployment with `n` partitions and makes the result its
/// changelog: per partition, a new epoch marker resuming after the input replayed, every
/// replayed state record under that epoch, and a tombstone for each key of the live changelog
/// the replay does not produce. Interrupted, the changelog holds some keys replayed and the
/// others as they were; a rerun finishes it.
pub fn apply_replay(
    opts: &KafkaOptions,
    n: PartitionCount,
    owner: &str,
    assume_stopped: bool,
) -> Result<Applied, KafkaToolError> {
    refuse_held(&read_owners(opts)?, assume_stopped)?;
    let logs = Logs::Kafka {
        options: opts.clone(),
        n,
    };
    let replay = rebuild::replay(&logs, OffsetSpec::default(), None)?;
    if let Some((p, first)) = replay
        .first_offsets
        .iter()
        .enumerate()
        .find(|(_, o)| o.0 > 0)
    {
        return Err(KafkaToolError::Refused(format!(
            "reservation-events partition {p} starts at offset {first}: the records before it \
             are gone (retention), so a replay cannot rebuild the state; nothing was changed"
        )));
    }
    let topic = opts.topic(Role::State);
    let live = read_changelog(opts, &topic, n)?;
    let producer = KafkaProducer::new(opts)?;
    let mut sender = Sender::new(&producer, None, None);
    let (mut deleted, mut epochs) = (0, Vec::new());
    for p in n.iter() {
        let epoch = live.epochs[p.index()].successor();
        epochs.push(epoch);
        let marker = EpochMarker {
            epoch,
            partition: p.0,
            resume_offset: replay.next_offsets[p.index()],
            owner: owner.to_owned(),
            carried: false,
        };
        sender.push(
            &topic,
            p,
            record(marker.key().into_bytes(), marker.to_json()),
        )?;
        for r in replay.states.values().filter(|r| r.source_partition == p.0) {
            let r = StateRecord { epoch, ..r.clone() };
            sender.push(&topic, p, record(key_of(&r), r.to_json()))?;
        }
        for k in live.states[p.index()].keys() {
            if replay
                .states
                .get(k)
                .is_none_or(|r| r.source_partition != p.0)
            {
                sender.push(
                    &topic,
                    p,
                    record(k.as_str().as_bytes().to_vec(), Vec::new()),
                )?;
                deleted += 1;
            }
        }
    }
    sender.finish()?;
    Ok(Applied {
        replay,
        deleted: Some(deleted),
        epochs,
    })
}

fn key_of(r: &StateRecord) -> Vec<u8> {
    r.reservation_no.as_str().as_bytes().to_vec()
}

fn record(key: Vec<u8>, value: Vec<u8>) -> NewRecord {
    NewRecord {
        key,
        value,
        timestamp: now_millis(),
        headers: Vec::new(),
    }
}
