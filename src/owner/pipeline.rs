//! An owner's batches in flight: records are read and applied ahead of what is durable, each
//! batch against the newest unpublished change of every key, and a batch becomes visible only
//! once its driver says it is durable, oldest first.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{Driver, Fetch};
use crate::core::changelog::Stored;
use crate::core::record::{NewRecord, Record, headers};
use crate::core::step::{Effects, Overlay, Processor, StateView, States, Tally};
use crate::core::{Offset, ReservationNo};
use crate::metrics::Metrics;
use crate::view::{Refused, View};

/// The most bytes of changelog records and dead letters an owner keeps in flight.
const MAX_IN_FLIGHT_BYTES: usize = 32 << 20;

/// A batch submitted and not yet durable: what becomes visible when it is.
pub(super) struct InFlight {
    seq: u64,
    /// The input offset after the batch.
    pub next: Offset,
    pub changes: States,
    pub tally: Tally,
    pub applied: u64,
    pub records: u64,
    /// The record timestamp of the batch's last record.
    pub last_timestamp: i64,
    /// The records it dead-lettered, in offset order.
    pub refused: Vec<Refused>,
    bytes: usize,
    submitted: Instant,
}

/// The batches of one owner, and the buffers they reuse: large allocations freed every batch
/// would go back to the OS and be faulted in (and zeroed) again.
pub(super) struct Pipeline {
    batch_size: usize,
    records: Vec<Record>,
    effects: Effects,
    spare: Vec<States>,
    /// Submitted and not yet durable, oldest first.
    in_flight: VecDeque<InFlight>,
    /// For each key changed by a batch in flight, the newest batch that changed it.
    newest: HashMap<ReservationNo, u64>,
    seq: u64,
    in_flight_bytes: usize,
    /// The next offset to read: ahead of the durable position while batches are in flight.
    read: Offset,
    /// `ORDO_FAIL_POINT`: the batch that panics or stalls.
    fail_at: Option<FailPoint>,
}

/// A fault injected at the batch that holds an input offset (`ORDO_FAIL_POINT`).
#[derive(Clone, Copy, Debug)]
pub(super) enum FailPoint {
    Panic(Offset),
    Stall(Offset),
}

/// How long `ORDO_FAIL_POINT=stall@P:O` stalls its batch.
pub(super) const STALL: std::time::Duration = std::time::Duration::from_secs(20);

impl Pipeline {
    pub(super) fn new(batch_size: usize, position: Offset, fail_at: Option<FailPoint>) -> Self {
        Pipeline {
            batch_size,
            records: Vec::with_capacity(batch_size),
            effects: Effects::default(),
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            newest: HashMap::new(),
            seq: 0,
            in_flight_bytes: 0,
            read: position,
            fail_at,
        }
    }

    /// Fetches the next records from where the last batch ended; waits for input only when no
    /// batch is in flight (their acknowledgements come first).
    pub(super) fn fetch<D: Driver>(&mut self, driver: &mut D) -> Result<Fetch, D::Error> {
        self.records.clear();
        let fetch = driver.fetch(self.read, &mut self.records, self.in_flight.is_empty())?;
        // Records below the position were applied already (a re-delivery after a rebalance).
        let read = self.read;
        self.records.retain(|r| r.offset >= read);
        Ok(fetch)
    }

