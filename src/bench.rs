//! `ordo bench`: end-to-end measurements on this machine (the per-thread core loop is a
//! criterion benchmark, `cargo bench --bench core`).
//!
//! * `e2e`: generate a file, `produce` it, then `run --until-idle`: events/s of each step.
//! * `restore`: write N state records to a changelog, restore them as `ordo run` does (one
//!   thread per partition), and report the time and the process's resident memory.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::changelog::{Epoch, StateRecord, Stored};
use crate::event::ReservationNo;
use crate::log::NewRecord;
use crate::log::embedded::{EmbeddedLog, LogError, OpenOptions};
use crate::metrics::Metrics;
use crate::partitioner::{Partition, PartitionCount, Partitioner};
use crate::processor::{self, RunError, RunOptions};
use crate::produce::{self, ProduceError, Validation};
use crate::state_machine::{Entity, Status};
use crate::topics::Role;
use crate::worker::{self, View};

/// What went wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("benchmark i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Figures of the end-to-end benchmark.
#[derive(Debug, Clone)]
pub struct E2e {
    pub events: usize,
    pub partitions: u32,
    pub produce_secs: f64,
    pub run_secs: f64,
}

/// Generates `events` into an NDJSON file, produces it and runs until idle, in a temp dir.
pub fn e2e(events: usize, n: PartitionCount, batch_size: usize) -> Result<E2e, BenchError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.ndjson");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for e in crate::generate::Generator::new(1).take(events) {
            w.write_all(e.to_json().as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let data = dir.path().join("data");
    let log = Arc::new(EmbeddedLog::open(
        &data,
        OpenOptions {
            partitions: Some(n),
            create: true,
            ..OpenOptions::default()
        },
    )?);
    let t0 = Instant::now();
    produce::produce_file(&log, &file, Validation::Strict)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    let summary = processor::run(
        log,
        RunOptions {
            http: None,
            until_idle: true,
            batch_size,
        },
        Arc::new(Metrics::fresh()),
        Arc::new(AtomicBool::new(false)),
    )?;
    Ok(E2e {
        events,
        partitions: n.get(),
        produce_secs,
        run_secs: summary.elapsed.as_secs_f64(),
    })
}

/// Figures of the restore benchmark.
#[derive(Debug, Clone)]
pub struct Restore {
    pub entries: u64,
    pub partitions: u32,
    pub secs: f64,
    pub rss_before: u64,
    pub rss_after: u64,
}

/// Writes `entries` state records over `n` changelog partitions, then restores them.
pub fn restore(entries: u64, n: PartitionCount) -> Result<Restore, BenchError> {
    let dir = tempfile::tempdir()?;
    let log = EmbeddedLog::open(
        dir.path(),
        OpenOptions {
            partitions: Some(n),
            create: true,
            ..OpenOptions::default()
        },
    )?;
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..entries {
        let no = ReservationNo(compact_str::format_compact!("R-{i:09}"));
        let p = Partitioner::AbsHashModN.partition(no.as_str(), n);
        let stored = Stored {
            entity: Entity {
                user_id: compact_str::format_compact!("user-{}", i % 50_000),
                status: Status::Associated,
                target: Some(compact_str::format_compact!("device-{i}")),
                version: 2,
                applied_event_ids: Box::new([
                    compact_str::format_compact!("evt-{}", 2 * i),
                    compact_str::format_compact!("evt-{}", 2 * i + 1),
                ]),
            },
            source_offset: i,
            epoch: Epoch(1),
        };
        let value = StateRecord::new(no.clone(), p, &stored).to_json();
        batch.push((
            p,
            NewRecord {
                key: no.as_str().as_bytes().to_vec(),
                value,
                timestamp: 0,
                headers: Vec::new(),
            },
        ));
        if batch.len() == 50_000 {
            log.append(Role::State, std::mem::take(&mut batch))?;
        }
    }
    log.append(Role::State, batch)?;
    // Reopen, as a restarting `ordo run` would: the writer's cache is not part of the figure.
    drop(log);
    let log = EmbeddedLog::open(dir.path(), OpenOptions::default())?;
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    let views: Vec<Arc<View>> = n.iter().map(|_| Arc::new(View::new())).collect();
    let users = worker::UserIndex::new();
    std::thread::scope(|s| -> Result<(), LogError> {
        let handles: Vec<_> = n
            .iter()
            .map(|p: Partition| {
                let (log, view, users) = (&log, views[p.0 as usize].clone(), &users);
                s.spawn(move || worker::restore(log, p, &view, users).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().expect("restore thread")?;
        }
        Ok(())
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let restored: usize = views.iter().map(|v| v.len()).sum();
    assert_eq!(restored as u64, entries, "every entry restored");
    Ok(Restore {
        entries,
        partitions: n.get(),
        secs,
        rss_before,
        rss_after: rss_bytes(),
    })
}

/// Resident set size of this process, from `/proc/self/status` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
