//! `ordo repartition --brokers --to-partitions M --apply` with M > N, in place: partitions are
//! added to the three N-partitioned topics (CreatePartitions) and only **state** moves.
//!
//! The input keeps every record where it is, at its offset: the records written under N stay
//! in their partitions, and from each partition's end on the input is routed with M. That end
//! is where every old record has been processed (the change refuses otherwise), so no record of
//! a key under N is processed after one of it under M. The boundary is recorded as a new
//! [`Layer`] of the input, which replay and a later rebuild follow.
//!
//! 1. **growing**: the three topics get M partitions; nothing else changes.
//! 2. **moving**: on every changelog partition a marker of the change's epoch (above every old
//!    one, so a zombie of the old layout is fenced), resuming where the partition resumes now
//!    and `carried`, so the states it brings do not move that position; then, for each
//!    reservation whose partition changes, its state under that epoch in its new partition,
//!    and once all of those are durable, a tombstone in its old one. The dead letters and the
//!    group's committed offsets stay as they are. The changelog is read back: every state must
//!    sit in its key's partition under M, equal to what it was (compared per partition by an
//!    order-independent digest, so the old state need not be held beside the new), and every
//!    partition must resume where it did.
//! 3. **done**.
//!
//! Each phase is recorded on `reservation-owners`; killed at any moment, a rerun redoes the
//! recorded phase: growing to M again leaves a grown topic as it is, and the move starts from
//! the changelog as it is, where a key already tombstoned sits in its new partition only and
//! one not yet tombstoned is written again, unchanged. Memory holds the state once, never the
//! input history.

use std::collections::BTreeMap;

use super::kafka::{ROLES, write_record};
use super::{How, Plan, stall_at};
use crate::core::changelog::{EpochMarker, StateRecord};
use crate::core::ownership::{Layer, Phase, RepartitionRecord};
use crate::core::{Epoch, Offset, Partition, PartitionCount, ReservationNo};
use crate::log::kafka::{
    BulkReader, Changelog, KafkaOptions, KafkaProducer, Sender, add_partitions, read_changelog,
    topic_partitions,
};
use crate::log::now_millis;
use crate::log::topics::Role;
use crate::tools::deployment::{KafkaToolError, LeaseHeld, key_of, record};
use crate::tools::progress::Progress;

/// The dry run: what growing to `to` in place does, from the changelog and the input records
/// not yet processed (the input's history is not read).
pub fn plan(
    opts: &KafkaOptions,
    from: PartitionCount,
    to: PartitionCount,
) -> Result<Plan, KafkaToolError> {
    let changelog = read_changelog(opts, &opts.topic(Role::State), from)?;
    let unprocessed = unprocessed(opts, from, &changelog.resume)?;
    Ok(plan_of(opts, from, to, &changelog, &unprocessed))
}

fn plan_of(
    opts: &KafkaOptions,
    from: PartitionCount,
    to: PartitionCount,
    changelog: &Changelog,
    unprocessed: &[u64],
) -> Plan {
    let mut plan = Plan {
        how: How::InPlace,
        ..Plan::empty(from, to, opts.partitioner)
    };
    for (p, states) in changelog.states.iter().enumerate() {
        for k in states.keys() {
            let q = opts.partitioner.partition(k.as_str(), to);
            plan.per_partition[q.index()] += 1;
            plan.keys_moving += u64::from(q.index() != p);
        }
        plan.keys += states.len() as u64;
    }
    plan.state_entries = plan.keys;
    plan.unprocessed = unprocessed.iter().sum();
    plan
}

/// Per input partition, the records at or past where its changelog resumes: read, not
/// taken from watermarks (under transactions offsets also hold commit markers).
fn unprocessed(
    opts: &KafkaOptions,
    from: PartitionCount,
    resume: &[Offset],
) -> Result<Vec<u64>, KafkaToolError> {
    let mut counts = vec![0u64; from.get() as usize];
    let starts: Vec<(Partition, Offset)> = from.iter().map(|p| (p, resume[p.index()])).collect();
    BulkReader::new(opts, &opts.topic(Role::Events))?.read_from(&starts, |p, r| {
        counts[p.index()] += u64::from(r.is_some());
    })?;
    Ok(counts)
}

