//! The embedded log: the three topics of `topics/` with N partitions each, plus each
//! partition's input position and owner epoch, in one [`redb`] database file in the data
//! directory.
//!
//! redb gives ACID transactions with copy-on-write B-trees and checksummed commits, so a
//! partition's state records, dead letters and new input position land in one atomic commit:
//! after a crash at any moment either all of a batch is there or none of it is. One process
//! owns a data directory at a time (redb locks the file), which is what fences a second
//! `ordo run` in embedded mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable};

mod group_commit;
mod open;
mod store;
mod tables;

use self::group_commit::{Failed, GroupCommit};
use self::store::Store;
use self::tables::{
    DEAD_LETTERS, EPOCHS, EVENTS, META, OWNERS, POSITIONS, STATE, append_refs, append_to,
    decode_headers, end_of, open_topic, table,
};
use super::Signal;
use super::topics::Role;
use crate::core::changelog::{EpochMarker, Reader, Snapshot};
use crate::core::partitioner::Partitioner;
use crate::core::record::{NewRecord, Record};
use crate::core::step::Effects;
use crate::core::{Epoch, Offset, Partition, PartitionCount};

/// The database file inside the data directory.
pub const DB_FILE: &str = "ordo.redb";

/// Bumped when the layout of the tables changes.
const FORMAT: &str = "1";

/// What went wrong in the embedded log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "data dir {path} does not exist; run `ordo produce` or `ordo run` to create it, or pass --data-dir"
    )]
    NotFound { path: PathBuf },
    #[error(
        "data dir {path} is in use by another ordo process; stop it first (or send events to its HTTP gateway)"
    )]
    InUse { path: PathBuf },
    #[error(
        "data dir {path} holds {stored} partitions but {requested} were requested; \
         run `ordo repartition --to-partitions {requested} --apply` to move it, or pass --partitions {stored}"
    )]
    PartitionMismatch {
        path: PathBuf,
        stored: u32,
        requested: u32,
    },
    #[error(
        "data dir {path} was written with partitioner {stored} but {requested} was requested; \
         pass --partitioner {stored}, or repartition into a new data dir"
    )]
    PartitionerMismatch {
        path: PathBuf,
        stored: Partitioner,
        requested: Partitioner,
    },
    #[error("data dir {path} is not an ordo data dir of format {FORMAT}: {detail}")]
    Foreign { path: PathBuf, detail: String },
    /// The store is a zero-byte file: damaged (a crash of the file system, a bad copy). Its
    /// input went with it, so nothing in the data dir can rebuild it.
    #[error(
        "data dir {path} is damaged: {} is empty (0 bytes), and the input went with it; restore \
         the file from a backup or a `.bak` that `ordo repartition` left, or move the data dir \
         away to start again from nothing",
        file.display()
    )]
    Empty { path: PathBuf, file: PathBuf },
    #[error("cannot create data dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "partition {partition}: the changelog says its input is applied up to offset {from}, \
         past the input's end at {end} (a record not written by ordo?); nothing was skipped: \
         rebuild the changelog with `ordo replay --apply`"
    )]
    BeyondEnd { partition: u32, from: u64, end: u64 },
    #[error("embedded log: group commit failed: {message}")]
    GroupCommit { message: String },
    #[error("embedded log: the data dir was opened read-only; this command cannot write to it")]
    ReadOnly,
    #[error("embedded log: {op}: {source}")]
    Store {
        op: &'static str,
        source: Box<redb::Error>,
    },
}

fn store<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> LogError {
    move |e| LogError::Store {
        op,
        source: Box::new(e.into()),
    }
}

/// How to open a data directory.
/// The store's page cache. Owners keep their state in memory and read only the input's tail,
/// which the last appends left cached, and the commands that read everything scan it once: a
/// larger cache bought no throughput (`ordo bench e2e`, 16 against 64 MiB, alternating) and
/// filled with the changelog's pages during every restore (`ordo bench restore`: a member's
/// peak over 1 M reservations 302 MiB at 64 MiB, 242 MiB at 16 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// The N the caller expects; `None` adopts the stored one (or 1 for a new directory).
    pub partitions: Option<PartitionCount>,
    /// The partitioner the caller expects; `None` adopts the stored one.
    pub partitioner: Option<Partitioner>,
    /// Create the directory when it does not exist.
    pub create: bool,
    /// redb page cache in bytes (default [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: Option<usize>,
    /// Open without ever writing to the file (commands that only read).
    pub read_only: bool,
}

