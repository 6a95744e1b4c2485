//! The consumer-group driver (`ordo run --brokers …`): a member of a Kafka consumer group with
//! one dedicated owner thread per assigned partition.
//!
//! The group consumer only says which partitions are this member's: its assigned partitions
//! are paused at once, and the main thread polls it for rebalance callbacks, offset commits and
//! errors. Each owner thread reads its partition itself, with a reader of its own that starts
//! exactly where the owner resumes, so what an owner reads never depends on how the group
//! consumer's fetch queue behaves across rebalances.
//!
//! On assignment an owner restores its partition's state from `reservation-state` to the end,
//! writes an epoch marker above every earlier one, publishes who serves the partition to
//! `reservation-owners`, and resumes after the last offset the changelog proves applied (never
//! after the group's committed offset alone, which a fenced former owner may have moved on).
//! An owner that sees a higher epoch for its partition on `reservation-owners` stops at once;
//! the member takes the partition back when that owner lets it go. Each batch's dead letters and state
//! records are produced (idempotent, `acks=all`) and acknowledged before its offset is committed
//! and its states become visible. On revocation the owner finishes its batch and the main
//! thread commits its position synchronously before the partition moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tracing::{error, info, warn};

mod connections;
mod context;
mod driver;
mod transaction;

pub use connections::Connections;
pub use context::MemberContext;
use context::partitions_of;
use driver::{KafkaDriver, RESTORE_QUEUE, Restored};

use super::{Options, Owner, OwnerError};
use crate::core::ownership::{OwnersEntry, OwnersKey, OwnershipRecord};
use crate::core::record::NewRecord;
use crate::core::{Epoch, Offset, Partition, PartitionCount};
use crate::log::kafka::{
    BulkReader, KafkaLogError, KafkaOptions, KafkaProducer, Outgoing, partition_list, tail,
    transaction_group,
};
use crate::log::now_millis;
use crate::log::topics::Role;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::view::Partitions;

/// How long an owner waits for input before it looks at its stop flag again: the most a
/// revocation or shutdown waits for an idle owner.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// Batches an owner keeps in flight (sent, not yet acknowledged) while it reads on: 8 measured
/// best on tansu (4: 78 % of the raw pipe; 8: 86–91 %).
const MAX_IN_FLIGHT: usize = 8;

/// How often `--until-idle` says what it is still waiting for.
const IDLE_REPORT: Duration = Duration::from_secs(10);

/// How long the member's poll of the group consumer waits: the most an idle-exit or a failure
/// waits to be noticed (rebalance callbacks are served from the same poll).
const MEMBER_POLL: Duration = Duration::from_millis(10);

/// What went wrong in the group member.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Kafka(#[from] KafkaLogError),
    #[error("partition {partition} owner failed: {source}")]
    Owner {
        partition: Partition,
        source: OwnerError<KafkaLogError>,
    },
    #[error("cannot start the owner thread of partition {partition}: {source}")]
    Spawn {
        partition: Partition,
        source: std::io::Error,
    },
}

/// What the member and an owner thread share about its partition.
#[derive(Default)]
struct Flags {
    /// Asks the owner to finish its batch and let the partition go.
    stop: AtomicBool,
    /// The owner's last fetch found nothing more: it has applied its partition to the end.
    caught_up: AtomicBool,
    /// A newer owner holds the partition (seen on `reservation-owners`, or its marker landed
    /// first): this member's owner stopped, commits nothing more, and takes the partition
    /// again only once that owner lets it go.
    superseded: AtomicBool,
    /// The owner ended on an aborted transaction: the member starts the partition's owner
    /// again, from the changelog (which holds nothing of that transaction).
    restart: AtomicBool,
}

/// How often a partition's owner is started again after aborted transactions before the
/// member fails (an abort that repeats, such as a record the broker refuses, is not met by
/// starting over).
const MAX_RESTARTS: u32 = 5;

/// The owner thread of one assigned partition, as the member sees it.
struct OwnerThread {
    flags: Arc<Flags>,
    handle: JoinHandle<Option<Offset>>,
}

/// What a member did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Input records processed by this member's owners.
    pub consumed: u64,
}

