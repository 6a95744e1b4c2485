//! What the partition owners publish and HTTP reads: each partition's current state (its
//! [`View`]), the reservations of each user ([`UserIndex`]), and each partition's
//! [`PartitionStatus`] (owned, ready, epoch, applied position). Written only by the owner of a
//! partition, and only after the batch that produced a change is durable.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use compact_str::CompactString;
use dashmap::DashMap;

use crate::core::changelog::Stored;
use crate::core::ownership::{OwnerTable, OwnershipRecord};
use crate::core::step::{StateView, States};
use crate::core::{Epoch, Offset, Partition, PartitionCount, ReservationNo};

/// The state of one partition as seen by queries; written only by the partition's owner.
pub type View = DashMap<ReservationNo, Stored, foldhash::quality::RandomState>;

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
pub type UserIndex = DashMap<CompactString, Vec<ReservationNo>, foldhash::quality::RandomState>;

/// Adds `no` to the reservations of `user`.
pub fn index_user(users: &UserIndex, user: &str, no: &ReservationNo) {
    let mut list = match users.get_mut(user) {
        Some(list) => list,
        None => users.entry(CompactString::from(user)).or_default(),
    };
    if !list.contains(no) {
        list.push(no.clone());
    }
}

/// Makes a durable batch's changes visible to queries (and the user index).
pub fn publish(view: &View, users: &UserIndex, changes: &mut States) {
    for (key, stored) in changes.drain() {
        if !view.contains_key(&key) {
            index_user(users, stored.entity.user_id(), &key);
        }
        view.insert(key, stored);
    }
}

/// What readers may wait on: whether the partition is ready here, and how far it has applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Restored, epoch taken, serving.
    pub ready: bool,
    /// The next input offset to process: every offset below it is applied and durable.
    pub position: Offset,
}

/// An input record the owner dead-lettered: its offset, the reason code and the exact error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub offset: Offset,
    pub reason: String,
    pub error: String,
}

/// What became of one input record, as its owner remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, or a duplicate of an event already applied: nothing dead-lettered.
    Accepted,
    /// Dead-lettered, with why.
    Refused(Refused),
    /// Processed before this owner took the partition, or too long ago: the dead-letter topic
    /// has it, by its source partition and offset.
    Unknown,
}

/// How many of its latest dead letters an owner remembers for [`PartitionStatus::outcome`].
pub const REFUSALS_KEPT: usize = 4096;

/// The dead letters an owner made lately, oldest first, and the first offset they cover.
#[derive(Debug, Default)]
struct Refusals {
    since: Offset,
    recent: std::collections::VecDeque<Refused>,
}

/// What a partition's owner shares with the rest of the process.
#[derive(Debug)]
pub struct PartitionStatus {
    /// Set while this process owns the partition (from assignment, before the restore).
    owned: AtomicBool,
    /// The epoch this owner holds.
    epoch: AtomicU64,
    applied: tokio::sync::watch::Sender<Applied>,
    /// The owner stopped on an error it cannot continue after: the process is ending.
    failed: AtomicBool,
    /// The owner cannot make progress for now: its log does not answer (fetches or appends
    /// fail or hang). It retries; readiness is off meanwhile.
    stalled: AtomicBool,
    /// The record timestamp (epoch ms) of the last input record processed; 0 before any.
    last_timestamp: AtomicI64,
    /// How far the restore under way has read the changelog (the offset after the last record
    /// read), and the changelog's end it reads to (0: not known).
    restore_read: AtomicU64,
    restore_total: AtomicU64,
    /// Why the owner failed, for the status page.
    error: Mutex<Option<String>>,
    /// The input's end as the owner last saw it (the next offset to be appended).
    input_end: AtomicU64,
    /// This process was paused long enough for its group session to expire: the owner has not
    /// yet checked that the partition is still its own, so it is not served meanwhile.
    suspect: AtomicBool,
    /// The records this owner dead-lettered lately.
    refusals: Mutex<Refusals>,
}

