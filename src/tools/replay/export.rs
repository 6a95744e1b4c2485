//! `ordo export`: records of a topic as NDJSON, kcat-style offsets.

use std::io::Write;

use serde::Serialize;

use super::OffsetSpec;
use crate::core::partitioner::Partition;
use crate::log::embedded::{EmbeddedLog, LogError};
use crate::log::topics::Role;

/// One exported record.
#[derive(Debug, Serialize)]
struct Line<'a> {
    partition: u32,
    offset: u64,
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
    Log(#[from] LogError),
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
    #[error("--partition {partition} does not exist: the data dir has {partitions} partitions")]
    NoPartition { partition: u32, partitions: u32 },
}

/// Writes the records of `role` in `spec`'s range to `out`, partition by partition; at most
/// `count` records in all. Returns how many were written.
pub fn export(
    log: &EmbeddedLog,
    role: Role,
    partition: Option<u32>,
    spec: OffsetSpec,
    count: Option<u64>,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let partitions: Vec<Partition> = match partition {
        Some(p) if p >= log.partitions().get() => {
            return Err(ExportError::NoPartition {
                partition: p,
                partitions: log.partitions().get(),
            });
        }
        Some(p) => vec![Partition(p)],
        None => log.partitions().iter().collect(),
    };
    let mut written = 0u64;
    let mut io_error = None;
    for p in partitions {
        if count.is_some_and(|c| written >= c) {
            break;
        }
        let from = spec.resolve_start(log, role, p)?;
        log.scan(role, p, from, |r| {
            if spec.end_timestamp.is_some_and(|e| r.timestamp >= e)
                || count.is_some_and(|c| written >= c)
            {
                return Ok(false);
            }
            let line = Line {
                partition: p.0,
                offset: r.offset.0,
                timestamp: r.timestamp,
                key: String::from_utf8_lossy(&r.key),
                value: String::from_utf8_lossy(&r.value),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect(),
            };
            let result = serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = result {
                io_error = Some(e);
                return Ok(false);
            }
            written += 1;
            Ok(true)
        })?;
        if let Some(e) = io_error.take() {
            return Err(e.into());
        }
    }
    Ok(written)
}
