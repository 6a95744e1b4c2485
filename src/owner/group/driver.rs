//! The Kafka driver of one assigned partition: restore from the member's restore reader,
//! input from a reader of its own, effects through the idempotent producer with several
//! batches in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{FETCH_WAIT, Flags, MAX_IN_FLIGHT, Member};
use crate::core::changelog::{EpochMarker, POSITION_KEY, PositionMark, Reader};
use crate::core::record::{NewRecord, Record};
use crate::core::step::Effects;
use crate::core::{Epoch, Offset, Partition};
use crate::log::kafka::{KafkaLogError, Outgoing, PartitionReader, Pending};
use crate::log::now_millis;
use crate::owner::{Driver, Fetch};

/// Changelog records queued for each restoring owner.
pub(super) const RESTORE_QUEUE: usize = 4096;

/// What the member's restore reader hands an owner.
pub(super) enum Restored {
    Record(Record),
    /// The partition's changelog ends here.
    End,
    Failed(String),
}

/// One assigned partition, driven for its owner: restore through a reader of the changelog,
/// input through a reader of its own from the resume offset, effects through the idempotent
/// producer.
pub(super) struct KafkaDriver<'a> {
    pub(super) member: &'a Member,
    pub(super) partition: Partition,
    /// The group's committed offset at assignment.
    pub(super) committed: Offset,
    pub(super) flags: Arc<Flags>,
    /// The changelog, from the member's restore reader.
    pub(super) restored: Option<std::sync::mpsc::Receiver<Restored>>,
    /// The input reader: connected while restoring, reading from the first fetch on.
    pub(super) reader: Option<PartitionReader>,
    /// Whether the input reader has been started at the resume offset.
    pub(super) reading: bool,
    /// Each in-flight batch's changelog send, oldest first.
    pub(super) in_flight: std::collections::VecDeque<Pending>,
    /// The epoch taken, once its marker is durable.
    pub(super) epoch: Option<Epoch>,
}