/// Everything the poll thread, the rebalance callbacks and the owners share.
struct Member {
    kafka: KafkaOptions,
    n: PartitionCount,
    events_topic: String,
    state_topic: String,
    dlq_topic: String,
    owners_topic: String,
    producer: Arc<KafkaProducer>,
    shared: Arc<Partitions>,
    metrics: Arc<Metrics>,
    options: Options,
    owners: Mutex<HashMap<Partition, OwnerThread>>,
    consumer: OnceLock<Weak<BaseConsumer<MemberContext>>>,
    failures: Mutex<Vec<GroupError>>,
    /// Reads the changelog partitions of each assignment, all through one connection.
    restorer: Mutex<BulkReader>,
    /// Input records processed by owners that have finished.
    processed: std::sync::atomic::AtomicU64,
    /// Under exactly-once: the group as its offsets are committed in transactions.
    transaction_group: Option<rdkafka::consumer::ConsumerGroupMetadata>,
    /// How often each partition's owner was started again after an aborted transaction.
    restarts: Mutex<HashMap<Partition, u32>>,
}

impl Member {
    /// Publishes that this member holds `p` under `epoch`, whose marker is at `marker` in the
    /// changelog (at its advertised URL), or that it let it go (`held: false`).
    fn publish_ownership(
        &self,
        p: Partition,
        epoch: Epoch,
        marker: Option<Offset>,
        held: bool,
    ) -> Result<(), KafkaLogError> {
        let mut record = OwnershipRecord {
            partition: p.0,
            epoch,
            owner: self.options.owner_id.clone(),
            url: self.options.advertise.clone().filter(|_| held),
            ts: now_millis(),
            held: Some(held),
            marker,
            sig: None,
        };
        if let Some(key) = &self.options.owners_key {
            record.sign(key);
        }
        self.producer.send_all(&[Outgoing {
            topic: &self.owners_topic,
            partition: Partition(0),
            record: NewRecord {
                key: record.key().into_bytes(),
                value: record.to_json(),
                timestamp: record.ts,
                headers: Vec::new(),
            },
        }])?;
        // This member knows at once; the others when their follower reads it.
        self.shared.apply_ownership(record);
        Ok(())
    }

    /// Notes the time of a rebalance callback (`ordo_last_rebalance_timestamp_seconds`).
    fn rebalanced(&self) {
        self.metrics
            .last_rebalance
            .set(crate::log::now_millis() / 1000);
    }

    /// Reads the changelog of newly assigned partitions through the member's one restore
    /// reader, handing each owner its records (on a thread: the rebalance callback returns at
    /// once).
    fn restore(
        self: &Arc<Self>,
        owners: HashMap<Partition, std::sync::mpsc::SyncSender<Restored>>,
    ) {
        let member = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ordo-restore".into())
            .spawn(move || {
                let partitions: Vec<Partition> = owners.keys().copied().collect();
                let reader = member.restorer.lock().unwrap_or_else(|e| e.into_inner());
                let result = reader.read_to_end(&partitions, |p, record| {
                    if let Some(tx) = owners.get(&p) {
                        // An owner that is gone (it failed) takes nothing more.
                        let _ = tx.send(match record {
                            Some(r) => Restored::Record(r),
                            None => Restored::End,
                        });
                    }
                });
                if let Err(e) = result {
                    for tx in owners.values() {
                        let _ = tx.try_send(Restored::Failed(e.to_string()));
                    }
                }
            });
        if let Err(e) = spawned {
            // The owners' channels close unanswered: each fails its restore.
            error!(error = %e, "cannot start the restore thread");
        }
    }

