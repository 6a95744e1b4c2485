//! `ordo export`: records of a topic as NDJSON, kcat-style offsets.

use std::io::Write;

use serde::Serialize;

use crate::core::Offset;
use crate::core::partitioner::Partition;
use crate::core::record::Record;
use crate::log::topics::Role;
use crate::log::{Logs, LogsError, OffsetSpec};

/// One exported record.
#[derive(Debug, Serialize)]
struct Line<'a> {
    partition: Partition,
    offset: Offset,
    timestamp: i64,
    key: std::borrow::Cow<'a, str>,
    value: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    headers: serde_json::Map<String, serde_json::Value>,
}

/// What went wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Log(#[from] LogsError),
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
    #[error("--partition {partition} does not exist: the topic has {partitions} partitions")]
    NoPartition { partition: u32, partitions: u32 },
}

/// Writes the records of `role` in `spec`'s range to `out`, partition by partition, each read
/// to the end it has when the export reaches it (an idle topic ends the export; it never waits
/// for more); at most `count` records in all. Returns how many were written.
pub fn export(
    logs: &Logs,
    role: Role,
    staging: bool,
    partition: Option<u32>,
    spec: OffsetSpec,
    count: Option<u64>,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let n = match staging {
        true => logs.staging_partitions(role)?,
        false => logs.topic_partitions(role)?,
    };
    let partitions: Vec<Partition> = match partition {
        Some(p) if p >= n.get() => {
            return Err(ExportError::NoPartition {
                partition: p,
                partitions: n.get(),
            });
        }
        Some(p) => vec![Partition(p)],
        None => n.iter().collect(),
    };
    let mut written = 0u64;
    let mut io_error = None;
    for p in partitions {
        if count.is_some_and(|c| written >= c) {
            break;
        }
        let each = |r: Record| {
            if count.is_some_and(|c| written >= c) {
                return false;
            }
            if let Err(e) = write_line(&mut *out, &r) {
                io_error = Some(e);
                return false;
            }
            written += 1;
            true
        };
        match staging {
            true => logs.scan_staging(role, p, spec, each)?,
            false => logs.scan(role, p, spec, each)?,
        }
        if let Some(e) = io_error.take() {
            return Err(e.into());
        }
    }
    Ok(written)
}

/// Writes one record as an NDJSON line.
fn write_line(out: &mut impl Write, r: &Record) -> std::io::Result<()> {
    let line = Line {
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: String::from_utf8_lossy(&r.key),
        value: String::from_utf8_lossy(&r.value),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect(),
    };
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}
