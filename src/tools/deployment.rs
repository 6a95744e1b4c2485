//! What the tools that change a Kafka deployment share (`replay --apply`, `repartition
//! --apply`): their error, the deployment's lease (one such tool at a time), the refusal while
//! a member holds a partition, and records stamped with the time they are written.

use std::collections::BTreeMap;

use crate::core::Partition;
use crate::core::changelog::StateRecord;
use crate::core::ownership::{LeaseRecord, OwnershipRecord};
use crate::core::record::NewRecord;
use crate::log::kafka::{
    KafkaLogError, KafkaOptions, KafkaProducer, Outgoing, OwnersLog, read_owners,
};
use crate::log::topics::Role;
use crate::log::{LogsError, now_millis};

/// What went wrong in a write of the tooling on Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaToolError {
    #[error(transparent)]
    Log(#[from] LogsError),
    /// Refused before anything was changed; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// A check after the writes failed.
    #[error("{0}")]
    Check(String),
}

impl From<KafkaLogError> for KafkaToolError {
    fn from(e: KafkaLogError) -> Self {
        KafkaToolError::Log(e.into())
    }
}

/// Refuses while a change of N is under way, naming the command that finishes it.
pub fn refuse_moving(owners: &OwnersLog) -> Result<(), KafkaToolError> {
    match owners.repartition.as_ref().filter(|r| r.in_progress()) {
        Some(r) => Err(KafkaToolError::Refused(format!(
            "a change of N from {} to {} is under way; finish it first with `ordo repartition \
             --brokers ... --to-partitions {} --apply`",
            r.from, r.to, r.to
        ))),
        None => Ok(()),
    }
}

/// Refuses while `reservation-owners` says a member holds a partition, naming the members;
/// `assume_stopped` is the operator saying they died without letting go.
pub fn refuse_held(owners: &OwnersLog, assume_stopped: bool) -> Result<(), KafkaToolError> {
    // Per partition, the record of the highest epoch (the later one at the same epoch).
    let mut latest: BTreeMap<crate::core::Partition, &OwnershipRecord> = BTreeMap::new();
    for r in &owners.owners {
        match latest.get(&r.partition) {
            Some(held) if held.epoch > r.epoch => {}
            _ => {
                latest.insert(r.partition, r);
            }
        }
    }
    let held: Vec<&&OwnershipRecord> = latest.values().filter(|r| r.is_held()).collect();
    if held.is_empty() || assume_stopped {
        return Ok(());
    }
    let mut members: Vec<String> = held
        .iter()
        .map(|r| match &r.url {
            Some(url) => format!("{} ({url})", r.owner),
            None => r.owner.clone(),
        })
        .collect();
    members.sort();
    members.dedup();
    Err(KafkaToolError::Refused(format!(
        "partitions {} are held by running members: {}; stop them first (scale the StatefulSet \
         to 0), or pass --assume-stopped if they died without letting go",
        held.iter()
            .map(|r| r.partition.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        members.join(", ")
    )))
}

/// What the operator vouches for, past a tool's refusals.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    /// The members `reservation-owners` says hold partitions died without letting go.
    pub assume_stopped: bool,
    /// The tool holding the deployment's lease was killed: take the lease from it.
    pub take_over_lease: bool,
}

/// The deployment's lease, held by this run of a tool: taken before the tool changes anything,
/// checked again before each step that deletes or overwrites, and let go when dropped (a tool
/// killed outright keeps it until an operator takes it over with `--take-over-lease`).
pub struct LeaseHeld {
    opts: KafkaOptions,
    producer: KafkaProducer,
    claim: LeaseRecord,
}

impl LeaseHeld {
    /// Takes the lease for `tool` (the command, as operators will read it), or says who holds
    /// it. `take_over`: the operator says the holder is gone (killed without letting go).
    pub fn take(opts: &KafkaOptions, tool: &str, take_over: bool) -> Result<Self, KafkaToolError> {
        let lease = read_owners(opts)?.lease;
        let held = lease.holder().cloned();
        if let Some(h) = &held
            && !take_over
        {
            return Err(KafkaToolError::Refused(format!(
                "`{}` ({}) holds this deployment's lease, taken {}; wait for it to finish, or, if \
                 it was killed, pass --take-over-lease to take the lease from it",
                h.tool,
                h.holder,
                ago(h.ts)
            )));
        }
        let claim = LeaseRecord {
            seq: lease.next_seq(),
            holder: crate::owner::owner_id(),
            tool: tool.to_owned(),
            ts: now_millis(),
            takeover: held.is_some(),
            released: false,
        };
        let producer = KafkaProducer::new(opts)?;
        write_lease(opts, &producer, &claim)?;
        // Of rival claims, the first on the log won: read it back to know which.
        let lease = read_owners(opts)?.lease;
        if !lease.is_held_by(&claim) {
            let winner = lease.holder().map_or("another tool".to_owned(), |w| {
                format!("`{}` ({})", w.tool, w.holder)
            });
            return Err(KafkaToolError::Refused(format!(
                "{winner} took this deployment's lease first; nothing was changed"
            )));
        }
        if claim.takeover {
            tracing::warn!(seq = claim.seq, "took the deployment's lease over");
        }
        Ok(LeaseHeld {
            opts: opts.clone(),
            producer,
            claim,
        })
    }

    /// Whether the lease is still this run's; an error naming who took it over otherwise.
    pub fn check(&self) -> Result<(), KafkaToolError> {
        let lease = read_owners(&self.opts)?.lease;
        if lease.is_held_by(&self.claim) {
            return Ok(());
        }
        Err(KafkaToolError::Refused(format!(
            "this run lost the deployment's lease{}; it stops here, before changing anything more",
            lease.holder().map_or(String::new(), |h| format!(
                " to `{}` ({}, --take-over-lease)",
                h.tool, h.holder
            ))
        )))
    }
}

/// Writes a lease record to `reservation-owners`.
fn write_lease(
    opts: &KafkaOptions,
    producer: &KafkaProducer,
    r: &LeaseRecord,
) -> Result<(), KafkaToolError> {
    write_owners(opts, producer, record(r.key().into_bytes(), r.to_json()))
}

/// Writes one of the tools' records (a lease, a change of N) to `reservation-owners`, and waits
/// for its acknowledgement.
pub(crate) fn write_owners(
    opts: &KafkaOptions,
    producer: &KafkaProducer,
    record: NewRecord,
) -> Result<(), KafkaToolError> {
    producer.send_all(&[Outgoing {
        topic: &opts.topic(Role::Owners),
        partition: Partition(0),
        record,
    }])?;
    Ok(())
}

impl Drop for LeaseHeld {
    fn drop(&mut self) {
        let release = self.claim.released(now_millis());
        if let Err(e) = write_lease(&self.opts, &self.producer, &release) {
            tracing::warn!(error = %e, "cannot let the deployment's lease go; the next tool must pass --take-over-lease");
        }
    }
}

/// How long ago `ts` (epoch milliseconds) was, for a person.
fn ago(ts: i64) -> String {
    let secs = (now_millis() - ts).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

/// The key of a state record on the changelog.
pub(crate) fn key_of(r: &StateRecord) -> Vec<u8> {
    r.reservation_no.as_str().as_bytes().to_vec()
}

/// A record to write now, without headers.
pub(crate) fn record(key: Vec<u8>, value: Vec<u8>) -> NewRecord {
    NewRecord {
        key,
        value,
        timestamp: now_millis(),
        headers: Vec::new(),
    }
}
