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
    /// The state records and dead letters the run wrote.
    pub written: u64,
    /// The baseline: the store alone writing those same records, in the same batches (one
    /// thread per partition committing `batch_size` input records' effects at a time through
    /// the same group commit), with no reading, decoding or applying. Seconds.
    pub store_secs: f64,
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
        Logs::Embedded(log.clone()),
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
    let run_secs = summary.elapsed.as_secs_f64();
    let (written, store_secs) = store_baseline(&log, &dir.path().join("baseline"), batch_size)?;
    Ok(E2e {
        events,
        partitions: n.get(),
        produce_secs,
        run_secs,
        written,
        store_secs,
    })
}

/// Writes what `run` left in the changelog and the dead letters of each partition into a
/// fresh store at `dir`, as its owners committed it: one thread per partition, each commit the
/// effects of `batch_size` input records with their position. Returns the records written and
/// the seconds it took.
fn store_baseline(
    run: &EmbeddedLog,
    dir: &std::path::Path,
    batch_size: usize,
) -> Result<(u64, f64), BenchError> {
    use crate::core::step::Effects;
    let n = run.partitions();
    // Each partition's effects, grouped by the input offset that caused them.
    let mut batches: Vec<Vec<(crate::core::Offset, Effects)>> = Vec::new();
    let mut written = 0u64;
    for p in n.iter() {
        let mut by_source: std::collections::BTreeMap<u64, Effects> = Default::default();
        run.scan(Role::State, p, crate::core::Offset(0), |r| {
            let source = crate::core::changelog::Entry::decode(&r.key, &r.value)
                .ok()
                .and_then(|e| match e {
                    crate::core::changelog::Entry::State(s) => Some(s.source_offset.0),
                    _ => None,
                });
            if let Some(source) = source {
                by_source
                    .entry(source / batch_size as u64)
                    .or_default()
                    .state
                    .push((r.key, r.value));
                written += 1;
            }
            Ok(true)
        })?;
        run.scan(Role::DeadLetters, p, crate::core::Offset(0), |r| {
            let source: u64 = r
                .header(crate::core::record::headers::SOURCE_OFFSET)
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            by_source
                .entry(source / batch_size as u64)
                .or_default()
                .dead_letters
                .push(NewRecord {
                    key: r.key,
                    value: r.value,
                    timestamp: r.timestamp,
                    headers: r.headers,
                });
            written += 1;
            Ok(true)
        })?;
        batches.push(
            by_source
                .into_iter()
                .map(|(b, e)| (crate::core::Offset((b + 1) * batch_size as u64), e))
                .collect(),
        );
    }
    let store = EmbeddedLog::open(
        dir,
        OpenOptions {
            partitions: Some(n),
            create: true,
            ..OpenOptions::default()
        },
    )?;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let store = &store;
        let threads: Vec<_> = n
            .iter()
            .zip(batches)
            .map(|(p, batches)| {
                s.spawn(move || {
                    for (next, effects) in batches {
                        store.commit(p, effects, next).1?;
                    }
                    Ok::<_, LogError>(())
                })
            })
            .collect();
        threads
            .into_iter()
            .try_for_each(|t| t.join().expect("baseline writer thread"))
    })?;
    Ok((written, t0.elapsed().as_secs_f64()))
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

    /// The store baseline of `bench e2e` writes exactly what the run wrote, partition by
    /// partition and in order: every state record and every dead letter.
    #[test]
    fn the_store_baseline_writes_what_the_run_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let n = PartitionCount::new(2).unwrap();
        let log = Arc::new(
            EmbeddedLog::open(
                &dir.path().join("run"),
                OpenOptions {
                    partitions: Some(n),
                    create: true,
                    ..OpenOptions::default()
                },
            )
            .unwrap(),
        );
        let file = dir.path().join("events.ndjson");
        let mut text = String::new();
        for e in crate::tools::generate::Generator::new(7).take(3_000) {
            text.push_str(&e.to_json());
            text.push('\n');
        }
        text.push_str(
            "{\"type\":\"refund\",\"event_id\":\"x\",\"reservation_no\":\"R\",\"user_id\":\"u\"}\n",
        );
        std::fs::write(&file, text).unwrap();
        produce::produce_file(&Logs::Embedded(log.clone()), &file, Validation::Raw).unwrap();
        app::run(
            Logs::Embedded(log.clone()),
            RunOptions {
                http: None,
                until_idle: true,
                batch_size: 64,
                advertise: None,
                guarantee: Default::default(),
                token: None,
            },
            Arc::new(Metrics::fresh()),
            Shutdown::new(),
        )
        .unwrap();
        let (written, _) = store_baseline(&log, &dir.path().join("baseline"), 64).unwrap();
        let baseline =
            EmbeddedLog::open(&dir.path().join("baseline"), OpenOptions::default()).unwrap();
        let contents = |l: &EmbeddedLog, role| {
            n.iter()
                .flat_map(|p| l.read(role, p, crate::core::Offset(0), usize::MAX).unwrap())
                .map(|r| (r.partition, r.key, r.value))
                .collect::<Vec<_>>()
        };
        let state = contents(&log, Role::State);
        let dead = contents(&log, Role::DeadLetters);
        // The run's changelog also holds each owner's epoch marker, which the baseline does not
        // write.
        let state: Vec<_> = state
            .into_iter()
            .filter(|(_, k, _)| {
                !k.starts_with(crate::core::changelog::MARKER_KEY_PREFIX.as_bytes())
            })
            .collect();
        assert!(!dead.is_empty(), "the refund is dead-lettered");
        assert_eq!(written as usize, state.len() + dead.len());
        assert_eq!(contents(&baseline, Role::State), state);
        assert_eq!(contents(&baseline, Role::DeadLetters), dead);
    }
}
