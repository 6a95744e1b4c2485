//! The gateway's access to the input topic: an append that waits for its acknowledgement,
//! and the partitions' ends from the watermarks.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::config::{Closing, KafkaOptions, QuietEof, REQUEST_TIMEOUT, unreachable_or};
use super::producer::{KafkaProducer, Outgoing};
use crate::core::partitioner::Partitioner;
use crate::core::record::NewRecord;
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::{Appending, Ingest, LogsError};

/// How long an HTTP append waits for its acknowledgement before it answers `503
/// append_failed` (a client retries; the processor applies a repeated event once).
pub const INGEST_WAIT: Duration = Duration::from_secs(10);

/// The gateway's view of Kafka: appends through the producer, ends from the watermarks.
pub struct KafkaIngest {
    pub producer: Arc<KafkaProducer>,
    /// The input topic's name.
    pub events_topic: String,
    pub client: Closing<BaseConsumer<QuietEof>>,
    pub opts: KafkaOptions,
    pub partitions: PartitionCount,
}

impl Ingest for KafkaIngest {
    fn partitions(&self) -> PartitionCount {
        self.partitions
    }

    fn partitioner(&self) -> Partitioner {
        self.opts.partitioner
    }

    /// The acknowledgement is waited for on tokio's blocking pool.
    fn append_event(self: Arc<Self>, partition: Partition, record: NewRecord) -> Appending {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                Ok(self
                    .producer
                    .send(&[Outgoing {
                        topic: &self.events_topic,
                        partition,
                        record,
                    }])
                    .wait_within(INGEST_WAIT)?[0])
            })
            .await?
        })
    }

    fn input_end(&self, partition: Partition) -> Result<Offset, LogsError> {
        let (_, high) = self
            .client
            .fetch_watermarks(
                &self.events_topic,
                super::ids::kafka_partition(partition),
                REQUEST_TIMEOUT,
            )
            .map_err(|e| unreachable_or(&self.opts, e, "fetch watermarks"))?;
        Ok(Offset(high.max(0) as u64))
    }
}
