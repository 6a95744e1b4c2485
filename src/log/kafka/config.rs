//! How ordo's Kafka clients are configured, what can go wrong, and where librdkafka's own
//! messages go.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::core::partitioner::Partitioner;
use crate::core::{Partition, PartitionCount};
use crate::log::topics::{self, Role, TopicDef};

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
    /// Put before every topic name (`--topic-prefix`): several deployments on one cluster.
    pub topic_prefix: String,
    /// `group.instance.id` of `ordo run` (static membership), if any.
    pub instance_id: Option<String>,
    /// The consumer-group protocol of `ordo run`.
    pub group_protocol: GroupProtocol,
    /// What every reader sees of transactions: committed records only (the default), or
    /// also those of open and aborted ones (`ordo export --isolation read_uncommitted`).
    pub read_uncommitted: bool,
}

/// The consumer-group protocol (`--group-protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup with the client-side `cooperative-sticky` assignor.
    #[default]
    Classic,
    /// KIP-848: the broker assigns, incrementally (Apache Kafka 4.0 and later).
    Consumer,
}

impl GroupProtocol {
    /// The name, as `group.protocol` and `--group-protocol` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!(
                "unknown group protocol {other:?}; use classic or consumer"
            )),
        }
    }
}

/// How long librdkafka waits before fetching a partition again once its local queue is full.
/// Its default, 1 s, makes every reader slower than a fetch (a restore's fold, `ordo state`, a
/// replay, an owner catching up) stall for most of each second: reading a 1.48 M-record
/// changelog took 11.9 s with it and 3.4 s with 10 ms, on one Apache Kafka broker here.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaLogError {
    #[error(
        "cannot reach the brokers {brokers} within {}s ({detail}); check --brokers (ORDO_BROKERS) and that the cluster is up",
        REQUEST_TIMEOUT.as_secs()
    )]
    Unreachable { brokers: String, detail: String },
    #[error("{brokers}: {what} failed; {fix} (librdkafka's log line above says more)")]
    Refused {
        brokers: String,
        what: &'static str,
        fix: &'static str,
    },
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
        "topic {topic} has {actual} partitions but topics/ says {expected}; delete it and run `ordo topics apply`"
    )]
    FixedPartitions {
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
    #[error("cannot add partitions to topic {topic}: {code}")]
    AddPartitions {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("cannot delete topic {topic}: {code}")]
    DeleteTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "the topics under prefix `{prefix}` route keys with partitioner {recorded}, but \
         {requested} was asked for; pass --partitioner {recorded} (or leave it out)"
    )]
    PartitionerMismatch {
        prefix: String,
        recorded: crate::core::partitioner::Partitioner,
        requested: crate::core::partitioner::Partitioner,
    },
    #[error(
        "a change of N from {from} to {to} is under way on this cluster (phase {phase}); finish it \
         with `ordo repartition --brokers ... --to-partitions {to} --apply`, then start the members \
         with N = {to}"
    )]
    RepartitionInProgress {
        from: PartitionCount,
        to: PartitionCount,
        phase: String,
    },
    #[error("kafka: delivery failed: {source}")]
    Delivery { source: KafkaError },
    #[error(
        "kafka: the broker's offsets for {topic} answered no end for partition {partition} \
         ({answer}); check that the topic has N partitions (`ordo topics check`)"
    )]
    NoEnd {
        topic: String,
        partition: Partition,
        answer: String,
    },
    #[error("kafka: restoring the changelog: {0}")]
    Restore(String),
    #[error(
        "kafka: a record landed at offset {landed} where {expected} was expected (was the topic \
         written to meanwhile?)"
    )]
    Misplaced { landed: u64, expected: u64 },
    #[error(
        "{topic} partition {partition}: the changelog says its input is applied up to offset \
         {from}, past the input's end (a record not written by ordo?); nothing was skipped: \
         stop the members and rebuild the changelog with `ordo replay --brokers ... --apply`"
    )]
    BeyondEnd {
        topic: String,
        partition: u32,
        from: u64,
    },
    #[error(
        "kafka: {op}: fenced by a newer owner of the partition ({source}); this owner's open \
         transaction is aborted and none of its records become visible"
    )]
    Fenced {
        op: &'static str,
        source: KafkaError,
    },
    #[error("kafka: transaction aborted after {op} failed: {source}")]
    Aborted {
        op: &'static str,
        source: KafkaError,
    },
    #[error("kafka: transaction {op} failed: {source}")]
    Transaction {
        op: &'static str,
        source: KafkaError,
    },
    #[error(
        "--guarantee exactly-once needs a broker with transactions, and {brokers} answered \
         {detail}; use Apache Kafka (0.11 or later), or run with --guarantee at-least-once"
    )]
    NoTransactions { brokers: String, detail: String },
    #[error("kafka: reading {topic}/{partition} made no progress for {secs}s")]
    Stalled {
        topic: String,
        partition: u32,
        secs: u64,
    },
}

pub(crate) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> KafkaLogError {
    move |source| KafkaLogError::Kafka { op, source }
}

