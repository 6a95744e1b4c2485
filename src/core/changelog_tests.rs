//! Tests of the changelog and its fencing rule.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn record(key: &str, version: u32, offset: u64, epoch: u64) -> StateRecord {
    StateRecord {
        reservation_no: ReservationNo::from(key),
        user_id: "u".into(),
        state: Status::Reserved,
        target: None,
        version,
        applied_event_ids: vec![],
        source_partition: Partition(0),
        source_offset: Offset(offset),
        epoch: Epoch(epoch),
    }
}

/// The version of every reservation in `snapshot`.
fn versions(snapshot: &Snapshot) -> HashMap<String, u32> {
    snapshot
        .states
        .iter()
        .map(|(k, r)| (k.to_string(), r.version))
        .collect()
}

/// Every entry of `log` encoded as a changelog record and folded, in order, as readers do.
fn fold(log: Vec<Entry>) -> (Reader, Snapshot) {
    let mut reader = Reader::default();
    let mut snapshot = Snapshot::default();
    for entry in log {
        let (key, value) = match entry {
            Entry::Marker(m) => (m.key().into_bytes(), m.to_json()),
            Entry::Position(p) => (p.key().into_bytes(), p.to_json()),
            Entry::State(r) => (r.reservation_no.as_str().as_bytes().to_vec(), r.to_json()),
            Entry::Tombstone(k) => (k.as_str().as_bytes().to_vec(), Vec::new()),
        };
        snapshot.push(&mut reader, &key, &value);
    }
    (reader, snapshot)
}

fn marker(epoch: u64, resume: u64) -> EpochMarker {
    EpochMarker {
        epoch: Epoch(epoch),
        partition: Partition(0),
        resume_offset: Offset(resume),
        owner: "test".into(),
        carried: false,
        replayed: false,
    }
}

#[test]
fn round_trips_through_json() {
    let r = record("R-1", 2, 9, 3);
    assert_eq!(
        Entry::decode(b"R-1", &r.to_json()).unwrap(),
        Entry::State(r.clone())
    );
    let m = marker(4, 10);
    assert_eq!(
        Entry::decode(m.key().as_bytes(), &m.to_json()).unwrap(),
        Entry::Marker(m)
    );
    // A reservation number that happens to look like a marker key is still a state record.
    let odd = record("__ordo.epoch/7", 1, 0, 1);
    assert_eq!(
        Entry::decode(b"__ordo.epoch/7", &odd.to_json()).unwrap(),
        Entry::State(odd)
    );
    assert!(Entry::decode(b"k", b"{}").is_err());
}

#[test]
fn records_of_a_zombie_after_a_newer_marker_are_ignored() {
    let mut reader = Reader::default();
    assert_eq!(reader.next(Entry::Marker(marker(1, 0))), Verdict::Marker);
    assert!(matches!(
        reader.next(Entry::State(record("A", 1, 0, 1))),
        Verdict::Accept(_)
    ));
    assert_eq!(reader.next(Entry::Marker(marker(2, 1))), Verdict::Marker);
    // The old owner wakes up and writes on.
    assert_eq!(
        reader.next(Entry::State(record("A", 2, 5, 1))),
        Verdict::Fenced
    );
    assert!(matches!(
        reader.next(Entry::State(record("B", 1, 1, 2))),
        Verdict::Accept(_)
    ));
    assert_eq!(reader.fenced, 1);
    assert_eq!(reader.highest_epoch(), Epoch(2));
    assert_eq!(reader.resume_offset(), Offset(2));
}

#[test]
fn positions_move_the_resume_offset_unless_fenced() {
    let mut reader = Reader::default();
    let position = |epoch, resume| PositionMark {
        epoch: Epoch(epoch),
        partition: Partition(0),
        resume_offset: Offset(resume),
    };
    let decoded =
        Entry::decode(position(1, 7).key().as_bytes(), &position(1, 7).to_json()).unwrap();
    assert_eq!(decoded, Entry::Position(position(1, 7)));
    assert_eq!(position(3, 7).key(), "__ordo.position/3");
    // Marks written under the one key of earlier versions read the same.
    assert_eq!(
        Entry::decode(POSITION_KEY.as_bytes(), &position(1, 7).to_json()).unwrap(),
        decoded
    );
    assert!(!PositionMark::is_key(b"__ordo.positions"));
    assert_eq!(reader.next(Entry::Marker(marker(1, 0))), Verdict::Marker);
    assert_eq!(reader.next(decoded), Verdict::Marker);
    assert_eq!(reader.resume_offset(), Offset(7));
    assert_eq!(reader.next(Entry::Marker(marker(2, 7))), Verdict::Marker);
    // The zombie (epoch 1) went on and says it applied up to 20: not so.
    assert_eq!(
        reader.next(Entry::Position(position(1, 20))),
        Verdict::Fenced
    );
    assert_eq!(reader.resume_offset(), Offset(7));
}

