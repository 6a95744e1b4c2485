//! The embedded driver: every partition of a data dir is this process's, each owned by its own
//! thread from start to shutdown, reading its input straight from the log and committing each
//! batch (state records, dead letters, position) in one transaction.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tracing::error;

use super::{Driver, Fetch, Options, Owner, OwnerError, OwnerReport};
use crate::core::changelog::{EpochMarker, Reader};
use crate::core::record::Record;
use crate::core::step::Effects;
use crate::core::{Offset, Partition};
use crate::log::embedded::{EmbeddedLog, LogError};
use crate::log::topics::Role;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::view::Partitions;

/// How long an idle owner sleeps before it looks again; appends and shutdown wake it sooner,
/// this only bounds a missed wake-up.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// One partition of the embedded log, driven for its owner.
struct EmbeddedDriver<'a> {
    log: &'a EmbeddedLog,
    partition: Partition,
    options: &'a Options,
    shutdown: &'a Shutdown,
    lag: IntGauge,
    status: &'a crate::view::PartitionStatus,
}

impl Driver for EmbeddedDriver<'_> {
    type Error = LogError;

    fn restore(&mut self, record: &mut dyn FnMut(&Record)) -> Result<(), LogError> {
        self.log.scan(Role::State, self.partition, Offset(0), |r| {
            record(&r);
            Ok(true)
        })
    }

    fn restore_size(&mut self) -> Option<u64> {
        self.log
            .end_offset(Role::State, self.partition)
            .ok()
            .map(|end| end.0)
    }

    fn begin_epoch(&mut self, reader: &Reader) -> Result<EpochMarker, LogError> {
        // Resuming past the input's end would skip what is appended up to there.
        let end = self.log.end_offset(Role::Events, self.partition)?;
        if reader.resume_offset() > end {
            return Err(LogError::BeyondEnd {
                partition: self.partition.0,
                from: reader.resume_offset().0,
                end: end.0,
            });
        }
        self.log.begin_epoch(
            self.partition,
            &self.options.owner_id,
            reader.highest_epoch(),
        )
    }

    fn fetch(
        &mut self,
        position: Offset,
        records: &mut Vec<Record>,
        wait: bool,
    ) -> Result<Fetch, LogError> {
        if self.shutdown.is_triggered() {
            return Ok(Fetch::Last);
        }
        let seen = self.log.appended().generation();
        self.log.read_into(
            Role::Events,
            self.partition,
            position,
            self.options.batch_size,
            records,
        )?;
        if let Ok(end) = self.log.end_offset(Role::Events, self.partition) {
            self.status.set_input_end(end);
        }
        if !records.is_empty() {
            return Ok(Fetch::More);
        }
        self.lag.set(0);
        if self.options.until_idle {
            return Ok(Fetch::Last);
        }
        if wait {
            self.log.appended().wait(seen, IDLE_WAIT);
        }
        Ok(Fetch::More)
    }

    /// One transaction: durable when it returns (depth 1).
    fn submit(&mut self, effects: &mut Effects, next: Offset) -> Result<(), LogError> {
        let (returned, result) = self
            .log
            .commit(self.partition, std::mem::take(effects), next);
        *effects = returned;
        result
    }

    fn committed(&mut self, position: Offset) {
        if let Ok(end) = self.log.end_offset(Role::Events, self.partition) {
            self.lag.set(position.distance_to(end) as i64);
        }
    }
}

/// What went wrong owning the partitions of a data dir.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    #[error("partition {partition}: {source}")]
    Log {
        partition: Partition,
        source: LogError,
    },
    #[error(
        "partition {partition} owner stopped on an internal error ({message}); where it came \
         from the store, ordo.redb may be damaged: restore it from a .bak, or, where only the \
         state is damaged, rebuild it with `ordo replay --apply`"
    )]
    Panicked {
        partition: Partition,
        message: String,
    },
    #[error("cannot start the owner thread of partition {partition}: {source}")]
    Spawn {
        partition: Partition,
        source: std::io::Error,
    },
}

/// What the owners of a data dir did, summed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub processed: u64,
    pub applied: u64,
    pub restored: u64,
}

/// Owns every partition of `log`, one thread each, until idle (with `until_idle`) or
/// `shutdown`. One failed partition stops the others (after their current batch): the process
/// restarts as a whole and resumes from the store. `shared` is [`Partitions::owned`]: every
/// partition restoring until its owner has restored it.
pub fn run(
    log: &Arc<EmbeddedLog>,
    shared: &Arc<Partitions>,
    metrics: &Arc<Metrics>,
    options: &Options,
    shutdown: &Shutdown,
) -> Result<Summary, OwnersError> {
    let outcomes: Vec<(Partition, Result<OwnerReport, OwnersError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = log
            .partitions()
            .iter()
            .map(|p| {
                let spawned = std::thread::Builder::new()
                    .name(format!("ordo-p{p}"))
                    .spawn_scoped(s, move || {
                        let owner = Owner {
                            partition: p,
                            partitions: log.partitions(),
                            partitioner: log.partitioner(),
                            shared,
                            metrics,
                            batch_size: options.batch_size,
                        };
                        let mut driver = EmbeddedDriver {
                            log,
                            partition: p,
                            options,
                            shutdown,
                            lag: metrics.lag.with_label_values(&[&p.to_string()]),
                            status: shared.status(p),
                        };
                        let result = owner.run(&mut driver);
                        if let Err(e) = &result {
                            error!(partition = p.0, error = %e, "partition owner failed; stopping the others");
                            // The process restarts as a whole: the others finish their batch.
                            shutdown.trigger();
                            log.appended().notify();
                        }
                        result.map_err(|e| match e {
                            OwnerError::Driver(source) => OwnersError::Log { partition: p, source },
                            OwnerError::Panicked(message) => {
                                OwnersError::Panicked { partition: p, message }
                            }
                        })
                    });
                (p, spawned)
            })
            .collect();
        handles
            .into_iter()
            .map(|(p, spawned)| {
                let outcome = match spawned {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        Err(OwnersError::Panicked {
                            partition: p,
                            message: "the owner thread ended in a panic".into(),
                        })
                    }),
                    Err(source) => Err(OwnersError::Spawn {
                        partition: p,
                        source,
                    }),
                };
                if outcome.is_err() {
                    shutdown.trigger();
                    log.appended().notify();
                }
                (p, outcome)
            })
            .collect()
    });
    let mut summary = Summary::default();
    let mut first_error = None;
    for (_, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                summary.processed += r.processed;
                summary.applied += r.applied;
                summary.restored += r.restored;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}
