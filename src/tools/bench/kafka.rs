//! `ordo bench kafka`: ordo (and a peer) on one Apache Kafka broker, next to the raw consume and
//! consume→produce rates of the same records, at each guarantee.

use std::time::{Duration, Instant};

use super::process::Measured;
use super::{BenchError, peer};
use crate::app::RunError;
use crate::core::PartitionCount;
use crate::log::topics::Role;
use crate::owner::Guarantee;

/// Figures of the Kafka benchmark, all from one round on one broker.
#[derive(Debug, Clone)]
pub struct KafkaBench {
    pub events: u64,
    pub partitions: u32,
    pub produce_secs: f64,
    /// One plain consumer reading every input record.
    pub raw_consume_secs: f64,
    /// The raw consume→produce pipe ([`crate::log::kafka::pipe`]).
    pub pipe_secs: f64,
    /// Each system at each guarantee, in the order they ran.
    pub runs: Vec<SystemRun>,
}

/// One system at one guarantee over the benchmark's input, as a child process.
#[derive(Debug, Clone)]
pub struct SystemRun {
    pub system: &'static str,
    pub guarantee: Guarantee,
    /// Spawn to exit on the empty topics: start-up, join, (empty) restore, leave.
    pub startup_secs: f64,
    /// Spawn to exit over the input.
    pub run: Measured,
    /// Spawn to exit of a second run on the same group once the input is processed: the
    /// whole state restored from its changelog (the peer with an empty state directory, as a
    /// replacement machine would start), nothing left to process.
    pub restore_secs: f64,
}

impl SystemRun {
    /// Whole-run events/s.
    pub fn whole_rate(&self, events: u64) -> f64 {
        events as f64 / self.run.wall_secs
    }
    /// Steady events/s: the whole run minus its start-up on empty topics.
    pub fn steady_rate(&self, events: u64) -> f64 {
        events as f64 / (self.run.wall_secs - self.startup_secs).max(f64::EPSILON)
    }
    /// CPU seconds per million events.
    pub fn cpu_per_million(&self, events: u64) -> f64 {
        self.run.cpu_secs * 1e6 / events.max(1) as f64
    }
}

impl KafkaBench {
    fn rate(&self, secs: f64) -> f64 {
        self.events as f64 / secs
    }
    /// Raw consume rate, records/s.
    pub fn consume_rate(&self) -> f64 {
        self.rate(self.raw_consume_secs)
    }
    /// Raw consume→produce pipe rate, records/s.
    pub fn pipe_rate(&self) -> f64 {
        self.rate(self.pipe_secs)
    }
}

/// On a broker with no ordo topics yet: creates them with `n` partitions and measures, in this
/// order on the same broker: each of `systems` on the empty topics (start-up), producing
/// `events` generated events, one plain consumer reading them (raw consume), a raw
/// consume→produce pipe over them into a scratch topic, then each system over them, one after
/// the other, each followed by a run that restores its state. With `commit_interval`, the
/// systems run again at exactly-once (ordo `--guarantee exactly-once`, the peer
/// `exactly_once_v2`), on a second deployment whose input holds the same records.
pub fn run(
    opts: &crate::log::kafka::KafkaOptions,
    events: usize,
    n: PartitionCount,
    commit_interval: Option<Duration>,
    systems: &[peer::System],
) -> Result<KafkaBench, BenchError> {
    use crate::log::kafka::{
        KafkaOptions, KafkaProducer, apply_topics, count_all, create_topic, pipe,
    };
    let mut deployments = vec![(opts.clone(), Guarantee::AtLeastOnce)];
    if let Some(interval) = commit_interval {
        let eos = KafkaOptions {
            topic_prefix: format!("{}eos.", opts.topic_prefix),
            ..opts.clone()
        };
        deployments.push((
            eos,
            Guarantee::ExactlyOnce {
                commit_interval: interval,
            },
        ));
    }
    let scratch = tempfile::tempdir()?;
    let group = |system: &peer::System, phase: &str, g: Guarantee| {
        let g = match g {
            Guarantee::AtLeastOnce => "alo",
            Guarantee::ExactlyOnce { .. } => "eos",
        };
        format!(
            "ordo-bench-{}-{g}-{phase}-{}",
            system.name(),
            std::process::id()
        )
    };
    let state_dir = |name: &str| scratch.path().join(name);
    let mut startups = Vec::new();
    for (deployment, guarantee) in &deployments {
        apply_topics(deployment, n)?;
        for system in systems {
            let g = group(system, "empty", *guarantee);
            let m = system.run_to_end(deployment, n, &g, *guarantee, &state_dir(&g))?;
            startups.push(m.wall_secs);
        }
    }
    let producer = KafkaProducer::new(opts)?;
    let topic = opts.topic(Role::Events);
    let t0 = Instant::now();
    fill(&producer, &topic, events, n, opts.partitioner)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    for (deployment, _) in &deployments[1..] {
        fill(
            &producer,
            &deployment.topic(Role::Events),
            events,
            n,
            opts.partitioner,
        )?;
    }
    drop(producer);
    let t0 = Instant::now();
    let read = count_all(opts, &topic, n)?;
    let raw_consume_secs = t0.elapsed().as_secs_f64();
    let scratch_topic = format!(
        "{}ordo-bench-pipe-{}",
        opts.topic_prefix,
        std::process::id()
    );
    create_topic(opts, &scratch_topic, n.get())?;
    let t0 = Instant::now();
    pipe(opts, &topic, &scratch_topic, n)?;
    let pipe_secs = t0.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    let mut startups = startups.into_iter();
    for (deployment, guarantee) in &deployments {
        for system in systems {
            let g = group(system, "input", *guarantee);
            let run = system.run_to_end(deployment, n, &g, *guarantee, &state_dir(&g))?;
            let fresh = state_dir(&format!("{g}-restore"));
            let restore = system.run_to_end(deployment, n, &g, *guarantee, &fresh)?;
            runs.push(SystemRun {
                system: system.name(),
                guarantee: *guarantee,
                startup_secs: startups.next().unwrap_or_default(),
                run,
                restore_secs: restore.wall_secs,
            });
        }
    }
    Ok(KafkaBench {
        events: read,
        partitions: n.get(),
        produce_secs,
        raw_consume_secs,
        pipe_secs,
        runs,
    })
}

/// Appends `events` generated events (seed 1, so every call appends the same records) to
/// `topic`, each to its partition.
fn fill(
    producer: &crate::log::kafka::KafkaProducer,
    topic: &str,
    events: usize,
    n: PartitionCount,
    partitioner: crate::core::partitioner::Partitioner,
) -> Result<(), RunError> {
    let mut generator = crate::tools::generate::Generator::new(1);
    let mut left = events;
    while left > 0 {
        let take = left.min(20_000);
        let chunk: Vec<crate::log::kafka::Outgoing<'_>> = (&mut generator)
            .take(take)
            .map(|e| {
                let value = e.to_json().into_bytes();
                let (partition, record) = crate::tools::produce::route(&e, value, n, partitioner);
                crate::log::kafka::Outgoing {
                    topic,
                    partition,
                    record,
                }
            })
            .collect();
        producer.send_all(&chunk)?;
        left -= take;
    }
    Ok(())
}
