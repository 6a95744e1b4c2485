//! `ordo run --brokers …`: a member of a Kafka consumer group with one dedicated owner thread
//! per assigned partition.
//!
//! The main thread polls the group consumer (rebalance callbacks, commits and errors are served
//! only there) and hands each record to the bounded channel of its partition's owner thread.
//! On assignment an owner restores its partition's state from `reservation-state` to the end,
//! writes an epoch marker above every earlier one, and resumes after the last offset applied
//! (the later of the group's committed offset and the changelog's own record of it). Each batch's
//! state records and dead letters are produced (idempotent, `acks=all`) and acknowledged before
//! its offset is committed and its states become visible. On revocation the owner finishes its
//! batch and the main thread commits its position synchronously before the partition moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::changelog::{self, Entry, EpochMarker, Verdict};
use crate::log::embedded::Commit;
use crate::log::kafka::{
    KafkaIngest, KafkaLogError, KafkaOptions, KafkaProducer, Outgoing, REQUEST_TIMEOUT,
    check_topics, read_to_end, to_record,
};
use crate::log::{NewRecord, Record, now_millis};
use crate::metrics::Metrics;
use crate::partitioner::{Partition, PartitionCount};
use crate::processor::{RunError, RunOptions, RunSummary, Shared, owner_id, start_shell};
use crate::topics::{self, Role};
use crate::worker::{
    Counters, Overlay, PartitionStatus, Processor, Tally, UserIndex, View, apply_batch, index_user,
    publish,
};

/// What the poll thread has seen of a partition.
#[derive(Default)]
struct Fetched {
    /// The offset after the last record handed to the owner.
    next: u64,
    /// A partition-EOF event came after that record.
    at_end: bool,
}

/// Records buffered per owner thread before the poll thread waits.
const CHANNEL_BOUND: usize = 20_000;

/// What went wrong in the group runner.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Kafka(#[from] KafkaLogError),
    #[error(transparent)]
    Shell(#[from] RunError),
    #[error("partition {partition} owner failed: {message}")]
    Owner { partition: u32, message: String },
}

impl GroupError {
    /// Whether the error is the user's configuration (exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Kafka(e) => e.is_usage(),
            Self::Shell(e) => e.is_usage(),
            Self::Owner { .. } => false,
        }
    }
}

enum Msg {
    Record(Record),
    /// Finish the current batch and return the position.
    Stop,
}

struct Owner {
    tx: SyncSender<Msg>,
    handle: JoinHandle<Result<u64, KafkaLogError>>,
}

/// Everything the poll thread, the rebalance callbacks and the owners share.
struct Group {
    opts: KafkaOptions,
    n: PartitionCount,
    events_topic: String,
    state_topic: String,
    dlq_topic: String,
    producer: Arc<KafkaProducer>,
    views: Vec<Arc<View>>,
    users: Arc<UserIndex>,
    statuses: Vec<Arc<PartitionStatus>>,
    metrics: Arc<Metrics>,
    owners: Mutex<HashMap<u32, Owner>>,
    consumer: OnceLock<Weak<BaseConsumer<GroupContext>>>,
    batch_size: usize,
    owner_id: String,
    failures: Mutex<Vec<(u32, String)>>,
}

