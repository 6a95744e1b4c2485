//! Appending input: NDJSON files (validated line by line) and generated workloads, each event
//! routed to its contract partition and keyed by its reservation number.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::core::event::{Event, Malformed};
use crate::core::partitioner::{Partition, PartitionCount, Partitioner};
use crate::core::record::NewRecord;
use crate::log::embedded::LogError;
use crate::log::now_millis;
use crate::log::topics::Role;
use crate::log::{Logs, LogsError};

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
    #[error(
        "{path}:{line}: the record is over {limit} bytes; split it, or raise --max-record-bytes \
         (the broker's message.max.bytes must allow it too)"
    )]
    TooLarge {
        path: String,
        line: usize,
        limit: usize,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogsError),
}

impl From<LogError> for ProduceError {
    fn from(e: LogError) -> Self {
        ProduceError::Log(e.into())
    }
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
    pub reason: Invalid,
}

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("the record is over {limit} bytes (--max-record-bytes)")]
    TooLarge { limit: usize },
}

/// The default cap on one input record (`--max-record-bytes`): Kafka's default
/// `message.max.bytes` is about this.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// What an append did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub appended: u64,
    pub skipped: Vec<Skipped>,
}

/// A record ready to append: partition and record.
pub type Routed = (Partition, NewRecord);

/// Routes a valid event. The record's timestamp is the time of the append, never the event's
/// own `ts` (which stays in the value): a broker's time-based retention goes by record
/// timestamps, and deletes at once events whose `ts` is older than `retention.ms` (Apache
/// Kafka does, on the next segment roll).
pub fn route(event: &Event, value: Vec<u8>, n: PartitionCount, partitioner: Partitioner) -> Routed {
    let key = event.reservation_no.as_str();
    (
        partitioner.partition(key, n),
        NewRecord {
            key: key.as_bytes().to_vec(),
            value,
            timestamp: now_millis(),
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

/// Reads an NDJSON file (`-` for stdin) into routed records. Blank lines are skipped; a line
/// over `max_record_bytes` is never held whole (the rest of it is read past, not buffered).
pub fn read_file(
    path: &Path,
    validation: Validation,
    n: PartitionCount,
    partitioner: Partitioner,
    max_record_bytes: usize,
) -> Result<(Vec<Routed>, Vec<Skipped>), ProduceError> {
    let name = display_path(path).display().to_string();
    let mut reader: Box<dyn BufRead> = if path == Path::new("-") {
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
    let mut line = Vec::new();
    let mut line_no = 0;
    loop {
        line.clear();
        let read = read_line(&mut reader, &mut line, max_record_bytes).map_err(|source| {
            ProduceError::Read {
                path: name.clone(),
                source,
            }
        })?;
        let whole = match read {
            Line::End => break,
            Line::Whole => true,
            Line::TooLarge => false,
        };
        line_no += 1;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if whole && line.trim_ascii().is_empty() {
            continue;
        }
        let decoded = if !whole {
            Err(Invalid::TooLarge {
                limit: max_record_bytes,
            })
        } else if validation == Validation::Raw {
            routed.push(route_raw(&line, n, partitioner));
            continue;
        } else {
            Event::decode(&line).map_err(Invalid::from)
        };
        match decoded {
            Ok(event) => routed.push(route(&event, line.clone(), n, partitioner)),
            Err(reason) if validation == Validation::SkipInvalid => {
                if !whole {
                    skip_line(&mut reader).map_err(|source| ProduceError::Read {
                        path: name.clone(),
                        source,
                    })?;
                }
                skipped.push(Skipped {
                    line: line_no,
                    reason,
                });
            }
            Err(Invalid::TooLarge { limit }) => {
                return Err(ProduceError::TooLarge {
                    path: name,
                    line: line_no,
                    limit,
                });
            }
            Err(Invalid::Malformed(error)) => {
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

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// No more input.
    End,
    /// A line (without its `\n`) in the buffer.
    Whole,
    /// A line over the limit: its first `limit + 1` bytes in the buffer, the rest not read yet
    /// (see [`skip_line`]).
    TooLarge,
}

/// Reads one line into `buf`, holding at most `limit + 1` of its bytes.
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<Line> {
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if any { Line::Whole } else { Line::End });
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let room = (limit + 1).saturating_sub(buf.len());
        let take = chunk.len().min(room);
        buf.extend_from_slice(&chunk[..take]);
        if buf.len() > limit {
            reader.consume(take);
            return Ok(Line::TooLarge);
        }
        match newline {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(Line::Whole);
            }
            None => {
                let n = available.len();
                reader.consume(n);
            }
        }
    }
}

/// Reads past the rest of a line, holding at most a chunk of it at a time.
fn skip_line(reader: &mut dyn BufRead) -> std::io::Result<()> {
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        if read_line(reader, &mut chunk, 64 << 10)? != Line::TooLarge {
            return Ok(());
        }
    }
}

/// Validates and appends a file.
pub fn produce_file(
    logs: &Logs,
    path: &Path,
    validation: Validation,
) -> Result<Report, ProduceError> {
    let (records, skipped) = read_file(
        path,
        validation,
        logs.partitions(),
        logs.partitioner(),
        DEFAULT_MAX_RECORD_BYTES,
    )?;
    let appended = logs.append(Role::Events, records)?;
    Ok(Report { appended, skipped })
}

/// Generates and appends `count` events, streamed in chunks.
pub fn produce_generated(logs: &Logs, count: usize, seed: u64) -> Result<Report, ProduceError> {
    let (n, partitioner) = (logs.partitions(), logs.partitioner());
    let records = crate::tools::generate::Generator::new(seed)
        .take(count)
        .map(|e| {
            let value = e.to_json().into_bytes();
            route(&e, value, n, partitioner)
        });
    Ok(Report {
        appended: logs.append(Role::Events, records)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_and_the_rest_of_a_long_line_is_read_past() {
        let input = b"ab\r\n\nabcdefgh\nxyz";
        let mut reader: &[u8] = input;
        let mut buf = Vec::new();
        let mut next = |reader: &mut &[u8]| {
            buf.clear();
            let line = read_line(reader, &mut buf, 4).unwrap();
            (line, String::from_utf8(buf.clone()).unwrap())
        };
        assert_eq!(next(&mut reader), (Line::Whole, "ab\r".into()));
        assert_eq!(next(&mut reader), (Line::Whole, "".into()));
        assert_eq!(next(&mut reader), (Line::TooLarge, "abcde".into()));
        skip_line(&mut reader).unwrap();
        assert_eq!(next(&mut reader), (Line::Whole, "xyz".into()));
        assert_eq!(next(&mut reader), (Line::End, "".into()));
    }
}
