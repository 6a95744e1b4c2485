//! The partition owner: one dedicated OS thread per owned partition, and one lifecycle for both
//! backends.
//!
//! ```text
//!   Restoring ──► Owning ──► Releasing
//!   changelog     batch loop: fetch → step each record (core) → commit effects
//!   folded into   → publish to the view → position
//!   the view;
//!   epoch marker
//! ```
//!
//! [`Owner::run`] is that lifecycle; a [`Driver`] is what a backend does for it: read the
//! changelog, write the epoch marker, fetch input, make a batch durable. The drivers:
//!
//! * [`embedded`]: every partition of a data dir, each on its thread, reading the log directly.
//! * [`group`]: a Kafka consumer-group member; the poll thread hands each record to the owner
//!   of its partition.

pub mod embedded;
pub mod group;
mod pipeline;

use std::time::Instant;

use tracing::{debug, info, warn};

use crate::core::changelog::{Change, EpochMarker, Reader};
use crate::core::partitioner::Partitioner;
use crate::core::record::Record;
use crate::core::step::{Effects, Processor};
use crate::core::{Epoch, Offset, Partition, PartitionCount};
use crate::metrics::{Metrics, PartitionCounters};
use crate::view::{Partitions, index_user, publish};
use pipeline::Pipeline;

/// Default number of input records per batch (and per durable commit).
pub const DEFAULT_BATCH_SIZE: usize = 4096;

/// Who this process is, written into epoch markers: host and process id.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}/{}", std::process::id())
}

/// How the owners of a process run, whichever the driver.
#[derive(Debug, Clone)]
pub struct Options {
    pub batch_size: usize,
    /// Release every partition once it has caught up with its input.
    pub until_idle: bool,
    /// Who the owners are, written into their epoch markers and ownership records.
    pub owner_id: String,
    /// The base URL other members reach this process's HTTP listener at (Kafka; `None`
    /// without HTTP, and unused on the embedded log).
    pub advertise: Option<String>,
    /// What a plain reader of ordo's topics may see (Kafka; the embedded log commits each
    /// batch atomically either way).
    pub guarantee: Guarantee,
    /// With a deployment key (Kafka, `--http-token-file`): ownership records are signed with
    /// it, and only records signed with it are folded into the table.
    pub owners_key: Option<crate::core::ownership::OwnersKey>,
}

/// What a plain `read_committed` consumer of ordo's Kafka topics sees (contract §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Guarantee {
    /// Each batch is produced (idempotent, `acks=all`) and then its offset committed: after a
    /// crash a plain consumer may see a batch's records twice, and a zombie's records until
    /// it notices; ordo's own readers fence both.
    #[default]
    AtLeastOnce,
    /// Each owner's batches, dead letters, position marks and input offsets commit in Kafka
    /// transactions, at most `commit_interval` apart while input flows.
    ExactlyOnce {
        commit_interval: std::time::Duration,
    },
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: DEFAULT_BATCH_SIZE,
            until_idle: false,
            owner_id: owner_id(),
            advertise: None,
            guarantee: Guarantee::default(),
            owners_key: None,
        }
    }
}

/// Whether the owner goes on after the records of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Process what was fetched (possibly nothing) and fetch again.
    More,
    /// Process what was fetched, then release the partition.
    Last,
}

/// What a backend does for a partition owner.
pub trait Driver {
    type Error: std::error::Error;

    /// Reads the partition's changelog from its beginning, in offset order.
    fn restore(&mut self, record: &mut dyn FnMut(&Record)) -> Result<(), Self::Error>;

    /// How many changelog records the restore will read, where known up front (the status
    /// page's restore progress).
    fn restore_size(&mut self) -> Option<u64> {
        None
    }

    /// Makes an epoch marker above every earlier owner's durable (after `reader` read the
    /// whole changelog) and returns it: its resume offset is where processing starts.
    fn begin_epoch(&mut self, reader: &Reader) -> Result<EpochMarker, Self::Error>;

