//! One partition read from a given offset on: the owner's reader (outside any group, with the
//! partition's watermark and leader from the client's statistics), and the kcat-style scan the
//! tools use.

use std::time::Duration;

use super::ids::partition_list;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use super::config::{Closing, KafkaLogError, KafkaOptions, REQUEST_TIMEOUT, kafka};
use super::reader::{is_transient, to_record};
use crate::core::record::Record;
use crate::core::{Offset, Partition};
use crate::log::offsets::{OffsetSpec, Start};

/// The client context of a [`PartitionReader`]: keeps the partition's high watermark and
/// whether its leader is connected, from the client's statistics.
pub struct WatermarkContext {
    high: std::sync::atomic::AtomicI64,
    /// The partition's leader broker was connected (state `UP`) at the latest statistics.
    leader_up: std::sync::atomic::AtomicBool,
}

impl ClientContext for WatermarkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        super::config::log_client_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        super::config::log_client_message(level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        // A reader is assigned one partition; librdkafka also lists an internal partition -1.
        let partitions = || {
            statistics
                .topics
                .values()
                .flat_map(|t| t.partitions.values())
                .filter(|p| p.partition >= 0)
        };
        let high = partitions().map(|p| p.hi_offset).max().unwrap_or(-1);
        if high >= 0 {
            self.high.store(high, std::sync::atomic::Ordering::Relaxed);
        }
        let leader = partitions().map(|p| p.leader).max().unwrap_or(-1);
        let up = leader >= 0
            && statistics
                .brokers
                .values()
                .any(|b| b.nodeid == leader && b.state == "UP");
        self.leader_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

impl rdkafka::consumer::ConsumerContext for WatermarkContext {}

/// How an owner's input reader waits for records (see [`PartitionReader::connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// A member that runs on: the broker holds an empty fetch up to 500 ms.
    Live,
    /// A run that ends at the input's end (`--until-idle`): up to 5 ms, since the end is only
    /// known once an empty fetch comes back.
    ToEnd,
}

impl Tail {
    fn fetch_wait_ms(self) -> &'static str {
        match self {
            Tail::Live => "500",
            Tail::ToEnd => "5",
        }
    }
}

/// One partition of a topic read from a given offset on, by one owner thread: a consumer of its
/// own, outside any group, so what it reads is exactly the partition from that offset, whatever
/// the group does.
///
/// Some Kafka-compatible brokers (tansu 0.6) answer a fetch at an offset inside a record batch
/// with the batches *after* it, silently skipping the rest of that batch. So the reader makes
/// sure its first record is at or before the offset asked for: where it is not, it starts
/// again further back (1, 16, 256, … records) and drops what comes before the offset.
pub struct PartitionReader {
    consumer: Closing<BaseConsumer<WatermarkContext>>,
    topic: String,
    partition: Partition,
    /// Records read while positioning, not handed out yet.
    pending: std::collections::VecDeque<Record>,
    /// The offset of the next record to hand out.
    next: Offset,
    /// The last poll that said anything said "end of partition".
    ended: bool,
}

/// How long positioning waits for a first record before it takes the start as one the broker
/// skips (inside a batch) or as the partition's end.
const POSITION_WAIT: Duration = Duration::from_millis(250);
/// How much further back each positioning attempt starts: reading a few batches too many costs
/// microseconds a record, an attempt costs a fetch round.
const POSITION_BACKOFF: u64 = 16;

impl PartitionReader {
    /// A reader of `topic`/`partition` from `from` on.
    pub fn new(
        opts: &KafkaOptions,
        topic: &str,
        partition: Partition,
        from: Offset,
    ) -> Result<Self, KafkaLogError> {
        let mut reader = Self::connect(opts, topic, partition, Tail::ToEnd)?;
        reader.start(from)?;
        Ok(reader)
    }

