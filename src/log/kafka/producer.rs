//! The idempotent producer (`acks=all`): every send waits for its records'
//! acknowledgements and reports their offsets. The same producer with a `transactional.id`
//! writes an owner's batches in Kafka transactions (`--guarantee exactly-once`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::config::{
    Closing, KafkaLogError, KafkaOptions, kafka, log_client_error, log_client_message,
};
use super::ids::kafka_partition;
use crate::core::record::NewRecord;
use crate::core::{Offset, Partition};

/// Acknowledgements of one batch of sends.
#[derive(Default)]
pub struct Acks {
    state: Mutex<AckState>,
    done: Condvar,
}

#[derive(Default)]
struct AckState {
    pending: usize,
    offsets: Vec<i64>,
    error: Option<KafkaError>,
}

/// Routes delivery reports to the batch that sent them, and, for the idempotent producer,
/// notes when it has failed for good: a report of librdkafka's fatal error. (A transactional
/// producer's fatal errors, a fencing among them, are met by its transaction calls.)
#[derive(Default)]
pub(crate) struct AckContext {
    fatal: Arc<AtomicBool>,
    idempotent: bool,
}

impl ClientContext for AckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_client_message(level, fac, message);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<(Arc<Acks>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (acks, index) = *opaque;
        let mut s = acks.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(m) => s.offsets[index] = m.offset(),
            Err((e, _)) => {
                if self.idempotent && e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                    self.fatal.store(true, Ordering::Release);
                }
                s.error.get_or_insert_with(|| e.clone());
            }
        }
        s.pending -= 1;
        if s.pending == 0 {
            acks.done.notify_all();
        }
    }
}

/// How long a send waits for its acknowledgements: as long as the Java producer's default
/// `delivery.timeout.ms`, and longer than a broker takes to restart after a crash (15–40 s
/// measured here for Apache Kafka 4.4 under load), so an owner rides through a restart and
/// only a broker that stays away ends the process.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Records handed to the producer, not yet all acknowledged.
#[must_use = "a send is only durable once waited for"]
pub struct Pending {
    acks: Arc<Acks>,
    /// Set once any record of the producer is reported failed by its fatal error: nothing it
    /// still holds will be acknowledged, so no wait need last the delivery timeout.
    fatal: Arc<AtomicBool>,
}

/// How often a wait looks at the producer's fatal flag.
const FATAL_CHECK: Duration = Duration::from_millis(200);

impl Pending {
    /// Waits until every record is acknowledged; their offsets in order, or the first error.
    ///
    /// Gives up after [`DELIVERY_TIMEOUT`]. librdkafka itself never times a record out
    /// (`message.timeout.ms=0`): a record it timed out would make the idempotent producer
    /// start a new sequence, and a later batch of the partition could then be written after a
    /// lost one. A caller that gives up here fails (an owner ends the process), so nothing
    /// after the unacknowledged batch becomes durable out of order.
    pub fn wait(self) -> Result<Vec<Offset>, KafkaLogError> {
        self.wait_noting(Duration::MAX, || {})
    }

    /// [`Pending::wait`], giving up after `limit` (shorter than [`DELIVERY_TIMEOUT`]): an HTTP
    /// client's append is answered within a bound while the broker is away. The records may
    /// still be written later; a client that retries appends its event again, which the
    /// processor applies once.
    pub fn wait_within(self, limit: Duration) -> Result<Vec<Offset>, KafkaLogError> {
        self.wait_until(limit.min(DELIVERY_TIMEOUT), Duration::MAX, || {})
    }

    /// [`Pending::wait`], calling `slow` once if the acknowledgements take longer than
    /// `after` (the owner then reports that it cannot make progress).
    pub fn wait_noting(
        self,
        after: Duration,
        slow: impl FnOnce(),
    ) -> Result<Vec<Offset>, KafkaLogError> {
        self.wait_until(DELIVERY_TIMEOUT, after, slow)
    }

