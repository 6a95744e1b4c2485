//! ordo: a keyed, partitioned stream processor for reservation workflows.
//!
//! Events about one reservation are routed by their reservation number to one partition, and
//! each partition is processed by one dedicated thread, so the events of one reservation never
//! race. The contract is SPEC.md; the modules, from the pure core outwards:
//!
//! * [`partitioner`]: `abs-hash-mod-N` (Java-compatible) and `murmur2`; `N = containers × servers`.
//! * [`event`]: the event wire format, validation, and the domain [`event::Event`].
//! * [`state_machine`]: `none → reserved → associated | cancelled`, one transition table.
//! * [`reference`]: an independent plain model of the state machine, for checks.
//! * [`changelog`]: state records, epoch markers, and the fencing rule readers apply.
//! * [`topics`]: topic definitions from `topics/`.
//! * [`log`]: records and backends (`log::embedded`: the durable local log).
//! * [`worker`]: the per-partition thread: restore, take an epoch, process, commit.
//! * [`processor`]: runs one worker per partition plus the HTTP endpoint (`ordo run`).
//! * [`group`]: `ordo run --brokers`: a Kafka consumer-group member, one owner thread per
//!   assigned partition.
//! * [`http`]: metrics, health, readiness and state queries.
//! * [`gateway`]: ingest over HTTP, associations routed by user, read-your-writes queries.
//! * [`metrics`]: Prometheus metrics.
//! * [`replay`]: `ordo export`, `ordo replay` (with `--diff`), `ordo repartition`.
//! * [`generate`]: realistic workloads for `ordo produce --generate` and `ordo demo`.
//! * [`produce`]: validating and appending input files.
//! * [`bench`]: `ordo bench`, end-to-end and restore measurements.
//! * [`cli`]: the command line.

pub mod bench;
pub mod changelog;
pub mod cli;
pub mod event;
pub mod gateway;
pub mod generate;
pub mod group;
pub mod http;
pub mod log;
pub mod metrics;
pub mod partitioner;
pub mod processor;
pub mod produce;
pub mod reference;
pub mod replay;
pub mod state_machine;
pub mod topics;
pub mod worker;