    /// A reader of `topic`/`partition` that connects now and reads nothing until
    /// [`PartitionReader::start`]: an owner connects it while it restores its state.
    pub fn connect(
        opts: &KafkaOptions,
        topic: &str,
        partition: Partition,
        tail: Tail,
    ) -> Result<Self, KafkaLogError> {
        let mut config = opts.reader_config();
        config.set("enable.partition.eof", "true");
        config.set("auto.offset.reset", "earliest");
        config.set("queued.max.messages.kbytes", "16384");
        // Lag, the input's end and whether the leader is connected: every 5 s, since each
        // report costs the member a JSON document per partition (at 1 s, an idle member at
        // N = 256 spent a third of a core on them).
        config.set("statistics.interval.ms", "5000");
        // How long the broker may hold a fetch with nothing to return. Apache Kafka answers as
        // soon as a record arrives, so a long wait costs a live owner no latency, while a short
        // one made every idle partition fetch 200 times a second (an idle member at N = 256
        // used a whole core); a run to the input's end keeps it short, as the end shows only
        // once an empty fetch returns. Some brokers hold every fetch for the whole wait even
        // when records are there (tansu 0.6): on those, pass `-X fetch.wait.max.ms=5`.
        config.set("fetch.wait.max.ms", tail.fetch_wait_ms());
        for (k, v) in &opts.properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer<WatermarkContext> = config
            .create_with_context(WatermarkContext {
                high: std::sync::atomic::AtomicI64::new(-1),
                // Until the first statistics say otherwise.
                leader_up: std::sync::atomic::AtomicBool::new(true),
            })
            .map_err(kafka("create reader"))?;
        // Connect and learn the partition's leader now.
        let _ = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT);
        Ok(PartitionReader {
            consumer: Closing::new(consumer),
            topic: topic.to_owned(),
            partition,
            pending: std::collections::VecDeque::new(),
            next: Offset(0),
            ended: false,
        })
    }

    /// Starts reading at `from`: the next record handed out is the one at `from`.
    pub fn start(&mut self, from: Offset) -> Result<(), KafkaLogError> {
        self.position(from)
    }

    fn assign(&self, at: Offset) -> Result<(), KafkaLogError> {
        self.consumer
            .assign(&partition_list(&self.topic, [(self.partition, at)]))
            .map_err(kafka("assign"))
    }

    /// Positions the reader so that the next record it hands out is the one at `from`.
    fn position(&mut self, from: Offset) -> Result<(), KafkaLogError> {
        self.pending.clear();
        self.next = from;
        let mut back = 0u64;
        loop {
            let start = Offset(from.0.saturating_sub(back));
            self.assign(start)?;
            let first = match self.first_record()? {
                Polled::Record(r) => Some(r),
                Polled::End => {
                    // librdkafka reports the end once: remember it.
                    self.ended = true;
                    None
                }
                Polled::Nothing => None,
            };
            match first {
                // Before the offset assigned: the broker found it out of range and the reader
                // was reset to the earliest record. Only past the end is that so (before the
                // start, the reset gives a later record): the changelog claims input that is
                // not there, and reading on would skip everything up to it.
                Some(r) if r.offset < start => {
                    return Err(KafkaLogError::BeyondEnd {
                        topic: self.topic.clone(),
                        partition: self.partition.0,
                        from: from.0,
                    });
                }
                // At or before `from`: the batch holding `from` was delivered whole.
                Some(r) if r.offset <= from => {
                    self.ended = false;
                    self.pending.push_back(r);
                    break;
                }
                // The partition is empty from the very start asked for.
                None if start.0 == 0 => break,
                // From the start of the log on there is nothing before `from` to find.
                Some(r) if start.0 == 0 => {
                    tracing::error!(
                        topic = %self.topic,
                        partition = self.partition.0,
                        expected = from.0,
                        got = r.offset.0,
                        "input records are gone from the log (retention?); skipping them"
                    );
                    self.next = r.offset;
                    self.ended = false;
                    self.pending.push_back(r);
                    break;
                }
                // Nothing, or a later record: `from` may sit inside a batch; start further back.
                _ => back = (back * POSITION_BACKOFF).max(1),
            }
        }
        // What precedes `from` is dropped by `fetch`, which hands out `next` first.
        Ok(())
    }

    /// One poll of the consumer.
    fn poll(&self, wait: Duration) -> Result<Polled, KafkaLogError> {
        loop {
            return match self.consumer.poll(wait) {
                Some(Ok(m)) => Ok(Polled::Record(to_record(&m))),
                Some(Err(KafkaError::PartitionEOF(_))) => Ok(Polled::End),
                Some(Err(e)) if is_transient(&e) => {
                    tracing::debug!(error = %e, topic = %self.topic, partition = self.partition.0, "read");
                    continue;
                }
                Some(Err(e)) => Err(KafkaLogError::Kafka {
                    op: "read input",
                    source: e,
                }),
                None => Ok(Polled::Nothing),
            };
        }
    }

    /// The first record after an assign, the partition's end, or nothing within
    /// `POSITION_WAIT`.
    fn first_record(&self) -> Result<Polled, KafkaLogError> {
        let deadline = std::time::Instant::now() + POSITION_WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => return Ok(Polled::Record(to_record(&m))),
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(Polled::End),
                Some(Err(e)) if is_transient(&e) => {}
                Some(Err(e)) => {
                    return Err(KafkaLogError::Kafka {
                        op: "read input",
                        source: e,
                    });
                }
                None if left.is_zero() => return Ok(Polled::Nothing),
                None => {}
            }
        }
    }

    /// Waits up to `wait` for records, then takes what is there, up to `max`, into `out`, in
    /// offset order without gaps: input offsets are contiguous, so a record past the next one
    /// expected means the broker skipped some, and the reader positions itself again. Returns
    /// whether the partition's end was reached after them.
    pub fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
        out: &mut Vec<Record>,
    ) -> Result<bool, KafkaLogError> {
        let mut wait = wait;
        while out.len() < max {
            let polled = match self.pending.pop_front() {
                Some(r) => Polled::Record(r),
                None => self.poll(wait)?,
            };
            match polled {
                Polled::Record(r) if r.offset == self.next => {
                    self.next = r.offset.next().unwrap_or(r.offset);
                    self.ended = false;
                    out.push(r);
                }
                // Read again while positioning: already handed out.
                Polled::Record(r) if r.offset < self.next => {}
                Polled::Record(r) => {
                    tracing::warn!(
                        topic = %self.topic,
                        partition = self.partition.0,
                        expected = self.next.0,
                        got = r.offset.0,
                        "the broker skipped records; reading them again"
                    );
                    let next = self.next;
                    self.position(next)?;
                }
                Polled::End => {
                    self.ended = true;
                    return Ok(true);
                }
                // librdkafka reports the end once; it stays the end until a record comes.
                Polled::Nothing => return Ok(self.ended),
            }
            wait = Duration::ZERO;
        }
        Ok(false)
    }

    /// Whether every record up to the partition's end has been handed out.
    pub fn at_end(&self) -> bool {
        self.ended && self.pending.is_empty()
    }

    /// Whether the partition's leader was connected at the latest statistics (every 5 s).
    pub fn leader_up(&self) -> bool {
        self.consumer
            .context()
            .leader_up
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The partition's high watermark as of the latest fetch statistics.
    pub fn high_watermark(&self) -> Option<Offset> {
        let high = self
            .consumer
            .context()
            .high
            .load(std::sync::atomic::Ordering::Relaxed);
        (high >= 0).then_some(Offset(high as u64))
    }
}

