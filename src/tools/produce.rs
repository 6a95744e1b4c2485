//! Appending input: NDJSON files (validated line by line) and generated workloads, each event
//! routed to its SPEC partition and keyed by its reservation number.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::core::event::{Event, Malformed};
use crate::core::partitioner::{Partition, PartitionCount, Partitioner};
use crate::core::record::NewRecord;
use crate::log::embedded::{EmbeddedLog, LogError};
use crate::log::now_millis;
use crate::log::topics::Role;

/// Records per append transaction.
const CHUNK: usize = 50_000;

/// What went wrong while producing.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(
        "{path}:{line}: {error}; fix the line, or pass --skip-invalid to append the valid lines only"
    )]
    BadLine {
        path: String,
        line: usize,
        error: Malformed,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// How lines of a file are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// Any invalid line fails the whole file; nothing is appended.
    #[default]
    Strict,
    /// Invalid lines are reported and left out.
    SkipInvalid,
    /// Lines are appended as they are, so bad records reach the dead-letter path.
    Raw,
}

/// A line left out by [`Validation::SkipInvalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub error: Malformed,
}

/// What an append did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub appended: u64,
    pub skipped: Vec<Skipped>,
}

/// A record ready to append: partition and record.
pub type Routed = (Partition, NewRecord);

/// Routes a valid event.
pub fn route(event: &Event, value: Vec<u8>, n: PartitionCount, partitioner: Partitioner) -> Routed {
    let key = event.reservation_no.as_str();
    (
        partitioner.partition(key, n),
        NewRecord {
            key: key.as_bytes().to_vec(),
            value,
            timestamp: event.ts.unwrap_or_else(now_millis),
            headers: Vec::new(),
        },
    )
}

/// Routes an unvalidated line (`--raw`): by its reservation number when it decodes, else by
/// the line itself, with no key.
pub fn route_raw(line: &[u8], n: PartitionCount, partitioner: Partitioner) -> Routed {
    match Event::decode(line) {
        Ok(e) => route(&e, line.to_vec(), n, partitioner),
        Err(_) => (
            partitioner.partition(&String::from_utf8_lossy(line), n),
            NewRecord {
                key: Vec::new(),
                value: line.to_vec(),
                timestamp: now_millis(),
                headers: Vec::new(),
            },
        ),
    }
}

/// Reads an NDJSON file (`-` for stdin) into routed records. Blank lines are skipped.
pub fn read_file(
    path: &Path,
    validation: Validation,
    n: PartitionCount,
    partitioner: Partitioner,
) -> Result<(Vec<Routed>, Vec<Skipped>), ProduceError> {
    let name = display_path(path).display().to_string();
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path).map_err(|source| ProduceError::Read {
            path: name.clone(),
            source,
        })?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let mut routed = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let mut line = line.map_err(|source| ProduceError::Read {
            path: name.clone(),
            source,
        })?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        if validation == Validation::Raw {
            routed.push(route_raw(&line, n, partitioner));
            continue;
        }
        match Event::decode(&line) {
            Ok(event) => routed.push(route(&event, line, n, partitioner)),
            Err(error) if validation == Validation::SkipInvalid => {
                skipped.push(Skipped {
                    line: line_no,
                    error,
                });
            }
            Err(error) => {
                return Err(ProduceError::BadLine {
                    path: name,
                    line: line_no,
                    error,
                });
            }
        }
    }
    Ok((routed, skipped))
}

/// Appends routed records to the input topic, in chunks.
pub fn append(log: &EmbeddedLog, records: Vec<Routed>) -> Result<u64, ProduceError> {
    let total = records.len() as u64;
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        log.append(Role::Events, records.by_ref().take(CHUNK).collect())?;
    }
    Ok(total)
}

/// Validates and appends a file.
pub fn produce_file(
    log: &EmbeddedLog,
    path: &Path,
    validation: Validation,
) -> Result<Report, ProduceError> {
    let (records, skipped) = read_file(path, validation, log.partitions(), log.partitioner())?;
    let appended = append(log, records)?;
    Ok(Report { appended, skipped })
}

/// Generates and appends `count` events.
pub fn produce_generated(
    log: &EmbeddedLog,
    count: usize,
    seed: u64,
) -> Result<Report, ProduceError> {
    let (n, partitioner) = (log.partitions(), log.partitioner());
    let mut appended = 0;
    let mut generator = crate::tools::generate::Generator::new(seed);
    let mut remaining = count;
    while remaining > 0 {
        let take = remaining.min(CHUNK);
        let records: Vec<Routed> = (&mut generator)
            .take(take)
            .map(|e| {
                let value = e.to_json().into_bytes();
                route(&e, value, n, partitioner)
            })
            .collect();
        appended += append(log, records)?;
        remaining -= take;
    }
    Ok(Report {
        appended,
        skipped: Vec::new(),
    })
}

/// The path shown for stdin.
pub fn display_path(path: &Path) -> PathBuf {
    if path == Path::new("-") {
        PathBuf::from("<stdin>")
    } else {
        path.to_path_buf()
    }
}