#[test]
fn a_tombstone_deletes_its_key() {
    let mut reader = Reader::default();
    let mut snapshot = Snapshot::default();
    snapshot.push(&mut reader, b"A", &record("A", 1, 3, 1).to_json());
    snapshot.push(&mut reader, b"B", &record("B", 1, 4, 1).to_json());
    assert_eq!(snapshot.states.len(), 2);
    snapshot.push(&mut reader, b"A", b"");
    assert_eq!(
        snapshot
            .states
            .keys()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        ["B"]
    );
    assert_eq!(snapshot.unreadable, 0);
    // A tombstone says nothing about how far the input is applied.
    assert_eq!(reader.resume_offset(), Offset(5));
}

#[test]
fn carried_records_leave_the_resume_offset_to_their_marker() {
    let mut reader = Reader::default();
    let carried = EpochMarker {
        carried: true,
        replayed: false,
        ..marker(5, 3)
    };
    let decoded = Entry::decode(carried.key().as_bytes(), &carried.to_json()).unwrap();
    assert_eq!(decoded, Entry::Marker(carried));
    assert_eq!(reader.next(decoded), Verdict::Marker);
    // Its source event lay elsewhere in the old layout: state, but no say on the position.
    assert!(matches!(
        reader.next(Entry::State(record("A", 4, 900, 5))),
        Verdict::Accept(_)
    ));
    assert_eq!(reader.resume_offset(), Offset(3));
    // The next owner's records (a new epoch) move it as always.
    assert_eq!(reader.next(Entry::Marker(marker(6, 3))), Verdict::Marker);
    assert!(matches!(
        reader.next(Entry::State(record("A", 5, 3, 6))),
        Verdict::Accept(_)
    ));
    assert_eq!(reader.resume_offset(), Offset(4));
    // Markers without the field (older ones) are not carried.
    assert!(!marker(1, 0).to_json().windows(7).any(|w| w == b"carried"));
}

proptest! {
    /// Whatever a zombie (epoch 1) interleaves after the new owner's marker (epoch 2), the
    /// state read back equals the state the new owner alone wrote.
    #[test]
    fn zombie_writes_never_show(
        before in prop::collection::vec((0u8..4, 0u64..100), 0..10),
        after in prop::collection::vec((any::<bool>(), 0u8..4, 0u64..100), 0..20),
    ) {
        let mut log = vec![Entry::Marker(marker(1, 0))];
        let mut expected: HashMap<String, u32> = HashMap::new();
        let mut version = 0;
        for (k, o) in before {
            version += 1;
            log.push(Entry::State(record(&format!("k{k}"), version, o, 1)));
            expected.insert(format!("k{k}"), version);
        }
        log.push(Entry::Marker(marker(2, 0)));
        for (zombie, k, o) in after {
            version += 1;
            log.push(Entry::State(record(&format!("k{k}"), version, o, if zombie { 1 } else { 2 })));
            if !zombie {
                expected.insert(format!("k{k}"), version);
            }
        }
        let (_, snapshot) = fold(log);
        prop_assert_eq!(versions(&snapshot), expected);
    }

    /// A partition handed over several times, with every kind of late write: former owners
    /// (any stale epoch) writing state records and position marks after newer markers, a
    /// rival's marker of a lower epoch landing late (it stood back), the current owner's
    /// positions and tombstones. The state read back is exactly what the rightful owners
    /// wrote, in order; the resume offset is the rightful owners' progress, never a
    /// zombie's; and every zombie state record is counted as fenced.
    #[test]
    fn only_the_rightful_owners_writes_show(
        steps in prop::collection::vec((0u8..7, 0u8..5, 0u64..50), 0..60),
    ) {
        let mut log = vec![Entry::Marker(marker(1, 0))];
        let (mut epoch, mut progress, mut version) = (1u64, 0u64, 0u32);
        let mut expected: HashMap<String, u32> = HashMap::new();
        let mut zombies = 0u64;
        for (kind, k, n) in steps {
            let key = format!("k{k}");
            version += 1;
            match kind {
                // The rightful owner applies the next input record.
                0 | 1 => {
                    log.push(Entry::State(record(&key, version, progress, epoch)));
                    expected.insert(key, version);
                    progress += 1;
                }
                // It reads past records that leave no state (rejects, duplicates).
                2 => {
                    progress += n % 4;
                    log.push(Entry::Position(PositionMark {
                        epoch: Epoch(epoch),
                        partition: Partition(0),
                        resume_offset: Offset(progress),
                    }));
                }
                // The partition is handed over: a new owner, one epoch up.
                3 => {
                    epoch += 1;
                    log.push(Entry::Marker(marker(epoch, progress)));
                }
                // A former owner, of any stale epoch, writes on from where it thinks it is.
                4 if epoch > 1 => {
                    let stale = 1 + n % (epoch - 1);
                    log.push(Entry::State(record(&key, version, progress + n, stale)));
                    zombies += 1;
                }
                5 if epoch > 1 => {
                    let stale = 1 + n % (epoch - 1);
                    log.push(Entry::Position(PositionMark {
                        epoch: Epoch(stale),
                        partition: Partition(0),
                        resume_offset: Offset(progress + n + 1),
                    }));
                }
                // A rival that restored earlier: its lower marker lands late; it stood back.
                6 if epoch > 1 => {
                    let stale = 1 + n % (epoch - 1);
                    log.push(Entry::Marker(marker(stale, progress.saturating_sub(n))));
                }
                // `ordo replay --apply`, as the owner of the next epoch, deletes a key.
                _ => {
                    epoch += 1;
                    log.push(Entry::Marker(marker(epoch, progress)));
                    log.push(Entry::Tombstone(ReservationNo::from(key.as_str())));
                    expected.remove(&key);
                }
            }
        }
        let (reader, snapshot) = fold(log);
        prop_assert_eq!(versions(&snapshot), expected);
        prop_assert_eq!(snapshot.unreadable, 0);
        prop_assert_eq!(reader.resume_offset(), Offset(progress));
        prop_assert_eq!(reader.highest_epoch(), Epoch(epoch));
        prop_assert_eq!(reader.fenced, zombies);
    }
}

