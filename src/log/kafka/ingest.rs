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

    /// One ListOffsets round for every partition (`offsets_for_times` at "latest", which the
    /// broker answers with each partition's end): one request per leader, where asking for
    /// each partition's watermarks took two requests per partition.
    fn input_ends(&self) -> Result<Vec<Offset>, LogsError> {
        use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
        let mut latest = TopicPartitionList::with_capacity(self.partitions.get() as usize);
        for p in self.partitions.iter() {
            latest
                .add_partition_offset(
                    &self.events_topic,
                    super::ids::kafka_partition(p),
                    KafkaOffset::End,
                )
                .expect("the end is a position every partition has");
        }
        let answered = self
            .client
            .offsets_for_times(latest, REQUEST_TIMEOUT)
            .map_err(|e| unreachable_or(&self.opts, e, "list offsets"))?;
        let mut ends = vec![None; self.partitions.get() as usize];
        for elem in answered.elements() {
            elem.error()
                .map_err(|e| unreachable_or(&self.opts, e, "list offsets"))?;
            // An empty partition ends at 0; the broker answers that offset.
            if let (KafkaOffset::Offset(o), Some(slot)) = (
                elem.offset(),
                ends.get_mut(super::ids::partition_of(elem.partition()).index()),
            ) {
                *slot = Some(Offset(o.max(0) as u64));
            }
        }
        let answer = |p: Partition| {
            answered
                .find_partition(&self.events_topic, super::ids::kafka_partition(p))
                .map_or("none".to_owned(), |e| format!("{:?}", e.offset()))
        };
        self.partitions
            .iter()
            .zip(ends)
            .map(|(p, end)| {
                end.ok_or_else(|| {
                    super::config::KafkaLogError::NoEnd {
                        topic: self.events_topic.clone(),
                        partition: p,
                        answer: answer(p),
                    }
                    .into()
                })
            })
            .collect()
    }
}