    fn start_owner(
        self: &Arc<Self>,
        p: Partition,
        committed: Offset,
        restored: std::sync::mpsc::Receiver<Restored>,
    ) {
        let flags = Arc::new(Flags::default());
        let member = self.clone();
        let owner_flags = flags.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ordo-p{p}"))
            .spawn(move || {
                let owner = Owner {
                    partition: p,
                    partitions: member.n,
                    partitioner: member.kafka.partitioner,
                    shared: &member.shared,
                    metrics: &member.metrics,
                    batch_size: member.options.batch_size,
                };
                let mut driver = KafkaDriver {
                    member: &member,
                    partition: p,
                    committed,
                    flags: owner_flags,
                    restored: Some(restored),
                    reader: None,
                    reading: false,
                    in_flight: std::collections::VecDeque::new(),
                    epoch: None,
                    restored_end: Offset(0),
                    marker_offset: None,
                    transactions: None,
                    checked: None,
                };
                match owner.run(&mut driver) {
                    Ok(report) => {
                        member
                            .processed
                            .fetch_add(report.processed, Ordering::Relaxed);
                        // A superseded owner's position is not this member's to commit.
                        (!driver.flags.superseded.load(Ordering::Acquire))
                            .then_some(report.position)
                    }
                    Err(OwnerError::Driver(e @ KafkaLogError::Fenced { .. })) => {
                        // A newer owner's producer took the transactional id: this one's open
                        // transaction is aborted, and the partition is the newer owner's.
                        warn!(partition = p.0, error = %e, "partition owner fenced; letting the partition go");
                        driver.flags.superseded.store(true, Ordering::Release);
                        None
                    }
                    Err(OwnerError::Driver(e @ KafkaLogError::Aborted { .. }))
                        if member.restart_allowed(p) =>
                    {
                        warn!(partition = p.0, error = %e, "transaction aborted; starting the partition's owner again from its changelog");
                        driver.flags.restart.store(true, Ordering::Release);
                        None
                    }
                    Err(e) => {
                        error!(partition = p.0, error = %e, "partition owner failed");
                        member.lock_failures().push(GroupError::Owner {
                            partition: p,
                            source: e,
                        });
                        None
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                self.lock_owners().insert(p, OwnerThread { flags, handle });
            }
            Err(source) => {
                error!(partition = p.0, error = %source, "cannot start a partition owner thread");
                self.lock_failures().push(GroupError::Spawn {
                    partition: p,
                    source,
                });
            }
        }
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, OwnerThread>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, Vec<GroupError>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the owners of `partitions`, joins them, and commits their positions.
    fn stop_owners(&self, consumer: &BaseConsumer<MemberContext>, partitions: &[Partition]) {
        let owners: Vec<(Partition, OwnerThread)> = {
            let mut map = self.lock_owners();
            partitions
                .iter()
                .filter_map(|p| map.remove(p).map(|o| (*p, o)))
                .collect()
        };
        for (_, owner) in &owners {
            owner.flags.stop.store(true, Ordering::Release);
        }
        let mut released = Vec::new();
        for (p, owner) in owners {
            if let Ok(Some(position)) = owner.handle.join() {
                info!(partition = p.0, position = position.0, "partition released");
                released.push((p, position));
            }
        }
        let tpl = partition_list(&self.events_topic, released);
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            warn!(error = %e, "commit on release failed; the next owner resumes from the changelog");
        }
    }

    /// Counts a restart of `p`'s owner; false once it has had [`MAX_RESTARTS`].
    fn restart_allowed(&self, p: Partition) -> bool {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        let n = restarts.entry(p).or_default();
        *n += 1;
        *n <= MAX_RESTARTS
    }

    fn commit_async(&self, p: Partition, position: Offset) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let tpl = partition_list(&self.events_topic, [(p, position)]);
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            // The changelog records the position too; a failed commit only costs a re-read.
            warn!(partition = p.0, error = %e, "offset commit failed");
        }
    }

    /// Logs what `--until-idle` is waiting for: this member's partitions not caught up yet,
    /// and the partitions the group has not given it (held by other members, which may be
    /// gone without leaving: some brokers, tansu among them, never evict such a member).
    fn report_waiting(&self, consumer: &BaseConsumer<MemberContext>) {
        let assigned = consumer
            .assignment()
            .map(|a| partitions_of(&a))
            .unwrap_or_default();
        let behind: Vec<u32> = {
            let owners = self.lock_owners();
            assigned
                .iter()
                .filter(|p| {
                    !self.shared.status(**p).is_ready()
                        || !owners
                            .get(p)
                            .is_some_and(|o| o.flags.caught_up.load(Ordering::Acquire))
                })
                .map(|p| p.0)
                .collect()
        };
        let table = self.shared.owners();
        let elsewhere: Vec<String> = self
            .n
            .iter()
            .filter(|p| !assigned.contains(p))
            .map(|p| match table.get(p) {
                Some(r) if r.url.is_some() || r.owner != self.options.owner_id => {
                    format!("{p} (last owned by {}, epoch {})", r.owner, r.epoch.0)
                }
                _ => p.to_string(),
            })
            .collect();
        warn!(
            assigned = ?assigned.iter().map(|p| p.0).collect::<Vec<_>>(),
            behind = ?behind,
            not_assigned_here = ?elsewhere,
            "--until-idle is still waiting: for this member's partitions to catch up, and for \
             the group to assign it any at all (a member that died without leaving the group \
             keeps its partitions until the broker evicts it)"
        );
    }