/// Starts growing from `from` to `to` partitions: refuses unless all three topics have `from`
/// partitions and every input record is processed, then records the `growing` phase with the
/// input's new layer (after `prior`, the layers the input had). Returns the record, the plan
/// and the changelog it read (no member writes until the change is done, so the move can
/// start from it).
pub fn start(
    opts: &KafkaOptions,
    producer: &KafkaProducer,
    from: PartitionCount,
    to: PartitionCount,
    by: &str,
    prior: Vec<Layer>,
) -> Result<(RepartitionRecord, Plan, Changelog), KafkaToolError> {
    for role in ROLES {
        let n = topic_partitions(opts, role)?;
        if n != from {
            return Err(KafkaToolError::Refused(format!(
                "topic {} has {n} partitions and the input {from}; `ordo topics check --brokers \
                 ... --partitions {from}` names what differs",
                opts.topic(role)
            )));
        }
    }
    let changelog = read_changelog(opts, &opts.topic(Role::State), from)?;
    let unprocessed = unprocessed(opts, from, &changelog.resume)?;
    let total: u64 = unprocessed.iter().sum();
    if total > 0 {
        let behind: Vec<String> = unprocessed
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| format!("partition {p}: {n}"))
            .collect();
        return Err(KafkaToolError::Refused(format!(
            "{total} input records are not processed yet ({}); growing in place needs every \
             record written under N = {from} processed: run the members at N = {from} until \
             idle (`ordo run --until-idle`), or pass --allow-unprocessed to rebuild the topics \
             and move them unprocessed",
            behind.join(", ")
        )));
    }
    let mut layers = match prior {
        l if l.is_empty() => vec![Layer::base(from)],
        l => l,
    };
    let mut starts = changelog.resume.clone();
    starts.resize(to.get() as usize, Offset(0));
    layers.push(Layer {
        partitions: to,
        starts,
    });
    let record = RepartitionRecord {
        from,
        to,
        phase: Phase::Growing,
        epoch: changelog.max_epoch().successor(),
        by: by.to_owned(),
        ts: now_millis(),
        layers,
        copied: None,
    };
    write_record(opts, producer, &record)?;
    let plan = plan_of(opts, from, to, &changelog, &unprocessed);
    Ok((record, plan, changelog))
}

/// Carries the in-place change `record` through its remaining phases to done, from the
/// changelog `start` read when given. Returns the plan as carried out (the figures of the
/// move).
pub fn carry_on(
    opts: &KafkaOptions,
    producer: &KafkaProducer,
    mut record: RepartitionRecord,
    started: Option<(Plan, Changelog)>,
    lease: &LeaseHeld,
) -> Result<Plan, KafkaToolError> {
    let (plan, mut changelog) = match started {
        Some((plan, changelog)) => (Some(plan), Some(changelog)),
        None => (None, None),
    };
    let mut plan = plan.unwrap_or_else(|| Plan {
        how: How::InPlace,
        ..Plan::empty(record.from, record.to, opts.partitioner)
    });
    let names: Vec<String> = ROLES.iter().map(|r| opts.topic(*r)).collect();
    loop {
        lease.check()?;
        record.phase = match record.phase {
            Phase::Growing => {
                add_partitions(opts, &names, record.to)?;
                Phase::Moving
            }
            Phase::Moving => {
                plan = move_state(opts, &record, plan, changelog.take(), lease)?;
                Phase::Done
            }
            Phase::Done => break,
            other => {
                return Err(KafkaToolError::Check(format!(
                    "phase {other:?} belongs to a rebuild, not to growing in place"
                )));
            }
        };
        record.ts = now_millis();
        write_record(opts, producer, &record)?;
        tracing::info!(phase = ?record.phase, "repartition phase recorded");
    }
    producer.flush();
    Ok(plan)
}

