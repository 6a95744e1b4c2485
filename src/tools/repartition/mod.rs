//! `ordo repartition`: change N, keeping every key's order, its state and the dead letters.
//! Two strategies behind one plan:
//!
//! * [`data_dir`]: the embedded log: a new generation built beside the data dir and swapped in
//!   with one rename.
//! * [`kafka`]: a Kafka deployment: grown in place where the broker can add partitions
//!   ([`grow`]: only state moves), else the topics rebuilt through staging copies
//!   ([`staging`]).

pub mod data_dir;
pub mod grow;
pub mod kafka;
pub mod staging;

use crate::core::partitioner::Partitioner;
use crate::core::{Partition, PartitionCount};

/// How a change of N is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The data dir: a new generation built beside it and swapped in with one rename.
    DataDir,
    /// Kafka, growing: partitions are added to the topics, the input and the dead letters stay
    /// where they are, and only the state of the keys that change partition moves.
    InPlace,
    /// Kafka: the topics are copied, deleted and created again with M partitions; `why` says
    /// why not in place.
    Rebuild { why: String },
}

/// What a repartition will do (the dry run) or did.
#[derive(Debug, Clone)]
pub struct Plan {
    pub from: PartitionCount,
    pub to: PartitionCount,
    pub partitioner: Partitioner,
    pub how: How,
    pub records: u64,
    pub unprocessed: u64,
    pub keys: u64,
    pub keys_moving: u64,
    pub per_partition: Vec<u64>,
    pub dead_letters: u64,
    pub state_entries: u64,
    pub bytes: u64,
}

impl Plan {
    /// A plan with nothing counted yet.
    pub fn empty(from: PartitionCount, to: PartitionCount, partitioner: Partitioner) -> Self {
        Plan {
            from,
            to,
            partitioner,
            how: How::DataDir,
            records: 0,
            unprocessed: 0,
            keys: 0,
            keys_moving: 0,
            per_partition: vec![0; to.get() as usize],
            dead_letters: 0,
            state_entries: 0,
            bytes: 0,
        }
    }
}

impl Plan {
    /// Records a rebuild copies, where counted.
    pub fn copied(&self) -> u64 {
        self.records + self.dead_letters + self.state_entries
    }
}

/// The partition of a record under `n`: by its key, or by its value where it has none.
pub(crate) fn route(
    key: &[u8],
    value: &[u8],
    partitioner: Partitioner,
    n: PartitionCount,
) -> Partition {
    if key.is_empty() {
        partitioner.partition(&String::from_utf8_lossy(value), n)
    } else {
        partitioner.partition(&String::from_utf8_lossy(key), n)
    }
}

/// `ORDO_FAIL_POINT=stall@POINT[:SECS]`, for tests: at the named point of a move (`copied`:
/// the staging copy made, nothing deleted yet; `tombstones`: growing, every moved state durable
/// and none tombstoned), log it and stall for SECS seconds (120 by default, for a kill to land).
pub(crate) fn stall_at(point: &str) {
    let Ok(spec) = std::env::var("ORDO_FAIL_POINT") else {
        return;
    };
    let Some(rest) = spec.strip_prefix("stall@") else {
        return;
    };
    let (at, secs) = rest.split_once(':').unwrap_or((rest, "120"));
    if at == point {
        let secs = secs.parse().unwrap_or(120);
        tracing::warn!(
            point,
            secs,
            "fail point ORDO_FAIL_POINT: stalling at {point}"
        );
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
}
