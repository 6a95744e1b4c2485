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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{info, warn};

mod connections;
mod context;
mod driver;
mod threads;
mod transaction;

pub use connections::Connections;
pub use context::MemberContext;
use context::partitions_of;
use threads::OwnerThread;

use super::{Options, OwnerError};
use crate::core::ownership::{OwnersEntry, OwnersKey, OwnershipRecord};
use crate::core::record::NewRecord;
use crate::core::{Epoch, Offset, Partition, PartitionCount};
use crate::log::kafka::{
    BulkReader, KafkaLogError, KafkaOptions, KafkaProducer, Outgoing, tail, transaction_group,
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

/// How often the pause watch looks.
const PAUSE_WATCH: Duration = Duration::from_millis(100);

/// The longest pause of this process after which its partitions must be checked before they
/// are served: half the group session (a pause that long, after a heartbeat up to a heartbeat
/// interval old, may let the session expire). Under KIP-848 the session is the broker's; half
/// of the client's default then.
fn pause_limit(kafka: &KafkaOptions) -> Duration {
    let session_ms = kafka
        .group_consumer_config()
        .get("session.timeout.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(10_000);
    Duration::from_millis(session_ms / 2)
}

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
            partition: p,
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

    // Watch for pauses of this process (SIGSTOP, a VM frozen) long enough for its group session
    // to expire: its partitions may be another member's by now.
    let watch = {
        let (shared, stop) = (shared.clone(), shutdown.clone());
        let limit = pause_limit(kafka);
        std::thread::Builder::new()
            .name("ordo-pauses".into())
            .spawn(move || {
                while !stop.is_triggered() {
                    if let Some(gap) = shared.watch_pauses(limit) {
                        warn!(
                            paused_ms = gap.as_millis() as u64,
                            limit_ms = limit.as_millis() as u64,
                            "this process was paused for longer than half its group session; \
                             its partitions are not served until each owner has checked it \
                             still owns its partition"
                        );
                    }
                    std::thread::sleep(PAUSE_WATCH);
                }
            })
            .map_err(|source| GroupError::Spawn {
                partition: Partition(0),
                source,
            })?
    };

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
    let _ = watch.join();
    let moving = match follower.join() {
        // A change of N began under this member: it stopped, and says why.
        Ok(Err(e @ KafkaLogError::RepartitionInProgress { .. })) => Some(GroupError::Kafka(e)),
        Ok(Err(e)) => {
            warn!(error = %e, "following reservation-owners failed");
            None
        }
        Ok(Ok(())) | Err(_) => None,
    };
    let consumed = member.processed.load(Ordering::Relaxed);
    info!(
        consumed,
        secs = started.elapsed().as_secs_f64(),
        "left the group"
    );
    match failure.or(moving) {
        Some(e) => Err(e),
        None => Ok(Summary { consumed }),
    }
}

/// Reads `reservation-owners` from its beginning and folds every record into the table, until
/// `shutdown`. A change of N recorded meanwhile (`repartition --apply` begun against a running
/// member, which it refuses only while the member holds partitions) stops the member: it
/// finishes its batches and lets its partitions go, and the error says why.
fn follow_owners(
    kafka: &KafkaOptions,
    shared: &Partitions,
    key: Option<&OwnersKey>,
    shutdown: &Shutdown,
) -> Result<(), KafkaLogError> {
    let topic = kafka.topic(Role::Owners);
    // The latest change of N, acted on once the log is read to its end (earlier records of a
    // change are followed by its later phases).
    let (mut latest, mut caught_up, mut moving) = (None, false, None);
    tail(
        kafka,
        &topic,
        Partition(0),
        |r| {
            if let Some(r) = &r {
                shared.owners_read_to(r.offset.next().unwrap_or(r.offset));
            }
            match r
                .as_ref()
                .map(|r| (r, OwnersEntry::decode(&r.key, &r.value)))
            {
                None => caught_up = true,
                // With a deployment key, a record another producer wrote (or a member without
                // the key) neither moves queries nor makes an owner stand back.
                Some((r, Ok(OwnersEntry::Owner(record))))
                    if key.is_some_and(|key| !record.is_signed_with(key)) =>
                {
                    warn!(
                        offset = r.offset.0,
                        partition = record.partition.0,
                        epoch = record.epoch.0,
                        owner = %record.owner,
                        "ignoring an ownership record not signed with this deployment's key \
                         (--http-token-file)"
                    );
                }
                Some((_, Ok(OwnersEntry::Owner(record)))) => {
                    shared.apply_ownership(record);
                }
                Some((_, Ok(OwnersEntry::Repartition(r)))) => latest = Some(r),
                Some((_, Ok(OwnersEntry::Layout(_) | OwnersEntry::Lease(_)))) => {}
                Some((r, Err(e))) => {
                    warn!(offset = r.offset.0, error = %e, "skipping a bad ownership record")
                }
            }
            if caught_up
                && moving.is_none()
                && let Some(r) = latest.as_ref().filter(|r| r.in_progress())
            {
                warn!(
                    from = r.from.get(),
                    to = r.to.get(),
                    by = %r.by,
                    "a change of N began; this member stops"
                );
                moving = Some(r.clone());
                shutdown.trigger();
            }
        },
        || shutdown.is_triggered(),
    )?;
    match moving {
        Some(r) => Err(KafkaLogError::RepartitionInProgress {
            from: r.from,
            to: r.to,
            phase: format!("{:?}", r.phase).to_lowercase(),
        }),
        None => Ok(()),
    }
}