/// Phase 2: the markers, the moved states and the tombstones, then the check. `read` is the
/// changelog as `start` read it at N, if this run started the change; a rerun reads it as it
/// is now.
fn move_state(
    opts: &KafkaOptions,
    rec: &RepartitionRecord,
    mut plan: Plan,
    read: Option<Changelog>,
    lease: &LeaseHeld,
) -> Result<Plan, KafkaToolError> {
    let to = rec.to;
    let topic = opts.topic(Role::State);
    let home = |k: &ReservationNo| opts.partitioner.partition(k.as_str(), to);
    let before = match read {
        Some(mut c) => {
            // The partitions just added hold nothing yet.
            let size = to.get() as usize;
            c.states.resize_with(size, BTreeMap::new);
            c.epochs.resize(size, Epoch::default());
            c.resume.resize(size, Offset(0));
            c
        }
        None => read_changelog(opts, &topic, to)?,
    };
    // What the check expects of each partition afterwards: its reservations by digest. A key
    // found in two partitions (a rerun after a kill between its two writes) counts once.
    let mut expected = vec![Digest::default(); to.get() as usize];
    let mut seen = std::collections::HashSet::new();
    for r in before.states.iter().flat_map(BTreeMap::values) {
        if seen.insert(&r.reservation_no) {
            expected[home(&r.reservation_no).index()].add(r);
        }
    }
    drop(seen);
    let resume = before.resume.clone();
    let moving: Vec<(Partition, Partition, &StateRecord)> = before
        .states
        .iter()
        .zip(to.iter())
        .flat_map(|(states, p)| {
            states
                .iter()
                .map(move |(k, r)| (p, home(k), r))
                .filter(|(p, q, _)| q != p)
        })
        .collect();
    // A producer made now knows the new partitions.
    let producer = &KafkaProducer::new(opts)?;
    let mut progress = Progress::new("repartition: moving state", 2 * moving.len() as u64);
    let mut sent = |n| progress.add(n);

    let mut sender = Sender::new(producer, None, None);
    for q in to.iter() {
        let marker = EpochMarker {
            epoch: rec.epoch,
            partition: q,
            resume_offset: resume[q.index()],
            owner: rec.by.clone(),
            carried: true,
            replayed: false,
        };
        sender.push(
            &topic,
            q,
            record(marker.key().into_bytes(), marker.to_json()),
        )?;
    }
    sender.finish()?;
    // Every moved state durable in its new partition before any tombstone in its old one.
    let mut sender = Sender::new(producer, None, Some(&mut sent));
    for (_, q, r) in &moving {
        let carried = StateRecord {
            epoch: rec.epoch,
            ..(*r).clone()
        };
        sender.push(&topic, *q, record(key_of(r), carried.to_json()))?;
    }
    sender.finish()?;
    // With every moved state durable in its new partition and none tombstoned in its old one.
    stall_at("tombstones");
    // Tombstones delete: only while the lease is still this run's.
    lease.check()?;
    let mut sender = Sender::new(producer, None, Some(&mut sent));
    for (p, _, r) in &moving {
        sender.push(&topic, *p, record(key_of(r), Vec::new()))?;
    }
    sender.finish()?;
    progress.finish();
    let keys_moving = moving.len() as u64;
    drop(moving);
    drop(before);

    // Check: per partition the same reservations, each in its key's partition, and the same
    // resume position.
    let after = read_changelog(opts, &topic, to)?;
    let mut misplaced = 0;
    let mut differ = Vec::new();
    for ((states, p), want) in after.states.iter().zip(to.iter()).zip(&expected) {
        let mut got = Digest::default();
        for (k, r) in states {
            misplaced += usize::from(home(k) != p);
            got.add(r);
        }
        if got != *want {
            differ.push(p.to_string());
        }
    }
    let resume_moved = to
        .iter()
        .filter(|q| after.resume[q.index()] != resume[q.index()])
        .count();
    if misplaced > 0 || resume_moved > 0 || !differ.is_empty() {
        return Err(KafkaToolError::Check(format!(
            "repartition check failed after moving state: partitions [{}] do not hold the \
             reservations they should, {misplaced} reservations sit outside their partition, \
             {resume_moved} partitions resume elsewhere; rerun to move again",
            differ.join(", ")
        )));
    }
    plan.per_partition = after.states.iter().map(|s| s.len() as u64).collect();
    plan.keys = plan.per_partition.iter().sum();
    plan.state_entries = plan.keys;
    plan.keys_moving = plan.keys_moving.max(keys_moving);
    Ok(plan)
}

/// An order-independent digest of a set of state records: their count, and the sum of a hash
/// of what each says about its reservation (as [`crate::tools::replay::rebuild::same`]
/// compares them: not the epoch or where it was written).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    count: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, r: &StateRecord) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &r.reservation_no,
            &r.user_id,
            r.state,
            &r.target,
            r.version,
            &r.applied_event_ids,
        )
            .hash(&mut h);
        self.count += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }
}