    fn wait_until(
        self,
        limit: Duration,
        after: Duration,
        slow: impl FnOnce(),
    ) -> Result<Vec<Offset>, KafkaLogError> {
        let Pending { acks, fatal } = self;
        let started = std::time::Instant::now();
        let deadline = started + limit;
        let mut slow = Some(slow);
        let mut s = acks.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.pending > 0 {
            let now = std::time::Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(KafkaLogError::Delivery {
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                });
            }
            if fatal.load(Ordering::Acquire) {
                return Err(KafkaLogError::Delivery {
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::Fatal),
                });
            }
            let until_slow = after.saturating_sub(now - started);
            if until_slow.is_zero()
                && let Some(slow) = slow.take()
            {
                slow();
            }
            let wait = if slow.is_some() {
                left.min(until_slow)
            } else {
                left
            }
            .min(FATAL_CHECK);
            s = acks
                .done
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match s.error.take() {
            Some(source) => Err(KafkaLogError::Delivery { source }),
            None => Ok(s.offsets.iter().map(|&o| Offset(o.max(0) as u64)).collect()),
        }
    }
}

/// A record for [`KafkaProducer::send_all`].
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub partition: Partition,
    pub record: NewRecord,
}

/// The idempotent producer; every send waits for all its records' acknowledgements.
pub struct KafkaProducer {
    /// Dropped on a thread of its own: rdkafka joins the producer's polling thread, which
    /// sleeps in 100 ms steps (whoever drops it has flushed it).
    inner: Closing<ThreadedProducer<AckContext>>,
}

impl KafkaProducer {
    /// Connects a producer.
    pub fn new(opts: &KafkaOptions) -> Result<Self, KafkaLogError> {
        let inner: ThreadedProducer<AckContext> = opts
            .producer_config()
            .create_with_context(AckContext {
                idempotent: true,
                ..AckContext::default()
            })
            .map_err(kafka("create producer"))?;
        // librdkafka asks for the idempotent producer's id when a metadata answer arrives from a
        // connected broker, else on a 500 ms timer: right after creation no broker is up yet,
        // so the first sends would wait for that timer. A metadata round trip through the
        // broker connection (one to connect, one answered by it) takes the id at once.
        for _ in 0..2 {
            let _ = inner
                .client()
                .fetch_metadata(None, std::time::Duration::from_secs(5));
        }
        Ok(KafkaProducer {
            inner: Closing::new(inner),
        })
    }

    /// Where `topic`/`partition` ends (its high watermark), asked of its leader through this
    /// producer's connections, or `None` if it does not answer within `limit`. An estimate of
    /// a read's end, for progress: some brokers (tansu 0.6) report less than the end.
    pub fn end_offset(&self, topic: &str, partition: Partition, limit: Duration) -> Option<Offset> {
        let (_, high) = self
            .inner
            .client()
            .fetch_watermarks(topic, kafka_partition(partition), limit)
            .ok()?;
        u64::try_from(high).ok().map(Offset)
    }

