//! `ordo bench`: end-to-end measurements on this machine (the per-thread core loop is a
//! criterion benchmark, `cargo bench --bench core`).
//!
//! * `e2e`: generate a file, `produce` it, then `run --until-idle`: events/s of each step.
//! * `restore`: write N state records to a changelog, restore them as `ordo run` does (one
//!   thread per partition), and report the time and resident memory: in this process, and in
//!   a fresh `ordo run --until-idle` on the same data dir (what a restarting member holds).
//! * [`gateway`], [`kafka`], [`latency`], [`members`], [`idle`]: the HTTP gateway, Kafka next to
//!   the raw pipe and a peer, end-to-end latency, several members, idle partitions.

pub mod gateway;
pub mod idle;
pub mod kafka;
pub mod latency;
pub mod members;
pub mod peer;
pub mod process;

use std::sync::Arc;
use std::time::Instant;

use crate::app::{self, RunError, RunOptions};
use crate::core::changelog::{StateRecord, Stored};
use crate::core::partitioner::Partitioner;
use crate::core::record::NewRecord;
use crate::core::state_machine::{Entity, Status};
use crate::core::{Epoch, PartitionCount, ReservationNo};
use crate::log::Logs;
use crate::log::embedded::{EmbeddedLog, LogError, OpenOptions};
use crate::log::topics::Role;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::tools::produce::{self, ProduceError, Validation};

/// What went wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Kafka(#[from] crate::log::kafka::KafkaLogError),
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
        for e in crate::tools::generate::Generator::new(1).take(events) {
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
    produce::produce_file(&Logs::Embedded(log.clone()), &file, Validation::Strict)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    let summary = app::run(
        Logs::Embedded(log),
        RunOptions {
            http: None,
            until_idle: true,
            batch_size,
            advertise: None,
            guarantee: Default::default(),
            token: None,
        },
        Arc::new(Metrics::fresh()),
        Shutdown::new(),
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
    /// A fresh `ordo run --until-idle --no-http` on the same data dir, where the `ordo` binary
    /// was given: it restores every partition, takes an epoch and exits.
    pub fresh: Option<process::Measured>,
}

/// Writes `entries` state records over `n` changelog partitions, each the effect of an input
/// record of its partition (an owner refuses a changelog that claims input past the input's
/// end), then restores them in this process and, given the `ordo` binary, in a fresh one.
pub fn restore(
    entries: u64,
    n: PartitionCount,
    ordo: Option<&std::path::Path>,
) -> Result<Restore, BenchError> {
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
    let mut input = Vec::with_capacity(50_000);
    let mut next = vec![0u64; n.get() as usize];
    for i in 0..entries {
        let no = ReservationNo(compact_str::format_compact!("R-{i:09}"));
        let p = Partitioner::AbsHashModN.partition(no.as_str(), n);
        let source = next[p.0 as usize];
        next[p.0 as usize] += 1;
        input.push((
            p,
            NewRecord {
                key: no.as_str().as_bytes().to_vec(),
                value: Vec::new(),
                timestamp: 0,
                headers: Vec::new(),
            },
        ));
        let stored = Stored {
            entity: Entity::new(
                &format!("user-{}", i % 50_000),
                Status::Associated,
                Some(&format!("device-{i}")),
                2,
                [
                    format!("evt-{}", 2 * i).as_str(),
                    &format!("evt-{}", 2 * i + 1),
                ],
            ),
            source_offset: crate::core::Offset(source),
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
            log.append(Role::Events, std::mem::take(&mut input))?;
            log.append(Role::State, std::mem::take(&mut batch))?;
        }
    }
    log.append(Role::Events, input)?;
    log.append(Role::State, batch)?;
    // Reopen, as a restarting `ordo run` would: the writer's cache is not part of the figure.
    drop(log);
    let log = EmbeddedLog::open(dir.path(), OpenOptions::default())?;
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    // The owners' own path: restore every partition (one thread each), take an epoch, and
    // stop at once (no input).
    let log = Arc::new(log);
    let shared = Arc::new(crate::view::Partitions::owned(n));
    crate::owner::embedded::run(
        &log,
        &shared,
        &Arc::new(Metrics::fresh()),
        &crate::owner::Options {
            until_idle: true,
            ..Default::default()
        },
        &Shutdown::new(),
    )
    .map_err(RunError::from)?;
    let secs = t0.elapsed().as_secs_f64();
    let restored: usize = shared.views.iter().map(|v| v.len()).sum();
    assert_eq!(restored as u64, entries, "every entry restored");
    let rss_after = rss_bytes();
    drop(shared);
    drop(log);
    // What a restarting member holds, without this process's history of writing the data.
    let fresh = match ordo {
        Some(ordo) => {
            let mut cmd = std::process::Command::new(ordo);
            cmd.args([
                "--log",
                "warn",
                "run",
                "--until-idle",
                "--no-http",
                "--data-dir",
            ])
            .arg(dir.path());
            Some(process::measure("ordo run --until-idle", cmd)?)
        }
        None => None,
    };
    Ok(Restore {
        entries,
        partitions: n.get(),
        secs,
        rss_before,
        rss_after,
        fresh,
    })
}

/// Resident set size of this process, from `/proc/self/status` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    process::status_bytes("self", "VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restore benchmark restores every entry it wrote (an owner that refused its
    /// changelog would make it an error).
    #[test]
    fn the_restore_benchmark_restores_every_entry() {
        let r = restore(3_000, PartitionCount::new(3).unwrap(), None).expect("the benchmark runs");
        assert_eq!((r.entries, r.partitions), (3_000, 3));
        assert!(r.rss_after > 0);
    }
}
