//! The Kafka backend's transport: client configuration, topic administration from `topics/`,
//! an idempotent producer that reports each record's offset, and reading a partition to its
//! end. rdkafka types stay inside this module and [`crate::group`].

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Ingest, IngestError, NewRecord, Record};
use crate::partitioner::{Partition, PartitionCount, Partitioner};
use crate::topics::{self, Role};

/// Default consumer group.
pub const DEFAULT_GROUP: &str = "ordo";
/// How long a metadata or admin request may take before the brokers count as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port,...`
    pub brokers: String,
    pub group: String,
    /// librdkafka properties from `-X key=value`, applied last.
    pub properties: Vec<(String, String)>,
    pub partitioner: Partitioner,
}

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaLogError {
    #[error(
        "cannot reach the brokers {brokers} within {}s ({detail}); check --brokers (ORDO_BROKERS) and that the cluster is up",
        REQUEST_TIMEOUT.as_secs()
    )]
    Unreachable { brokers: String, detail: String },
    #[error("topic {topic} does not exist; run `ordo topics apply --brokers ...` first")]
    MissingTopic { topic: String },
    #[error(
        "topic {topic} has {actual} partitions but N = {expected}; run `ordo topics apply` on a fresh cluster, \
         or `ordo repartition` to move to N = {expected}"
    )]
    PartitionMismatch {
        topic: String,
        actual: u32,
        expected: u32,
    },
    #[error(
        "topic {topic}: {key} is {actual:?} but topics/ says {expected:?}; change the topic config to match"
    )]
    ConfigMismatch {
        topic: String,
        key: String,
        actual: Option<String>,
        expected: String,
    },
    #[error("kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        source: KafkaError,
    },
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka: delivery failed: {0}")]
    Delivery(String),
    #[error("kafka: reading {topic}/{partition} made no progress for {secs}s")]
    Stalled {
        topic: String,
        partition: u32,
        secs: u64,
    },
}

impl KafkaLogError {
    /// Whether the error is the user's configuration (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::MissingTopic { .. }
                | Self::PartitionMismatch { .. }
                | Self::ConfigMismatch { .. }
        )
    }
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> KafkaLogError {
    move |source| KafkaLogError::Kafka { op, source }
}

impl KafkaOptions {
    /// Settings every client shares, then the user's `-X` properties.
    fn base(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("socket.timeout.ms", "10000");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer in the group: cooperative-sticky, offsets stored and committed only after
    /// their effects are acknowledged, and short fetch waits (see the README).
    pub fn group_consumer_config(&self) -> ClientConfig {
        let mut c = self.base(&[
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "10"),
            ("queued.max.messages.kbytes", "16384"),
            ("session.timeout.ms", "10000"),
            ("enable.partition.eof", "true"),
            ("statistics.interval.ms", "1000"),
            ("heartbeat.interval.ms", "1000"),
        ]);
        c.set("group.id", &self.group);
        c
    }

    /// A consumer outside the group, for reading partitions by assignment.
    pub fn reader_config(&self) -> ClientConfig {
        self.base(&[
            ("group.id", "ordo-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("fetch.wait.max.ms", "10"),
        ])
    }

    /// The idempotent producer (`acks=all`).
    pub fn producer_config(&self) -> ClientConfig {
        self.base(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "30000"),
        ])
    }

    /// A consumer that only asks for metadata and watermarks.
    pub fn metadata_client(&self) -> Result<BaseConsumer<QuietEof>, KafkaLogError> {
        self.reader_config()
            .create_with_context(QuietEof)
            .map_err(kafka("create client"))
    }
}

/// Partition count of `topic`, `None` when it does not exist.
pub fn partition_count(
    client: &BaseConsumer<QuietEof>,
    opts: &KafkaOptions,
    topic: &str,
) -> Result<Option<u32>, KafkaLogError> {
    let md = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| unreachable_or(opts, e, "fetch metadata"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| match t.error() {
            Some(_) => None,
            None if t.partitions().is_empty() => None,
            None => Some(t.partitions().len() as u32),
        }))
}