    /// Sends every record to its explicit partition and waits until all are acknowledged;
    /// returns their offsets in order.
    pub fn send_all(&self, records: &[Outgoing<'_>]) -> Result<Vec<Offset>, KafkaLogError> {
        self.send(records).wait()
    }

    /// Hands every record to the producer (each to its explicit partition) and returns at once;
    /// [`Pending::wait`] waits for their acknowledgements.
    pub fn send(&self, records: &[Outgoing<'_>]) -> Pending {
        let acks = Arc::new(Acks::default());
        {
            let mut s = acks.state.lock().unwrap_or_else(|e| e.into_inner());
            s.pending = records.len();
            s.offsets = vec![-1; records.len()];
        }
        for (i, r) in records.iter().enumerate() {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut opaque = Box::new((acks.clone(), i));
            loop {
                let mut rec = BaseRecord::with_opaque_to(r.topic, opaque)
                    .partition(super::ids::kafka_partition(r.partition))
                    .timestamp(r.record.timestamp)
                    .headers(headers.clone());
                // An empty value goes as no value at all: a tombstone, which compaction removes.
                if !r.record.value.is_empty() {
                    rec = rec.payload(&r.record.value[..]);
                }
                if !r.record.key.is_empty() {
                    rec = rec.key(&r.record.key[..]);
                }
                match self.inner.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                        opaque = rec.delivery_opaque;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, rec)) => {
                        // Never sent: count it as failed so the wait below ends.
                        let (acks, _) = *rec.delivery_opaque;
                        let mut s = acks.state.lock().unwrap_or_else(|e| e.into_inner());
                        s.pending -= 1;
                        s.error.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        Pending {
            acks,
            fatal: self.inner.context().fatal.clone(),
        }
    }

    /// Waits for outstanding deliveries.
    pub fn flush(&self) {
        let _ = self.inner.flush(Duration::from_secs(30));
    }

    /// Connects a transactional producer under `id` and initialises its transactions: the
    /// broker fences every earlier producer of `id` (its next send or commit fails) and
    /// aborts the transaction it left open.
    pub fn transactional(opts: &KafkaOptions, id: &str) -> Result<Self, KafkaLogError> {
        let mut config = opts.producer_config();
        config.set("transactional.id", id);
        config.set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        );
        // librdkafka requires a finite record timeout within the transaction's; a record it
        // times out fails the transaction, which is aborted, so no later batch lands after
        // a lost one.
        config.set(
            "message.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        );
        let inner: ThreadedProducer<AckContext> = config
            .create_with_context(AckContext::default())
            .map_err(kafka("create transactional producer"))?;
        let producer = KafkaProducer {
            inner: Closing::new(inner),
        };
        producer.retrying("init transactions", DELIVERY_TIMEOUT, |p, t| {
            p.init_transactions(t)
        })?;
        Ok(producer)
    }

    /// Begins a transaction: every send up to the commit belongs to it.
    pub fn begin(&self) -> Result<(), KafkaLogError> {
        self.inner
            .begin_transaction()
            .map_err(|e| transaction_error("begin", e))
    }

    /// Adds the group's `offsets` to the open transaction and commits it: its records and the
    /// offsets become visible together to every `read_committed` reader. On an error that
    /// leaves the transaction unusable it is aborted (best effort) before the error returns.
    pub fn commit(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: Option<&rdkafka::consumer::ConsumerGroupMetadata>,
    ) -> Result<(), KafkaLogError> {
        if let Some(group) = group {
            self.retrying(
                "send offsets to the transaction",
                DELIVERY_TIMEOUT,
                |p, t| p.send_offsets_to_transaction(offsets, group, t),
            )
            .inspect_err(|_| self.abort())?;
        }
        self.retrying("commit", DELIVERY_TIMEOUT, |p, t| p.commit_transaction(t))
            .inspect_err(|_| self.abort())
    }

    /// Aborts the open transaction, if any: no `read_committed` reader sees its records.
    pub fn abort(&self) {
        if let Err(e) = self.inner.abort_transaction(Duration::from_secs(10)) {
            tracing::debug!(error = %e, "abort of a transaction failed (the next owner's start aborts it)");
        }
    }

    /// Calls a transaction API until it succeeds, fails for good, or `limit` has passed
    /// ([`DELIVERY_TIMEOUT`]: a broker restart is ridden through, as sends are).
    fn retrying(
        &self,
        op: &'static str,
        limit: Duration,
        call: impl Fn(&ThreadedProducer<AckContext>, Duration) -> rdkafka::error::KafkaResult<()>,
    ) -> Result<(), KafkaLogError> {
        let started = std::time::Instant::now();
        loop {
            match call(&self.inner, Duration::from_secs(10)) {
                Ok(()) => return Ok(()),
                // librdkafka calls a broker's missing API retriable; it never comes.
                Err(KafkaError::Transaction(e))
                    if e.is_retriable()
                        && started.elapsed() < limit
                        && !matches!(
                            e.code(),
                            RDKafkaErrorCode::UnsupportedFeature
                                | RDKafkaErrorCode::UnsupportedVersion
                        ) =>
                {
                    tracing::debug!(op, error = %e, "retrying a transaction call");
                    std::thread::sleep(Duration::from_millis(100));
                }
                // rdkafka's commit flushes the producer first; while the broker restarts that
                // flush times out, and the commit may be called again.
                Err(e @ KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    if started.elapsed() < limit =>
                {
                    tracing::debug!(op, error = %e, "retrying a transaction call");
                }
                Err(e) => return Err(transaction_error(op, e)),
            }
        }
    }
}

/// Refuses a broker without transactions (`--guarantee exactly-once` at start): a
/// transactional producer of this deployment's own check id initialises and commits, within
/// 30 s, a transaction that holds only an offset of a check group. Records are never part of
/// it: on a broker that starts transactions and cannot end them (tansu 0.6 has no EndTxn),
/// a record in one would hold every `read_committed` reader of its partition for ever.
pub fn check_transactions(opts: &KafkaOptions) -> Result<(), KafkaLogError> {
    let mut config = opts.producer_config();
    config.set(
        "transactional.id",
        format!("{}.check", opts.transactional_id_prefix()),
    );
    config.set("message.timeout.ms", "30000");
    let inner: ThreadedProducer<AckContext> = config
        .create_with_context(AckContext::default())
        .map_err(kafka("create transactional producer"))?;
    let producer = KafkaProducer {
        inner: Closing::new(inner),
    };
    let limit = Duration::from_secs(30);
    let probe = || -> Result<(), KafkaLogError> {
        producer.retrying("init transactions", limit, |p, t| p.init_transactions(t))?;
        let metadata = transaction_group(&KafkaOptions {
            group: format!("{}.check", opts.transactional_id_prefix()),
            ..opts.clone()
        })?;
        producer.begin()?;
        let offsets = super::ids::partition_list(
            &opts.topic(crate::log::topics::Role::Events),
            [(Partition(0), Offset(0))],
        );
        producer.retrying("send offsets to the transaction", limit, |p, t| {
            p.send_offsets_to_transaction(&offsets, &metadata, t)
        })?;
        producer.retrying("commit", limit, |p, t| p.commit_transaction(t))
    };
    probe().map_err(|e| KafkaLogError::NoTransactions {
        brokers: opts.brokers.clone(),
        detail: match e {
            KafkaLogError::Transaction { source, .. } | KafkaLogError::Fenced { source, .. } => {
                source.to_string()
            }
            e => e.to_string(),
        },
    })
}

/// How long a transaction may stay open before the broker aborts it: long enough to ride
/// through a broker restart, and only reached when an owner died without a successor (a new
/// owner of the partition aborts its predecessor's transaction at once).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A transaction API's error, with a fenced producer told apart: a newer owner of the same
/// partition started, so this one's records will never be visible.
fn transaction_error(op: &'static str, e: KafkaError) -> KafkaLogError {
    let abortable =
        matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort() && !t.is_fatal());
    if is_fenced(&e) {
        KafkaLogError::Fenced { op, source: e }
    } else if abortable {
        KafkaLogError::Aborted { op, source: e }
    } else {
        KafkaLogError::Transaction { op, source: e }
    }
}

/// Whether `e` says a newer producer of the transactional id, or a newer generation of the
/// group, exists.
fn is_fenced(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    let code = match e {
        KafkaError::Transaction(t) => Some(t.code()),
        _ => e.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(
            C::Fenced
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::FencedInstanceId
                | C::IllegalGeneration
                | C::UnknownMemberId,
        )
    )
}

/// A transactional send's delivery error, with fencing told apart as for the transaction
/// calls.
pub fn delivery_in_transaction(e: KafkaLogError) -> KafkaLogError {
    match e {
        KafkaLogError::Delivery { source } if is_fenced(&source) => {
            KafkaLogError::Fenced { op: "send", source }
        }
        // The transaction is aborted after a failed send: what it held is never visible.
        KafkaLogError::Delivery { source } => KafkaLogError::Aborted { op: "send", source },
        e => e,
    }
}

/// The group's metadata for offsets committed in transactions, as a consumer outside the
/// group has it (no generation, no member): the broker then checks only the producer's
/// epoch, so fencing follows the partition's `transactional.id` alone and a rebalance that
/// keeps a partition where it is does not fail its owner's commit.
pub fn transaction_group(
    opts: &KafkaOptions,
) -> Result<rdkafka::consumer::ConsumerGroupMetadata, KafkaLogError> {
    let consumer: BaseConsumer<super::config::QuietEof> = opts
        .reader_config()
        .set("group.id", &opts.group)
        .create_with_context(super::config::QuietEof)
        .map_err(kafka("create consumer"))?;
    let consumer = Closing::new(consumer);
    consumer.group_metadata().ok_or(KafkaLogError::Kafka {
        op: "consumer group metadata",
        source: KafkaError::Canceled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch still waiting for acknowledgements when its producer has failed for good ends
    /// its wait with the fatal error, instead of waiting out the delivery timeout; one whose
    /// records were all acknowledged still gets its offsets.
    #[test]
    fn a_wait_ends_once_the_producer_has_failed_for_good() {
        let pending = |acked: bool| {
            let acks = Arc::new(Acks::default());
            {
                let mut s = acks.state.lock().unwrap();
                s.offsets = vec![7];
                s.pending = usize::from(!acked);
            }
            Pending {
                acks,
                fatal: Arc::new(AtomicBool::new(true)),
            }
        };
        let waited = pending(false).wait();
        assert!(
            matches!(
                waited,
                Err(KafkaLogError::Delivery {
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::Fatal)
                })
            ),
            "{waited:?}"
        );
        assert_eq!(pending(true).wait().unwrap(), vec![Offset(7)]);
    }
}
