//! The Kafka driver of one assigned partition: restore from the member's restore reader,
//! input from a reader of its own, effects through the idempotent producer with several
//! batches in flight, or (`--guarantee exactly-once`) in the owner's own transactions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use super::threads::Flags;
use super::transaction::{Closing, Transactions};
use super::{FETCH_WAIT, MAX_IN_FLIGHT, Member};
use crate::core::changelog::{Entry, EpochMarker, PositionMark, Reader};
use crate::core::record::{NewRecord, Record};
use crate::core::step::Effects;
use crate::core::{Epoch, Offset, Partition};
use crate::log::kafka::{
    KafkaLogError, Outgoing, PartitionReader, Pending, Tail, partition_list, read_at, read_range,
};
use crate::log::now_millis;
use crate::owner::{Driver, Fetch, Guarantee};

/// How long a batch may wait for its acknowledgements before the owner reports that it cannot
/// make progress (readiness off until the next fetch finds the leader connected).
const STALL: Duration = Duration::from_secs(2);

/// How long a look at the end of `reservation-owners` may take.
const OWNERS_END: Duration = Duration::from_millis(500);

/// How long a superseded owner's look at the newer owner's epoch marker may take.
const MARKER_CHECK: Duration = Duration::from_secs(5);

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
    /// The epoch taken, once its marker is durable and the partition is this owner's.
    pub(super) epoch: Option<Epoch>,
    /// The changelog offset after the last record restored.
    pub(super) restored_end: Offset,
    /// The offset of this owner's epoch marker, once durable.
    pub(super) marker_offset: Option<Offset>,
    /// Under `--guarantee exactly-once`: the owner's transactions, from its epoch marker on.
    pub(super) transactions: Option<Transactions>,
    /// The highest epoch of a released ownership record found to name no epoch marker: not
    /// read again.
    pub(super) checked: Option<Epoch>,
}

/// The most batches one transaction holds (the byte bound and the commit interval usually
/// close it first).
const MAX_IN_TRANSACTION: usize = 1024;

impl<'a> KafkaDriver<'a> {
    /// How this owner's input reader waits: briefly in a run that ends at the input's end.
    fn tail(&self) -> Tail {
        if self.member.options.until_idle {
            Tail::ToEnd
        } else {
            Tail::Live
        }
    }

    /// A record of this partition's changelog.
    fn state_record(&self, key: Vec<u8>, value: Vec<u8>, timestamp: i64) -> Outgoing<'a> {
        Outgoing {
            topic: &self.member.state_topic,
            partition: self.partition,
            record: NewRecord {
                key,
                value,
                timestamp,
                headers: Vec::new(),
            },
        }
    }
}

/// What a commit adds to the transaction: the position mark and the group's offset.
impl Closing for KafkaDriver<'_> {
    fn mark(&self, next: Offset) -> Vec<Outgoing<'_>> {
        let Some(epoch) = self.epoch else {
            return Vec::new();
        };
        let mark = PositionMark {
            epoch,
            partition: self.partition,
            resume_offset: next,
        };
        vec![self.state_record(mark.key().into_bytes(), mark.to_json(), now_millis())]
    }

    fn offsets(&self, next: Offset) -> rdkafka::TopicPartitionList {
        partition_list(&self.member.events_topic, [(self.partition, next)])
    }

    fn group(&self) -> Option<&rdkafka::consumer::ConsumerGroupMetadata> {
        self.member.transaction_group.as_ref()
    }
}