fn unreachable_or(opts: &KafkaOptions, e: KafkaError, op: &'static str) -> KafkaLogError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::RequestTimedOut,
        ) => KafkaLogError::Unreachable {
            brokers: opts.brokers.clone(),
            detail: e.to_string(),
        },
        _ => KafkaLogError::Kafka { op, source: e },
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(f)
}

/// Creates the topics of `topics/` with `n` partitions (existing ones are checked instead).
/// Returns one line per topic.
pub fn apply_topics(opts: &KafkaOptions, n: PartitionCount) -> Result<Vec<String>, KafkaLogError> {
    let client = opts.metadata_client()?;
    partition_count(&client, opts, &topics::get(Role::Events).name)?;
    let admin: AdminClient<QuietEof> = opts
        .base(&[])
        .create_with_context(QuietEof)
        .map_err(kafka("create admin client"))?;
    let defs = topics::all();
    let new: Vec<NewTopic<'_>> = defs
        .iter()
        .map(|d| {
            d.config.iter().fold(
                NewTopic::new(&d.name, n.get() as i32, TopicReplication::Fixed(-1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
    ))
    .map_err(|e| unreachable_or(opts, e, "create topics"))?;
    let mut lines = Vec::new();
    for r in results {
        match r {
            Ok(name) => lines.push(format!("created {name} ({n} partitions)")),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                lines.push(format!("exists  {name}"))
            }
            Err((name, code)) => {
                return Err(KafkaLogError::CreateTopic { topic: name, code });
            }
        }
    }
    lines.extend(check_topics(opts, n)?);
    Ok(lines)
}

/// Verifies that every topic of `topics/` exists with `n` partitions and its configs.
pub fn check_topics(opts: &KafkaOptions, n: PartitionCount) -> Result<Vec<String>, KafkaLogError> {
    let client = opts.metadata_client()?;
    let mut lines = Vec::new();
    // Cleared when the broker cannot describe configs: the other topics would fail the same way.
    let mut can_describe = true;
    for d in topics::all() {
        match partition_count(&client, opts, &d.name)? {
            None => return Err(KafkaLogError::MissingTopic { topic: d.name }),
            Some(actual) if actual != n.get() => {
                return Err(KafkaLogError::PartitionMismatch {
                    topic: d.name,
                    actual,
                    expected: n.get(),
                });
            }
            Some(_) => {}
        }
        let admin: AdminClient<QuietEof> = opts
            .base(&[])
            .create_with_context(QuietEof)
            .map_err(kafka("create admin client"))?;
        let described = if can_describe {
            block_on(admin.describe_configs(
                &[ResourceSpecifier::Topic(&d.name)],
                &AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)),
            ))
        } else {
            Ok(Vec::new())
        };
        // A broker that cannot describe configs leaves them unverified, not failed.
        let resource = match described {
            Ok(results) => results.into_iter().next().and_then(|r| r.ok()),
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::OperationTimedOut)
                ) =>
            {
                return Err(unreachable_or(opts, e, "describe configs"));
            }
            Err(e) => {
                tracing::warn!(topic = %d.name, error = %e, "cannot describe topic configs");
                can_describe = false;
                None
            }
        };
        let mut unreported = Vec::new();
        for (key, expected) in &d.config {
            let actual = resource
                .as_ref()
                .and_then(|r| r.get(key))
                .and_then(|e| e.value.clone());
            match actual {
                // Some brokers (tansu) do not report every config; say so rather than fail.
                None => unreported.push(key.clone()),
                Some(v) if &v == expected => {}
                Some(v) => {
                    return Err(KafkaLogError::ConfigMismatch {
                        topic: d.name,
                        key: key.clone(),
                        actual: Some(v),
                        expected: expected.clone(),
                    });
                }
            }
        }
        let note = if unreported.is_empty() {
            String::new()
        } else {
            format!(" (not reported by the broker: {})", unreported.join(", "))
        };
        lines.push(format!("ok      {} ({n} partitions){note}", d.name));
    }
    Ok(lines)
}

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
    error: Option<String>,
}