/// One poll's outcome.
enum Polled {
    Record(Record),
    End,
    Nothing,
}

/// How long a partition may give nothing, short of its end, before a scan gives up.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Calls `f` on each record of `topic`/`partition` in `spec`'s range, in offset order, until
/// the partition's end as of now or until `f` returns false. The broker's watermarks are not
/// trusted for the range (some Kafka-compatible brokers report them wrong): `-<n>` and
/// `s@<ms>` are resolved from the records themselves.
pub fn scan(
    opts: &KafkaOptions,
    topic: &str,
    partition: Partition,
    spec: OffsetSpec,
    mut f: impl FnMut(Record) -> bool,
) -> Result<(), KafkaLogError> {
    let from = match spec.start {
        Start::End => return Ok(()),
        Start::Offset(o) => Offset(o),
        _ => Offset(0),
    };
    let mut reader = PartitionReader::new(opts, topic, partition, from)?;
    // `-<n>`: the last n records seen; `s@<ms>`: whether the first one at or after ms came.
    let mut last = std::collections::VecDeque::new();
    let mut started = !matches!(spec.start, Start::Timestamp(_));
    let mut batch = Vec::new();
    let mut heard = std::time::Instant::now();
    loop {
        batch.clear();
        let at_end = reader.fetch(1024, std::time::Duration::from_millis(100), &mut batch)?;
        if !batch.is_empty() {
            heard = std::time::Instant::now();
        }
        for r in batch.drain(..) {
            if spec.end_timestamp.is_some_and(|e| r.timestamp >= e) {
                return Ok(());
            }
            match spec.start {
                Start::Timestamp(ms) if !started => {
                    if r.timestamp < ms {
                        continue;
                    }
                    started = true;
                }
                Start::FromEnd(k) => {
                    last.push_back(r);
                    if last.len() as u64 > k {
                        last.pop_front();
                    }
                    continue;
                }
                _ => {}
            }
            if !f(r) {
                return Ok(());
            }
        }
        if at_end {
            break;
        }
        if heard.elapsed() > STALL {
            return Err(KafkaLogError::Stalled {
                topic: topic.to_owned(),
                partition: partition.0,
                secs: STALL.as_secs(),
            });
        }
    }
    for r in last {
        if !f(r) {
            break;
        }
    }
    Ok(())
}
