//! What a Kafka deployment should hold, derived from its input topic alone, and what it holds:
//! the tests' oracle after every crash, hand-over, failover and outage.
//!
//! The expected side reads the input topic partition by partition in offset order and runs
//! each record through the independent reference model (`ordo::core::reference`); records that
//! do not decode, or sit in the wrong partition, are dead letters. The actual side folds the
//! changelog through the fencing reader (and counts records it cannot decode, which must be
//! none) and reads the dead-letter topic. Dead letters are compared as sets of (reason, source
//! partition, source offset): one lost is found, whatever else was doubled.

use std::collections::{BTreeMap, BTreeSet};

use ordo::core::changelog::{Change, Reader, StateRecord};
use ordo::core::event::Event;
use ordo::core::partitioner::Partitioner;
use ordo::core::record::headers;
use ordo::core::reference::Model;
use ordo::core::{Partition, PartitionCount};
use ordo::log::kafka::{KafkaOptions, read_to_end};
use ordo::log::topics::Role;

use super::broker::Broker;

/// A dead letter as the oracle compares it: reason, source partition, source offset.
pub type DeadLetter = (String, u32, u64);

/// One reservation as compared: state, user, target, version and applied event ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub state: String,
    pub user: String,
    pub target: Option<String>,
    pub version: u64,
    pub applied: Vec<String>,
}

/// A deployment's outcome: every reservation's state and every dead letter.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub states: BTreeMap<String, Entity>,
    pub dead: BTreeSet<DeadLetter>,
}

/// What the input topic of `opts` should lead to, with `n` partitions.
pub fn expected(opts: &KafkaOptions, n: u32) -> Outcome {
    let count = PartitionCount::new(n).unwrap();
    let mut model = Model::default();
    let mut dead = BTreeSet::new();
    for p in 0..n {
        read_to_end(opts, &opts.topic(Role::Events), Partition(p), |r| {
            let key = (!r.key.is_empty()).then_some(&r.key[..]);
            let reason = match Event::decode_record(key, &r.value) {
                Err(_) => Some("malformed"),
                Ok(e)
                    if Partitioner::AbsHashModN.partition(e.reservation_no.as_str(), count)
                        != Partition(p) =>
                {
                    Some("misrouted")
                }
                Ok(e) => model.push(&e),
            };
            if let Some(reason) = reason {
                dead.insert((reason.to_owned(), p, r.offset.0));
            }
        })
        .unwrap();
    }
    let states = model
        .states
        .into_iter()
        .map(|(no, s)| {
            (
                no,
                Entity {
                    state: s.state.to_owned(),
                    user: s.user,
                    target: s.target,
                    version: s.applied.len() as u64,
                    applied: s.applied,
                },
            )
        })
        .collect();
    Outcome { states, dead }
}

/// The changelog of `opts` with `n` partitions folded through the fencing reader; panics on a
/// record it cannot decode.
pub fn changelog(opts: &KafkaOptions, n: u32) -> BTreeMap<String, StateRecord> {
    let mut got = BTreeMap::new();
    let mut unreadable = Vec::new();
    for p in 0..n {
        let mut reader = Reader::default();
        read_to_end(
            opts,
            &opts.topic(Role::State),
            Partition(p),
            |r| match reader.read(&r.key, &r.value) {
                Ok(Some(Change::Put(rec))) => {
                    got.insert(rec.reservation_no.to_string(), rec);
                }
                Ok(Some(Change::Delete(key))) => {
                    got.remove(key.as_str());
                }
                Ok(None) => {}
                Err(e) => unreadable.push(format!("{p}@{}: {e}", r.offset.0)),
            },
        )
        .unwrap();
    }
    assert_eq!(
        unreadable,
        Vec::<String>::new(),
        "undecodable changelog records"
    );
    got
}

/// Every dead letter of `opts` with `n` partitions: the set, and how many records it took
/// (more than the set's size when a crash repeated some).
pub fn dead_letters(opts: &KafkaOptions, n: u32) -> (BTreeSet<DeadLetter>, u64) {
    let (mut set, mut records) = (BTreeSet::new(), 0);
    for p in 0..n {
        read_to_end(opts, &opts.topic(Role::DeadLetters), Partition(p), |r| {
            let header = |name: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("dead letter {p}@{} has no {name}", r.offset.0))
            };
            records += 1;
            set.insert((
                header(headers::REASON),
                header(headers::SOURCE_PARTITION).parse().unwrap(),
                header(headers::SOURCE_OFFSET).parse().unwrap(),
            ));
        })
        .unwrap();
    }
    (set, records)
}

/// What the deployment of `opts` holds.
pub fn actual(opts: &KafkaOptions, n: u32) -> Outcome {
    let states = changelog(opts, n)
        .into_iter()
        .map(|(no, r)| {
            (
                no,
                Entity {
                    state: r.state.as_str().to_owned(),
                    user: r.user_id.to_string(),
                    target: r.target.map(|t| t.to_string()),
                    version: u64::from(r.version),
                    applied: r.applied_event_ids.iter().map(|i| i.to_string()).collect(),
                },
            )
        })
        .collect();
    Outcome {
        states,
        dead: dead_letters(opts, n).0,
    }
}

/// Asserts that `broker`'s deployment of `n` partitions holds exactly what its input leads to:
/// every state (nothing applied twice: versions and applied ids) and every dead letter.
pub fn assert_exact(broker: &Broker, n: u32) {
    assert_exact_at(&broker.options(), n)
}

/// [`assert_exact`] for the deployment `opts` reaches.
pub fn assert_exact_at(opts: &KafkaOptions, n: u32) {
    let (want, got) = (expected(opts, n), actual(opts, n));
    eprintln!(
        "oracle: {} reservations and {} dead letters expected, {} and {} found",
        want.states.len(),
        want.dead.len(),
        got.states.len(),
        got.dead.len()
    );
    assert_eq!(got.states.len(), want.states.len(), "reservations");
    for (no, w) in &want.states {
        assert_eq!(got.states.get(no), Some(w), "{no}");
    }
    let lost: Vec<_> = want.dead.difference(&got.dead).collect();
    let extra: Vec<_> = got.dead.difference(&want.dead).collect();
    if !lost.is_empty() {
        // Where the dead-letter partitions start and end, for the failure message.
        for p in 0..n {
            let mut offsets = Vec::new();
            read_to_end(opts, &opts.topic(Role::DeadLetters), Partition(p), |r| {
                offsets.push(r.offset.0)
            })
            .unwrap();
            let held = got.dead.iter().filter(|d| d.1 == p).count();
            eprintln!(
                "dead-letter partition {p}: {} records at offsets {:?}..{:?}, {held} distinct",
                offsets.len(),
                offsets.first(),
                offsets.last()
            );
        }
    }
    assert!(
        lost.is_empty() && extra.is_empty(),
        "dead letters: {} lost {lost:?}, {} unexpected {extra:?}",
        lost.len(),
        extra.len()
    );
}
