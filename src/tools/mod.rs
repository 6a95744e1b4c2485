//! The commands around the processor: appending input, the demo, benchmarks, and the replay
//! tooling.
//!
//! * [`generate`]: realistic workloads for `ordo produce --generate` and `ordo demo`.
//! * [`produce`]: validating and appending input files.
//! * [`demo`]: `ordo demo`: generate, process, check against the reference model.
//! * [`bench`]: `ordo bench`: end to end, gateway, Kafka, restore.
//! * [`replay`]: `ordo export`, `ordo replay` (with `--diff`, `--apply`).
//! * [`repartition`]: `ordo repartition`: N → M, on a data dir or a Kafka deployment.
//! * [`deployment`]: what the tools that change a Kafka deployment share.
//! * [`progress`]: progress of a long run on stderr.

pub mod bench;
pub mod demo;
pub mod deployment;
pub mod generate;
pub mod produce;
pub mod progress;
pub mod repartition;
pub mod replay;