impl Default for PartitionStatus {
    fn default() -> Self {
        PartitionStatus {
            owned: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            applied: tokio::sync::watch::channel(Applied::default()).0,
            failed: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            last_timestamp: AtomicI64::new(0),
            restore_read: AtomicU64::new(0),
            restore_total: AtomicU64::new(0),
            error: Mutex::new(None),
            input_end: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
            refusals: Mutex::new(Refusals::default()),
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
        self.applied.borrow().ready
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
        *self.lock_refusals() = Refusals {
            since: position,
            recent: Default::default(),
        };
        self.epoch.store(epoch.0, Ordering::Release);
        self.applied.send_replace(Applied {
            ready: true,
            position,
        });
    }

    /// The partition is no longer this process's.
    pub fn set_released(&self) {
        self.applied.send_modify(|a| a.ready = false);
        self.owned.store(false, Ordering::Release);
        self.stalled.store(false, Ordering::Release);
        self.suspect.store(false, Ordering::Release);
    }

    /// Notes records the owner dead-lettered, in offset order, before their batch's position
    /// is published; the oldest are forgotten past [`REFUSALS_KEPT`].
    pub fn refused(&self, refused: impl IntoIterator<Item = Refused>) {
        let mut r = self.lock_refusals();
        r.recent.extend(refused);
        while r.recent.len() > REFUSALS_KEPT {
            if let Some(old) = r.recent.pop_front() {
                r.since = old.offset.next().unwrap_or(old.offset);
            }
        }
    }

    /// What became of the record at `offset`, once the owner has applied it (`None` before).
    pub fn outcome(&self, offset: Offset) -> Option<Outcome> {
        if offset >= self.position() {
            return None;
        }
        let r = self.lock_refusals();
        if offset < r.since {
            return Some(Outcome::Unknown);
        }
        Some(
            match r
                .recent
                .binary_search_by_key(&offset, |refused| refused.offset)
            {
                Ok(i) => Outcome::Refused(r.recent[i].clone()),
                Err(_) => Outcome::Accepted,
            },
        )
    }

    fn lock_refusals(&self) -> std::sync::MutexGuard<'_, Refusals> {
        self.refusals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says whether the owner must check that the partition is still its own before it is
    /// served again (after this process was paused past its group session).
    pub fn set_suspect(&self, suspect: bool) {
        self.suspect.store(suspect, Ordering::Release);
    }

    /// Whether the partition waits for its owner's check after a pause.
    pub fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Acquire)
    }

    /// The owner failed (`why`): readiness is gone for good.
    pub fn set_failed(&self, why: String) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.failed.store(true, Ordering::Release);
    }

    /// Why the owner failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A restore begins that reads the changelog up to offset `end` (0: not known).
    pub fn restore_started(&self, end: u64) {
        self.restore_read.store(0, Ordering::Release);
        self.restore_total.store(end, Ordering::Release);
    }

    /// The restore has read the changelog up to offset `read`.
    pub fn restore_read(&self, read: u64) {
        self.restore_read.store(read, Ordering::Release);
    }

    /// How far the restore under way is, 0 to 1, when its size is known.
    pub fn restore_progress(&self) -> Option<f64> {
        let total = self.restore_total.load(Ordering::Acquire);
        (total > 0)
            .then(|| (self.restore_read.load(Ordering::Acquire) as f64 / total as f64).min(1.0))
    }

    /// The owner saw the input end at `end`.
    pub fn set_input_end(&self, end: Offset) {
        self.input_end.store(end.0, Ordering::Release);
    }

    /// The input's end as the owner last saw it; at least the position.
    pub fn input_end(&self) -> Offset {
        Offset(self.input_end.load(Ordering::Acquire)).max(self.position())
    }

    /// The record timestamp (epoch ms) of the last input record processed, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        Some(self.last_timestamp.load(Ordering::Acquire)).filter(|t| *t > 0)
    }

    /// Whether the owner failed.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Says whether the owner can make progress now (its log answers).
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Release);
    }

    /// Whether the owner cannot make progress now.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// The next input offset to process.
    pub fn position(&self) -> Offset {
        self.applied.borrow().position
    }

    /// Publishes a new position to waiting readers; `timestamp` is the record timestamp of
    /// the last record below it.
    pub fn set_position(&self, position: Offset, timestamp: i64) {
        self.last_timestamp.store(timestamp, Ordering::Release);
        self.applied.send_modify(|a| a.position = position);
    }

    /// Follows readiness and position, for readers waiting to read their own writes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Applied> {
        self.applied.subscribe()
    }
}

/// Every partition of the deployment as this process sees it.
#[derive(Debug)]
pub struct Partitions {
    pub views: Vec<Arc<View>>,
    pub users: Arc<UserIndex>,
    pub statuses: Vec<Arc<PartitionStatus>>,
    /// Who serves each partition, from `reservation-owners` (Kafka; empty on the embedded log,
    /// where every partition is this process's).
    owners: RwLock<OwnerTable>,
    /// The offset after the last `reservation-owners` record folded into the table.
    owners_read_to: AtomicU64,
    /// The pause watch (Kafka): when it last looked, in ms since `started`, and the longest
    /// pause this process may take without its partitions becoming suspect (0: not watched).
    watched_at: AtomicU64,
    pause_limit: AtomicU64,
    started: std::time::Instant,
}