/// Routes delivery reports to the batch that sent them.
pub(crate) struct AckContext;

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
                s.error.get_or_insert_with(|| e.to_string());
            }
        }
        s.pending -= 1;
        if s.pending == 0 {
            acks.done.notify_all();
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
    inner: ThreadedProducer<AckContext>,
}

impl KafkaProducer {
    /// Connects a producer.
    pub fn new(opts: &KafkaOptions) -> Result<Self, KafkaLogError> {
        Ok(KafkaProducer {
            inner: opts
                .producer_config()
                .create_with_context(AckContext)
                .map_err(kafka("create producer"))?,
        })
    }

    /// Sends every record to its explicit partition and waits until all are acknowledged;
    /// returns their offsets in order.
    pub fn send_all(&self, records: &[Outgoing<'_>]) -> Result<Vec<u64>, KafkaLogError> {
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
                    .partition(r.partition.0 as i32)
                    .payload(&r.record.value[..])
                    .timestamp(r.record.timestamp)
                    .headers(headers.clone());
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
                        s.error.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
        }
        let mut s = acks.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.pending > 0 {
            s = acks.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        match s.error.take() {
            Some(e) => Err(KafkaLogError::Delivery(e)),
            None => Ok(s.offsets.iter().map(|&o| o.max(0) as u64).collect()),
        }
    }

    /// Waits for outstanding deliveries.
    pub fn flush(&self) {
        let _ = self.inner.flush(Duration::from_secs(30));
    }
}

/// The client context of ordo's readers, metadata and admin clients: librdkafka's events go
/// through [`log_client_error`] and [`log_client_message`].
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_client_message(level, fac, message);
    }
}

/// Connection failures are retried by librdkafka and, when they last, reported by ordo as one
/// error naming the brokers; each attempt is only worth a debug line.
pub fn log_client_message(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error if fac != "FAIL" => {
            tracing::error!(facility = fac, "librdkafka: {message}")
        }
        L::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Logs a librdkafka global error: end-of-partition events (which ordo asks for) not at all,
/// transient connection failures at debug, the rest as errors.
pub fn log_client_error(error: KafkaError, reason: &str) {
    match error {
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
        KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
        ) => tracing::debug!(error = %error, reason, "librdkafka"),
        _ => tracing::error!(error = %error, reason, "librdkafka"),
    }
}

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
    tpl.add_partition_offset(topic, partition.0 as i32, Offset::Beginning)
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
        tpl.add_partition_offset(topic, p.0 as i32, Offset::Beginning)
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
        offset: m.offset() as u64,
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

    fn append_event(&self, partition: Partition, record: NewRecord) -> Result<u64, IngestError> {
        let topic = topics::get(Role::Events).name;
        self.producer
            .send_all(&[Outgoing {
                topic: &topic,
                partition,
                record,
            }])
            .map(|o| o[0])
            .map_err(|e| IngestError(e.to_string()))
    }

    fn input_end(&self, partition: Partition) -> Result<u64, IngestError> {
        let topic = topics::get(Role::Events).name;
        self.client
            .fetch_watermarks(&topic, partition.0 as i32, REQUEST_TIMEOUT)
            .map(|(_, high)| high.max(0) as u64)
            .map_err(|e| IngestError(e.to_string()))
    }

    fn remote_state(
        &self,
        partition: Partition,
    ) -> Result<Option<super::RemoteState>, IngestError> {
        let topic = topics::get(Role::State).name;
        let mut reader = crate::changelog::Reader::default();
        let mut state = super::RemoteState::default();
        read_to_end(&self.opts, &topic, partition, |r| {
            if let Ok(entry) = crate::changelog::Entry::decode(&r.key, &r.value)
                && let crate::changelog::Verdict::Accept(record) = reader.next(entry)
            {
                state.records.insert(record.reservation_no.clone(), record);
            }
        })
        .map_err(|e| IngestError(e.to_string()))?;
        state.applied = reader.resume_offset();
        Ok(Some(state))
    }
}
