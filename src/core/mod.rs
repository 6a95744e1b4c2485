//! The pure core: everything that decides, nothing that does I/O.
//!
//! No clock, threads, files, network, tokio, rdkafka, redb, axum, prometheus, clap, dashmap or
//! tracing in here (tests aside): the shell reads records, hands them to
//! [`step::Processor`], and makes what comes back durable.
//!
//! * [`ids`]: `Partition`, `PartitionCount`, `Offset`, `Epoch`, `ReservationNo`.
//! * [`partitioner`]: `abs-hash-mod-N` (Java-compatible) and `murmur2`.
//! * [`event`]: the event wire format, validation, and the domain `Event`.
//! * [`state_machine`]: `none → reserved → associated | cancelled`, one transition table.
//! * [`entity`]: one reservation's state, packed for memory.
//! * [`reference`]: an independent plain model of the state machine, for checks.
//! * [`record`]: log records and dead-letter headers, whatever the backend.
//! * [`changelog`]: state records, epoch markers, and the fencing rule every reader applies.
//! * [`step`]: one input record in, its effects out.
//! * [`ownership`]: ownership records and the table of who serves each partition.

pub mod changelog;
pub mod entity;
pub mod event;
mod event_scan;
pub mod ids;
pub mod ownership;
pub mod partitioner;
pub mod record;
pub mod reference;
pub mod state_machine;
pub mod step;

pub use ids::{Epoch, Offset, Partition, PartitionCount, ReservationNo};