impl OpenOptions {
    /// An existing data dir, read-only, whatever its N and partitioner.
    pub fn reading() -> Self {
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        }
    }
}

/// The embedded log of one data directory.
pub struct EmbeddedLog {
    db: Store,
    path: PathBuf,
    partitions: PartitionCount,
    partitioner: Partitioner,
    /// Whether this open initialised a new store.
    created: bool,
    appended: Arc<Signal>,
    group_commit: GroupCommit<Work, Vec<Offset>, LogError>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("path", &self.path)
            .field("partitions", &self.partitions)
            .field("partitioner", &self.partitioner)
            .finish()
    }
}

/// The first store file this process opened: a panic inside the store (a damaged file) is
/// reported at the command's boundary naming it.
static OPENED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The first store file this process opened, if any.
pub fn opened() -> Option<&'static Path> {
    OPENED.get().map(|p| p.as_path())
}

impl EmbeddedLog {
    /// Whether this open created the data directory's store (it held nothing before).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// N, as stored in the data directory.
    pub fn partitions(&self) -> PartitionCount {
        self.partitions
    }

    /// The partitioner the data directory was written with.
    pub fn partitioner(&self) -> Partitioner {
        self.partitioner
    }

    /// Notified after every append.
    pub fn appended(&self) -> &Arc<Signal> {
        &self.appended
    }

    /// Appends records durably, all or none; returns their offsets in order. Concurrent
    /// appends (and partition commits) share one transaction: see [`EmbeddedLog::commit`].
    pub fn append(
        &self,
        role: Role,
        records: Vec<(Partition, NewRecord)>,
    ) -> Result<Vec<Offset>, LogError> {
        let (_, result) = self.submit(Work::Append(role, records));
        let offsets = result?;
        self.appended.notify();
        Ok(offsets)
    }