/// A record whose epoch no owner could have reached is unreadable: it fences nothing, and the
/// next owner's epoch stays one above the real ones (it cannot wrap).
#[test]
fn an_epoch_beyond_the_limit_is_refused_not_obeyed() {
    let forged = marker(u64::MAX, 0);
    assert!(Entry::decode(forged.key().as_bytes(), &forged.to_json()).is_err());
    let mut reader = Reader::default();
    let mut snapshot = Snapshot::default();
    for (key, value) in [
        (marker(1, 0).key().into_bytes(), marker(1, 0).to_json()),
        (forged.key().into_bytes(), forged.to_json()),
        (b"A".to_vec(), record("A", 1, 0, 1).to_json()),
    ] {
        snapshot.push(&mut reader, &key, &value);
    }
    assert_eq!(snapshot.unreadable, 1);
    assert_eq!(reader.highest_epoch(), Epoch(1));
    assert_eq!(snapshot.states.len(), 1, "epoch 1 is not fenced");
    assert_eq!(reader.highest_epoch().successor(), Epoch(2));
}

/// The marker of `ordo replay --apply` says where the input is applied up to, whatever came
/// before it (a forged position mark far ahead); later markers move it only forward.
#[test]
fn a_replay_marker_sets_the_resume_offset() {
    let mut reader = Reader::default();
    reader.next(Entry::Marker(marker(1, 0)));
    reader.next(Entry::Position(PositionMark {
        epoch: Epoch(1),
        partition: Partition(0),
        resume_offset: Offset(1 << 40),
    }));
    assert_eq!(reader.resume_offset(), Offset(1 << 40));
    let replayed = EpochMarker {
        replayed: true,
        ..marker(2, 50)
    };
    reader.next(Entry::Marker(replayed.clone()));
    assert_eq!(reader.resume_offset(), Offset(50));
    reader.next(Entry::Marker(marker(3, 40)));
    assert_eq!(reader.resume_offset(), Offset(50));
    // A replay marker of a fenced epoch moves nothing back.
    reader.next(Entry::Marker(EpochMarker {
        replayed: true,
        ..marker(2, 7)
    }));
    assert_eq!(reader.resume_offset(), Offset(50));
    let wire = Entry::decode(replayed.key().as_bytes(), &replayed.to_json()).unwrap();
    assert_eq!(wire, Entry::Marker(replayed));
}

proptest! {
    /// The owner's hot path writes a state record straight from the packed entity: the same
    /// bytes as building the record and serialising it, for any strings (quotes, escapes,
    /// non-ASCII), with and without a target, with any number of ids.
    #[test]
    fn a_state_record_written_from_the_entity_is_the_record(
        key in ".{1,40}",
        user in ".{0,40}",
        state in prop_oneof![Just(Status::Reserved), Just(Status::Associated), Just(Status::Cancelled)],
        target in proptest::option::of(".{0,40}"),
        version in any::<u32>(),
        ids in proptest::collection::vec(".{0,40}", 0..4),
        partition in any::<u32>(),
        offset in any::<u64>(),
        epoch in any::<u64>(),
    ) {
        let stored = Stored {
            entity: Entity::new(&user, state, target.as_deref(), version, ids.iter().map(String::as_str)),
            source_offset: Offset(offset),
            epoch: Epoch(epoch),
        };
        let no = ReservationNo::from(key.as_str());
        let direct = stored.record_json(&no, Partition(partition));
        let built = StateRecord::new(no, Partition(partition), &stored).to_json();
        prop_assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(built).unwrap());
    }
}
