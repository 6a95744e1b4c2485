//! The changelog and bulk sends on Kafka, for the tools that rewrite topics (`replay
//! --apply`, `repartition`): every changelog partition read and folded, and a sender that keeps
//! a few chunks in flight and checks where each record lands.

use std::collections::{BTreeMap, VecDeque};

use super::config::{KafkaLogError, KafkaOptions};
use super::producer::{KafkaProducer, Outgoing, Pending};
use super::reader::BulkReader;
use crate::core::changelog::{Reader, Snapshot, StateRecord};
use crate::core::record::NewRecord;
use crate::core::{Epoch, Offset, Partition, PartitionCount, ReservationNo};

/// Every changelog partition, folded with the fencing rule.
#[derive(Debug)]
pub struct Changelog {
    pub states: Vec<BTreeMap<ReservationNo, StateRecord>>,
    /// Per partition, the highest epoch of its markers.
    pub epochs: Vec<Epoch>,
    /// Per partition, the input offset after the last one applied.
    pub resume: Vec<Offset>,
    /// Records that were neither a state record nor a marker.
    pub unreadable: u64,
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
        unreadable: snapshots.iter().map(|s| s.unreadable).sum(),
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
    progress: Option<&'a mut dyn FnMut(u64)>,
}

impl<'a> Sender<'a> {
    /// A sender into topics that started empty with `n` partitions (checked), or (`None`)
    /// into any.
    pub fn new(
        producer: &'a KafkaProducer,
        empty: Option<PartitionCount>,
        progress: Option<&'a mut dyn FnMut(u64)>,
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
    ) -> Result<Option<u64>, KafkaLogError> {
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

    fn send_chunk(&mut self) -> Result<(), KafkaLogError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let expected = std::mem::replace(&mut self.expected, Vec::with_capacity(CHUNK));
        self.in_flight
            .push_back((self.producer.send(&self.chunk), expected));
        if let Some(sent) = self.progress.as_mut() {
            sent(self.chunk.len() as u64);
        }
        self.chunk.clear();
        while self.in_flight.len() > IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), KafkaLogError> {
        let Some((pending, expected)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        for (landed, expected) in pending.wait()?.into_iter().zip(expected) {
            if let Some(e) = expected
                && landed.0 != e
            {
                return Err(KafkaLogError::Misplaced {
                    landed: landed.0,
                    expected: e,
                });
            }
        }
        Ok(())
    }

    /// Sends what is queued and waits for every acknowledgement; returns per partition how
    /// many records were sent (when checked).
    pub fn finish(mut self) -> Result<Option<Vec<u64>>, KafkaLogError> {
        self.send_chunk()?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(self.next)
    }
}