    /// Hands `record` what the changelog holds between the end of the restore and `marker`,
    /// the marker included: a former owner that has not noticed the new one yet may have
    /// written records there, and every later reader folds them, so the owner folds them too.
    /// Returns whether the partition is still this owner's: not when another owner's marker
    /// of an epoch at least as high landed first. Only then does the owner serve it.
    fn settle(
        &mut self,
        _marker: &EpochMarker,
        _record: &mut dyn FnMut(&Record),
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    /// Fills `records` (empty on entry) with input from `position` on. `wait`: whether it may
    /// wait for input to arrive (not while batches are in flight: their acknowledgements come
    /// first).
    fn fetch(
        &mut self,
        position: Offset,
        records: &mut Vec<Record>,
        wait: bool,
    ) -> Result<Fetch, Self::Error>;

    /// Starts making a batch durable: its dead letters, its state records, and the input
    /// position `next` after it. Effects may be left drained. Batches complete in the order
    /// they were submitted; a driver with [`Driver::depth`] 1 makes each durable here.
    fn submit(&mut self, effects: &mut Effects, next: Offset) -> Result<(), Self::Error>;

    /// Waits until the oldest batch submitted and not yet complete is durable.
    fn complete(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// How many batches may be submitted and not yet complete: while they are in flight the
    /// owner reads and applies the next ones (against their unpublished changes).
    fn depth(&self) -> usize {
        1
    }

    /// Whether the oldest batch must complete now, short of the depth (a transaction open
    /// for its commit interval).
    fn due(&self) -> bool {
        false
    }

    /// Everything below `position` is durable and visible.
    fn committed(&mut self, _position: Offset) {}

    /// The partition is let go (after the last batch, or after a failure).
    fn release(&mut self) {}
}

/// One partition's owner: the partition, the routing it checks, and where it publishes.
pub struct Owner<'a> {
    pub partition: Partition,
    pub partitions: PartitionCount,
    pub partitioner: Partitioner,
    pub shared: &'a Partitions,
    pub metrics: &'a Metrics,
    pub batch_size: usize,
}

/// What an owner did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OwnerReport {
    pub processed: u64,
    pub applied: u64,
    /// Reservations restored from the changelog.
    pub restored: u64,
    pub epoch: Epoch,
    /// The next input offset: everything below it is applied and durable.
    pub position: Offset,
    /// Another owner took the partition under a higher epoch before this one served it.
    pub superseded: bool,
}

/// Why an owner stopped before its driver said so.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError<E> {
    /// Its log failed.
    #[error(transparent)]
    Driver(E),
    /// An internal error (a panic, in ordo or in a crate below it); the message is the panic's.
    #[error("internal error: {0}")]
    Panicked(String),
}