/// The consumer's context: rebalance callbacks hand work to the owners.
pub struct GroupContext {
    group: Arc<Group>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::log::kafka::log_client_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::log::kafka::log_client_message(level, fac, message);
    }

    /// Consumer lag per partition: the high watermark from the latest fetch responses (sent
    /// every `statistics.interval.ms`) minus the owner's applied position.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.group.events_topic) else {
            return;
        };
        for (p, part) in &topic.partitions {
            let Some(status) = usize::try_from(*p)
                .ok()
                .and_then(|p| self.group.statuses.get(p))
            else {
                continue;
            };
            if part.hi_offset >= 0 && status.ready.load(Ordering::Acquire) {
                let lag = (part.hi_offset as u64).saturating_sub(status.position());
                self.group
                    .metrics
                    .lag
                    .with_label_values(&[&p.to_string()])
                    .set(lag as i64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.group
                    .metrics
                    .rebalances
                    .with_label_values(&["revoke"])
                    .inc();
                let partitions: Vec<u32> = tpl
                    .elements()
                    .iter()
                    .map(|e| e.partition() as u32)
                    .collect();
                info!(?partitions, "partitions revoked");
                self.group.stop_owners(consumer, &partitions);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.group
                .metrics
                .rebalances
                .with_label_values(&["assign"])
                .inc();
            let committed = consumer
                .committed_offsets((*tpl).clone(), REQUEST_TIMEOUT)
                .ok();
            for e in tpl.elements() {
                let p = e.partition() as u32;
                let offset = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(e.topic(), e.partition()))
                    .and_then(|c| match c.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o as u64),
                        _ => None,
                    })
                    .unwrap_or(0);
                info!(partition = p, committed = offset, "partition assigned");
                self.group.start_owner(p, offset);
            }
        }
    }
}