    /// Every assigned partition's owner is ready and has applied its input to the end (or was
    /// superseded and another member still serves it; once that one lets it go, this member
    /// takes it back).
    fn caught_up(&self, consumer: &BaseConsumer<MemberContext>) -> bool {
        let Ok(assignment) = consumer.assignment() else {
            return false;
        };
        let owners = self.lock_owners();
        assignment.count() > 0
            && partitions_of(&assignment).into_iter().all(|p| {
                owners.get(&p).is_some_and(|o| {
                    (o.flags.superseded.load(Ordering::Acquire)
                        && self.shared.holder(p).is_some_and(|r| r.is_held()))
                        || (self.shared.status(p).is_ready()
                            && o.flags.caught_up.load(Ordering::Acquire))
                })
            })
    }

    /// Serves the group until shutdown, a failed owner (its error), or with `until_idle`
    /// until every assigned partition has caught up. Rebalance callbacks, commits and errors
    /// are served here; the assigned partitions are paused, so a record is a rare leftover
    /// fetched before the pause and is dropped (its owner reads it itself).
    fn serve(
        self: &Arc<Self>,
        consumer: &BaseConsumer<MemberContext>,
        shutdown: &Shutdown,
    ) -> Option<GroupError> {
        let mut next_report = Instant::now() + IDLE_REPORT;
        while !shutdown.is_triggered() {
            match consumer.poll(MEMBER_POLL) {
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | Some(Ok(_)) | None => {}
                Some(Err(e)) => warn!(error = %e, "consumer error"),
            }
            self.retake_released();
            if self.options.until_idle {
                if self.caught_up(consumer) {
                    tracing::debug!("every assigned partition caught up");
                    return None;
                }
                if Instant::now() >= next_report {
                    self.report_waiting(consumer);
                    next_report += IDLE_REPORT;
                }
            }
            if let Some(e) = self.lock_failures().pop() {
                return Some(e);
            }
        }
        None
    }

    /// Takes back the assigned partitions whose owner was superseded once the newer owner has
    /// let them go (`reservation-owners` says released): the group still gives them to this
    /// member, and no other member may be serving them.
    fn retake_released(self: &Arc<Self>) {
        let released: Vec<Partition> = {
            let owners = self.lock_owners();
            owners
                .iter()
                .filter(|(p, o)| {
                    let superseded = o.flags.superseded.load(Ordering::Acquire)
                        && self.shared.holder(**p).is_some_and(|r| !r.is_held());
                    o.handle.is_finished()
                        && (superseded || o.flags.restart.load(Ordering::Acquire))
                })
                .map(|(p, _)| *p)
                .collect()
        };
        if released.is_empty() {
            return;
        }
        let mut restores = HashMap::new();
        for p in released {
            let old = self.lock_owners().remove(&p);
            if let Some(old) = old {
                let _ = old.handle.join();
            }
            info!(partition = p.0, "taking the partition back");
            let (tx, rx) = std::sync::mpsc::sync_channel(RESTORE_QUEUE);
            restores.insert(p, tx);
            self.start_owner(p, Offset(0), rx);
        }
        self.restore(restores);
    }
}