impl Owner<'_> {
    /// Restores, takes an epoch, and processes until the driver says stop; the partition is
    /// released (not ready, not owned) on every way out. A panic on the way is caught here: the
    /// partition is marked failed at once (readiness goes) and the error says so, so the
    /// process ends as for any other failure rather than run on without the partition.
    pub fn run<D: Driver>(&self, driver: &mut D) -> Result<OwnerReport, OwnerError<D::Error>> {
        let status = self.shared.status(self.partition);
        status.set_owned();
        let result =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.own(driver))) {
                Ok(result) => result.map_err(OwnerError::Driver),
                Err(panic) => Err(OwnerError::Panicked(panic_message(&*panic))),
            };
        if let Err(e) = &result {
            status.set_failed(e.to_string());
        }
        if status.is_ready() {
            self.metrics.partitions_owned.dec();
        }
        status.set_released();
        driver.release();
        self.metrics.forget_partition(self.partition);
        result
    }

    /// Restoring: the changelog, folded through the fencing rule, becomes the view; then an
    /// epoch above every earlier owner's, settled against what landed meanwhile. The flag is
    /// false when another owner's marker of an epoch at least as high came first: the
    /// partition is that owner's.
    fn restore<D: Driver>(&self, driver: &mut D) -> Result<(EpochMarker, Reader, bool), D::Error> {
        let p = self.partition;
        let view = self.shared.view(p);
        let users = &self.shared.users;
        view.clear();
        let fold = |reader: &mut Reader, r: &Record| match reader.read(&r.key, &r.value) {
            Ok(Some(Change::Put(record))) => {
                let (key, stored) = record.into_stored();
                index_user(users, stored.entity.user_id(), &key);
                view.insert(key, stored);
            }
            // The user index may keep the key: lookups go through the view.
            Ok(Some(Change::Delete(key))) => {
                view.remove(&key);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(partition = p.0, offset = r.offset.0, error = %e, "skipping unreadable changelog record");
            }
        };
        let mut reader = Reader::default();
        let status = self.shared.status(p);
        let progress = self
            .metrics
            .restore_progress
            .with_label_values(&[&p.to_string()]);
        progress.set(0.0);
        status.restore_started(driver.restore_size().unwrap_or(0));
        let stall_at = restore_fail_point(p);
        let mut read = 0u64;
        driver.restore(&mut |r| {
            fold(&mut reader, r);
            read += 1;
            let stall = stall_at == Some(r.offset);
            if read.is_multiple_of(4096) || stall {
                status.restore_read(r.offset.next().unwrap_or(r.offset).0);
                if let Some(ratio) = status.restore_progress() {
                    progress.set(ratio);
                }
            }
            if stall {
                warn!(
                    partition = p.0,
                    offset = r.offset.0,
                    "fail point ORDO_FAIL_POINT: stalling the restore"
                );
                std::thread::sleep(pipeline::STALL);
            }
        })?;
        status.restore_read(u64::MAX);
        progress.set(1.0);
        let marker = driver.begin_epoch(&reader)?;
        let ours = driver.settle(&marker, &mut |r| fold(&mut reader, r))?;
        Ok((marker, reader, ours))
    }

    fn own<D: Driver>(&self, driver: &mut D) -> Result<OwnerReport, D::Error> {
        let p = self.partition;
        let plabel = p.to_string();
        let started = Instant::now();
        let (marker, reader, ours) = self.restore(driver)?;
        if !ours {
            return Ok(OwnerReport {
                epoch: marker.epoch,
                superseded: true,
                ..OwnerReport::default()
            });
        }
        let view = self.shared.view(p);
        let restored = view.len() as u64;
        self.metrics
            .restore
            .with_label_values(&[&plabel])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.fenced.inc_by(reader.fenced);

        // Owning, from the marker's resume offset, or later where a former owner's records
        // that landed before the marker say more was applied.
        let status = self.shared.status(p);
        let position = marker.resume_offset.max(reader.resume_offset());
        status.set_ready(marker.epoch, position);
        self.metrics
            .epoch
            .with_label_values(&[&plabel])
            .set(marker.epoch.0 as i64);
        let entries = self.metrics.state_entries.with_label_values(&[&plabel]);
        // Exported from now on (0 until the driver first measures it), dropped on release.
        self.metrics.lag.with_label_values(&[&plabel]);
        self.metrics.partitions_owned.inc();
        entries.set(restored as i64);
        info!(
            partition = p.0,
            epoch = marker.epoch.0,
            restored,
            fenced = reader.fenced,
            resume_offset = position.0,
            restore_ms = started.elapsed().as_millis() as u64,
            "partition owned"
        );

        let processor = Processor {
            partition: p,
            partitions: self.partitions,
            partitioner: self.partitioner,
            epoch: marker.epoch,
        };
        let counters = PartitionCounters::new(self.metrics, p);
        let mut report = OwnerReport {
            restored,
            epoch: marker.epoch,
            position,
            ..OwnerReport::default()
        };
        let mut batches = Pipeline::new(self.batch_size, position, fail_point(p));
        loop {
            let fetch = batches.fetch(driver)?;
            let got = batches.apply(driver, &processor, view, self.metrics)?;
            // Complete the oldest batches: all of them once the input is idle (or ends), else
            // down to the depth and byte bounds.
            let idle = !got || fetch == Fetch::Last;
            while batches.must_complete(idle || driver.due(), driver.depth()) {
                driver.complete()?;
                let mut done = batches.pop_done(self.metrics);
                // Durable: now the batch may be seen, counted first, so that a client that
                // reads its write back (the position wait) finds it in the metrics too.
                counters.add(&done.tally);
                status.refused(done.refused.drain(..));
                publish(view, &self.shared.users, &mut done.changes);
                status.set_position(done.next, done.last_timestamp);
                report.applied += done.applied;
                report.processed += done.records;
                report.position = done.next;
                entries.set(view.len() as i64);
                driver.committed(done.next);
                debug!(
                    partition = p.0,
                    records = done.records,
                    position = done.next.0,
                    "batch committed"
                );
                batches.recycle(done);
            }
            if fetch == Fetch::Last {
                return Ok(report);
            }
        }
    }
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// A fault to inject, for tests: `ORDO_FAIL_POINT=panic@P:O` makes the owner of partition P
/// panic on the batch that holds input offset O (what a panicking owner does);
/// `ORDO_FAIL_POINT=stall@P:O` makes it stall for [`pipeline::STALL`] right after submitting
/// that batch, its effects in flight (a zombie, once the process is also stopped).
fn fail_point(p: Partition) -> Option<pipeline::FailPoint> {
    let (kind, offset) = fail_point_spec(p)?;
    match kind.as_str() {
        "panic" => Some(pipeline::FailPoint::Panic(offset)),
        "stall" => Some(pipeline::FailPoint::Stall(offset)),
        _ => None,
    }
}

