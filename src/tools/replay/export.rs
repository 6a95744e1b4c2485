//! `ordo export`: records of a topic as NDJSON, kcat-style offsets.

use std::io::Write;

use serde::Serialize;

use super::{OffsetSpec, Start};
use crate::core::Offset;
use crate::core::partitioner::Partition;
use crate::core::record::Record;
use crate::log::embedded::{EmbeddedLog, LogError};
use crate::log::kafka::{KafkaLogError, KafkaOptions, PartitionReader, partition_count};
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
    #[error(transparent)]
    Kafka(#[from] KafkaLogError),
    #[error("--partition {partition} does not exist: the topic has {partitions} partitions")]
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
            let result = write_line(&mut *out, &r);
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

/// Writes one record as an NDJSON line.
fn write_line(out: &mut impl Write, r: &Record) -> std::io::Result<()> {
    let line = Line {
        partition: r.partition.0,
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
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// `ordo export --brokers`: the records of `topic` in `spec`'s range, partition by partition,
/// each read to the end it has when the export reaches it (an idle topic ends the export; it
/// never waits for more). Returns how many records were written.
pub fn export_kafka(
    opts: &KafkaOptions,
    topic: &str,
    partition: Option<u32>,
    spec: OffsetSpec,
    count: Option<u64>,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let client = opts.metadata_client()?;
    let n = partition_count(&client, opts, topic)?.ok_or_else(|| KafkaLogError::MissingTopic {
        topic: topic.to_owned(),
    })?;
    let partitions: Vec<u32> = match partition {
        Some(p) if p >= n => {
            return Err(ExportError::NoPartition {
                partition: p,
                partitions: n,
            });
        }
        Some(p) => vec![p],
        None => (0..n).collect(),
    };
    let mut written = 0u64;
    let mut io_error = None;
    for p in partitions {
        if count.is_some_and(|c| written >= c) {
            break;
        }
        scan_kafka(opts, topic, Partition(p), spec, |r| {
            if count.is_some_and(|c| written >= c) {
                return false;
            }
            if let Err(e) = write_line(out, &r) {
                io_error = Some(e);
                return false;
            }
            written += 1;
            true
        })?;
        if let Some(e) = io_error.take() {
            return Err(e.into());
        }
    }
    Ok(written)
}

/// How long a partition may give nothing, short of its end, before a scan gives up.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Calls `f` on each record of `topic`/`partition` in `spec`'s range, in offset order, until
/// the partition's end as of now or until `f` returns false. The broker's watermarks are not
/// trusted for the range (some Kafka-compatible brokers report them wrong): `-<n>` and
/// `s@<ms>` are resolved from the records themselves.
pub fn scan_kafka(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    spec: OffsetSpec,
    mut f: impl FnMut(Record) -> bool,
) -> Result<(), KafkaLogError> {
    let from = match spec.start {
        Start::End => return Ok(()),
        Start::Offset(o) => Offset(o),
        _ => Offset(0),
    };
    let mut reader = PartitionReader::new(opts, topic, partition, from)?;
    // `-<n>`: the last n records seen; `s@<ms>`: whether the first one at or after ms came.
    let mut last = std::collections::VecDeque::new();
    let mut started = !matches!(spec.start, Start::Timestamp(_));
    let mut batch = Vec::new();
    let mut heard = std::time::Instant::now();
    loop {
        batch.clear();
        let at_end = reader.fetch(1024, std::time::Duration::from_millis(100), &mut batch)?;
        if !batch.is_empty() {
            heard = std::time::Instant::now();
        }
        for r in batch.drain(..) {
            if spec.end_timestamp.is_some_and(|e| r.timestamp >= e) {
                return Ok(());
            }
            match spec.start {
                Start::Timestamp(ms) if !started => {
                    if r.timestamp < ms {
                        continue;
                    }
                    started = true;
                }
                Start::FromEnd(k) => {
                    last.push_back(r);
                    if last.len() as u64 > k {
                        last.pop_front();
                    }
                    continue;
                }
                _ => {}
            }
            if !f(r) {
                return Ok(());
            }
        }
        if at_end {
            break;
        }
        if heard.elapsed() > STALL {
            return Err(KafkaLogError::Stalled {
                topic: topic.to_owned(),
                partition: partition.0,
                secs: STALL.as_secs(),
            });
        }
    }
    for r in last {
        if !f(r) {
            break;
        }
    }
    Ok(())
}
