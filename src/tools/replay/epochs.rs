//! `ordo replay --apply` on Kafka: per partition a new epoch marker resuming after the replayed
//! input, every replayed state record under that epoch, and a tombstone for each key the replay
//! does not produce. Refused while a member holds a partition, per `reservation-owners`.

use super::OffsetSpec;
use super::rebuild::{self, Replay};
use crate::core::changelog::{EpochMarker, StateRecord};
use crate::core::{Epoch, PartitionCount};
use crate::log::Logs;
use crate::log::kafka::{KafkaOptions, KafkaProducer, Sender, read_changelog, read_owners};
use crate::log::topics::Role;
use crate::tools::deployment::{
    KafkaToolError, LeaseHeld, Overrides, key_of, record, refuse_held, refuse_moving,
};

/// What `replay --apply` did.
#[derive(Debug)]
pub struct Applied {
    pub replay: Replay,
    /// Keys of the live changelog the replay does not produce, deleted (Kafka).
    pub deleted: Option<u64>,
    /// The new epoch of each partition (Kafka).
    pub epochs: Vec<Epoch>,
}

/// Replays the whole input of a Kafka deployment with `n` partitions and makes the result its
/// changelog: per partition, a new epoch marker resuming after the input replayed, every
/// replayed state record under that epoch, and a tombstone for each key of the live changelog
/// the replay does not produce. Interrupted, the changelog holds some keys replayed and the
/// others as they were; a rerun finishes it.
pub fn apply_replay(
    opts: &KafkaOptions,
    n: PartitionCount,
    owner: &str,
    overrides: Overrides,
) -> Result<Applied, KafkaToolError> {
    let lease = LeaseHeld::take(opts, "ordo replay --apply", overrides.take_over_lease)?;
    let owners = read_owners(opts)?;
    refuse_moving(&owners)?;
    refuse_held(&owners, overrides.assume_stopped)?;
    let logs = Logs::Kafka {
        options: opts.clone(),
        n,
    };
    let replay = rebuild::replay(&logs, OffsetSpec::default(), None)?;
    if let Some((p, first)) = replay
        .first_offsets
        .iter()
        .enumerate()
        .find(|(_, o)| o.0 > 0)
    {
        return Err(KafkaToolError::Refused(format!(
            "reservation-events partition {p} starts at offset {first}: the records before it \
             are gone (retention), so a replay cannot rebuild the state; nothing was changed"
        )));
    }
    let topic = opts.topic(Role::State);
    let live = read_changelog(opts, &topic, n)?;
    // Each state goes to its key's partition under N. After growing in place the event behind
    // a state may sit in another partition (its old one), so its source offset says nothing
    // of this partition's input: the marker is then `carried` and its resume offset alone
    // says how far the input is applied.
    let layered = !logs.layers()?.is_empty();
    let home = |k: &crate::core::ReservationNo| opts.partitioner.partition(k.as_str(), n);
    // The replay took a while: still this run's to write, and still no member running.
    lease.check()?;
    let owners = read_owners(opts)?;
    refuse_moving(&owners)?;
    refuse_held(&owners, overrides.assume_stopped)?;
    let producer = KafkaProducer::new(opts)?;
    let mut sender = Sender::new(&producer, None, None);
    let (mut deleted, mut epochs) = (0, Vec::new());
    for p in n.iter() {
        let epoch = live.epochs[p.index()].successor();
        epochs.push(epoch);
        let marker = EpochMarker {
            epoch,
            partition: p,
            resume_offset: replay.next_offsets[p.index()],
            owner: owner.to_owned(),
            carried: layered,
            replayed: true,
        };
        sender.push(
            &topic,
            p,
            record(marker.key().into_bytes(), marker.to_json()),
        )?;
        for r in replay
            .states
            .values()
            .filter(|r| home(&r.reservation_no) == p)
        {
            let r = StateRecord { epoch, ..r.clone() };
            sender.push(&topic, p, record(key_of(&r), r.to_json()))?;
        }
        for k in live.states[p.index()].keys() {
            if !replay.states.contains_key(k) || home(k) != p {
                sender.push(
                    &topic,
                    p,
                    record(k.as_str().as_bytes().to_vec(), Vec::new()),
                )?;
                deleted += 1;
            }
        }
    }
    sender.finish()?;
    Ok(Applied {
        replay,
        deleted: Some(deleted),
        epochs,
    })
}
