//! The store's tables (one per topic, keyed by partition and offset, plus the data dir's
//! metadata, positions and epochs) and how records are laid out in them.

use redb::{ReadableTable, TableDefinition};

use super::{LogError, store};
use crate::core::record::NewRecord;
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::topics::Role;

/// A record as stored: key, value, timestamp, headers (JSON array of pairs, empty when none).
pub(super) type Row<'a> = (&'a [u8], &'a [u8], i64, &'a [u8]);
pub(super) type TopicTable = TableDefinition<'static, (u32, u64), Row<'static>>;
pub(super) type TopicReadTable = redb::ReadOnlyTable<(u32, u64), Row<'static>>;

pub(super) const EVENTS: TopicTable = TableDefinition::new("reservation-events");
pub(super) const STATE: TopicTable = TableDefinition::new("reservation-state");
pub(super) const DEAD_LETTERS: TopicTable = TableDefinition::new("reservation-events.dlq");
/// Kept for the topic's sake only: one process owns every partition of a data dir, so nothing
/// is ever written here.
pub(super) const OWNERS: TopicTable = TableDefinition::new("reservation-owners");
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// partition → next input offset to process.
pub(super) const POSITIONS: TableDefinition<u32, u64> = TableDefinition::new("positions");
/// partition → epoch of the latest owner.
pub(super) const EPOCHS: TableDefinition<u32, u64> = TableDefinition::new("epochs");

pub(super) fn table(role: Role) -> TopicTable {
    match role {
        Role::Events => EVENTS,
        Role::State => STATE,
        Role::DeadLetters => DEAD_LETTERS,
        Role::Owners => OWNERS,
    }
}

pub(super) fn append_to(
    t: &mut redb::Table<'_, (u32, u64), Row<'static>>,
    records: &[(Partition, NewRecord)],
    n: PartitionCount,
) -> Result<Vec<Offset>, LogError> {
    let refs: Vec<(Partition, &NewRecord)> = records.iter().map(|(p, r)| (*p, r)).collect();
    append_refs(t, &refs, n)
}

pub(super) fn append_refs(
    t: &mut redb::Table<'_, (u32, u64), Row<'static>>,
    records: &[(Partition, &NewRecord)],
    n: PartitionCount,
) -> Result<Vec<Offset>, LogError> {
    let mut next: Vec<Option<u64>> = vec![None; n.get() as usize];
    let mut offsets = Vec::with_capacity(records.len());
    for (p, r) in records {
        let slot = &mut next[p.0 as usize];
        let offset = match *slot {
            Some(o) => o,
            None => end_of(&*t, p.0)?,
        };
        *slot = Some(offset + 1);
        let headers = encode_headers(&r.headers);
        t.insert(
            (p.0, offset),
            (&r.key[..], &r.value[..], r.timestamp, &headers[..]),
        )
        .map_err(store("append"))?;
        offsets.push(Offset(offset));
    }
    Ok(offsets)
}

/// A topic's table in a read transaction; `None` where a data dir written by an earlier version
/// (opened read-only, so never upgraded) has no such table.
pub(super) fn open_topic(
    txn: &redb::ReadTransaction,
    role: Role,
) -> Result<Option<TopicReadTable>, LogError> {
    match txn.open_table(table(role)) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(store("open topic")(e)),
    }
}

pub(super) fn end_of<T: ReadableTable<(u32, u64), Row<'static>>>(
    t: &T,
    p: u32,
) -> Result<u64, LogError> {
    let mut r = t.range((p, 0)..=(p, u64::MAX)).map_err(store("read"))?;
    match r.next_back() {
        Some(item) => Ok(item.map_err(store("read"))?.0.value().1 + 1),
        None => Ok(0),
    }
}

pub(super) fn encode_headers(headers: &[(String, String)]) -> Vec<u8> {
    if headers.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(headers).expect("headers always serialise")
    }
}

pub(super) fn decode_headers(bytes: &[u8]) -> Vec<(String, String)> {
    if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}