    /// [`EmbeddedLog::append`] for an async caller (from a tokio runtime): it waits for the
    /// group write on its task; only when no group is under way does a blocking-pool thread
    /// lead one.
    pub fn append_async(
        self: &Arc<Self>,
        role: Role,
        records: Vec<(Partition, NewRecord)>,
    ) -> impl std::future::Future<Output = Result<Vec<Offset>, LogError>> + Send + 'static {
        let queued = self.group_commit.enqueue(Work::Append(role, records));
        if queued.lead {
            // The leader's loop runs when this is dropped: on the blocking pool, or wherever
            // the runtime drops the task if it is shutting down and never runs it. Either way
            // the queued work is written and leadership handed back; otherwise every later
            // writer, the owners included, would wait for a leader that never comes.
            struct Leader(Arc<EmbeddedLog>);
            impl Drop for Leader {
                fn drop(&mut self) {
                    let log = &self.0;
                    log.group_commit.lead(|batch| log.write_batches(batch));
                }
            }
            let leader = Leader(self.clone());
            tokio::task::spawn_blocking(move || drop(leader));
        }
        let log = self.clone();
        async move {
            let (_, result) = queued.answer.await.map_err(|_| LogError::GroupCommit {
                message: "the group write ended without answering (see the log)".into(),
            })?;
            let offsets =
                result.map_err(|Failed::Shared(message)| LogError::GroupCommit { message })?;
            log.appended.notify();
            Ok(offsets)
        }
    }

    /// Up to `max` records of `partition` from offset `from` on.
    pub fn read(
        &self,
        role: Role,
        partition: Partition,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        self.read_into(role, partition, from, max, &mut out)?;
        Ok(out)
    }

    /// Like [`EmbeddedLog::read`], into a buffer the caller reuses (cleared first).
    pub fn read_into(
        &self,
        role: Role,
        partition: Partition,
        from: Offset,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), LogError> {
        out.clear();
        self.scan(role, partition, from, |r| {
            out.push(r);
            Ok(out.len() < max)
        })
    }

    /// Calls `f` on each record of `partition` from `from` on, until it returns `false`.
    pub fn scan(
        &self,
        role: Role,
        partition: Partition,
        from: Offset,
        mut f: impl FnMut(Record) -> Result<bool, LogError>,
    ) -> Result<(), LogError> {
        let txn = self.db.begin_read()?;
        let Some(t) = open_topic(&txn, role)? else {
            return Ok(());
        };
        let range = t
            .range((partition.0, from.0)..=(partition.0, u64::MAX))
            .map_err(store("read"))?;
        for item in range {
            let (k, v) = item.map_err(store("read"))?;
            let (_, offset) = k.value();
            let (key, value, timestamp, headers) = v.value();
            let record = Record {
                partition,
                offset: Offset(offset),
                timestamp,
                key: key.to_vec(),
                value: value.to_vec(),
                headers: decode_headers(headers),
            };
            if !f(record)? {
                break;
            }
        }
        Ok(())
    }

    /// The current state of every partition's changelog, folded with the fencing rule.
    pub fn snapshot(&self) -> Result<Snapshot, LogError> {
        let mut snapshot = Snapshot::default();
        for p in self.partitions.iter() {
            let mut reader = Reader::default();
            self.scan(Role::State, p, Offset(0), |r| {
                snapshot.push(&mut reader, &r.key, &r.value);
                Ok(true)
            })?;
        }
        Ok(snapshot)
    }

    /// The offset the next record of `partition` will get.
    pub fn end_offset(&self, role: Role, partition: Partition) -> Result<Offset, LogError> {
        let txn = self.db.begin_read()?;
        match open_topic(&txn, role)? {
            Some(t) => end_of(&t, partition.0).map(Offset),
            None => Ok(Offset(0)),
        }
    }

    /// The offset of the first record of `partition` still held.
    pub fn start_offset(&self, role: Role, partition: Partition) -> Result<Offset, LogError> {
        let txn = self.db.begin_read()?;
        let Some(t) = open_topic(&txn, role)? else {
            return Ok(Offset(0));
        };
        let mut r = t
            .range((partition.0, 0)..=(partition.0, u64::MAX))
            .map_err(store("read"))?;
        match r.next() {
            Some(item) => Ok(Offset(item.map_err(store("read"))?.0.value().1)),
            None => end_of(&t, partition.0).map(Offset),
        }
    }

    /// The next input offset `partition` will process.
    pub fn position(&self, partition: Partition) -> Result<Offset, LogError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(POSITIONS).map_err(store("open positions"))?;
        Ok(Offset(
            t.get(partition.0)
                .map_err(store("read position"))?
                .map_or(0, |v| v.value()),
        ))
    }

    /// Replaces `partition`'s changelog with a new epoch marker and `records`, and sets its
    /// input position, in one transaction (`ordo replay --apply`).
    pub fn replace_changelog(
        &self,
        partition: Partition,
        owner: &str,
        records: impl FnOnce(Epoch) -> Vec<(Vec<u8>, Vec<u8>)>,
        position: Offset,
    ) -> Result<Epoch, LogError> {
        let txn = self.db.begin_write()?;
        let epoch = {
            let mut epochs = txn.open_table(EPOCHS).map_err(store("open epochs"))?;
            let epoch = Epoch(
                epochs
                    .get(partition.0)
                    .map_err(store("read epoch"))?
                    .map_or(0, |v| v.value())
                    + 1,
            );
            epochs
                .insert(partition.0, epoch.0)
                .map_err(store("write epoch"))?;
            let mut state = txn.open_table(STATE).map_err(store("open changelog"))?;
            // Offsets keep growing: the replaced records are gone, never reused.
            let start = end_of(&state, partition.0)?;
            state
                .retain_in((partition.0, 0)..=(partition.0, u64::MAX), |_, _| false)
                .map_err(store("clear changelog"))?;
            let marker = EpochMarker {
                epoch,
                partition,
                resume_offset: position,
                owner: owner.to_owned(),
                carried: false,
                replayed: false,
            };
            let now = super::now_millis();
            state
                .insert(
                    (partition.0, start),
                    (marker.key().as_bytes(), &marker.to_json()[..], now, &[][..]),
                )
                .map_err(store("write marker"))?;
            for (offset, (key, value)) in (start + 1..).zip(&records(epoch)) {
                state
                    .insert((partition.0, offset), (&key[..], &value[..], now, &[][..]))
                    .map_err(store("write state"))?;
            }
            let mut positions = txn.open_table(POSITIONS).map_err(store("open positions"))?;
            positions
                .insert(partition.0, position.0)
                .map_err(store("write position"))?;
            epoch
        };
        txn.commit().map_err(store("commit replace"))?;
        Ok(epoch)
    }

    /// Takes ownership of `partition`: a new epoch above every earlier one, recorded with a
    /// marker in the changelog before any state record of the new owner.
    pub fn begin_epoch(
        &self,
        partition: Partition,
        owner: &str,
        at_least: Epoch,
    ) -> Result<EpochMarker, LogError> {
        let txn = self.db.begin_write()?;
        let marker = {
            let mut epochs = txn.open_table(EPOCHS).map_err(store("open epochs"))?;
            let last = epochs
                .get(partition.0)
                .map_err(store("read epoch"))?
                .map_or(0, |v| v.value());
            let epoch = Epoch(last.max(at_least.0) + 1);
            epochs
                .insert(partition.0, epoch.0)
                .map_err(store("write epoch"))?;
            let positions = txn.open_table(POSITIONS).map_err(store("open positions"))?;
            let resume_offset = Offset(
                positions
                    .get(partition.0)
                    .map_err(store("read position"))?
                    .map_or(0, |v| v.value()),
            );
            let marker = EpochMarker {
                epoch,
                partition,
                resume_offset,
                owner: owner.to_owned(),
                carried: false,
                replayed: false,
            };
            let mut state = txn.open_table(STATE).map_err(store("open changelog"))?;
            let offset = end_of(&state, partition.0)?;
            state
                .insert(
                    (partition.0, offset),
                    (
                        marker.key().as_bytes(),
                        &marker.to_json()[..],
                        super::now_millis(),
                        &[][..],
                    ),
                )
                .map_err(store("write marker"))?;
            marker
        };
        txn.commit().map_err(store("commit epoch"))?;
        Ok(marker)
    }

    /// Commits one batch of a partition's effects atomically: changelog records, dead letters
    /// and the input position `next` after the batch. Returns the effects for buffer reuse.
    pub fn commit(
        &self,
        partition: Partition,
        effects: Effects,
        next: Offset,
    ) -> (Effects, Result<(), LogError>) {
        match self.submit(Work::Commit(partition, effects, next)) {
            (Work::Commit(_, effects, _), r) => (effects, r.map(|_| ())),
            (Work::Append(..), _) => unreachable!("a commit comes back as a commit"),
        }
    }

    /// Writes `work` in the next group commit (see [`GroupCommit`]).
    fn submit(&self, work: Work) -> (Work, Result<Vec<Offset>, LogError>) {
        let (work, result) = self
            .group_commit
            .submit(work, |batch| self.write_batches(batch));
        (
            work,
            result.map_err(|Failed::Shared(message)| LogError::GroupCommit { message }),
        )
    }

    fn write_batches(&self, batches: &[Work]) -> Result<Vec<Vec<Offset>>, LogError> {
        let now = super::now_millis();
        let txn = self.db.begin_write()?;
        let mut offsets = Vec::with_capacity(batches.len());
        {
            let mut events = txn.open_table(EVENTS).map_err(store("open input"))?;
            let mut state = txn.open_table(STATE).map_err(store("open changelog"))?;
            let mut dlq = txn
                .open_table(DEAD_LETTERS)
                .map_err(store("open dead letters"))?;
            let mut owners = txn.open_table(OWNERS).map_err(store("open owners"))?;
            let mut positions = txn.open_table(POSITIONS).map_err(store("open positions"))?;
            for work in batches {
                match work {
                    Work::Append(role, records) => {
                        let t = match role {
                            Role::Events => &mut events,
                            Role::State => &mut state,
                            Role::DeadLetters => &mut dlq,
                            Role::Owners => &mut owners,
                        };
                        offsets.push(append_to(t, records, self.partitions)?);
                    }
                    Work::Commit(partition, commit, next) => {
                        let p = partition.0;
                        let start = end_of(&state, p)?;
                        for (offset, (key, value)) in (start..).zip(&commit.state) {
                            state
                                .insert((p, offset), (&key[..], &value[..], now, &[][..]))
                                .map_err(store("write state"))?;
                        }
                        if !commit.dead_letters.is_empty() {
                            let dead: Vec<(Partition, &NewRecord)> = commit
                                .dead_letters
                                .iter()
                                .map(|r| (*partition, r))
                                .collect();
                            append_refs(&mut dlq, &dead, self.partitions)?;
                        }
                        positions
                            .insert(p, next.0)
                            .map_err(store("write position"))?;
                        offsets.push(Vec::new());
                    }
                }
            }
        }
        txn.commit().map_err(store("commit batch"))?;
        Ok(offsets)
    }
}

/// Work for the group committer.
#[derive(Debug)]
enum Work {
    Append(Role, Vec<(Partition, NewRecord)>),
    Commit(Partition, Effects, Offset),
}

#[cfg(test)]
mod tests;
