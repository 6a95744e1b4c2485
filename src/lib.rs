//! ordo: a keyed, partitioned stream processor for reservation workflows.
//!
//! Events about one reservation are routed by their reservation number to one partition, and
//! each partition is processed by one dedicated thread, so the events of one reservation never
//! race. The contract is `docs/contract.md`. A record walks down the rooms:
//!
//! ```text
//!   input log ──► partition owner ──► core (step) ──► changelog + dead letters ──► view ──► HTTP
//!   log/          owner/              core/           log/                        view.rs   http/
//! ```
//!
//! * [`core`]: pure: ids, partitioner, event decoding, state machine, changelog and fencing,
//!   one record's step. No I/O, clock, threads or framework.
//! * [`log`]: the logs and their backends (`embedded`, `kafka`) and the topic definitions.
//! * [`view`]: what owners publish and HTTP reads: state per partition, user index, status.
//! * [`metrics`]: the Prometheus metrics.
//! * [`owner`]: the partition owner's one lifecycle (restore, epoch, batch loop, release) and
//!   its two drivers (every partition of a data dir; a Kafka consumer-group member).
//! * [`http`]: the listener: health, metrics, queries, the gateway; errors as JSON.
//! * [`shutdown`]: shutdown as a value.
//! * [`app`]: `ordo run`: owners plus HTTP plus signals.
//! * [`tools`]: `produce`, `demo`, `bench`, and the replay tooling.
//! * [`cli`]: the command line and the one mapping of errors to exit codes.
//!
//! **The dependency rule.** Imports point inward: `core` imports nothing of ordo;
//! `log → core`; `view → core`; `metrics → core`; `owner → core, log, view, metrics`;
//! `http → core, log, view, metrics` (never `owner` or `app`); `app → owner, http, …`;
//! `tools → app, owner, log, core`; `cli → everything`, and nothing imports `cli`.

pub mod app;
pub mod cli;
pub mod core;
pub mod http;
pub mod log;
pub mod metrics;
pub mod owner;
pub mod shutdown;
pub mod tools;
pub mod view;
