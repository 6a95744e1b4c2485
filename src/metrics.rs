//! Prometheus metrics (contract §8): one [`Metrics`] registered on a registry that is passed in,
//! label values from closed sets only (no per-key labels).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::core::Partition;
use crate::core::state_machine::RejectReason;
use crate::core::step::{TALLY_FROM, TALLY_OUTCOMES, TALLY_TO, TALLY_TYPES, Tally};

/// Every metric ordo exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `ordo_events_total{partition,type,outcome}`.
    pub events: IntCounterVec,
    /// `ordo_rejections_total{reason}`.
    pub rejections: IntCounterVec,
    /// `ordo_transitions_total{from,to}`.
    pub transitions: IntCounterVec,
    /// `ordo_dead_letters_total{reason}`.
    pub dead_letters: IntCounterVec,
    /// `ordo_event_processing_seconds`.
    pub processing: Histogram,
    /// `ordo_commit_seconds`: one durable batch commit.
    pub commit: Histogram,
    /// `ordo_partition_lag_records{partition}`.
    pub lag: IntGaugeVec,
    /// `ordo_state_entries{partition}`.
    pub state_entries: IntGaugeVec,
    /// `ordo_restore_seconds{partition}`.
    pub restore: HistogramVec,
    /// `ordo_partitions_owned`.
    pub partitions_owned: IntGauge,
    /// `ordo_fenced_records_total`: changelog records of a former owner ignored on restore.
    pub fenced: IntCounter,
    /// `ordo_epoch{partition}`: the epoch this process holds.
    pub epoch: IntGaugeVec,
    /// `ordo_rebalances_total{kind}`: consumer-group assignments and revocations (Kafka).
    pub rebalances: IntCounterVec,
    /// `ordo_rebalance_seconds{kind}`: time inside the consumer group's rebalance callbacks
    /// (revoke: owners stopped and positions committed; assign: owners started and the new
    /// partitions' changelogs handed to the restore reader).
    pub rebalance_seconds: HistogramVec,
    /// `ordo_last_rebalance_timestamp_seconds`: when this member's last rebalance callback
    /// ran (Unix time; 0 before any).
    pub last_rebalance: IntGauge,
    /// `ordo_http_request_duration_seconds{route,status}`: `route` is the route template.
    pub http_requests: HistogramVec,
    /// `ordo_http_requests_in_flight{route}`: requests being answered (long polls included).
    pub http_in_flight: IntGaugeVec,
    /// `ordo_forwarded_requests_total{outcome}`: relayed, no_owner, unreachable.
    pub forwarded: IntCounterVec,
    /// `ordo_partition_lag_seconds{partition}`: while records wait, the age of the last one
    /// processed (an upper bound on the oldest waiting record's age); 0 when caught up.
    pub lag_seconds: prometheus::GaugeVec,
    /// `ordo_restore_progress_ratio{partition}`: how far a partition's restore has read its
    /// changelog, 0 to 1 (1 once restored).
    pub restore_progress: prometheus::GaugeVec,
    /// `process_resident_memory_bytes`: this process's resident memory.
    pub resident_memory: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            events: IntCounterVec::new(
                Opts::new(
                    "ordo_events_total",
                    "Events processed, by partition, type and outcome",
                ),
                &["partition", "type", "outcome"],
            )?,
            rejections: IntCounterVec::new(
                Opts::new(
                    "ordo_rejections_total",
                    "Events rejected by the state machine, by reason",
                ),
                &["reason"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new("ordo_transitions_total", "State transitions applied"),
                &["from", "to"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "ordo_dead_letters_total",
                    "Records written to the dead-letter log, by reason",
                ),
                &["reason"],
            )?,
            processing: Histogram::with_opts(
                HistogramOpts::new(
                    "ordo_event_processing_seconds",
                    "Time to decode, route and apply one event",
                )
                .buckets(vec![1e-7, 5e-7, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3, 1e-2]),
            )?,
            commit: Histogram::with_opts(
                HistogramOpts::new("ordo_commit_seconds", "Time to make one batch durable")
                    .buckets(prometheus::exponential_buckets(1e-4, 2.0, 16)?),
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "ordo_partition_lag_records",
                    "Input records not yet processed",
                ),
                &["partition"],
            )?,
            state_entries: IntGaugeVec::new(
                Opts::new("ordo_state_entries", "Reservations held in state"),
                &["partition"],
            )?,
            restore: HistogramVec::new(
                HistogramOpts::new(
                    "ordo_restore_seconds",
                    "Time to restore a partition's state",
                )
                .buckets(prometheus::exponential_buckets(1e-3, 4.0, 10)?),
                &["partition"],
            )?,
            partitions_owned: IntGauge::new(
                "ordo_partitions_owned",
                "Partitions owned by this process",
            )?,
            fenced: IntCounter::new(
                "ordo_fenced_records_total",
                "Changelog records of a fenced former owner, ignored",
            )?,
            epoch: IntGaugeVec::new(
                Opts::new("ordo_epoch", "Owner epoch held for each partition"),
                &["partition"],
            )?,
            rebalances: IntCounterVec::new(
                Opts::new(
                    "ordo_rebalances_total",
                    "Consumer-group rebalance events, by kind",
                ),
                &["kind"],
            )?,
            rebalance_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ordo_rebalance_seconds",
                    "Time spent in consumer-group rebalance callbacks, by kind",
                )
                .buckets(prometheus::exponential_buckets(1e-3, 4.0, 9)?),
                &["kind"],
            )?,
            last_rebalance: IntGauge::new(
                "ordo_last_rebalance_timestamp_seconds",
                "Unix time of this member's last consumer-group rebalance callback",
            )?,
            http_requests: HistogramVec::new(
                HistogramOpts::new(
                    "ordo_http_request_duration_seconds",
                    "HTTP requests, by route template and status",
                )
                .buckets(vec![
                    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0,
                ]),
                &["route", "status"],
            )?,
            http_in_flight: IntGaugeVec::new(
                Opts::new(
                    "ordo_http_requests_in_flight",
                    "HTTP requests being answered, by route template",
                ),
                &["route"],
            )?,
            forwarded: IntCounterVec::new(
                Opts::new(
                    "ordo_forwarded_requests_total",
                    "Requests for a partition another member owns, by outcome",
                ),
                &["outcome"],
            )?,
            lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "ordo_partition_lag_seconds",
                    "While records wait, the age of the last one processed (0 when caught up)",
                ),
                &["partition"],
            )?,
            restore_progress: prometheus::GaugeVec::new(
                Opts::new(
                    "ordo_restore_progress_ratio",
                    "How far a partition's restore has read its changelog, 0 to 1",
                ),
                &["partition"],
            )?,
            resident_memory: IntGauge::new(
                "process_resident_memory_bytes",
                "Resident memory of this process",
            )?,
            registry,
        };
        // Closed label sets exported from the start, so a query sees 0 rather than nothing.
        for kind in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[kind]);
            m.rebalance_seconds.with_label_values(&[kind]);
        }
        let r = &m.registry;
        r.register(Box::new(m.events.clone()))?;
        r.register(Box::new(m.rejections.clone()))?;
        r.register(Box::new(m.transitions.clone()))?;
        r.register(Box::new(m.dead_letters.clone()))?;
        r.register(Box::new(m.processing.clone()))?;
        r.register(Box::new(m.commit.clone()))?;
        r.register(Box::new(m.lag.clone()))?;
        r.register(Box::new(m.state_entries.clone()))?;
        r.register(Box::new(m.restore.clone()))?;
        r.register(Box::new(m.partitions_owned.clone()))?;
        r.register(Box::new(m.fenced.clone()))?;
        r.register(Box::new(m.epoch.clone()))?;
        r.register(Box::new(m.rebalances.clone()))?;
        r.register(Box::new(m.rebalance_seconds.clone()))?;
        r.register(Box::new(m.last_rebalance.clone()))?;
        r.register(Box::new(m.http_requests.clone()))?;
        r.register(Box::new(m.http_in_flight.clone()))?;
        r.register(Box::new(m.forwarded.clone()))?;
        r.register(Box::new(m.lag_seconds.clone()))?;
        r.register(Box::new(m.restore_progress.clone()))?;
        r.register(Box::new(m.resident_memory.clone()))?;
        Ok(m)
    }

    /// A fresh set of metrics on its own registry.
    pub fn fresh() -> Self {
        Self::new(Registry::new()).expect("metric names are unique")
    }

    /// Drops the per-partition gauges of `p` once this process lets it go: its new owner
    /// exports them, and a sum over members must not count the partition twice. (Counters
    /// stay: they count what this process did.)
    pub fn forget_partition(&self, p: Partition) {
        let label = p.to_string();
        let _ = self.lag.remove_label_values(&[&label]);
        let _ = self.state_entries.remove_label_values(&[&label]);
        let _ = self.epoch.remove_label_values(&[&label]);
        let _ = self.lag_seconds.remove_label_values(&[&label]);
        let _ = self.restore_progress.remove_label_values(&[&label]);
    }

    /// Events of partition `p` counted so far, per outcome in [`TALLY_OUTCOMES`] order (every
    /// type summed).
    pub fn outcomes(&self, p: Partition) -> [u64; TALLY_OUTCOMES.len()] {
        let p = p.to_string();
        let mut out = [0; TALLY_OUTCOMES.len()];
        for t in TALLY_TYPES {
            for (i, o) in TALLY_OUTCOMES.iter().enumerate() {
                out[i] += self.events.with_label_values(&[p.as_str(), t, o]).get();
            }
        }
        out
    }

    /// Events of every partition of `n` counted so far, per outcome (as [`Self::outcomes`]),
    /// and the dead letters written.
    pub fn totals(&self, n: crate::core::PartitionCount) -> ([u64; TALLY_OUTCOMES.len()], u64) {
        let mut out = [0; TALLY_OUTCOMES.len()];
        for p in n.iter() {
            for (o, n) in out.iter_mut().zip(self.outcomes(p)) {
                *o += n;
            }
        }
        let dead = Tally::dead_letter_reasons()
            .iter()
            .map(|r| self.dead_letters.with_label_values(&[r]).get())
            .sum();
        (out, dead)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }
}

