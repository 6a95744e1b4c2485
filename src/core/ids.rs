//! The identities ordo works with, as newtypes: a partition, the partition count N, an offset in
//! a log, an owner's epoch, and a reservation number. Pure: no I/O.

use std::fmt;
use std::num::NonZeroU32;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A partition number, `0..N`; a plain number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub u32);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Partition {
    /// The partition as an index into per-partition vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The number of partitions `N` of every topic; never zero. A plain number on the wire, where
/// a zero does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PartitionCount(NonZeroU32);

impl TryFrom<u32> for PartitionCount {
    type Error = &'static str;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(n).ok_or("a partition count must be at least 1")
    }
}

impl From<PartitionCount> for u32 {
    fn from(n: PartitionCount) -> u32 {
        n.get()
    }
}

impl PartitionCount {
    /// One partition.
    pub const ONE: PartitionCount = PartitionCount(NonZeroU32::MIN);

    /// A count of `n` partitions, `None` when `n` is zero.
    pub fn new(n: u32) -> Option<Self> {
        NonZeroU32::new(n).map(Self)
    }

    /// `containers × servers`; `None` when either is zero or the product overflows.
    pub fn product(containers: u32, servers: u32) -> Option<Self> {
        containers.checked_mul(servers).and_then(Self::new)
    }

    /// The count as a plain number.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// All partitions `0..N`, in order.
    pub fn iter(self) -> impl Iterator<Item = Partition> {
        (0..self.get()).map(Partition)
    }

    /// Whether `p` is one of `0..N`.
    pub fn contains(self, p: Partition) -> bool {
        p.0 < self.get()
    }
}

impl fmt::Display for PartitionCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A position in one partition of a log: the offset of a record, or (as a resume point or an
/// applied position) the offset of the next record to read.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset after this one; `None` at `u64::MAX`, which no log reaches.
    pub fn next(self) -> Option<Offset> {
        self.0.checked_add(1).map(Offset)
    }

    /// Records from `self` up to (not including) `end`; zero when `end` is not ahead.
    pub fn distance_to(self, end: Offset) -> u64 {
        end.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Ownership generation of a partition; every new owner takes a greater one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch a new owner takes over this one.
    pub fn successor(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A reservation number: the routing key and the identity of one state-machine entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationNo(pub CompactString);

impl ReservationNo {
    /// The reservation number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ReservationNo {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReservationNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ReservationNo {
    fn from(s: &str) -> Self {
        Self(CompactString::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_offsets() {
        assert_eq!(PartitionCount::new(0), None);
        assert_eq!(
            PartitionCount::product(3, 2).map(PartitionCount::get),
            Some(6)
        );
        assert_eq!(PartitionCount::product(0, 2), None);
        assert_eq!(PartitionCount::product(u32::MAX, 2), None);
        let n = PartitionCount::new(4).unwrap();
        assert!(n.contains(Partition(3)) && !n.contains(Partition(4)));
        assert_eq!(Offset(u64::MAX).next(), None);
        assert_eq!(Offset(3).next(), Some(Offset(4)));
        assert_eq!(Offset(5).distance_to(Offset(3)), 0);
        assert_eq!(Epoch(4).successor(), Epoch(5));
    }
}