impl Driver for KafkaDriver<'_> {
    type Error = KafkaLogError;

    fn restore(&mut self, record: &mut dyn FnMut(&Record)) -> Result<(), KafkaLogError> {
        let t0 = Instant::now();
        // The input reader connects while the changelog is read.
        self.reader = Some(PartitionReader::connect(
            &self.member.kafka,
            &self.member.events_topic,
            self.partition,
        )?);
        let restored = self
            .restored
            .take()
            .ok_or_else(|| KafkaLogError::Restore("restored twice".into()))?;
        for item in restored {
            match item {
                Restored::Record(r) => record(&r),
                Restored::End => {
                    tracing::debug!(
                        partition = self.partition.0,
                        ms = t0.elapsed().as_millis() as u64,
                        "changelog read"
                    );
                    return Ok(());
                }
                Restored::Failed(e) => return Err(KafkaLogError::Restore(e)),
            }
        }
        Err(KafkaLogError::Restore(
            "the restore reader stopped before the changelog's end".into(),
        ))
    }

    fn begin_epoch(&mut self, reader: &Reader) -> Result<EpochMarker, KafkaLogError> {
        // Resume after the later of the group's committed offset and the changelog's own
        // record of what was applied.
        let marker = EpochMarker {
            epoch: reader.highest_epoch().successor(),
            partition: self.partition.0,
            resume_offset: self.committed.max(reader.resume_offset()),
            owner: self.member.options.owner_id.clone(),
            carried: false,
        };
        let t0 = Instant::now();
        self.member.producer.send_all(&[Outgoing {
            topic: &self.member.state_topic,
            partition: self.partition,
            record: NewRecord {
                key: marker.key().into_bytes(),
                value: marker.to_json(),
                timestamp: now_millis(),
                headers: Vec::new(),
            },
        }])?;
        tracing::debug!(
            partition = self.partition.0,
            ms = t0.elapsed().as_millis() as u64,
            "epoch marker acknowledged"
        );
        let t0 = Instant::now();
        // The marker is durable: tell every member where this partition is served, before
        // reporting ready.
        self.epoch = Some(marker.epoch);
        self.member
            .publish_ownership(self.partition, marker.epoch, true)?;
        tracing::debug!(
            partition = self.partition.0,
            ms = t0.elapsed().as_millis() as u64,
            "ownership published"
        );
        Ok(marker)
    }

    fn fetch(
        &mut self,
        position: Offset,
        records: &mut Vec<Record>,
        wait: bool,
    ) -> Result<Fetch, KafkaLogError> {
        if self.flags.stop.load(Ordering::Acquire) {
            return Ok(Fetch::Last);
        }
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self.reader.insert(PartitionReader::connect(
                &self.member.kafka,
                &self.member.events_topic,
                self.partition,
            )?),
        };
        if !self.reading {
            let t0 = Instant::now();
            reader.start(position)?;
            self.reading = true;
            tracing::debug!(
                partition = self.partition.0,
                ms = t0.elapsed().as_millis() as u64,
                "input reader positioned"
            );
        }
        // At the end already (the reader saw it while positioning, or in the last fetch): say
        // so before waiting for more.
        if reader.at_end() {
            self.flags.caught_up.store(true, Ordering::Release);
        }
        let wait = if wait { FETCH_WAIT } else { Duration::ZERO };
        let at_end = reader.fetch(self.member.options.batch_size, wait, records)?;
        let caught_up = at_end && records.is_empty();
        self.flags.caught_up.store(caught_up, Ordering::Release);
        // Lag from the reader's latest fetch statistics, refreshed on every fetch (idle ones
        // included, so at least every FETCH_WAIT); none at the partition's end.
        let lag = match reader.high_watermark() {
            _ if caught_up => Some(0),
            Some(high) => Some(position.distance_to(high)),
            None => None,
        };
        if let Some(lag) = lag {
            self.member
                .metrics
                .lag
                .with_label_values(&[&self.partition.to_string()])
                .set(lag as i64);
        }
        Ok(Fetch::More)
    }

    fn submit(&mut self, effects: &mut Effects, next: Offset) -> Result<(), KafkaLogError> {
        let m = self.member;
        let p = self.partition;
        // Dead letters first: once any state record of this batch is in the changelog (which a
        // new owner resumes after), every dead letter of the batch is too, so a crash can
        // repeat a dead letter but never lose one.
        if !effects.dead_letters.is_empty() {
            let dead: Vec<Outgoing<'_>> = effects
                .dead_letters
                .drain(..)
                .map(|record| Outgoing {
                    topic: &m.dlq_topic,
                    partition: p,
                    record,
                })
                .collect();
            // Rare (bad input): acknowledged before any state record of the batch is sent.
            m.producer.send_all(&dead)?;
        }
        let now = now_millis();
        let state: Vec<Outgoing<'_>> = effects
            .state
            .drain(..)
            .map(|(key, value)| Outgoing {
                topic: &m.state_topic,
                partition: p,
                record: NewRecord {
                    key,
                    value,
                    timestamp: now,
                    headers: Vec::new(),
                },
            })
            .collect();
        // In order per partition (idempotent producer): a state record in the changelog means
        // every earlier one of the batch is there too; the position mark comes last.
        let mut state = state;
        if let Some(epoch) = self.epoch {
            let mark = PositionMark {
                epoch,
                partition: p.0,
                resume_offset: next,
            };
            state.push(Outgoing {
                topic: &m.state_topic,
                partition: p,
                record: NewRecord {
                    key: POSITION_KEY.as_bytes().to_vec(),
                    value: mark.to_json(),
                    timestamp: now,
                    headers: Vec::new(),
                },
            });
        }
        // In flight: the owner reads and applies the next batches meanwhile.
        self.in_flight.push_back(m.producer.send(&state));
        Ok(())
    }

    fn complete(&mut self) -> Result<(), KafkaLogError> {
        match self.in_flight.pop_front() {
            Some(pending) => pending.wait().map(drop),
            None => Ok(()),
        }
    }

    fn depth(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn committed(&mut self, position: Offset) {
        self.member.commit_async(self.partition, position);
    }

    fn release(&mut self) {
        self.member
            .metrics
            .lag
            .with_label_values(&[&self.partition.to_string()])
            .set(0);
        if let Some(epoch) = self.epoch.take()
            && let Err(e) = self.member.publish_ownership(self.partition, epoch, false)
        {
            // The next owner's record (a higher epoch) replaces this one anyway.
            warn!(partition = self.partition.0, error = %e, "cannot publish the release of a partition");
        }
    }
}
