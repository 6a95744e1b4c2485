//! `ordo repartition` on the embedded log: move a data dir from N to M partitions.
//!
//! With `hash mod N` almost every key moves when N changes, so the input is re-routed record
//! by record: each old partition in offset order, so the records of one key (all in one old
//! partition) keep their order in their new partition. Records already processed go first,
//! then the rest, so every new partition's position is simply its count of processed records.
//! The new changelog is derived by replaying the processed records in the new layout, and is
//! checked against the old state before anything is swapped in.
//!
//! Crash safety: the new generation is built in `ordo.redb.next` beside the live file, checked,
//! and moved into place with one `rename`. Killed before the rename, the old data is intact
//! and a rerun starts over; killed after, the data dir is at M and a rerun has nothing to do.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use super::{Plan, route};
use crate::core::record::NewRecord;
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::embedded::{DB_FILE, EmbeddedLog, LogError, OpenOptions};
use crate::log::topics::Role;
use crate::log::{Logs, LogsError};
use crate::tools::progress::Progress;
use crate::tools::replay::{OffsetSpec, rebuild};
use std::sync::Arc;

/// Records per append transaction.
const CHUNK: usize = 50_000;

/// What went wrong while repartitioning.
#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error(transparent)]
    Log(#[from] LogsError),
    #[error("repartition i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("repartition check failed, nothing was changed: {0}")]
    Check(String),
}

impl From<LogError> for RepartitionError {
    fn from(e: LogError) -> Self {
        RepartitionError::Log(e.into())
    }
}

/// The dry run on the data dir `dir`: the plan of moving it to `to` partitions, `None` when it
/// has `to` already. Reads everything, changes nothing.
pub fn dry_run(dir: &Path, to: PartitionCount) -> Result<Option<Plan>, RepartitionError> {
    let log = EmbeddedLog::open(dir, OpenOptions::reading())?;
    if log.partitions() == to {
        return Ok(None);
    }
    plan(&log, to).map(Some)
}

/// The file name the previous generation is kept under after a move from `from` partitions.
pub fn backup_name(from: PartitionCount) -> String {
    format!("{DB_FILE}.n{from}.bak")
}

/// The plan of moving `log` to `to` partitions; reads everything, changes nothing.
pub fn plan(log: &EmbeddedLog, to: PartitionCount) -> Result<Plan, RepartitionError> {
    let (from, partitioner) = (log.partitions(), log.partitioner());
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    let mut plan = Plan {
        state_entries: log.snapshot()?.states.len() as u64,
        ..Plan::empty(from, to, partitioner)
    };
    for p in from.iter() {
        let position = log.position(p)?;
        log.scan(Role::Events, p, Offset(0), |r| {
            plan.records += 1;
            plan.unprocessed += u64::from(r.offset >= position);
            plan.bytes += (r.key.len() + r.value.len()) as u64;
            let q = route(&r.key, &r.value, partitioner, to);
            plan.per_partition[q.0 as usize] += 1;
            if !r.key.is_empty() && keys.insert(r.key.clone()) && q != p {
                plan.keys_moving += 1;
            }
            Ok(true)
        })?;
        log.scan(Role::DeadLetters, p, Offset(0), |_| {
            plan.dead_letters += 1;
            Ok(true)
        })?;
    }
    plan.keys = keys.len() as u64;
    Ok(plan)
}