impl Group {
    fn start_owner(self: &Arc<Self>, p: u32, committed: u64) {
        let (tx, rx) = sync_channel(CHANNEL_BOUND);
        let group = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ordo-p{p}"))
            .spawn(move || {
                let result = group.own(Partition(p), committed, rx);
                if let Err(e) = &result {
                    error!(partition = p, error = %e, "partition owner failed");
                    group
                        .failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((p, e.to_string()));
                }
                result
            })
            .expect("an owner thread starts");
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p, Owner { tx, handle });
    }

    /// Stops the owners of `partitions`, joins them, and commits their positions.
    fn stop_owners(&self, consumer: &BaseConsumer<GroupContext>, partitions: &[u32]) {
        let owners: Vec<(u32, Owner)> = {
            let mut map = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            partitions
                .iter()
                .filter_map(|p| map.remove(p).map(|o| (*p, o)))
                .collect()
        };
        let mut tpl = TopicPartitionList::new();
        for (p, owner) in owners {
            let _ = owner.tx.send(Msg::Stop);
            drop(owner.tx);
            if let Ok(Ok(position)) = owner.handle.join()
                && tpl
                    .add_partition_offset(
                        &self.events_topic,
                        p as i32,
                        Offset::Offset(position as i64),
                    )
                    .is_ok()
            {
                info!(partition = p, position, "partition released");
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            warn!(error = %e, "commit on release failed; the next owner resumes from the changelog");
        }
    }

    fn dispatch(&self, record: Record) {
        let tx = {
            let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            owners.get(&record.partition.0).map(|o| o.tx.clone())
        };
        match tx {
            Some(tx) => {
                let _ = tx.send(Msg::Record(record));
            }
            None => warn!(
                partition = record.partition.0,
                "record for a partition without owner"
            ),
        }
    }

    /// The owner thread of one partition.
    fn own(&self, p: Partition, committed: u64, rx: Receiver<Msg>) -> Result<u64, KafkaLogError> {
        let started = Instant::now();
        let view = &self.views[p.0 as usize];
        let status = &self.statuses[p.0 as usize];
        status.owned.store(true, Ordering::Release);
        view.clear();
        let mut reader = changelog::Reader::default();
        let mut restored = 0u64;
        read_to_end(&self.opts, &self.state_topic, p, |r| {
            if let Ok(entry) = Entry::decode(&r.key, &r.value)
                && let Verdict::Accept(record) = reader.next(entry)
            {
                let (key, stored) = record.into_stored();
                index_user(&self.users, &stored.entity.user_id, &key);
                view.insert(key, stored);
                restored += 1;
            }
        })?;
        let plabel = p.to_string();
        self.metrics
            .restore
            .with_label_values(&[&plabel])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.fenced.inc_by(reader.fenced);
        let marker = EpochMarker {
            epoch: changelog::Epoch(reader.highest_epoch().0 + 1),
            partition: p.0,
            resume_offset: committed.max(reader.resume_offset()),
            owner: self.owner_id.clone(),
        };
        self.producer.send_all(&[Outgoing {
            topic: &self.state_topic,
            partition: p,
            record: NewRecord {
                key: marker.key().into_bytes(),
                value: marker.to_json(),
                timestamp: now_millis(),
                headers: Vec::new(),
            },
        }])?;
        let mut position = marker.resume_offset;
        status.set_position(position);
        status.epoch.store(marker.epoch.0, Ordering::Release);
        self.metrics
            .epoch
            .with_label_values(&[&plabel])
            .set(marker.epoch.0 as i64);
        self.metrics.partitions_owned.inc();
        let entries = self.metrics.state_entries.with_label_values(&[&plabel]);
        entries.set(view.len() as i64);
        status.ready.store(true, Ordering::Release);
        info!(
            partition = p.0,
            epoch = marker.epoch.0,
            restored,
            fenced = reader.fenced,
            resume_offset = position,
            "partition owned"
        );
        let processor = Processor {
            partition: p,
            partitions: self.n,
            partitioner: self.opts.partitioner,
            epoch: marker.epoch,
        };
        let counters = Counters::new(&self.metrics, p);
        let mut changes = HashMap::new();
        let mut commit = Commit::default();
        let mut records = Vec::with_capacity(self.batch_size);
        let result = loop {
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            };
            let mut stop = false;
            records.clear();
            let mut take = |m: Msg, records: &mut Vec<Record>| match m {
                // Records at or below the applied position were already applied.
                Msg::Record(r) if r.offset >= position => records.push(r),
                Msg::Record(_) => {}
                Msg::Stop => stop = true,
            };
            take(first, &mut records);
            while records.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut records),
                    Err(_) => break,
                }
            }
            if !records.is_empty() {
                let mut overlay = Overlay { changes, view };
                commit.state.clear();
                commit.dead_letters.clear();
                let mut tally = Tally::default();
                let timer = self.metrics.processing.local();
                apply_batch(
                    &processor,
                    &records,
                    &mut overlay,
                    &mut commit,
                    &mut tally,
                    &timer,
                );
                changes = overlay.changes;
                let t0 = Instant::now();
                // Dead letters first: once any state record of this batch is in the changelog
                // (which a new owner resumes after), every dead letter of the batch is too, so a
                // crash can repeat a dead letter but never lose one.
                let dead: Vec<Outgoing<'_>> = commit
                    .dead_letters
                    .drain(..)
                    .map(|record| Outgoing {
                        topic: &self.dlq_topic,
                        partition: p,
                        record,
                    })
                    .collect();
                if !dead.is_empty()
                    && let Err(e) = self.producer.send_all(&dead)
                {
                    break Err(e);
                }
                let state: Vec<Outgoing<'_>> = commit
                    .state
                    .drain(..)
                    .map(|(key, value)| Outgoing {
                        topic: &self.state_topic,
                        partition: p,
                        record: NewRecord {
                            key,
                            value,
                            timestamp: now_millis(),
                            headers: Vec::new(),
                        },
                    })
                    .collect();
                // In order per partition (idempotent producer): a state record in the changelog
                // means every earlier one of the batch is there too.
                if let Err(e) = self.producer.send_all(&state) {
                    break Err(e);
                }
                self.metrics.commit.observe(t0.elapsed().as_secs_f64());
                publish(view, &self.users, &mut changes);
                position = records.last().expect("non-empty").offset + 1;
                status.set_position(position);
                self.commit_async(p, position);
                timer.flush();
                tally.flush(&counters);
                entries.set(view.len() as i64);
            }
            if stop {
                break Ok(());
            }
        };
        self.metrics.partitions_owned.dec();
        status.ready.store(false, Ordering::Release);
        status.owned.store(false, Ordering::Release);
        result.map(|()| position)
    }

    fn commit_async(&self, p: Partition, position: u64) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(
                &self.events_topic,
                p.0 as i32,
                Offset::Offset(position as i64),
            )
            .is_ok()
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            // The changelog records the position too; a failed commit only costs a re-read.
            warn!(partition = p.0, error = %e, "offset commit failed");
        }
    }

    /// Every assigned partition has been fetched to its end (a partition-EOF event after its
    /// last record) and its owner has applied everything handed to it.
    fn caught_up(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        fetched: &HashMap<u32, Fetched>,
    ) -> bool {
        let Ok(assignment) = consumer.assignment() else {
            return false;
        };
        assignment.count() > 0
            && assignment.elements().iter().all(|e| {
                let p = e.partition() as u32;
                let status = &self.statuses[p as usize];
                fetched.get(&p).is_some_and(|f| {
                    f.at_end && status.ready.load(Ordering::Acquire) && status.position() >= f.next
                })
            })
    }
}

