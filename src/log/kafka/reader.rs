//! Reading partitions: to their end (restore, `ordo state`, replay), a short range (a new
//! owner's settle) or one record (a superseded owner's check), followed (`tail`), and one
//! partition by its owner's thread.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::ids::{partition_list, partition_of};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

use super::config::{
    Closing, KafkaLogError, KafkaOptions, QuietEof, REQUEST_TIMEOUT, kafka, unreachable_or,
};
use crate::core::record::Record;
use crate::core::{Offset, Partition};
use crate::log::topics::Role;

/// The settings of a reader of partitions from their beginning: partition ends reported, and
/// offset 0 standing for the beginning. Assigning offset 0 rather than the logical "beginning"
/// saves a ListOffsets round (≈ 0.5 s a partition on tansu 0.6); where retention has removed
/// offset 0, the reset policy moves the reader to the earliest record.
pub(super) fn from_beginning_config(opts: &KafkaOptions) -> rdkafka::config::ClientConfig {
    let mut config = opts.reader_config();
    config.set("enable.partition.eof", "true");
    config.set("auto.offset.reset", "earliest");
    config
}

/// A consumer outside any group, reporting partition ends, assigned to `partitions` of `topic`
/// from their beginning.
pub(super) fn from_beginning(
    opts: &KafkaOptions,
    topic: &str,
    partitions: impl IntoIterator<Item = Partition>,
) -> Result<Closing<BaseConsumer<QuietEof>>, KafkaLogError> {
    let config = from_beginning_config(opts);
    let consumer: BaseConsumer<QuietEof> = config
        .create_with_context(QuietEof)
        .map_err(kafka("create reader"))?;
    let tpl = partition_list(topic, partitions.into_iter().map(|p| (p, Offset(0))));
    consumer.assign(&tpl).map_err(kafka("assign"))?;
    Ok(Closing::new(consumer))
}

/// How a read of one partition ends.
#[derive(Clone, Copy)]
enum Until {
    /// At the partition's end (its EOF event), or when the reader says stop; a broker that
    /// cannot be reached fails the read at once.
    End,
    /// Only when the reader says stop (the record it waits for is being written now); brokers
    /// that drop out for a moment are waited for.
    Stop,
}

/// How long a read waits for the next record before it says the partition stalled.
const READ_STALL: Duration = Duration::from_secs(60);

/// Reads `topic`/`partition` from `from`, handing each record to `f` in offset order until
/// `until` says the read is over or `f` breaks; fails with [`KafkaLogError::Stalled`] when no
/// record comes for `stall`.
///
/// The end is the partition-EOF event, not the high watermark fetched up front: some
/// Kafka-compatible brokers (tansu 0.6) report the watermark of the last batch's base offset,
/// which ends the read early when batches hold several records.
fn read_partition(
    opts: &KafkaOptions,
    (topic, partition): (&str, Partition),
    from: Offset,
    until: Until,
    stall: Duration,
    mut f: impl FnMut(Record) -> ControlFlow<()>,
) -> Result<(), KafkaLogError> {
    let consumer: BaseConsumer<QuietEof> = from_beginning_config(opts)
        .create_with_context(QuietEof)
        .map_err(kafka("create reader"))?;
    consumer
        .assign(&partition_list(topic, [(partition, from)]))
        .map_err(kafka("assign"))?;
    let consumer = Closing::new(consumer);
    let mut last_progress = Instant::now();
    // A read to the end fails on a connection failure that lasts: librdkafka reconnects by
    // itself, and a refused TLS or SASL handshake may be reported only after the disconnect it
    // caused (librdkafka does not repeat an error, so the first one is kept).
    let mut failing: Option<(Instant, KafkaError)> = None;
    loop {
        if let Some((since, _)) = &failing
            && since.elapsed() > REQUEST_TIMEOUT
        {
            let (_, e) = failing.take().expect("checked");
            return Err(unreachable_or(opts, e, "read"));
        }
        match (consumer.poll(Duration::from_millis(100)), until) {
            (Some(Ok(m)), _) => {
                last_progress = Instant::now();
                failing = None;
                if f(to_record(&m)).is_break() {
                    return Ok(());
                }
            }
            (Some(Err(KafkaError::PartitionEOF(_))), Until::End) => return Ok(()),
            (Some(Err(KafkaError::PartitionEOF(_))), Until::Stop) => {}
            (Some(Err(e)), Until::Stop) if is_transient(&e) => {}
            (Some(Err(e)), Until::End) if is_transient(&e) => {
                failing.get_or_insert((Instant::now(), e));
            }
            (Some(Err(e)), _) => return Err(unreachable_or(opts, e, "read")),
            (None, _) if last_progress.elapsed() > stall => {
                return Err(KafkaLogError::Stalled {
                    topic: topic.to_owned(),
                    partition: partition.0,
                    secs: stall.as_secs(),
                });
            }
            (None, _) => {}
        }
    }
}