/// `ORDO_FAIL_POINT=stall-restore@P:O`: the owner of partition P stalls for
/// [`pipeline::STALL`] once its restore has read the changelog record at offset O (the status
/// page's restore progress, seen part way).
fn restore_fail_point(p: Partition) -> Option<Offset> {
    fail_point_spec(p).and_then(|(kind, offset)| (kind == "stall-restore").then_some(offset))
}

/// `ORDO_FAIL_POINT`'s kind and offset, when it names partition `p`.
fn fail_point_spec(p: Partition) -> Option<(String, Offset)> {
    let spec = std::env::var("ORDO_FAIL_POINT").ok()?;
    let (kind, at) = spec.split_once('@')?;
    let (partition, offset) = at.split_once(':')?;
    if partition.parse::<u32>().ok()? != p.0 {
        return None;
    }
    Some((kind.to_owned(), Offset(offset.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, Sender, channel};

    /// A driver whose batches become durable only when the test says so.
    struct Held {
        input: Vec<Record>,
        fetched: bool,
        /// Told when the owner waits for a batch to be durable.
        waiting: Sender<()>,
        /// Makes the oldest batch durable.
        durable: Receiver<()>,
        done: bool,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Driver for Held {
        type Error = Never;
        fn restore(&mut self, _: &mut dyn FnMut(&Record)) -> Result<(), Never> {
            Ok(())
        }
        fn begin_epoch(&mut self, reader: &Reader) -> Result<EpochMarker, Never> {
            Ok(EpochMarker {
                epoch: reader.highest_epoch().successor(),
                partition: Partition(0),
                resume_offset: Offset(0),
                owner: "test".into(),
                carried: false,
                replayed: false,
            })
        }
        fn fetch(&mut self, _: Offset, out: &mut Vec<Record>, _: bool) -> Result<Fetch, Never> {
            if self.done {
                return Ok(Fetch::Last);
            }
            if !self.fetched {
                self.fetched = true;
                out.append(&mut self.input);
            }
            Ok(Fetch::More)
        }
        fn submit(&mut self, effects: &mut Effects, _: Offset) -> Result<(), Never> {
            effects.clear();
            Ok(())
        }
        fn complete(&mut self) -> Result<(), Never> {
            self.waiting.send(()).unwrap();
            self.durable.recv().unwrap();
            self.done = true;
            Ok(())
        }
        fn depth(&self) -> usize {
            4
        }
    }

    /// Read after commit: a query reads the view, and the view gets a batch's states only
    /// once the batch is durable, never while the owner waits for that.
    #[test]
    fn a_state_is_visible_only_once_its_batch_is_durable() {
        let n = PartitionCount::new(1).unwrap();
        let shared = Partitions::new(n);
        let metrics = Metrics::fresh();
        let (waiting_tx, waiting) = channel();
        let (durable, durable_rx) = channel();
        let event =
            r#"{"type":"reservation","event_id":"e1","reservation_no":"R-1","user_id":"u"}"#;
        let mut driver = Held {
            input: vec![Record {
                partition: Partition(0),
                offset: Offset(0),
                timestamp: 0,
                key: b"R-1".to_vec(),
                value: event.as_bytes().to_vec(),
                headers: Vec::new(),
            }],
            fetched: false,
            waiting: waiting_tx,
            durable: durable_rx,
            done: false,
        };
        std::thread::scope(|s| {
            let owner = s.spawn(|| {
                Owner {
                    partition: Partition(0),
                    partitions: n,
                    partitioner: Partitioner::AbsHashModN,
                    shared: &shared,
                    metrics: &metrics,
                    batch_size: 10,
                }
                .run(&mut driver)
                .map_err(|e| e.to_string())
            });
            waiting
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the owner waits for its batch");
            let view = shared.view(Partition(0));
            assert!(view.get("R-1").is_none(), "visible before it was durable");
            assert_eq!(shared.status(Partition(0)).position(), Offset(0));
            durable.send(()).unwrap();
            let report = owner.join().unwrap().unwrap();
            assert_eq!(report.position, Offset(1));
            assert!(view.get("R-1").is_some(), "visible once durable");
        });
    }
}
