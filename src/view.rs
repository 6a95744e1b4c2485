//! What the partition owners publish and HTTP reads: each partition's current state (its
//! [`View`]), the reservations of each user ([`UserIndex`]), and each partition's
//! [`PartitionStatus`] (owned, ready, epoch, applied position). Written only by the owner of a
//! partition, and only after the batch that produced a change is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use compact_str::CompactString;
use dashmap::DashMap;

use crate::core::changelog::Stored;
use crate::core::step::StateView;
use crate::core::{Epoch, Offset, Partition, PartitionCount, ReservationNo};

/// The state of one partition as seen by queries; written only by the partition's owner.
pub type View = DashMap<ReservationNo, Stored>;

impl StateView for View {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        match self.get(key) {
            Some(r) => f(Some(r.value())),
            None => f(None),
        }
    }
}

/// Reservations by user, derived from the changelog: kept by the partition owners, read by
/// the gateway to route an association that names only its user.
pub type UserIndex = DashMap<CompactString, Vec<ReservationNo>>;

/// Adds `no` to the reservations of `user`.
pub fn index_user(users: &UserIndex, user: &CompactString, no: &ReservationNo) {
    let mut list = users.entry(user.clone()).or_default();
    if !list.contains(no) {
        list.push(no.clone());
    }
}

/// Makes a durable batch's changes visible to queries (and the user index).
pub fn publish(view: &View, users: &UserIndex, changes: &mut HashMap<ReservationNo, Stored>) {
    for (key, stored) in changes.drain() {
        if !view.contains_key(&key) {
            index_user(users, &stored.entity.user_id, &key);
        }
        view.insert(key, stored);
    }
}

/// What a partition's owner shares with the rest of the process.
#[derive(Debug)]
pub struct PartitionStatus {
    /// Set while this process owns the partition (from assignment, before the restore).
    owned: AtomicBool,
    /// Set once the state is restored and the epoch taken.
    ready: AtomicBool,
    /// The epoch this owner holds.
    epoch: AtomicU64,
    /// The next input offset to process: every offset below it is applied and durable.
    position: tokio::sync::watch::Sender<Offset>,
}

impl Default for PartitionStatus {
    fn default() -> Self {
        PartitionStatus {
            owned: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            position: tokio::sync::watch::channel(Offset(0)).0,
        }
    }
}

impl PartitionStatus {
    /// Whether this process owns the partition (restoring or serving).
    pub fn is_owned(&self) -> bool {
        self.owned.load(Ordering::Acquire)
    }

    /// Whether the partition is restored and its epoch taken.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Owned but not ready yet.
    pub fn is_restoring(&self) -> bool {
        self.is_owned() && !self.is_ready()
    }

    /// The epoch this process holds for the partition.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// The partition is this process's: restoring from now on.
    pub fn set_owned(&self) {
        self.owned.store(true, Ordering::Release);
    }

    /// Restored under `epoch`, resuming at `position`: ready.
    pub fn set_ready(&self, epoch: Epoch, position: Offset) {
        self.epoch.store(epoch.0, Ordering::Release);
        self.set_position(position);
        self.ready.store(true, Ordering::Release);
    }

    /// The partition is no longer this process's.
    pub fn set_released(&self) {
        self.ready.store(false, Ordering::Release);
        self.owned.store(false, Ordering::Release);
    }

    /// The next input offset to process.
    pub fn position(&self) -> Offset {
        *self.position.borrow()
    }

    /// Publishes a new position to waiting readers.
    pub fn set_position(&self, position: Offset) {
        self.position.send_replace(position);
    }

    /// Follows the position, for readers waiting to read their own writes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Offset> {
        self.position.subscribe()
    }
}

/// Every partition of the deployment as this process sees it.
#[derive(Debug)]
pub struct Partitions {
    pub views: Vec<Arc<View>>,
    pub users: Arc<UserIndex>,
    pub statuses: Vec<Arc<PartitionStatus>>,
}

impl Partitions {
    /// Empty views, none owned.
    pub fn new(n: PartitionCount) -> Self {
        Partitions {
            views: n.iter().map(|_| Arc::new(View::new())).collect(),
            users: Arc::new(UserIndex::new()),
            statuses: n
                .iter()
                .map(|_| Arc::new(PartitionStatus::default()))
                .collect(),
        }
    }

    /// The view of `p`.
    pub fn view(&self, p: Partition) -> &Arc<View> {
        &self.views[p.index()]
    }

    /// The status of `p`.
    pub fn status(&self, p: Partition) -> &Arc<PartitionStatus> {
        &self.statuses[p.index()]
    }

    /// Partitions owned here that are not restored yet.
    pub fn restoring(&self) -> Vec<u32> {
        (0..self.statuses.len() as u32)
            .filter(|p| self.statuses[*p as usize].is_restoring())
            .collect()
    }
}