/// Reads `topic`/`partition` from the beginning to its end, calling `f` on each record.
pub fn read_to_end(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    mut f: impl FnMut(Record),
) -> Result<(), KafkaLogError> {
    let each = |r| {
        f(r);
        ControlFlow::Continue(())
    };
    read_partition(
        opts,
        (topic, partition),
        Offset(0),
        Until::End,
        READ_STALL,
        each,
    )
}

/// Reads `topic`/`partition` from `from` through the record at `through`, calling `f` on each
/// record in offset order (a short, recent range: a new owner's look at what landed between
/// its restore and its epoch marker).
pub fn read_range(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    (from, through): (Offset, Offset),
    mut f: impl FnMut(Record),
) -> Result<(), KafkaLogError> {
    let each = |r: Record| {
        let last = r.offset >= through;
        f(r);
        if last {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    read_partition(
        opts,
        (topic, partition),
        from,
        Until::Stop,
        READ_STALL,
        each,
    )
}

/// The first record of `topic`/`partition` at or after `offset`: `None` when there is none
/// (at or past the partition's end), or when none came within `wait`.
pub fn read_at(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    offset: Offset,
    wait: Duration,
) -> Result<Option<Record>, KafkaLogError> {
    let mut first = None;
    let each = |r| {
        first = Some(r);
        ControlFlow::Break(())
    };
    match read_partition(opts, (topic, partition), offset, Until::End, wait, each) {
        Err(KafkaLogError::Stalled { .. }) => Ok(None),
        read => read.map(|()| first),
    }
}

/// One plain consumer that reads partitions of a topic from their beginning to their ends,
/// several at a time: the restore of every partition a rebalance assigns goes through one
/// connection made before it is needed, instead of a new consumer per partition.
pub struct BulkReader {
    consumer: Closing<BaseConsumer<QuietEof>>,
    topic: String,
}

impl BulkReader {
    /// A reader of `topic`, connected: it knows the topic's leaders when it returns.
    pub fn new(opts: &KafkaOptions, topic: &str) -> Result<Self, KafkaLogError> {
        let config = from_beginning_config(opts);
        let consumer: BaseConsumer<QuietEof> = config
            .create_with_context(QuietEof)
            .map_err(kafka("create reader"))?;
        consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| unreachable_or(opts, e, "fetch metadata"))?;
        Ok(BulkReader {
            consumer: Closing::new(consumer),
            topic: topic.to_owned(),
        })
    }

    /// Reads `partitions` from their beginning to their ends: `f(p, Some(record))` for each
    /// record, in offset order per partition, and `f(p, None)` once at each partition's end.
    pub fn read_to_end(
        &self,
        partitions: &[Partition],
        f: impl FnMut(Partition, Option<Record>),
    ) -> Result<(), KafkaLogError> {
        let from: Vec<(Partition, Offset)> = partitions.iter().map(|p| (*p, Offset(0))).collect();
        self.read_from(&from, f)
    }

    /// Reads each partition of `from` from its offset to its end, as [`Self::read_to_end`]
    /// does from the beginning.
    pub fn read_from(
        &self,
        from: &[(Partition, Offset)],
        mut f: impl FnMut(Partition, Option<Record>),
    ) -> Result<(), KafkaLogError> {
        let tpl = partition_list(&self.topic, from.iter().copied());
        self.consumer.assign(&tpl).map_err(kafka("assign"))?;
        let mut open: std::collections::HashSet<Partition> = from.iter().map(|(p, _)| *p).collect();
        let stall = Duration::from_secs(60);
        let mut last_progress = Instant::now();
        let result = loop {
            if open.is_empty() {
                break Ok(());
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let p = partition_of(m.partition());
                    if open.contains(&p) {
                        f(p, Some(to_record(&m)));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let p = partition_of(p);
                    if open.remove(&p) {
                        f(p, None);
                    }
                }
                Some(Err(e)) if is_transient(&e) => {}
                Some(Err(e)) => {
                    break Err(KafkaLogError::Kafka {
                        op: "read changelog",
                        source: e,
                    });
                }
                None if last_progress.elapsed() > stall => {
                    break Err(KafkaLogError::Stalled {
                        topic: self.topic.clone(),
                        partition: open.iter().next().map_or(0, |p| p.0),
                        secs: stall.as_secs(),
                    });
                }
                None => {}
            }
        };
        let _ = self.consumer.unassign();
        result
    }
}

/// Reads `topic`/`partition` from the beginning and follows it, calling `f` on each record
/// and with `None` each time it has read to the end, until `stop` says so (checked at least
/// every 20 ms).
pub fn tail(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    mut f: impl FnMut(Option<Record>),
    stop: impl Fn() -> bool,
) -> Result<(), KafkaLogError> {
    let consumer = from_beginning(opts, topic, [partition])?;
    while !stop() {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => f(Some(to_record(&m))),
            Some(Err(KafkaError::PartitionEOF(_))) => f(None),
            None => {}
            // Transient: librdkafka reconnects by itself.
            Some(Err(e)) => tracing::debug!(error = %e, topic, "follow"),
        }
    }
    Ok(())
}

