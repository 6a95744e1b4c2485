//! The logs ordo reads and writes (contract §4) and the backends that carry them.
//!
//! * [`topics`]: the topic definitions of `topics/`, the single source for every backend.
//! * [`embedded`]: the default, a durable log in a local data directory.
//! * [`kafka`]: Apache Kafka or any Kafka-compatible broker, through rdkafka.
//! * [`logs`]: the port every command and tool uses: [`Deployment`] resolved once from the
//!   flags, [`Logs`] open on either backend.
//! * [`offsets`]: kcat-style ranges.
//!
//! Both carry the core's records ([`crate::core::record`]); this module adds what the HTTP
//! gateway needs of either ([`Ingest`]).

pub mod embedded;
pub mod kafka;
pub mod logs;
pub mod offsets;
pub mod topics;

pub use embedded::{LogError, OpenOptions, opened as opened_store};
pub use kafka::config::wait_for_closes;
pub use kafka::{
    DEFAULT_GROUP, GroupProtocol, KafkaLogError, KafkaOptions, apply_topics, check_topics,
    settle_partitioner,
};
pub use logs::{Deployment, Logs, LogsError};
pub use offsets::{OffsetSpec, Start};

use std::sync::Arc;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::core::partitioner::Partitioner;
use crate::core::record::NewRecord;
use crate::core::{Offset, Partition, PartitionCount};

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

/// A durable append to the input topic under way: its offset once durable.
pub type Appending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Offset, LogsError>> + Send>>;

/// What the gateway needs of a backend: the routing, durable appends to the input topic, and
/// where the input of each partition ends.
pub trait Ingest: Send + Sync + 'static {
    /// N.
    fn partitions(&self) -> PartitionCount;
    /// The partitioner of the deployment.
    fn partitioner(&self) -> Partitioner;
    /// Appends one input record durably, called from a tokio runtime; resolves to its offset.
    fn append_event(self: Arc<Self>, partition: Partition, record: NewRecord) -> Appending;
    /// For every partition, in order, the offset its next input record will get.
    fn input_ends(&self) -> Result<Vec<Offset>, LogsError>;
}

impl Ingest for embedded::EmbeddedLog {
    fn partitions(&self) -> PartitionCount {
        embedded::EmbeddedLog::partitions(self)
    }

    fn partitioner(&self) -> Partitioner {
        embedded::EmbeddedLog::partitioner(self)
    }

    /// Joins the next group commit without holding a thread while it waits: a request finding
    /// a group under way (another request's, or a partition's batch) is written with it; one
    /// finding none leads it on tokio's blocking pool.
    fn append_event(self: Arc<Self>, partition: Partition, record: NewRecord) -> Appending {
        if append_fails() {
            let full = std::io::Error::from_raw_os_error(27); // EFBIG, as a full file answers
            let failed = embedded::LogError::Store {
                op: "append (ORDO_FAIL_POINT)",
                source: Box::new(redb::Error::Io(full)),
            };
            return Box::pin(std::future::ready(Err(failed.into())));
        }
        let appending = self.append_async(topics::Role::Events, vec![(partition, record)]);
        Box::pin(async move { Ok(appending.await?[0]) })
    }

    fn input_ends(&self) -> Result<Vec<Offset>, LogsError> {
        self.partitions()
            .iter()
            .map(|p| Ok(self.end_offset(topics::Role::Events, p)?))
            .collect()
    }
}

/// A fault to inject, for the test of a refused HTTP append (a real full disk fails the
/// owners' commits as well, and which write meets it first is chance):
/// `ORDO_FAIL_POINT=append@K` fails the K-th append through the gateway and every later one.
fn append_fails() -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static FROM: OnceLock<Option<u64>> = OnceLock::new();
    static APPENDS: AtomicU64 = AtomicU64::new(0);
    let Some(from) = *FROM.get_or_init(|| {
        std::env::var("ORDO_FAIL_POINT")
            .ok()?
            .strip_prefix("append@")?
            .parse()
            .ok()
    }) else {
        return false;
    };
    APPENDS.fetch_add(1, Ordering::Relaxed) + 1 >= from
}