impl KafkaOptions {
    /// Options for `brokers`, with every other setting at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaOptions {
            brokers: brokers.into(),
            group: DEFAULT_GROUP.to_owned(),
            properties: Vec::new(),
            partitioner: Partitioner::default(),
            topic_prefix: String::new(),
            instance_id: None,
            group_protocol: GroupProtocol::default(),
            read_uncommitted: false,
        }
    }

    /// The name of the topic with `role` in this deployment (under its prefix).
    pub fn topic(&self, role: Role) -> String {
        format!("{}{}", self.topic_prefix, topics::get(role).name)
    }

    /// The staging copy of `role`'s topic that a rebuild of N writes before it recreates the
    /// original from it (`ordo repartition --brokers`).
    pub fn staging_topic(&self, role: Role) -> String {
        format!("{}{}", self.topic(role), topics::STAGING_SUFFIX)
    }

    /// The `transactional.id` of partition `p`'s owners under `--guarantee exactly-once`: one
    /// per partition of this deployment's input, so each new owner fences the one before.
    pub fn transactional_id(&self, p: Partition) -> String {
        format!("{}.{p}", self.transactional_id_prefix())
    }

    /// What every `transactional.id` of this deployment starts with.
    pub fn transactional_id_prefix(&self) -> String {
        format!("{}.{}", self.group, self.topic(Role::Events))
    }

    /// The definitions of `topics/`, named as in this deployment.
    pub fn topic_defs(&self) -> Vec<TopicDef> {
        topics::prefixed(&self.topic_prefix)
    }

    /// Settings every client shares, then the user's `-X` properties.
    pub(crate) fn base(&self, defaults: &[(&str, &str)]) -> ClientConfig {
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
        let common = [
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "10"),
            ("queued.max.messages.kbytes", "16384"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
            ("enable.partition.eof", "true"),
        ];
        let mut c = match self.group_protocol {
            GroupProtocol::Classic => {
                let mut d = common.to_vec();
                d.extend([
                    ("group.protocol", "classic"),
                    ("partition.assignment.strategy", "cooperative-sticky"),
                    ("session.timeout.ms", "10000"),
                    ("heartbeat.interval.ms", "1000"),
                ]);
                self.base(&d)
            }
            // The broker owns the session timeout, the heartbeat and the assignor.
            GroupProtocol::Consumer => {
                let mut d = common.to_vec();
                d.push(("group.protocol", "consumer"));
                self.base(&d)
            }
        };
        c.set("group.id", &self.group);
        c.set("isolation.level", self.isolation());
        if let Some(id) = &self.instance_id {
            c.set("group.instance.id", id);
        }
        c
    }

    /// Every reader of ordo's topics skips aborted transactions (a crashed or fenced owner's,
    /// under exactly-once) and waits for open ones; without transactions both levels read the
    /// same records.
    fn isolation(&self) -> &'static str {
        match self.read_uncommitted {
            true => "read_uncommitted",
            false => "read_committed",
        }
    }

    /// A consumer outside the group, for reading partitions by assignment.
    pub fn reader_config(&self) -> ClientConfig {
        self.base(&[
            ("isolation.level", self.isolation()),
            ("group.id", "ordo-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("fetch.wait.max.ms", "10"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ])
    }

    /// The idempotent producer (`acks=all`).
    pub fn producer_config(&self) -> ClientConfig {
        self.base(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // A batch's records are handed over together and wait for their acknowledgements,
            // so lingering only adds latency (association lookups wait on it).
            ("linger.ms", "0"),
            // Never time a record out inside librdkafka (a timed-out record starts a new
            // idempotence sequence, so a later batch could land after a lost one); the sender
            // gives up after `DELIVERY_TIMEOUT` instead and fails.
            ("message.timeout.ms", "0"),
            // Owners keep several batches in flight: any other failure that could leave a gap
            // stops the producer instead.
            ("enable.gapless.guarantee", "true"),
        ])
    }

    /// A consumer that only asks for metadata and watermarks.
    pub fn metadata_client(&self) -> Result<Closing<BaseConsumer<QuietEof>>, KafkaLogError> {
        self.reader_config()
            .create_with_context(QuietEof)
            .map(Closing::new)
            .map_err(kafka("create client"))
    }
}

/// A client whose drop runs on a thread of its own. librdkafka only assigns partitions to a
/// consumer with a group id, and rdkafka closes such a consumer by polling in 100 ms steps:
/// without this, every reader would add that to each hand-over and to every exit.
pub struct Closing<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Closing<T> {
    pub fn new(client: T) -> Self {
        Closing(Some(client))
    }
}

impl<T: Send + 'static> std::ops::Deref for Closing<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> std::ops::DerefMut for Closing<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for Closing<T> {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            let (count, _) = &CLOSING;
            *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            // Should the thread not start, the closure and its client are dropped here, only
            // more slowly; either way the count goes down once the client is gone.
            let closed = Closed;
            let _ = std::thread::Builder::new()
                .name("ordo-close".into())
                .spawn(move || {
                    drop(client);
                    drop(closed);
                });
        }
    }
}

/// Clients still being closed on their own threads, and a signal when one is done.
static CLOSING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// Counts a close as done when dropped (also when the closing thread never started).
struct Closed;

