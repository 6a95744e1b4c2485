//! The raw consumer and the raw consume→produce pipe that `ordo bench kafka` measures ordo
//! against: the same clients and settings as ordo's, without its work.

use std::time::{Duration, Instant};

use super::ids::partition_list;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use super::config::{
    Closing, KafkaLogError, KafkaOptions, QuietEof, REQUEST_TIMEOUT, kafka, unreachable_or,
};
use super::reader::{from_beginning, from_beginning_config, is_transient};
use crate::core::{Offset, Partition, PartitionCount};

/// Reads every partition of `topic` to its end with one plain consumer and counts the records:
/// the raw consume rate that the Kafka benchmark compares against.
pub fn count_all(
    opts: &KafkaOptions,
    topic: &str,
    n: PartitionCount,
) -> Result<u64, KafkaLogError> {
    let consumer = from_beginning(opts, topic, n.iter())?;
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

/// The raw consume→produce pipe the Kafka benchmark compares against, with ordo's own shape:
/// one thread per partition of `from`, each reading it to its end with a consumer of its own
/// (the settings of an owner's reader) and handing every record, unprocessed and uncopied, to
/// the same partition of `to` through one shared idempotent producer (`acks=all`, ordo's
/// settings); then every acknowledgement is waited for. Returns the records piped. (One
/// consumer over every partition, as this pipe was first written, moved half as many records
/// a second on Apache Kafka: 163–164 k against 325–347 k records/s.)
pub fn pipe(
    opts: &KafkaOptions,
    from: &str,
    to: &str,
    n: PartitionCount,
) -> Result<u64, KafkaLogError> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = opts
        .producer_config()
        .create()
        .map_err(kafka("create producer"))?;
    let one = |p: Partition| -> Result<u64, KafkaLogError> {
        let mut config = from_beginning_config(opts);
        config.set("queued.max.messages.kbytes", "16384");
        config.set("fetch.wait.max.ms", "5");
        for (k, v) in &opts.properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer<QuietEof> = config
            .create_with_context(QuietEof)
            .map_err(kafka("create reader"))?;
        consumer
            .assign(&partition_list(from, [(p, Offset(0))]))
            .map_err(kafka("assign"))?;
        let consumer = Closing::new(consumer);
        let mut count = 0u64;
        let mut last_progress = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let mut record = BaseRecord::<[u8], [u8]>::to(to)
                        .partition(m.partition())
                        .key(m.key().unwrap_or_default())
                        .payload(m.payload().unwrap_or_default());
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                ),
                                r,
                            )) => {
                                record = r;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err((e, _)) => return Err(KafkaLogError::Delivery { source: e }),
                        }
                    }
                    count += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(count),
                Some(Err(e)) if is_transient(&e) => {}
                Some(Err(e)) => return Err(unreachable_or(opts, e, "read")),
                None if last_progress.elapsed() > Duration::from_secs(60) => {
                    return Err(KafkaLogError::Stalled {
                        topic: from.to_owned(),
                        partition: p.0,
                        secs: 60,
                    });
                }
                None => {}
            }
        }
    };
    let counts: Vec<Result<u64, KafkaLogError>> = std::thread::scope(|s| {
        let handles: Vec<_> = n.iter().map(|p| s.spawn(move || one(p))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(KafkaLogError::Restore("a pipe thread panicked".into()))
                })
            })
            .collect()
    });
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    producer
        .flush(REQUEST_TIMEOUT * 6)
        .map_err(|source| KafkaLogError::Delivery { source })?;
    Ok(total)
}