impl KafkaDriver<'_> {
    /// Whether the ownership table has folded `reservation-owners` to its end, as the broker
    /// reports it now.
    fn owners_caught_up(&self) -> bool {
        self.member
            .producer
            .end_offset(&self.member.owners_topic, Partition(0), OWNERS_END)
            .is_some_and(|end| self.member.shared.owners_folded() >= end)
    }

    /// Whether a newer owner took the partition, so that whatever this owner writes from now on
    /// is fenced (the broker gave the partition to another member without taking it from this
    /// one, or this member stalled); if so, says so and marks the owner superseded. Seen on
    /// `reservation-owners`: a record of a higher epoch that is held, or one already released
    /// (the newer owner came and went before this one looked) whose epoch marker the changelog
    /// holds where the record says. Without that check a released record would be ignored, and
    /// this owner would go on applying input whose effects every reader fences.
    fn superseded(&mut self) -> bool {
        let p = self.partition;
        let (Some(epoch), Some(newer)) = (self.epoch, self.member.shared.holder(p)) else {
            return false;
        };
        if newer.epoch <= epoch || self.checked >= Some(newer.epoch) {
            return false;
        }
        let proven = newer.is_held() || match newer.marker {
            Some(at) => match read_at(
                &self.member.kafka,
                &self.member.state_topic,
                p,
                at,
                MARKER_CHECK,
            ) {
                // The marker itself, not a later record where it was compacted away.
                Ok(record) => record.filter(|r| r.offset == at),
                Err(e) => {
                    // Looked at again on the next fetch.
                    warn!(partition = p.0, error = %e, "cannot read a newer owner's epoch marker");
                    return false;
                }
            }
            .and_then(|r| Entry::decode(&r.key, &r.value).ok())
            .is_some_and(
                |e| matches!(e, Entry::Marker(m) if m.partition == p && m.epoch == newer.epoch),
            ),
            // Written by an earlier version: nothing to check against.
            None => false,
        };
        if !proven {
            // Released, and its marker is not where it says: not an owner's record.
            self.checked = Some(newer.epoch);
            warn!(
                partition = p.0,
                epoch = epoch.0,
                record_epoch = newer.epoch.0,
                record_owner = %newer.owner,
                "a released ownership record of a higher epoch names no epoch marker in the \
                 changelog; this owner carries on"
            );
            return false;
        }
        warn!(
            partition = p.0,
            epoch = epoch.0,
            newer_epoch = newer.epoch.0,
            newer_owner = %newer.owner,
            held = newer.is_held(),
            "a newer owner holds this partition; stopping (this member's records of it are \
             fenced from here on)"
        );
        self.flags.superseded.store(true, Ordering::Release);
        true
    }
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
            self.tail(),
        )?);
        let restored = self
            .restored
            .take()
            .ok_or_else(|| KafkaLogError::Restore("restored twice".into()))?;
        for item in restored {
            match item {
                Restored::Record(r) => {
                    self.restored_end = self.restored_end.max(r.offset.next().unwrap_or(r.offset));
                    record(&r);
                }
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

    fn restore_size(&mut self) -> Option<u64> {
        // One ListOffsets round, bounded: the restore waits for it.
        self.member
            .producer
            .end_offset(
                &self.member.state_topic,
                self.partition,
                Duration::from_millis(500),
            )
            .map(|end| end.0)
    }

    fn begin_epoch(&mut self, reader: &Reader) -> Result<EpochMarker, KafkaLogError> {
        // Resume after what the changelog proves applied, never after the group's committed
        // offset alone: a former owner that went on after a newer one took over (a broker
        // that assigned the partition twice, a stalled member) commits offsets whose effects
        // are fenced, and resuming there would skip input that was never applied.
        let resume_offset = reader.resume_offset();
        if self.committed > resume_offset {
            warn!(
                partition = self.partition.0,
                committed = self.committed.0,
                changelog = resume_offset.0,
                "the group's committed offset is past what the changelog reflects (a fenced \
                 owner committed it); resuming from the changelog"
            );
        }
        let marker = EpochMarker {
            epoch: reader.highest_epoch().successor(),
            partition: self.partition,
            resume_offset,
            owner: self.member.options.owner_id.clone(),
            carried: false,
            replayed: false,
        };
        let t0 = Instant::now();
        let record = [self.state_record(marker.key().into_bytes(), marker.to_json(), now_millis())];
        let offsets = match self.member.options.guarantee {
            Guarantee::AtLeastOnce => self.member.producer.send_all(&record)?,
            // The owner's producer fences its predecessor's (aborting what it left open), and
            // the marker commits in a transaction of its own.
            Guarantee::ExactlyOnce { commit_interval } => {
                let id = self.member.kafka.transactional_id(self.partition);
                let mut transactions =
                    Transactions::start(&self.member.kafka, &id, commit_interval)?;
                let offsets = transactions.write_now(&record)?;
                self.transactions = Some(transactions);
                offsets
            }
        };
        self.marker_offset = offsets.first().copied();
        tracing::debug!(
            partition = self.partition.0,
            ms = t0.elapsed().as_millis() as u64,
            "epoch marker acknowledged"
        );
        Ok(marker)
    }

    fn settle(
        &mut self,
        marker: &EpochMarker,
        record: &mut dyn FnMut(&Record),
    ) -> Result<bool, KafkaLogError> {
        let p = self.partition;
        let at = self.marker_offset.unwrap_or(self.restored_end);
        let mut rival = None;
        if at > self.restored_end {
            read_range(
                &self.member.kafka,
                &self.member.state_topic,
                p,
                (self.restored_end, at),
                |r| {
                    if let Ok(Entry::Marker(m)) = Entry::decode(&r.key, &r.value)
                        && m.epoch >= marker.epoch
                        && m != *marker
                    {
                        rival.get_or_insert(m);
                    }
                    record(&r);
                },
            )?;
        }
        if let Some(m) = rival {
            warn!(
                partition = p.0,
                epoch = marker.epoch.0,
                rival_epoch = m.epoch.0,
                rival = %m.owner,
                "another owner took this partition at the same moment with an epoch at least as \
                 high; leaving it to that owner"
            );
            self.flags.superseded.store(true, Ordering::Release);
            return Ok(false);
        }
        let t0 = Instant::now();
        // The partition is this owner's: tell every member where it is served, before
        // reporting ready.
        self.epoch = Some(marker.epoch);
        self.member
            .publish_ownership(p, marker.epoch, self.marker_offset, true)?;
        tracing::debug!(
            partition = p.0,
            ms = t0.elapsed().as_millis() as u64,
            "ownership published"
        );
        Ok(true)
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
        // After a pause: the table must hold every ownership record written meanwhile before
        // the partition is served again (looked at before the check for a newer owner, so that
        // the check sees them).
        let status = self.member.shared.status(self.partition);
        let recheck = status.is_suspect() && self.owners_caught_up();
        if self.superseded() {
            return Ok(Fetch::Last);
        }
        if recheck {
            status.set_suspect(false);
            tracing::info!(
                partition = self.partition.0,
                "still this member's after the pause; serving it again"
            );
        }
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self.reader.insert(PartitionReader::connect(
                &self.member.kafka,
                &self.member.events_topic,
                self.partition,
                self.tail(),
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
        // Not ready while the partition's leader is not connected: nothing can be read or
        // made durable until it is.
        let status = self.member.shared.status(self.partition);
        status.set_stalled(!reader.leader_up());
        let caught_up = at_end && records.is_empty();
        self.flags.caught_up.store(caught_up, Ordering::Release);
        // Lag from the reader's latest fetch statistics, refreshed on every fetch (idle ones
        // included, so at least every FETCH_WAIT); none at the partition's end.
        if let Some(high) = reader.high_watermark() {
            status.set_input_end(high);
        }
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
        let now = now_millis();
        let dead: Vec<Outgoing<'_>> = effects
            .dead_letters
            .drain(..)
            .map(|record| Outgoing {
                topic: &m.dlq_topic,
                partition: p,
                record,
            })
            .collect();
        let mut state: Vec<Outgoing<'_>> = Vec::with_capacity(effects.state.len() + 1);
        for (key, value) in effects.state.drain(..) {
            state.push(self.state_record(key, value, now));
        }
        if let Some(transactions) = &mut self.transactions {
            // One transaction: the dead letters, the state records, and (at its commit) the
            // position mark and the group's offset.
            let mut records = dead;
            records.append(&mut state);
            return transactions.send(&records, next);
        }
        // Dead letters first: once any state record of this batch is in the changelog (which a
        // new owner resumes after), every dead letter of the batch is too, so a crash can
        // repeat a dead letter but never lose one. Rare (bad input): acknowledged before any
        // state record of the batch is sent.
        if !dead.is_empty() {
            let status = m.shared.status(p);
            m.producer
                .send(&dead)
                .wait_noting(STALL, || status.set_stalled(true))?;
        }
        // In order per partition (idempotent producer): a state record in the changelog means
        // every earlier one of the batch is there too; the position mark comes last.
        state.extend(self.mark(next));
        // In flight: the owner reads and applies the next batches meanwhile.
        self.in_flight.push_back(m.producer.send(&state));
        Ok(())
    }

    fn complete(&mut self) -> Result<(), KafkaLogError> {
        if let Some(mut transactions) = self.transactions.take() {
            let done = transactions.complete(&*self);
            self.transactions = Some(transactions);
            return done;
        }
        let status = self.member.shared.status(self.partition);
        match self.in_flight.pop_front() {
            Some(pending) => pending
                .wait_noting(STALL, || status.set_stalled(true))
                .map(drop),
            None => Ok(()),
        }
    }

    fn depth(&self) -> usize {
        if self.transactions.is_some() {
            MAX_IN_TRANSACTION
        } else {
            MAX_IN_FLIGHT
        }
    }

    fn due(&self) -> bool {
        self.transactions.as_ref().is_some_and(Transactions::due)
    }

    fn committed(&mut self, position: Offset) {
        // A superseded owner's positions are another owner's business now; in transactions
        // the offsets are committed with the batches.
        if !self.flags.superseded.load(Ordering::Acquire) && self.transactions.is_none() {
            self.member.commit_async(self.partition, position);
        }
    }

    fn release(&mut self) {
        if let Some(transactions) = &mut self.transactions {
            transactions.abort();
        }
        if let Some(epoch) = self.epoch.take()
            && !self.flags.superseded.load(Ordering::Acquire)
            && let Err(e) =
                self.member
                    .publish_ownership(self.partition, epoch, self.marker_offset, false)
        {
            // The next owner's record (a higher epoch) replaces this one anyway.
            warn!(partition = self.partition.0, error = %e, "cannot publish the release of a partition");
        }
    }
}
