//! The logs ordo reads and writes (SPEC §4): records, offsets, and the backends that carry them.
//!
//! * [`embedded`]: the default, a durable log in a local data directory.

pub mod embedded;

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::partitioner::Partition;

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