    /// Applies the records fetched as one batch and submits its effects; `false` when there
    /// were none.
    pub(super) fn apply<D: Driver>(
        &mut self,
        driver: &mut D,
        processor: &Processor,
        view: &View,
        metrics: &Metrics,
    ) -> Result<bool, D::Error> {
        let Some(last) = self.records.last() else {
            return Ok(false);
        };
        let next = last.offset.next().unwrap_or(last.offset);
        let last_timestamp = last.timestamp;
        let stall = match self.fail_at {
            Some(FailPoint::Panic(at)) if (self.read..next).contains(&at) => panic!(
                "fail point ORDO_FAIL_POINT: partition {}, offset {at}",
                processor.partition
            ),
            Some(FailPoint::Stall(at)) => (self.read..next).contains(&at),
            _ => false,
        };
        let pending = Pending {
            newest: &self.newest,
            in_flight: &self.in_flight,
            base: view,
        };
        let mut overlay = Overlay {
            changes: self.spare.pop().unwrap_or_else(|| {
                States::with_capacity_and_hasher(self.batch_size, Default::default())
            }),
            base: &pending,
        };
        self.effects.clear();
        let mut tally = Tally::default();
        let timer = metrics.processing.local();
        for r in &self.records {
            let t0 = Instant::now();
            processor.apply(r, &mut overlay, &mut self.effects, &mut tally);
            timer.observe(t0.elapsed().as_secs_f64());
        }
        timer.flush();
        let changes = overlay.changes;
        let state_bytes: usize = self
            .effects
            .state
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let dead_bytes: usize = self
            .effects
            .dead_letters
            .iter()
            .map(|d| d.value.len())
            .sum();
        let applied = self.effects.state.len() as u64;
        let refused = self.effects.dead_letters.iter().map(refused).collect();
        driver.submit(&mut self.effects, next)?;
        if stall {
            tracing::warn!(
                partition = processor.partition.0,
                secs = STALL.as_secs(),
                "fail point ORDO_FAIL_POINT: stalling with the batch in flight"
            );
            std::thread::sleep(STALL);
        }
        for key in changes.keys() {
            self.newest.insert(key.clone(), self.seq);
        }
        self.in_flight.push_back(InFlight {
            seq: self.seq,
            next,
            changes,
            tally,
            applied,
            records: self.records.len() as u64,
            last_timestamp,
            refused,
            bytes: state_bytes + dead_bytes,
            submitted: Instant::now(),
        });
        self.in_flight_bytes += state_bytes + dead_bytes;
        self.seq += 1;
        self.read = next;
        Ok(true)
    }

    /// Whether the oldest batch must complete before the next fetch: always once the input is
    /// idle, else when the depth or the byte bound is reached.
    pub(super) fn must_complete(&self, idle: bool, depth: usize) -> bool {
        !self.in_flight.is_empty()
            && (idle || self.in_flight.len() >= depth || self.in_flight_bytes > MAX_IN_FLIGHT_BYTES)
    }

    /// The oldest batch, which its driver has just made durable.
    pub(super) fn pop_done(&mut self, metrics: &Metrics) -> InFlight {
        let done = self.in_flight.pop_front().expect("a batch in flight");
        metrics
            .commit
            .observe(done.submitted.elapsed().as_secs_f64());
        self.in_flight_bytes -= done.bytes;
        for key in done.changes.keys() {
            if self.newest.get(key) == Some(&done.seq) {
                self.newest.remove(key);
            }
        }
        done
    }

    /// Takes back a published batch's (drained) change map for a later batch.
    pub(super) fn recycle(&mut self, done: InFlight) {
        self.spare.push(done.changes);
    }
}

/// A dead letter as its owner remembers it: the input offset, reason and error from its headers.
fn refused(dead: &NewRecord) -> Refused {
    let header = |name: &str| {
        dead.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Refused {
        offset: Offset(header(headers::SOURCE_OFFSET).parse().unwrap_or(u64::MAX)),
        reason: header(headers::REASON),
        error: header(headers::ERROR),
    }
}

/// The state a new batch is applied against: the newest in-flight change of a key, else the
/// published view.
struct Pending<'a, V> {
    newest: &'a HashMap<ReservationNo, u64>,
    in_flight: &'a VecDeque<InFlight>,
    base: &'a V,
}

impl<V: StateView> StateView for Pending<'_, V> {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        let batch = self.newest.get(key).and_then(|&seq| {
            let first = self.in_flight.front()?.seq;
            self.in_flight.get((seq - first) as usize)
        });
        match batch {
            Some(b) => f(b.changes.get(key)),
            None => self.base.with(key, f),
        }
    }
}