impl Drop for Closed {
    fn drop(&mut self) {
        let (count, done) = &CLOSING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        done.notify_all();
    }
}

/// Waits, at most `limit`, until every client handed to [`Closing`] is closed. A process
/// must not exit meanwhile: exiting runs OpenSSL's clean-up while librdkafka's threads may
/// still use TLS, and the process can then die of a signal with nothing said.
pub fn wait_for_closes(limit: Duration) {
    let (count, done) = &CLOSING;
    let n = count.lock().unwrap_or_else(|e| e.into_inner());
    let _ = done.wait_timeout_while(n, limit, |n| *n > 0);
}

pub(crate) fn unreachable_or(
    opts: &KafkaOptions,
    e: KafkaError,
    op: &'static str,
) -> KafkaLogError {
    classify(opts, e, op, recent_refusal())
}

/// How long a TLS or SASL refusal reported through a client's error callback explains a later
/// failure to reach the brokers.
const REFUSAL_EXPLAINS: Duration = Duration::from_secs(60);

/// The last TLS or SASL refusal a client of this process reported through its error callback,
/// and when. librdkafka reports a failed handshake there, and an operation under way then often
/// fails with only a transport failure or a timeout (which one depends on when the handshake
/// failed): the refusal says why, and what to fix.
static LAST_REFUSAL: std::sync::Mutex<Option<(RDKafkaErrorCode, std::time::Instant)>> =
    std::sync::Mutex::new(None);

fn recent_refusal() -> Option<RDKafkaErrorCode> {
    let last = LAST_REFUSAL.lock().unwrap_or_else(|e| e.into_inner());
    last.filter(|(_, at)| at.elapsed() < REFUSAL_EXPLAINS)
        .map(|(code, _)| code)
}

/// `e` as ordo's error: a broker that cannot be reached is [`KafkaLogError::Unreachable`],
/// unless a TLS or SASL refusal (`refused`, seen lately) explains it; a refusal is
/// [`KafkaLogError::Refused`], naming what to check.
fn classify(
    opts: &KafkaOptions,
    e: KafkaError,
    op: &'static str,
    refused: Option<RDKafkaErrorCode>,
) -> KafkaLogError {
    let code = match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::RequestTimedOut,
        ) => match refused {
            Some(code) => Some(code),
            None => {
                return KafkaLogError::Unreachable {
                    brokers: opts.brokers.clone(),
                    detail: e.to_string(),
                };
            }
        },
        code => code,
    };
    match code {
        Some(RDKafkaErrorCode::Authentication) => KafkaLogError::Refused {
            brokers: opts.brokers.clone(),
            what: "the SASL authentication",
            fix: "check sasl.mechanisms, sasl.username and sasl.password",
        },
        Some(RDKafkaErrorCode::SSL) => KafkaLogError::Refused {
            brokers: opts.brokers.clone(),
            what: "the TLS handshake (the broker's certificate is not trusted, or does not name \
                   the host)",
            fix: "check ssl.ca.location (the CA that signed the broker's certificate), and \
                  ssl.certificate.location and ssl.key.location if the listener asks for a \
                  client certificate",
        },
        _ => KafkaLogError::Kafka { op, source: e },
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
        // ordo sets `enable.gapless.guarantee` on purpose; librdkafka warns that it is
        // experimental on every producer it creates.
        L::Warning if fac == "CONFWARN" && message.contains("enable.gapless.guarantee") => {
            tracing::debug!(facility = fac, "librdkafka: {message}")
        }
        L::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Logs a librdkafka global error: end-of-partition events (which ordo asks for) not at all,
/// transient connection failures at debug, the rest as errors.
pub fn log_client_error(error: KafkaError, reason: &str) {
    if let Some(code @ (RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication)) =
        error.rdkafka_error_code()
    {
        *LAST_REFUSAL.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((code, std::time::Instant::now()));
    }
    match error {
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
        KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
        ) => tracing::debug!(error = %error, reason, "librdkafka"),
        _ => tracing::error!(error = %error, reason, "librdkafka"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation that ends in a transport failure or a timeout after the handshake was
    /// refused reports the refusal (exit 2, what to check), not an unreachable cluster.
    #[test]
    fn a_refused_handshake_explains_a_later_transport_failure() {
        let opts = KafkaOptions::new("127.0.0.1:1");
        let transport = || KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(matches!(
            classify(&opts, transport(), "read", None),
            KafkaLogError::Unreachable { .. }
        ));
        for (seen, what) in [
            (RDKafkaErrorCode::SSL, "TLS"),
            (RDKafkaErrorCode::Authentication, "SASL"),
        ] {
            let e = classify(&opts, transport(), "read", Some(seen));
            assert!(
                matches!(e, KafkaLogError::Refused { what: w, .. } if w.contains(what)),
                "{e}"
            );
        }
        // Other errors keep their own meaning.
        let other = KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(matches!(
            classify(&opts, other, "read", Some(RDKafkaErrorCode::SSL)),
            KafkaLogError::Kafka { .. }
        ));
    }
}