impl Partitions {
    /// Empty views, none owned.
    /// Every partition this process's from the start (the embedded log): restoring, so that
    /// `/readyz` waits for each owner's restore from the moment the listener answers.
    pub fn owned(n: PartitionCount) -> Self {
        let partitions = Self::new(n);
        for status in &partitions.statuses {
            status.set_owned();
        }
        partitions
    }

    pub fn new(n: PartitionCount) -> Self {
        Partitions {
            views: n.iter().map(|_| Arc::new(View::default())).collect(),
            users: Arc::new(UserIndex::default()),
            statuses: n
                .iter()
                .map(|_| Arc::new(PartitionStatus::default()))
                .collect(),
            owners: RwLock::new(OwnerTable::new(n)),
            owners_read_to: AtomicU64::new(0),
            watched_at: AtomicU64::new(0),
            pause_limit: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// The table has folded `reservation-owners` up to `next` (exclusive).
    pub fn owners_read_to(&self, next: Offset) {
        self.owners_read_to.fetch_max(next.0, Ordering::AcqRel);
    }

    /// How far the table has folded `reservation-owners`.
    pub fn owners_folded(&self) -> Offset {
        Offset(self.owners_read_to.load(Ordering::Acquire))
    }

    /// The pause watch looks now, allowing pauses up to `limit`: if this is the first look
    /// after a longer one (the process was stopped, or starved, long enough for its group
    /// session to expire), every partition owned here becomes suspect first, and the gap is
    /// returned.
    pub fn watch_pauses(&self, limit: std::time::Duration) -> Option<std::time::Duration> {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.watched_at.load(Ordering::Acquire);
        let gap = std::time::Duration::from_millis(now.saturating_sub(last));
        let paused = last > 0 && gap > limit;
        if paused {
            for s in &self.statuses {
                if s.is_owned() {
                    s.set_suspect(true);
                }
            }
        }
        self.pause_limit
            .store(limit.as_millis() as u64, Ordering::Release);
        // Suspects marked before the look is recorded: whoever sees a recent look sees them.
        self.watched_at.store(now.max(1), Ordering::Release);
        paused.then_some(gap)
    }

    /// Whether partitions owned here may be served now: not while the pause watch has not
    /// looked for longer than its limit (the process has just woken from a pause, before the
    /// watch marked its partitions suspect).
    pub fn watched(&self) -> bool {
        let limit = self.pause_limit.load(Ordering::Acquire);
        let last = self.watched_at.load(Ordering::Acquire);
        limit == 0 || (self.started.elapsed().as_millis() as u64).saturating_sub(last) <= limit
    }

    /// Folds an ownership record into the table.
    pub fn apply_ownership(&self, record: OwnershipRecord) -> bool {
        self.owners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(record)
    }

    /// A copy of the ownership table.
    pub fn owners(&self) -> OwnerTable {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The ownership record held for `p`: the owner of the highest epoch seen.
    pub fn holder(&self, p: Partition) -> Option<OwnershipRecord> {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(p)
            .cloned()
    }

    /// The URL serving `p` per the ownership table.
    pub fn owner_url(&self, p: Partition) -> Option<String> {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .url(p)
            .map(str::to_owned)
    }

    /// The view of `p`.
    pub fn view(&self, p: Partition) -> &Arc<View> {
        &self.views[p.index()]
    }

    /// The status of `p`.
    pub fn status(&self, p: Partition) -> &Arc<PartitionStatus> {
        &self.statuses[p.index()]
    }

    /// Partitions whose owner failed.
    pub fn failed(&self) -> Vec<u32> {
        (0..self.statuses.len() as u32)
            .filter(|p| self.statuses[*p as usize].has_failed())
            .collect()
    }

    /// Partitions owned here whose owner cannot make progress now.
    pub fn stalled(&self) -> Vec<u32> {
        (0..self.statuses.len() as u32)
            .filter(|p| {
                let s = &self.statuses[*p as usize];
                s.is_owned() && s.is_stalled()
            })
            .collect()
    }

    /// Partitions owned here that wait for their owner's check after a pause.
    pub fn suspect(&self) -> Vec<u32> {
        (0..self.statuses.len() as u32)
            .filter(|p| {
                let s = &self.statuses[*p as usize];
                s.is_owned() && s.is_suspect()
            })
            .collect()
    }

    /// Partitions owned here that are not restored yet.
    pub fn restoring(&self) -> Vec<u32> {
        (0..self.statuses.len() as u32)
            .filter(|p| self.statuses[*p as usize].is_restoring())
            .collect()
    }
}
