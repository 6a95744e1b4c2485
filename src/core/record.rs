//! Log records as ordo sees them, independent of the backend that carries them, and the
//! headers of a dead letter (contract §4). Pure data.

use super::ids::{Offset, Partition};

/// A record read from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: Partition,
    pub offset: Offset,
    /// Epoch milliseconds.
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// A record to append; the log assigns its offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Epoch milliseconds.
    pub timestamp: i64,
    pub headers: Vec<(String, String)>,
}

/// Header names of a dead letter (contract §4).
pub mod headers {
    pub const REASON: &str = "ordo.reason";
    pub const SOURCE_PARTITION: &str = "ordo.source.partition";
    pub const SOURCE_OFFSET: &str = "ordo.source.offset";
    pub const ERROR: &str = "ordo.error";
}

impl Record {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