/// Converts a consumed message into a [`Record`].
pub fn to_record<M: Message>(m: &M) -> Record {
    Record {
        partition: partition_of(m.partition()),
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

/// What `reservation-owners` holds: every ownership record in order, the latest repartition
/// and layout records, and the lease.
#[derive(Debug, Default)]
pub struct OwnersLog {
    pub owners: Vec<crate::core::ownership::OwnershipRecord>,
    pub repartition: Option<crate::core::ownership::RepartitionRecord>,
    pub layout: Option<crate::core::ownership::LayoutRecord>,
    /// The deployment's lease, folded in log order.
    pub lease: crate::core::ownership::Lease,
}

/// Reads `reservation-owners` to its end (a record that is neither kind is logged and skipped).
pub fn read_owners(opts: &KafkaOptions) -> Result<OwnersLog, KafkaLogError> {
    use crate::core::ownership::OwnersEntry;
    let mut log = OwnersLog::default();
    read_to_end(
        opts,
        &opts.topic(Role::Owners),
        Partition(0),
        |r| match OwnersEntry::decode(&r.key, &r.value) {
            Ok(OwnersEntry::Owner(o)) => log.owners.push(o),
            Ok(OwnersEntry::Repartition(rp)) => log.repartition = Some(rp),
            Ok(OwnersEntry::Layout(l)) => log.layout = Some(l),
            Ok(OwnersEntry::Lease(l)) => {
                log.lease.apply(l);
            }
            Err(e) => {
                tracing::warn!(offset = r.offset.0, error = %e, "skipping a bad record of reservation-owners")
            }
        },
    )?;
    Ok(log)
}

/// Refuses to go on while a change of N is under way (`reservation-owners` says so): every
/// member checks before it joins the group.
pub fn check_no_repartition(opts: &KafkaOptions) -> Result<(), KafkaLogError> {
    match read_owners(opts)?.repartition {
        Some(r) if r.in_progress() => Err(KafkaLogError::RepartitionInProgress {
            from: r.from,
            to: r.to,
            phase: format!("{:?}", r.phase).to_lowercase(),
        }),
        _ => Ok(()),
    }
}

/// Settles the deployment's partitioner against the one recorded on `reservation-owners`:
/// another `given` one is refused, none given adopts the recorded one, and with nothing
/// recorded yet a command that writes (`record`) records `opts.partitioner`. A cluster
/// without ordo's owners topic is left to the command's own missing-topic error.
pub fn settle_partitioner(
    opts: &mut KafkaOptions,
    given: Option<crate::core::partitioner::Partitioner>,
    record: bool,
) -> Result<(), KafkaLogError> {
    use crate::core::ownership::{LAYOUT_KEY, LayoutRecord};
    if matches!(
        super::admin::topic_partitions(opts, Role::Owners),
        Err(KafkaLogError::MissingTopic { .. })
    ) {
        return Ok(());
    }
    match (given, read_owners(opts)?.layout) {
        (Some(requested), Some(layout)) if requested != layout.partitioner => {
            Err(KafkaLogError::PartitionerMismatch {
                prefix: opts.topic_prefix.clone(),
                recorded: layout.partitioner,
                requested,
            })
        }
        (_, Some(layout)) => {
            opts.partitioner = layout.partitioner;
            Ok(())
        }
        (_, None) if record => {
            let layout = LayoutRecord {
                partitioner: opts.partitioner,
                by: format!(
                    "{}/{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned()),
                    std::process::id()
                ),
                ts: crate::log::now_millis(),
            };
            let owners = opts.topic(Role::Owners);
            super::producer::KafkaProducer::new(opts)?.send_all(&[super::producer::Outgoing {
                topic: &owners,
                partition: Partition(0),
                record: crate::core::record::NewRecord {
                    key: LAYOUT_KEY.as_bytes().to_vec(),
                    value: layout.to_json(),
                    timestamp: layout.ts,
                    headers: Vec::new(),
                },
            }])?;
            tracing::info!(partitioner = %opts.partitioner, "recorded the deployment's partitioner");
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// Errors librdkafka recovers from by itself (reconnects, retries).
pub(super) fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
        )
    )
}