/// One partition's counters, resolved once per owner so the hot path touches no label maps;
/// a batch's [`Tally`] is added after the batch is durable.
pub struct PartitionCounters {
    /// `[type][outcome]`, as [`TALLY_TYPES`] × [`TALLY_OUTCOMES`].
    events: Vec<Vec<IntCounter>>,
    rejections: Vec<IntCounter>,
    /// `[from][to]`, as [`TALLY_FROM`] × [`TALLY_TO`].
    transitions: Vec<Vec<IntCounter>>,
    /// In [`Tally::dead_letter_reasons`] order.
    dead_letters: Vec<IntCounter>,
}

impl PartitionCounters {
    /// The counters of partition `p`.
    pub fn new(m: &Metrics, p: Partition) -> Self {
        let p = p.to_string();
        PartitionCounters {
            events: TALLY_TYPES
                .iter()
                .map(|t| {
                    TALLY_OUTCOMES
                        .iter()
                        .map(|o| m.events.with_label_values(&[p.as_str(), t, o]))
                        .collect()
                })
                .collect(),
            rejections: RejectReason::ALL
                .iter()
                .map(|r| m.rejections.with_label_values(&[r.as_str()]))
                .collect(),
            transitions: TALLY_FROM
                .iter()
                .map(|f| {
                    TALLY_TO
                        .iter()
                        .map(|t| m.transitions.with_label_values(&[f, t]))
                        .collect()
                })
                .collect(),
            dead_letters: Tally::dead_letter_reasons()
                .iter()
                .map(|r| m.dead_letters.with_label_values(&[r]))
                .collect(),
        }
    }

    /// Adds a durable batch's counts.
    pub fn add(&self, tally: &Tally) {
        fn add(counter: &IntCounter, n: u64) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        for (row, counters) in tally.events.iter().zip(&self.events) {
            for (n, counter) in row.iter().zip(counters) {
                add(counter, *n);
            }
        }
        for (n, counter) in tally.rejections.iter().zip(&self.rejections) {
            add(counter, *n);
        }
        for (row, counters) in tally.transitions.iter().zip(&self.transitions) {
            for (n, counter) in row.iter().zip(counters) {
                add(counter, *n);
            }
        }
        for (n, counter) in tally.dead_letters.iter().zip(&self.dead_letters) {
            add(counter, *n);
        }
    }
}