/// Joins the group behind `kafka` and owns what it assigns, until idle (`until_idle`) or
/// `shutdown`; then releases every partition (commit, leave the group).
pub fn run(
    kafka: &KafkaOptions,
    n: PartitionCount,
    connections: Connections,
    shared: &Arc<Partitions>,
    metrics: &Arc<Metrics>,
    options: &Options,
    shutdown: &Shutdown,
) -> Result<Summary, GroupError> {
    let member = Arc::new(Member {
        events_topic: kafka.topic(Role::Events),
        state_topic: kafka.topic(Role::State),
        dlq_topic: kafka.topic(Role::DeadLetters),
        owners_topic: kafka.topic(Role::Owners),
        shared: shared.clone(),
        metrics: metrics.clone(),
        owners: Mutex::new(HashMap::new()),
        consumer: OnceLock::new(),
        failures: Mutex::new(Vec::new()),
        restorer: Mutex::new(connections.restorer),
        processed: std::sync::atomic::AtomicU64::new(0),
        producer: connections.producer.clone(),
        options: options.clone(),
        kafka: kafka.clone(),
        n,
        transaction_group: match options.guarantee {
            super::Guarantee::ExactlyOnce { .. } => Some(transaction_group(kafka)?),
            super::Guarantee::AtLeastOnce => None,
        },
        restarts: Mutex::new(HashMap::new()),
    });
    let consumer: Arc<BaseConsumer<MemberContext>> = Arc::new(
        kafka
            .group_consumer_config()
            .create_with_context(MemberContext {
                member: member.clone(),
            })
            .map_err(|source| KafkaLogError::Kafka {
                op: "create consumer",
                source,
            })?,
    );
    let _ = member.consumer.set(Arc::downgrade(&consumer));
    tracing::debug!("group consumer created; subscribing");
    consumer
        .subscribe(&[&member.events_topic])
        .map_err(|source| KafkaLogError::Kafka {
            op: "subscribe",
            source,
        })?;

    // Follow `reservation-owners` for the table of who serves what.
    let follower = {
        let (kafka, shared, stop) = (kafka.clone(), shared.clone(), shutdown.clone());
        let key = options.owners_key.clone();
        std::thread::Builder::new()
            .name("ordo-owners".into())
            .spawn(move || follow_owners(&kafka, &shared, key.as_ref(), &stop))
            .map_err(|source| GroupError::Spawn {
                partition: Partition(0),
                source,
            })?
    };

    let started = Instant::now();
    let failure = member.serve(&consumer, shutdown);
    // Release every partition: finish, commit, leave the group.
    let owned: Vec<Partition> = member.lock_owners().keys().copied().collect();
    member.stop_owners(&consumer, &owned);
    consumer.unsubscribe();
    drop(consumer);
    member.producer.flush();
    shutdown.trigger();
    if let Ok(Err(e)) = follower.join() {
        warn!(error = %e, "following reservation-owners failed");
    }
    let consumed = member.processed.load(Ordering::Relaxed);
    info!(
        consumed,
        secs = started.elapsed().as_secs_f64(),
        "left the group"
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(Summary { consumed }),
    }
}

/// Reads `reservation-owners` from its beginning and folds every record into the table, until
/// `shutdown`.
fn follow_owners(
    kafka: &KafkaOptions,
    shared: &Partitions,
    key: Option<&OwnersKey>,
    shutdown: &Shutdown,
) -> Result<(), KafkaLogError> {
    let topic = kafka.topic(Role::Owners);
    tail(
        kafka,
        &topic,
        Partition(0),
        |r| match OwnersEntry::decode(&r.key, &r.value) {
            // With a deployment key, a record another producer wrote (or a member without the
            // key) neither moves queries nor makes an owner stand back.
            Ok(OwnersEntry::Owner(record))
                if key.is_some_and(|key| !record.is_signed_with(key)) =>
            {
                warn!(
                    offset = r.offset.0,
                    partition = record.partition,
                    epoch = record.epoch.0,
                    owner = %record.owner,
                    "ignoring an ownership record not signed with this deployment's key \
                     (--http-token-file)"
                );
            }
            Ok(OwnersEntry::Owner(record)) => {
                shared.apply_ownership(record);
            }
            Ok(OwnersEntry::Repartition(_) | OwnersEntry::Layout(_)) => {}
            Err(e) => warn!(offset = r.offset.0, error = %e, "skipping a bad ownership record"),
        },
        || shutdown.is_triggered(),
    )
}