/// Runs as a group member until idle (`until_idle`) or `shutdown`.
pub fn run(
    kafka: KafkaOptions,
    n: PartitionCount,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<RunSummary, GroupError> {
    let started = Instant::now();
    // Refuse to start on topics that do not match N or are not co-partitioned.
    check_topics(&kafka, n)?;
    let producer = Arc::new(KafkaProducer::new(&kafka)?);
    let group = Arc::new(Group {
        events_topic: topics::get(Role::Events).name,
        state_topic: topics::get(Role::State).name,
        dlq_topic: topics::get(Role::DeadLetters).name,
        views: n.iter().map(|_| Arc::new(View::new())).collect(),
        users: Arc::new(UserIndex::new()),
        statuses: n
            .iter()
            .map(|_| Arc::new(PartitionStatus::default()))
            .collect(),
        metrics: metrics.clone(),
        owners: Mutex::new(HashMap::new()),
        consumer: OnceLock::new(),
        batch_size: opts.batch_size,
        owner_id: owner_id(),
        failures: Mutex::new(Vec::new()),
        producer: producer.clone(),
        opts: kafka.clone(),
        n,
    });
    let consumer: Arc<BaseConsumer<GroupContext>> = Arc::new(
        kafka
            .group_consumer_config()
            .create_with_context(GroupContext {
                group: group.clone(),
            })
            .map_err(|source| KafkaLogError::Kafka {
                op: "create consumer",
                source,
            })?,
    );
    let _ = group.consumer.set(Arc::downgrade(&consumer));
    consumer
        .subscribe(&[&group.events_topic])
        .map_err(|source| KafkaLogError::Kafka {
            op: "subscribe",
            source,
        })?;

    let shared = Shared {
        log: Arc::new(KafkaIngest {
            producer: producer.clone(),
            client: kafka.metadata_client()?,
            opts: kafka.clone(),
            partitions: n,
        }),
        views: group.views.clone(),
        users: group.users.clone(),
        statuses: group.statuses.clone(),
        metrics: metrics.clone(),
    };
    let (runtime, http_addr) = start_shell(opts.http, shared, shutdown.clone(), || {})?;

    let mut processed = 0u64;
    let mut failure = None;
    let mut fetched: HashMap<u32, Fetched> = HashMap::new();
    while !shutdown.load(Ordering::Acquire) {
        let mut quiet = true;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = false;
                processed += 1;
                let record = to_record(&m);
                let f = fetched.entry(record.partition.0).or_default();
                f.next = record.offset + 1;
                f.at_end = false;
                // A send fails only when the owner is gone; its failure is reported below.
                group.dispatch(record);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                fetched.entry(p as u32).or_default().at_end = true;
            }
            Some(Err(e)) => warn!(error = %e, "consumer error"),
            None => {}
        }
        if quiet && opts.until_idle && group.caught_up(&consumer, &fetched) {
            break;
        }
        if let Some((p, message)) = group
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
        {
            failure = Some(GroupError::Owner {
                partition: p,
                message,
            });
            break;
        }
    }
    // Release every partition: finish, commit, leave the group.
    let owned: Vec<u32> = group
        .owners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .copied()
        .collect();
    group.stop_owners(&consumer, &owned);
    consumer.unsubscribe();
    drop(consumer);
    producer.flush();
    shutdown.store(true, Ordering::Release);
    runtime.shutdown_timeout(Duration::from_secs(2));
    match failure {
        Some(e) => Err(e),
        None => Ok(RunSummary {
            processed,
            applied: 0,
            restored: 0,
            elapsed: started.elapsed(),
            http: http_addr,
        }),
    }
}
