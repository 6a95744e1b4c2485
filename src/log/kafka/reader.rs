//! Reading partitions to their end (restore, `ordo state`, replay, the benchmark's raw
//! consumer), and the gateway's access to the input topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use super::config::{
    KafkaLogError, KafkaOptions, QuietEof, REQUEST_TIMEOUT, kafka, unreachable_or,
};
use super::producer::{KafkaProducer, Outgoing};
use crate::core::changelog::{Reader, Snapshot};
use crate::core::partitioner::Partitioner;
use crate::core::record::{NewRecord, Record};
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::topics::{self, Role};
use crate::log::{Ingest, IngestError, RemoteState};

/// Reads `topic`/`partition` from the beginning to its end, calling `f` on each record.
///
/// The end is the partition-EOF event, not the high watermark fetched up front: some
/// Kafka-compatible brokers (tansu 0.6) report the watermark of the last batch's base offset,
/// which ends the read early when batches hold several records.
pub fn read_to_end(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    mut f: impl FnMut(Record),
) -> Result<(), KafkaLogError> {
    let mut config = opts.reader_config();
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer<QuietEof> = config
        .create_with_context(QuietEof)
        .map_err(kafka("create reader"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition.0 as i32, KafkaOffset::Beginning)
        .map_err(kafka("assign"))?;
    consumer.assign(&tpl).map_err(kafka("assign"))?;
    let stall = Duration::from_secs(60);
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                f(to_record(&m));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => return Err(unreachable_or(opts, e, "read")),
            None if last_progress.elapsed() > stall => {
                return Err(KafkaLogError::Stalled {
                    topic: topic.to_owned(),
                    partition: partition.0,
                    secs: stall.as_secs(),
                });
            }
            None => {}
        }
    }
}

/// Reads `topic`/`partition` from the beginning and follows it, calling `f` on each record,
/// until `stop` says so (checked at least every 100 ms).
pub fn tail(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    mut f: impl FnMut(Record),
    stop: impl Fn() -> bool,
) -> Result<(), KafkaLogError> {
    let consumer: BaseConsumer<QuietEof> = opts
        .reader_config()
        .create_with_context(QuietEof)
        .map_err(kafka("create reader"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition.0 as i32, KafkaOffset::Beginning)
        .map_err(kafka("assign"))?;
    consumer.assign(&tpl).map_err(kafka("assign"))?;
    while !stop() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => f(to_record(&m)),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            // Transient: librdkafka reconnects by itself.
            Some(Err(e)) => tracing::debug!(error = %e, topic, "follow"),
        }
    }
    Ok(())
}

/// Reads every partition of `topic` to its end with one plain consumer and counts the records:
/// the raw consume rate that the Kafka benchmark compares against.
pub fn count_all(
    opts: &KafkaOptions,
    topic: &str,
    n: PartitionCount,
) -> Result<u64, KafkaLogError> {
    let mut config = opts.reader_config();
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer<QuietEof> = config
        .create_with_context(QuietEof)
        .map_err(kafka("create reader"))?;
    let mut tpl = TopicPartitionList::new();
    for p in n.iter() {
        tpl.add_partition_offset(topic, p.0 as i32, KafkaOffset::Beginning)
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&tpl).map_err(kafka("assign"))?;
    let (mut count, mut ended) = (0u64, std::collections::HashSet::new());
    let mut last_progress = Instant::now();
    while ended.len() < n.get() as usize {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Touch the payload as a consumer would.
                count += u64::from(m.payload().is_some());
                last_progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => return Err(unreachable_or(opts, e, "read")),
            None if last_progress.elapsed() > Duration::from_secs(60) => {
                return Err(KafkaLogError::Stalled {
                    topic: topic.to_owned(),
                    partition: 0,
                    secs: 60,
                });
            }
            None => {}
        }
    }
    Ok(count)
}

/// Converts a consumed message into a [`Record`].
pub fn to_record<M: Message>(m: &M) -> Record {
    Record {
        partition: Partition(m.partition() as u32),
        offset: Offset(m.offset().max(0) as u64),
        timestamp: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The gateway's view of Kafka: appends through the producer, ends from the watermarks.
pub struct KafkaIngest {
    pub producer: Arc<KafkaProducer>,
    pub client: BaseConsumer<QuietEof>,
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

    fn append_event(&self, partition: Partition, record: NewRecord) -> Result<Offset, IngestError> {
        let topic = topics::get(Role::Events).name;
        Ok(self.producer.send_all(&[Outgoing {
            topic: &topic,
            partition,
            record,
        }])?[0])
    }

    fn input_end(&self, partition: Partition) -> Result<Offset, IngestError> {
        let topic = topics::get(Role::Events).name;
        let (_, high) = self
            .client
            .fetch_watermarks(&topic, partition.0 as i32, REQUEST_TIMEOUT)
            .map_err(|e| unreachable_or(&self.opts, e, "fetch watermarks"))?;
        Ok(Offset(high.max(0) as u64))
    }

    fn remote_state(&self, partition: Partition) -> Result<Option<RemoteState>, IngestError> {
        let topic = topics::get(Role::State).name;
        let mut reader = Reader::default();
        let mut snapshot = Snapshot::default();
        read_to_end(&self.opts, &topic, partition, |r| {
            snapshot.push(&mut reader, &r.key, &r.value)
        })?;
        Ok(Some(RemoteState {
            records: snapshot.states,
            applied: reader.resume_offset(),
        }))
    }
}

/// The current state of every changelog partition, folded with the fencing rule (`ordo state`,
/// `ordo replay --diff`).
pub fn snapshot(opts: &KafkaOptions) -> Result<Snapshot, KafkaLogError> {
    let client = opts.metadata_client()?;
    let topic = topics::get(Role::State).name;
    let n = super::admin::partition_count(&client, opts, &topic)?.ok_or_else(|| {
        KafkaLogError::MissingTopic {
            topic: topic.clone(),
        }
    })?;
    let mut snapshot = Snapshot::default();
    for p in 0..n {
        let mut reader = Reader::default();
        read_to_end(opts, &topic, Partition(p), |r| {
            snapshot.push(&mut reader, &r.key, &r.value)
        })?;
    }
    Ok(snapshot)
}
