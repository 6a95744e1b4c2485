//! Replay tooling: read ranges of a log (`ordo export`), run the core over history again
//! (`ordo replay`, with `--diff` against the live changelog), and change N (`ordo repartition`).
//!
//! * [`export`]: records as NDJSON.
//! * [`rebuild`]: deterministic replays, diffs and `--apply`.
//! * [`repartition`]: N → M with per-key order kept, crash-safe.
//! * [`kafka`]: `--apply` and `repartition` on a Kafka deployment.

pub mod export;
pub mod kafka;
pub mod rebuild;
pub mod repartition;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::log::Logs;
pub use crate::log::offsets::{OffsetSpec, Start};

/// `replay --apply`: replays the whole input and makes the result the live changelog. Two
/// strategies: on the embedded log one transaction per partition swaps its changelog; on
/// Kafka new epochs, the replayed records and tombstones are written (refused while a member
/// holds a partition, unless `assume_stopped`).
pub fn apply(
    logs: &Logs,
    owner: &str,
    assume_stopped: bool,
) -> Result<kafka::Applied, kafka::KafkaToolError> {
    match logs {
        Logs::Embedded(log) => {
            let replay = rebuild::replay(logs, OffsetSpec::default(), None)?;
            rebuild::apply(log, &replay, owner).map_err(crate::log::LogsError::from)?;
            Ok(kafka::Applied {
                replay,
                deleted: None,
                epochs: Vec::new(),
            })
        }
        Logs::Kafka { options, n } => kafka::apply_replay(options, *n, owner, assume_stopped),
    }
}

/// Progress of a long run on stderr: a rewritten line on a terminal, a line every few seconds
/// otherwise.
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    last: Instant,
    tty: bool,
}

impl Progress {
    /// Progress over `total` units of `what` (0: not known).
    pub fn new(what: &'static str, total: u64) -> Self {
        Progress {
            what,
            total,
            done: 0,
            last: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Counts `n` more units done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        if self.total == 0 {
            // A total not known up front: the count alone.
            match self.tty {
                true => eprint!("\r{} {} records", self.what, self.done),
                false => eprintln!("ordo: {}: {} records", self.what, self.done),
            }
            return;
        }
        let pct = self.done as f64 * 100.0 / self.total as f64;
        if self.tty {
            let filled = (pct / 5.0) as usize;
            eprint!(
                "\r{} [{}{}] {}/{} ({pct:.0}%)",
                self.what,
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20)),
                self.done,
                self.total
            );
        } else {
            eprintln!(
                "ordo: {}: {}/{} ({pct:.0}%)",
                self.what, self.done, self.total
            );
        }
    }

    /// Ends the progress display.
    pub fn finish(&self) {
        if self.tty {
            self.print();
            eprintln!();
        }
    }
}
