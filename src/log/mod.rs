//! The logs ordo reads and writes (SPEC §4): records, offsets, and the backends that carry them.
//!
//! * [`embedded`]: the default, a durable log in a local data directory.
//! * [`kafka`]: Apache Kafka or any Kafka-compatible broker, through rdkafka.

pub mod embedded;
pub mod kafka;

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::partitioner::{Partition, PartitionCount, Partitioner};

/// A record read from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: Partition,
    pub offset: u64,
    /// Epoch milliseconds.
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// A record to append; the log assigns its offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Epoch milliseconds.
    pub timestamp: i64,
    pub headers: Vec<(String, String)>,
}

/// Header names of a dead letter (SPEC §4).
pub mod headers {
    pub const REASON: &str = "ordo.reason";
    pub const SOURCE_PARTITION: &str = "ordo.source.partition";
    pub const SOURCE_OFFSET: &str = "ordo.source.offset";
    pub const ERROR: &str = "ordo.error";
}

/// Milliseconds since the Unix epoch, for record timestamps.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Wakes threads waiting for new records (or for shutdown).
#[derive(Debug, Default)]
pub struct Signal {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl Signal {
    /// The current generation; pass it to [`Signal::wait`].
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cond.notify_all();
    }

    /// Waits until the generation moves past `seen`, or `timeout` passes.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let guard = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self
            .cond
            .wait_timeout_while(guard, timeout, |g| *g == seen)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// An append to the input failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IngestError(pub String);

/// What the gateway needs of a backend: the routing, durable appends to the input topic, and
/// where the input of each partition ends.
pub trait Ingest: Send + Sync {
    /// N.
    fn partitions(&self) -> PartitionCount;
    /// The partitioner of the deployment.
    fn partitioner(&self) -> Partitioner;
    /// Appends one input record durably; returns its offset.
    fn append_event(&self, partition: Partition, record: NewRecord) -> Result<u64, IngestError>;
    /// The offset the next input record of `partition` will get.
    fn input_end(&self, partition: Partition) -> Result<u64, IngestError>;

    /// For a partition this process does not own: its current state read from the changelog
    /// (fencing applied) and the input offset after the last one it reflects. `None` where
    /// every partition is local (the embedded log).
    fn remote_state(&self, _partition: Partition) -> Result<Option<RemoteState>, IngestError> {
        Ok(None)
    }
}

/// A partition's state as read from its changelog.
#[derive(Debug, Default)]
pub struct RemoteState {
    pub records:
        std::collections::BTreeMap<crate::event::ReservationNo, crate::changelog::StateRecord>,
    /// Every input offset below this is reflected.
    pub applied: u64,
}

impl Ingest for embedded::EmbeddedLog {
    fn partitions(&self) -> PartitionCount {
        embedded::EmbeddedLog::partitions(self)
    }

    fn partitioner(&self) -> Partitioner {
        embedded::EmbeddedLog::partitioner(self)
    }

    fn append_event(&self, partition: Partition, record: NewRecord) -> Result<u64, IngestError> {
        self.append(crate::topics::Role::Events, vec![(partition, record)])
            .map(|o| o[0])
            .map_err(|e| IngestError(e.to_string()))
    }

    fn input_end(&self, partition: Partition) -> Result<u64, IngestError> {
        self.end_offset(crate::topics::Role::Events, partition)
            .map_err(|e| IngestError(e.to_string()))
    }
}
