//! What the tools that change a Kafka deployment share (`replay --apply`, `repartition
//! --apply`): their error, the refusal while a member holds a partition, and records stamped
//! with the time they are written.

use std::collections::BTreeMap;

use crate::core::changelog::StateRecord;
use crate::core::ownership::OwnershipRecord;
use crate::core::record::NewRecord;
use crate::log::kafka::{KafkaLogError, OwnersLog};
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

/// Refuses while `reservation-owners` says a member holds a partition, naming the members;
/// `assume_stopped` is the operator saying they died without letting go.
pub fn refuse_held(owners: &OwnersLog, assume_stopped: bool) -> Result<(), KafkaToolError> {
    if let Some(r) = owners.repartition.as_ref().filter(|r| r.in_progress()) {
        return Err(KafkaToolError::Refused(format!(
            "a change of N from {} to {} is under way; finish it first with `ordo repartition \
             --brokers ... --to-partitions {} --apply`",
            r.from, r.to, r.to
        )));
    }
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