/// Per key, a hash of its values in order: equal maps mean equal per-key sequences.
fn sequences(log: &EmbeddedLog) -> Result<HashMap<Vec<u8>, (u64, u64)>, LogError> {
    let mut seq: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    for p in log.partitions().iter() {
        log.scan(Role::Events, p, Offset(0), |r| {
            let e = seq.entry(r.key.clone()).or_insert((0, 0));
            let mut h = DefaultHasher::new();
            (e.0, &r.value).hash(&mut h);
            *e = (h.finish(), e.1 + 1);
            Ok(true)
        })?;
    }
    Ok(seq)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RepartitionError + '_ {
    move |source| RepartitionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file the next generation is built in.
pub fn next_file(dir: &Path) -> PathBuf {
    dir.join(format!("{DB_FILE}.next"))
}

/// Moves the data dir `dir` to `to` partitions. Returns the plan it carried out, or `None`
/// when the data dir already has `to` partitions.
pub fn apply(
    dir: &Path,
    to: PartitionCount,
    owner: &str,
) -> Result<Option<Plan>, RepartitionError> {
    let old = EmbeddedLog::open(dir, OpenOptions::default())?;
    if old.partitions() == to {
        return Ok(None);
    }
    let plan = plan(&old, to)?;
    let partitioner = old.partitioner();
    let next = next_file(dir);
    if next.exists() {
        // Left by an interrupted run: start over.
        std::fs::remove_file(&next).map_err(io(&next))?;
    }
    let new = EmbeddedLog::open_file(
        dir,
        &next,
        OpenOptions {
            partitions: Some(to),
            partitioner: Some(partitioner),
            create: true,
            cache_bytes: None,
            read_only: false,
        },
    )?;

    // Input: processed records first, then the rest, each old partition in offset order.
    let mut progress = Progress::new("repartition", plan.records + plan.dead_letters);
    let positions: Vec<Offset> = old
        .partitions()
        .iter()
        .map(|p| old.position(p))
        .collect::<Result<_, _>>()?;
    let mut processed = vec![Offset(0); to.get() as usize];
    for pass_processed in [true, false] {
        let mut chunk: Vec<(Partition, NewRecord)> = Vec::with_capacity(CHUNK);
        for p in old.partitions().iter() {
            let position = positions[p.0 as usize];
            let from = if pass_processed { Offset(0) } else { position };
            let mut failed = None;
            old.scan(Role::Events, p, from, |r| {
                if pass_processed && r.offset >= position {
                    return Ok(false);
                }
                let q = route(&r.key, &r.value, partitioner, to);
                if pass_processed {
                    processed[q.index()].0 += 1;
                }
                chunk.push((
                    q,
                    NewRecord {
                        key: r.key,
                        value: r.value,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    },
                ));
                if chunk.len() == CHUNK {
                    progress.add(CHUNK as u64);
                    if let Err(e) = new.append(Role::Events, std::mem::take(&mut chunk)) {
                        failed = Some(e);
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        progress.add(chunk.len() as u64);
        new.append(Role::Events, chunk)?;
    }
    // Dead letters keep their headers (their source partition names the old layout).
    let mut dead = Vec::new();
    for p in old.partitions().iter() {
        old.scan(Role::DeadLetters, p, Offset(0), |r| {
            let q = route(&r.key, &r.value, partitioner, to);
            dead.push((
                q,
                NewRecord {
                    key: r.key,
                    value: r.value,
                    timestamp: r.timestamp,
                    headers: r.headers,
                },
            ));
            Ok(true)
        })?;
    }
    progress.add(dead.len() as u64);
    new.append(Role::DeadLetters, dead)?;
    tracing::info!(
        next = %next.display(),
        "repartition phase: input and dead letters copied to the next generation"
    );

    // State: the processed input replayed in the new layout, which must equal the old state.
    let new = Arc::new(new);
    let logs = Logs::Embedded(new.clone());
    let replay = rebuild::replay(&logs, OffsetSpec::default(), Some(&processed))?;
    drop(logs);
    rebuild::apply(&new, &replay, owner)?;
    progress.finish();
    check(&old, &new)?;
    tracing::info!("repartition phase: the next generation checked; installing it");
    drop(new);
    drop(old);

    // The swap: a hard link keeps the old generation, one rename installs the new one.
    let live = dir.join(DB_FILE);
    let backup = dir.join(backup_name(plan.from));
    if backup.exists() {
        std::fs::remove_file(&backup).map_err(io(&backup))?;
    }
    std::fs::hard_link(&live, &backup).map_err(io(&backup))?;
    std::fs::rename(&next, &live).map_err(io(&live))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(Some(plan))
}

/// Before and after hold the same input per key, in the same order, and the same state.
fn check(old: &EmbeddedLog, new: &EmbeddedLog) -> Result<(), RepartitionError> {
    if sequences(old)? != sequences(new)? {
        return Err(RepartitionError::Check(
            "per-key input sequences differ".into(),
        ));
    }
    let (before, after) = (old.snapshot()?.states, new.snapshot()?.states);
    let differences = rebuild::diff(&after, &before);
    if let Some(d) = differences.first() {
        return Err(RepartitionError::Check(format!(
            "{} reservations differ, first {}",
            differences.len(),
            d.reservation_no
        )));
    }
    let (n_old, n_new) = (
        count(old, Role::DeadLetters)?,
        count(new, Role::DeadLetters)?,
    );
    if n_old != n_new {
        return Err(RepartitionError::Check(format!(
            "{n_old} dead letters before, {n_new} after"
        )));
    }
    Ok(())
}

fn count(log: &EmbeddedLog, role: Role) -> Result<u64, LogError> {
    let mut n = 0;
    for p in log.partitions().iter() {
        n += log
            .start_offset(role, p)?
            .distance_to(log.end_offset(role, p)?);
    }
    Ok(n)
}
