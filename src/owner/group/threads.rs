//! The member's owner threads, one per assigned partition: started on assignment (their
//! changelogs read through the member's one restore reader), stopped and committed on
//! revocation, and started again from the changelog when a newer owner lets a partition go or
//! a transaction was aborted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tracing::{error, info, warn};

use super::driver::{KafkaDriver, RESTORE_QUEUE, Restored};
use super::{GroupError, Member, MemberContext};
use crate::core::{Offset, Partition};
use crate::log::kafka::{KafkaLogError, partition_list};
use crate::owner::{Owner, OwnerError};

/// What the member and an owner thread share about its partition.
#[derive(Default)]
pub(super) struct Flags {
    /// Asks the owner to finish its batch and let the partition go.
    pub(super) stop: AtomicBool,
    /// The owner's last fetch found nothing more: it has applied its partition to the end.
    pub(super) caught_up: AtomicBool,
    /// A newer owner holds the partition (seen on `reservation-owners`, or its marker landed
    /// first): this member's owner stopped, commits nothing more, and takes the partition
    /// again only once that owner lets it go.
    pub(super) superseded: AtomicBool,
    /// The owner ended on an aborted transaction: the member starts the partition's owner
    /// again, from the changelog (which holds nothing of that transaction).
    pub(super) restart: AtomicBool,
}

/// How often a partition's owner is started again after aborted transactions before the
/// member fails (an abort that repeats, such as a record the broker refuses, is not met by
/// starting over).
const MAX_RESTARTS: u32 = 5;

/// The owner thread of one assigned partition, as the member sees it.
pub(super) struct OwnerThread {
    pub(super) flags: Arc<Flags>,
    pub(super) handle: JoinHandle<Option<Offset>>,
}

impl Member {
    /// Reads the changelog of newly assigned partitions through the member's one restore
    /// reader, handing each owner its records (on a thread: the rebalance callback returns at
    /// once).
    pub(super) fn restore(
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

    pub(super) fn start_owner(
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

    pub(super) fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, OwnerThread>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_failures(&self) -> std::sync::MutexGuard<'_, Vec<GroupError>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the owners of `partitions`, joins them, and commits their positions.
    pub(super) fn stop_owners(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        partitions: &[Partition],
    ) {
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

    pub(super) fn commit_async(&self, p: Partition, position: Offset) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let tpl = partition_list(&self.events_topic, [(p, position)]);
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            // The changelog records the position too; a failed commit only costs a re-read.
            warn!(partition = p.0, error = %e, "offset commit failed");
        }
    }

    /// Takes back the assigned partitions whose owner was superseded once the newer owner has
    /// let them go (`reservation-owners` says released): the group still gives them to this
    /// member, and no other member may be serving them.
    pub(super) fn retake_released(self: &Arc<Self>) {
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
