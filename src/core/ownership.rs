//! Ownership records (`reservation-owners`, SPEC §4 and §7): who serves each partition, and the
//! table every member folds them into. An owner publishes its record once its epoch marker is
//! durable and before it reports ready, and the same record with `"url": null` when it lets the
//! partition go; the table keeps, per partition, the record of the highest epoch. Pure.

use serde::{Deserialize, Serialize};

use super::ids::{Epoch, Partition, PartitionCount};

/// One ownership record, keyed on the log by its partition number in decimal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipRecord {
    pub partition: u32,
    pub epoch: Epoch,
    /// Who owns it (host and process), as in its epoch marker.
    pub owner: String,
    /// The base URL at which the owner serves the partition; `None` once released.
    pub url: Option<String>,
    /// Epoch milliseconds when the record was written.
    pub ts: i64,
}

/// A record on `reservation-owners` that is not an ownership record.
#[derive(Debug, thiserror::Error)]
#[error("not an ownership record: {0}")]
pub struct BadOwnership(String);

impl OwnershipRecord {
    /// The record's key on the log: the partition number in decimal.
    pub fn key(&self) -> String {
        self.partition.to_string()
    }

    /// The record as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ownership record always serialises")
    }

    /// Decodes a record's value.
    pub fn decode(value: &[u8]) -> Result<Self, BadOwnership> {
        serde_json::from_slice(value).map_err(|e| BadOwnership(e.to_string()))
    }
}

/// Per partition, the ownership record of the highest epoch seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerTable {
    records: Vec<Option<OwnershipRecord>>,
}

impl OwnerTable {
    /// An empty table for `n` partitions.
    pub fn new(n: PartitionCount) -> Self {
        OwnerTable {
            records: vec![None; n.get() as usize],
        }
    }

    /// Folds in the next record of the log; returns whether it changed the table. A record of
    /// a lower epoch than the one held is stale (a former owner's late release); at the same
    /// epoch the later record wins (the owner's own release). Records for partitions outside
    /// the table are ignored.
    pub fn apply(&mut self, record: OwnershipRecord) -> bool {
        let Some(slot) = self.records.get_mut(record.partition as usize) else {
            return false;
        };
        match slot {
            Some(held) if held.epoch > record.epoch => false,
            _ => {
                *slot = Some(record);
                true
            }
        }
    }

    /// The record held for `p`.
    pub fn get(&self, p: Partition) -> Option<&OwnershipRecord> {
        self.records.get(p.index()).and_then(Option::as_ref)
    }

    /// The URL that serves `p`, if any owner holds it now.
    pub fn url(&self, p: Partition) -> Option<&str> {
        self.get(p).and_then(|r| r.url.as_deref())
    }

    /// Every partition's record, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (Partition, Option<&OwnershipRecord>)> {
        self.records
            .iter()
            .enumerate()
            .map(|(p, r)| (Partition(p as u32), r.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(partition: u32, epoch: u64, url: Option<&str>) -> OwnershipRecord {
        OwnershipRecord {
            partition,
            epoch: Epoch(epoch),
            owner: format!("host/{epoch}"),
            url: url.map(str::to_owned),
            ts: 1,
        }
    }

    #[test]
    fn the_highest_epoch_wins_and_a_release_clears_its_own_epoch_only() {
        let mut t = OwnerTable::new(PartitionCount::new(2).unwrap());
        assert!(t.apply(record(0, 1, Some("http://a"))));
        assert!(t.apply(record(0, 2, Some("http://b"))));
        // The former owner's release comes late: ignored.
        assert!(!t.apply(record(0, 1, None)));
        assert_eq!(t.url(Partition(0)), Some("http://b"));
        // The owner's own release clears it.
        assert!(t.apply(record(0, 2, None)));
        assert_eq!(t.url(Partition(0)), None);
        assert_eq!(t.get(Partition(0)).unwrap().epoch, Epoch(2));
        assert!(!t.apply(record(7, 9, Some("http://c"))));
        assert_eq!(t.url(Partition(1)), None);
    }

    #[test]
    fn round_trips_through_json() {
        let r = record(3, 4, Some("http://ordo-0.ordo:8080"));
        assert_eq!(OwnershipRecord::decode(&r.to_json()).unwrap(), r);
        assert_eq!(r.key(), "3");
        let released = record(3, 4, None);
        assert!(
            String::from_utf8(released.to_json())
                .unwrap()
                .contains("\"url\":null")
        );
        assert!(OwnershipRecord::decode(b"{}").is_err());
    }

    proptest! {
        /// In any order of arrival, the table ends with the record of the highest epoch (the
        /// last of that epoch in arrival order).
        #[test]
        fn any_order_ends_at_the_highest_epoch(epochs in prop::collection::vec(0u64..6, 1..20)) {
            let mut t = OwnerTable::new(PartitionCount::new(1).unwrap());
            for (i, e) in epochs.iter().enumerate() {
                let mut r = record(0, *e, Some("http://x"));
                r.ts = i as i64;
                t.apply(r);
            }
            let top = *epochs.iter().max().unwrap();
            let last = epochs.iter().rposition(|e| *e == top).unwrap() as i64;
            let held = t.get(Partition(0)).unwrap();
            prop_assert_eq!(held.epoch, Epoch(top));
            prop_assert_eq!(held.ts, last);
        }
    }
}
