//! Replay tooling: read ranges of a log (`ordo export`), and run the core over history again
//! (`ordo replay`, with `--diff` against the live changelog, and `--apply`).
//!
//! * [`export`]: records as NDJSON.
//! * [`rebuild`]: deterministic replays and diffs, on either log; `--apply` on the embedded
//!   log (one transaction per partition swaps its changelog).
//! * [`epochs`]: `--apply` on Kafka (new epochs, the replayed records, tombstones).

pub mod epochs;
pub mod export;
pub mod rebuild;

use crate::log::Logs;
pub use crate::log::offsets::{OffsetSpec, Start};
use crate::tools::deployment::{KafkaToolError, Overrides};

/// `replay --apply`: replays the whole input and makes the result the live changelog. Two
/// strategies: on the embedded log one transaction per partition swaps its changelog; on
/// Kafka new epochs, the replayed records and tombstones are written (refused while a member
/// holds a partition unless the operator says it is gone, and while another tool holds the
/// deployment's lease).
pub fn apply(
    logs: &Logs,
    owner: &str,
    overrides: Overrides,
) -> Result<epochs::Applied, KafkaToolError> {
    match logs {
        Logs::Embedded(log) => {
            let replay = rebuild::replay(logs, OffsetSpec::default(), None)?;
            rebuild::apply(log, &replay, owner).map_err(crate::log::LogsError::from)?;
            Ok(epochs::Applied {
                replay,
                deleted: None,
                epochs: Vec::new(),
            })
        }
        Logs::Kafka { options, n } => epochs::apply_replay(options, *n, owner, overrides),
    }
}
